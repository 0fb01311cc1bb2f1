"""Submit and release of one large file through the airlock *service*, against plain boto3.

Run by hand (never from the test suite), from the repository root, on a local platform where
`make demo` has run (its project, researcher, lead and the two development checkers):

    TRE_DEV_DIR=DIR .venv/bin/python -m provisioner.demo        # once
    PYTHONPATH=$PWD .venv/bin/python benchmarks/airlock_service.py --state-dir DIR \\
        --size-mib 1024 --rounds 3

What is measured, on the platform's S3 server (SeaweedFS on 127.0.0.1), everything through
the hub's proxy as people reach it:

- **ours**: `tre export submit` as the researcher (the CLI process: declare = one local read
  for the sha256, file the request, stream the file to the airlock, which uploads it to
  quarantine in 8 MiB parts as it arrives), then `POST .../release` as the lead (server-side
  copy to egress, the copy read back and hashed, the manifest). Between them, not in the
  ratio: the first checker's page view, which runs the automated checks once (timed apart,
  "checks"), the two reviews and the controller's pass.
- **baseline**: boto3's `upload_file` (transfer manager, 8 MiB parts, 10 threads) of the same
  file into the quarantine bucket, then one `copy_object` to egress (`airlock_transfer.py`).

Ratio = median baseline seconds / median ours seconds (target >= 0.8). The airlock's peak
RSS is its process's VmHWM (/proc) after the runs (target < 150 MB whatever the size); the
service is restarted first, so the peak is of these runs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))

from airlock_transfer import NAME, MiB, clean, settings_for, spawn, write_test_file

from provisioner.devcluster.cluster import DevCluster
from provisioner.devcluster.hub import DEV_OUTPUT_CHECKERS, DevHub, sign_in
from provisioner.models.settings import Settings
from provisioner.planning.names import AIRLOCK_PREFIX

TRE = str(Path(sys.executable).with_name("tre"))
PROJECT = "heart-failure-ml"
RESEARCHER, LEAD = "rik.researcher", "lena.lead"


def vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise SystemExit(f"no VmHWM for pid {pid}")


class People:
    def __init__(self, hub: DevHub) -> None:
        endpoints = hub.endpoints()
        assert endpoints is not None, "the hub is not running: tre dev up --state-dir DIR"
        password = hub.password_file.read_text().strip()
        self.url = f"{endpoints.probe_url}{AIRLOCK_PREFIX}"
        self.tokens = {
            who: sign_in(endpoints.probe_url, who, password, "benchmark")[1]
            for who in (RESEARCHER, LEAD, *DEV_OUTPUT_CHECKERS)
        }

    def call(self, who: str, method: str, path: str, **kwargs: Any) -> Any:
        response = requests.request(
            method,
            self.url + path,
            headers={"Authorization": f"token {self.tokens[who]}"},
            timeout=3600,
            **kwargs,
        )
        response.raise_for_status()
        return response.json()


def run_ours(people: People, cluster: DevCluster, root: Path) -> dict[str, Any]:
    env = {
        **os.environ,
        "JUPYTERHUB_API_TOKEN": people.tokens[RESEARCHER],
        "TRE_AIRLOCK_URL": people.url,
    }
    start = time.perf_counter()
    done = subprocess.run(
        [TRE, "-o", "json", "export", "submit", NAME, "-d", "benchmark file",
         "-c", "A benchmark of the airlock, synthetic random cells.",
         "--project", PROJECT, "--root", str(root)],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    submitted = time.perf_counter()
    if done.returncode != 0:
        raise SystemExit(f"submit failed: {done.stderr}")
    created = json.loads(done.stdout)
    path = f"api/exports/{created['namespace']}/{created['name']}"
    # The first reviewer's page view runs the automated checks (kept for every later view and
    # for the release manifest): reviewer-side time, timed apart.
    checking = time.perf_counter()
    people.call(DEV_OUTPUT_CHECKERS[0], "GET", path)
    checks_seconds = time.perf_counter() - checking
    for checker in DEV_OUTPUT_CHECKERS:
        people.call(checker, "POST", f"{path}/reviews", json={"votes": {NAME: {"vote": "approve"}}})
    controller = subprocess.run(
        [TRE, "controller", "run", "--once"],
        env={
            **os.environ,
            "KUBECONFIG": str(cluster.state_dir / "tre-controller.kubeconfig"),
            "TRE_AUDIT_SIGNING_KEY_FILE": str(cluster.audit_signing_key_file),
        },
        capture_output=True,
        text=True,
        check=False,
    )
    if controller.returncode != 0:
        raise SystemExit(f"controller pass failed: {controller.stdout}{controller.stderr}")
    before_release = time.perf_counter()
    people.call(LEAD, "POST", f"{path}/release")
    released = time.perf_counter()
    return {
        "seconds": (submitted - start) + (released - before_release),
        "submit_seconds": submitted - start,
        "release_seconds": released - before_release,
        "checks_seconds": checks_seconds,
        "export": f"{created['namespace']}/{created['name']}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    size = args.size_mib * MiB
    cluster = DevCluster(args.state_dir)
    os.environ.update(cluster.env())
    hub = DevHub(cluster)
    # A fresh airlock, so its VmHWM is the peak of these runs.
    hub.down(lambda m: print(f"  {m}", flush=True))
    hub.up(Settings(), lambda m: print(f"  {m}", flush=True))
    airlock = next(p for p in hub.processes() if p.name == hub.airlock_process)
    idle_mb = vm_hwm_mb(airlock.pid)
    people = People(hub)
    # The same buckets the service writes (the platform's), under a prefix of its own.
    platform_settings = Settings()
    baseline_settings = settings_for(args.state_dir, size).model_copy(
        update={
            "airlock_quarantine_bucket": platform_settings.airlock_quarantine_bucket,
            "airlock_egress_bucket": platform_settings.airlock_egress_bucket,
        }
    )
    root = Path(tempfile.mkdtemp(prefix="tre-bench-service-"))
    sha256 = write_test_file(root / NAME, size)
    print(f"file: {size} bytes, sha256 {sha256}; airlock idle peak RSS {idle_mb:.0f} MB")
    ours: list[dict[str, Any]] = []
    base: list[dict[str, Any]] = []
    started = dt.datetime.now(dt.UTC)
    try:
        for round_ in range(1, args.rounds + 1):
            ours.append(run_ours(people, cluster, root))
            print(f"round {round_} ours: {json.dumps(ours[-1])}", flush=True)
            # The benchmark's own bytes go (a real export keeps quarantine as its record).
            _, name = ours[-1]["export"].split("/")
            clean(baseline_settings, f"exports/{PROJECT}/{name}/")
            base.append(spawn("baseline", baseline_settings, root, size, sha256))
            clean(baseline_settings, base[-1]["prefix"])
            print(f"round {round_} baseline: {json.dumps(base[-1])}", flush=True)
    finally:
        (root / NAME).unlink()
        root.rmdir()
    peak = vm_hwm_mb(airlock.pid)
    o = statistics.median(r["seconds"] for r in ours)
    b = statistics.median(r["seconds"] for r in base)
    print()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}; {started:%Y-%m-%d %H:%M} UTC; "
          f"load {os.getloadavg()}")  # fmt: skip
    print("| round | ours: submit + release (s) | baseline: upload + copy (s) | ratio |")
    print("|---|---:|---:|---:|")
    for i, (x, y) in enumerate(zip(ours, base, strict=True), 1):
        print(
            f"| {i} | {x['submit_seconds']:.2f} + {x['release_seconds']:.2f} = "
            f"{x['seconds']:.2f} | {y['submit_seconds']:.2f} + {y['release_seconds']:.2f} = "
            f"{y['seconds']:.2f} | {y['seconds'] / x['seconds']:.2f} |"
        )
    print(
        f"| median | {o:.2f} ({size / MiB / o:.1f} MiB/s) | {b:.2f} ({size / MiB / b:.1f} "
        f"MiB/s) | **{b / o:.2f}** |"
    )
    print(f"airlock service peak RSS (VmHWM): {peak:.0f} MB (idle {idle_mb:.0f} MB)")


if __name__ == "__main__":
    main()
