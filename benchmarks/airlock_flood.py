"""A revoke's latency while one member floods the airlock, against the same revoke in quiet.

Run by hand (never from the test suite), from the repository root:

    PYTHONPATH=$PWD .venv/bin/python benchmarks/airlock_flood.py --samples 10 --write-docs

On a fresh local platform (provisioner/devcluster: the control plane and the S3 server on
127.0.0.1) with the hub, its proxy and the airlock started as `tre dev up` starts them, with
the airlock's default limits (`docs/airlock.md`, "No one person can stall everyone"):

1. Setup, not timed. Two projects (the workspace tests' `World`, real CLI and controller
   code): fred's (led by fay) and lea's. In lea's, 2 x `--samples` exports of one small
   file are filed by its members in turn (each within the hourly filing limit), uploaded,
   approved by two checkers, made Approved by the controller's reconcile and released by
   lea.
2. Quiet: lea revokes `--samples` of them one after another, through the hub's proxy as a
   browser or `tre export revoke` does; each revoke is timed from just before its POST until
   its answer (200, the egress copies deleted and the record written).
3. Flood: fred, with his own token straight to the airlock (as a notebook reaches it), keeps
   16 uploads open that send their headers and never the body (reopened as the airlock cuts
   them), 4 threads uploading 1 MB files of an export of 16 in a loop, 2 threads filing
   exports and 4 listing, none waiting between calls. Once every kind of call has been
   answered at least once, and 3 s more, lea revokes the other
   `--samples` exports, timed the same way. What the flood got (status codes) is counted.

Reported: p50 and p99 (nearest rank) of both, side by side, and their ratio. The flood's
counts show the limits at work (429: fred's own limits; 503: every upload worker busy).
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import hashlib
import json
import multiprocessing
import os
import platform as host
import re
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

from approval_latency import percentile, platform  # noqa: E402

from provisioner.airlock.release import ensure_airlock_buckets  # noqa: E402
from provisioner.controller.install import install_platform  # noqa: E402
from provisioner.devcluster.cluster import DevCluster  # noqa: E402
from provisioner.devcluster.hub import DEV_OUTPUT_CHECKERS, DevHub, HubEndpoints  # noqa: E402
from provisioner.kube.api import Kube  # noqa: E402
from provisioner.kube.client import api_client  # noqa: E402
from provisioner.models.settings import Settings  # noqa: E402
from provisioner.storage.s3 import s3_client  # noqa: E402
from tests.integration.conftest import wait_for_pod_policy, wait_for_policies  # noqa: E402
from tests.integration.test_airlock_service import (  # noqa: E402
    FLOOD_BYTES,
    TABLE,
    Person,
    file_export,
    held_put,
    project_of,
)
from tests.integration.workspace_world import World  # noqa: E402

DOCS = ROOT / "docs" / "performance.md"
START, END = "<!-- airlock_flood: start -->", "<!-- airlock_flood: end -->"
HELD = 16  # uploads that send their headers and never the body
UPLOADERS, FILERS, LISTERS = 4, 2, 4
CALLS = ("PUT 1 MB", "POST api/exports", "GET api/exports")
WARM_UP = 3.0
# Authors of the exports lea revokes, in turn: each files at most the hourly limit (20).
AUTHORS = ("ravi", "rik", "rosa", "raj", "ruth")


def say(message: str) -> None:
    print(f"[{dt.datetime.now(dt.UTC):%H:%M:%S}] {message}", flush=True)


def released(w: World, project: str, author: Person, lea: Person, checkers: list[Person]) -> str:
    """api/exports/NAMESPACE/NAME of an export of one file of `author`'s, released by lea."""
    declared = {
        "project": project,
        "context": "A benchmark export, released to be revoked.",
        "files": [{"path": "out/table.csv", "size": len(TABLE),
                   "sha256": hashlib.sha256(TABLE).hexdigest(),
                   "description": "readmissions"}],
    }  # fmt: skip
    deadline = time.monotonic() + 20
    while True:
        filed = author.call("POST", "api/exports", json=declared)
        if filed.status_code == 201 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert filed.status_code == 201, filed.text
    path = f"api/exports/{filed.json()['namespace']}/{filed.json()['name']}"
    author.ok("PUT", f"{path}/files/out/table.csv", data=TABLE)
    for checker in checkers:
        votes = {"out/table.csv": {"vote": "approve"}}
        checker.ok("POST", f"{path}/reviews", json={"votes": votes})
    w.reconcile(project)
    lea.ok("POST", f"{path}/release")
    return path


def revoke_latencies(lea: Person, paths: list[str]) -> list[float]:
    seconds = []
    for path in paths:
        start = time.perf_counter()
        lea.ok("POST", f"{path}/revoke", json={"reason": "benchmark revoke"})
        seconds.append(time.perf_counter() - start)
    return seconds


class Flood:
    """fred's flood (module docstring, step 3), in threads of a process of its own (so the
    revokes' client in this process does not share its interpreter), until `stop` is set;
    what it got goes to `out`."""

    def __init__(self, token: str, airlock_url: str, export_path: str, project: str) -> None:
        self.token, self.direct = token, airlock_url
        self.path, self.project = export_path, project
        self.stop = threading.Event()
        self.counts: Counter[str] = Counter()
        self.answered: set[str] = set()  # labels of the calls answered at least once
        self.lock = threading.Lock()

    def count(self, what: str) -> None:
        with self.lock:
            self.counts[what] += 1

    def call(self, label: str, method: str, path: str, **kwargs: Any) -> None:
        headers = {"Authorization": f"token {self.token}"}
        try:
            answer = requests.request(
                method, self.direct + path, headers=headers, timeout=60, **kwargs
            )
            self.count(f"{label}: {answer.status_code}")
            self.answered.add(label)
        except requests.RequestException:
            self.count(f"{label}: connection cut")

    def held(self) -> None:
        conns: list[socket.socket] = []
        i = 0
        while not self.stop.is_set():
            while len(conns) < HELD:
                path = f"{self.path}/files/out/f{i % 16}.csv"
                conns.append(held_put(self.direct, self.token, path))
                self.count("PUT, headers only (opened)")
                i += 1
            for conn in list(conns):
                conn.settimeout(0.05)
                try:
                    if conn.recv(65536):
                        continue
                except TimeoutError:
                    continue
                except OSError:
                    pass
                conns.remove(conn)  # answered (429) or cut: open another
                conn.close()
        for conn in conns:
            conn.close()

    def uploads(self, n: int) -> None:
        while not self.stop.is_set():
            self.call("PUT 1 MB", "PUT", f"{self.path}/files/out/f{n % 16}.csv", data=FLOOD_BYTES)
            n += UPLOADERS

    def filings(self) -> None:
        body = {
            "project": self.project, "context": "a flood of filings",
            "files": [{"path": "out/x.csv", "size": 4, "sha256": "0" * 64, "description": "x"}],
        }  # fmt: skip
        while not self.stop.is_set():
            self.call("POST api/exports", "POST", "api/exports", json=body)

    def lists(self) -> None:
        while not self.stop.is_set():
            self.call("GET api/exports", "GET", "api/exports")

    def run(self, ready: Any, stop: Any, out: Any) -> None:
        targets: list[Callable[[], None]] = [self.held]
        targets += [functools.partial(self.uploads, n) for n in range(UPLOADERS)]
        targets += [self.filings] * FILERS + [self.lists] * LISTERS
        threads = [threading.Thread(target=t, daemon=True) for t in targets]
        for thread in threads:
            thread.start()
        while len(self.answered) < len(CALLS) and not stop.is_set():
            time.sleep(0.1)  # every kind of call under way
        ready.set()
        stop.wait()
        self.stop.set()
        for thread in threads:
            thread.join(timeout=120)
        out.put(dict(self.counts))


def run_flood(token: str, airlock_url: str, export_path: str, project: str, ready: Any,
              stop: Any, out: Any) -> None:  # fmt: skip
    Flood(token, airlock_url, export_path, project).run(ready, stop, out)


def render(quiet: list[float], flooded: list[float], counts: Counter[str], command: str,
           started: dt.datetime) -> str:  # fmt: skip
    def row(name: str, values: list[float]) -> str:
        return (f"| {name} | {len(values)} | {percentile(values, 50) * 1000:.0f} | "
                f"{percentile(values, 99) * 1000:.0f} | {max(values) * 1000:.0f} |")  # fmt: skip

    ratio50 = percentile(flooded, 50) / percentile(quiet, 50)
    ratio99 = percentile(flooded, 99) / percentile(quiet, 99)
    lines = [
        START,
        f"Measured {started:%Y-%m-%d %H:%M} UTC on a shared 2-core VM ({host.machine()}, "
        f"{os.cpu_count()} cores, Python {host.python_version()}), the airlock's default limits.",
        "",
        f"Reproduce: `{command}`",
        "",
        "| lea's revoke, through the hub's proxy | samples | p50 (ms) | p99 (ms) | max (ms) |",
        "|---|---:|---:|---:|---:|",
        row("quiet", quiet),
        row("while fred floods the airlock", flooded),
        "",
        f"Ratio flooded / quiet: p50 {ratio50:.2f}, p99 {ratio99:.2f}.",
        "",
        "What fred's flood got while the revokes ran (answers by call and status):",
        "",
        "| fred's call | count |",
        "|---|---:|",
        *(f"| {what} | {n} |" for what, n in sorted(counts.items())),
        END,
    ]
    return "\n".join(lines)


def measure(
    w: World, cluster: DevCluster, endpoints: HubEndpoints, samples: int
) -> tuple[list[float], list[float], Counter[str]]:
    """Steps 1 to 3 of the module docstring: (quiet, flooded, what the flood got)."""
    flooded_project = project_of(w, "fay", ["fay", "fred"])
    quiet_project = project_of(w, "lea", ["lea", *AUTHORS])
    fred, lea = Person(endpoints, cluster, "fred"), Person(endpoints, cluster, "lea")
    authors = [Person(endpoints, cluster, who) for who in AUTHORS]
    checkers = [Person(endpoints, cluster, who) for who in DEV_OUTPUT_CHECKERS]
    say(f"setup: {2 * samples} released exports in {quiet_project}")
    paths = [
        released(w, quiet_project, authors[i % len(authors)], lea, checkers)
        for i in range(2 * samples)
    ]
    namespace, name = file_export(fred, flooded_project, 16)

    say("quiet: revoking")
    quiet = revoke_latencies(lea, paths[:samples])
    say(f"flood: fred floods the airlock at {endpoints.airlock_url}")
    spawn = multiprocessing.get_context("spawn")
    ready, stop, out = spawn.Event(), spawn.Event(), spawn.Queue()
    flood = spawn.Process(
        target=run_flood,
        args=(fred.token, endpoints.airlock_url, f"api/exports/{namespace}/{name}",
              flooded_project, ready, stop, out),
    )  # fmt: skip
    flood.start()
    try:
        if not ready.wait(timeout=180):
            raise SystemExit("the flood did not get under way within 180 s")
        time.sleep(WARM_UP)
        flooded = revoke_latencies(lea, paths[samples:])
    finally:
        stop.set()
        counts: Counter[str] = Counter(out.get(timeout=180))
        flood.join(timeout=60)
    return quiet, flooded, counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=10, help="revokes per phase (<= 50)")
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    samples = max(1, min(args.samples, 50))
    command = "PYTHONPATH=$PWD .venv/bin/python benchmarks/airlock_flood.py " + " ".join(
        sys.argv[1:]
    )
    work = Path(tempfile.mkdtemp(prefix="tre-bench-flood-"))
    started = dt.datetime.now(dt.UTC)
    with platform(work) as cluster:
        os.environ.update(cluster.env())
        settings = Settings()
        admin = Kube(api_client(cluster.kubeconfig))
        install_platform(admin, settings, lambda m: say(f"  {m}"))
        wait_for_policies(Kube(api_client(cluster.kubeconfig, as_user="probe-user")))
        wait_for_pod_policy(cluster.kubeconfig, settings)
        ensure_airlock_buckets(s3_client(settings), settings)
        hub = DevHub(cluster, "airlock-hub")  # the name the tests' Person signs in at
        endpoints = hub.up(settings, lambda m: say(f"  {m}"))
        try:
            quiet, flooded, counts = measure(
                World(settings, cluster.kubeconfig, work), cluster, endpoints, samples
            )
        finally:
            hub.down(lambda _: None)
    text = render(quiet, flooded, counts, command, started)
    print(text)
    if args.write_docs:
        docs = DOCS.read_text()
        pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.S)
        docs = pattern.sub(lambda _: text, docs) if START in docs else docs + "\n" + text + "\n"
        DOCS.write_text(docs)
    print(json.dumps({"quiet": quiet, "flooded": flooded}))


if __name__ == "__main__":
    main()
