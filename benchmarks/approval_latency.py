"""How long a decision takes to reach the cluster with the controller running watch-driven.

Run by hand (never from the test suite), from the repository root:

    .venv/bin/python benchmarks/approval_latency.py --workspaces 1000 --write-docs
    .venv/bin/python benchmarks/approval_latency.py --workspaces 20 --approvals 3 --revokes 2

On a fresh local platform (provisioner/devcluster: etcd, kube-apiserver,
kube-controller-manager and the S3 server, all on 127.0.0.1):

1. Setup, not timed. Install the platform; four sensitive datasets registered by their steward
   and verified by the controller on the dev S3 server (benchmarks/provision_workspaces.py);
   N projects filed and approved twice (every person impersonated, approvals pinning manifest
   and tier). The last `--revokes` of them get a second request, filed by the project's owner,
   that adds one guest member (approved too). `--approvals` more projects are filed and
   approved once: their datasets are sensitive, so they stay Pending until a second approval.
2. The controller starts as it runs in a cluster: `run_controller` in a thread, as its own
   ServiceAccount (a TokenRequest token), watch-driven, leader-elected, verifying datasets
   with its own S3 client, writing the signed audit log (the dev platform's signing key, the
   head published in tre-system/tre-audit-head, as `tre controller run` opens it). It
   provisions the N workspaces; the script waits until all are Ready (reported, not timed
   as a result). The hub (its ServiceAccount, impersonated) then starts a notebook pod for
   each guest (pods need no node on this control plane).
3. (a) Approval to Ready, `--approvals` times: with the controller idle, the second approval
   of a pending project is written as `tre request approve` writes it; the latency runs from
   just before that request is sent until a watch on Workspaces (the script's own) sees the
   project's Workspace with phase Ready.
   (b) Revoke to pod gone, `--revokes` times: with the controller idle, the guest's request is
   revoked; the latency runs from just before the revoke is sent until a watch on pods sees
   the guest's notebook pod deleted (a pod without a node is deleted at once). The owner's
   request still holds, so the workspace stays Ready (checked).
   "Idle": no pass running for IDLE_SECONDS, the last one wrote nothing.
4. Pass breakdown: every pass of the controller is timed in parts (the functions it calls are
   wrapped by this script, production code unchanged): read_snapshot, the per-project inputs
   fingerprint, planning (plan_project), writes (execute: API writes and audit appends,
   summed over the worker threads), the audit head publish. Then, with the controller
   stopped, one unchanged pass is taken apart single-threaded: read_snapshot, fingerprints,
   planning every project, and the audit keys copy each project gets.

Targets: (a) p99 under 1 s.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.provision_workspaces import (
    APPROVERS,
    REQUESTERS,
    dev_settings,
    file_and_approve,
    machine_facts,
    project_name,
    register_datasets,
    say,
    update_docs_section,
)
from provisioner.audit.anchor import AnchoredAuditLog
from provisioner.audit.log import ensure_audit_bucket, open_audit_log
from provisioner.audit.signing import AuditSigner
from provisioner.controller import loop, reconcile
from provisioner.controller.install import install_platform
from provisioner.controller.loop import KeyedAuditor, PassReport, run_controller
from provisioner.devcluster.cluster import DevCluster
from provisioner.errors import ConflictError, RefusedError, TreError
from provisioner.kube.api import Kube, Manifest
from provisioner.kube.client import api_client, write_service_account_kubeconfig
from provisioner.kube.resources import ACCESS_REQUESTS, PODS, WORKSPACES
from provisioner.models.resources import (
    AccessRequest,
    AccessRequestSpec,
    Dataset,
    Decision,
    DecisionAction,
)
from provisioner.models.settings import Settings
from provisioner.models.types import ComputeTier
from provisioner.planning.names import ANNOTATION_USER, SYSTEM_NAMESPACE, hub_user, namespace_name
from provisioner.planning.rbac import STEWARD_GROUP
from provisioner.storage.s3 import s3_client

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "performance.md"
SECTION_START = "<!-- approval_latency: start (benchmarks/approval_latency.py) -->"
SECTION_END = "<!-- approval_latency: end -->"
STEWARD = "dana.steward"
REVOKER = APPROVERS[0]
IDLE_SECONDS = 1.0
QUIET_SECONDS = 5.0
SAMPLE_TIMEOUT = 300.0
TARGET_P99 = 1.0


# --- the controller's passes, timed in parts -----------------------------------------------------


@dataclass
class PassTiming:
    started: float
    wall: float = 0.0
    snapshot: float = 0.0  # read_snapshot (twice when a dataset was verified)
    inputs: float = 0.0  # project_inputs, every project
    plan: float = 0.0  # plan_project, summed over worker threads
    execute: float = 0.0  # execute (API writes and audit appends), summed over threads
    audit_append: float = 0.0  # of which audit appends
    known: float = 0.0  # KeyedAuditor.known(), summed
    flush: float = 0.0  # the audit head publish
    projects: int = 0
    writes: int = 0  # API writes and pod deletions the pass reported

    def row(self) -> str:
        return (
            f"wall {self.wall:.2f}s: snapshot {self.snapshot:.2f}, inputs {self.inputs:.2f}, "
            f"plan {self.plan:.2f}, execute {self.execute:.2f} (audit {self.audit_append:.2f}), "
            f"known() {self.known:.2f}, flush {self.flush:.2f}; {self.projects} projects, "
            f"{self.writes} writes"
        )


class PassRecorder:
    """Wraps the functions a pass calls (module attributes, so production code is unchanged)
    and keeps one PassTiming per pass; tells when the controller is idle."""

    def __init__(self) -> None:
        self.passes: list[PassTiming] = []
        self.current: PassTiming | None = None
        self.running = False
        self.last_end = time.monotonic()
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)

    def _add(self, attr: str, seconds: float) -> None:
        with self.lock:
            if self.current is not None:
                setattr(self.current, attr, getattr(self.current, attr) + seconds)

    def _timed(self, attr: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self._add(attr, time.perf_counter() - started)

        return wrapper

    def install(self) -> None:
        loop.read_snapshot = self._timed("snapshot", loop.read_snapshot)  # type: ignore[attr-defined]
        loop.project_inputs = self._timed("inputs", loop.project_inputs)  # type: ignore[attr-defined]
        reconcile.plan_project = self._timed("plan", reconcile.plan_project)  # type: ignore[attr-defined]
        reconcile.execute = self._timed("execute", reconcile.execute)  # type: ignore[attr-defined]
        KeyedAuditor.known = self._timed("known", KeyedAuditor.known)  # type: ignore[method-assign]
        KeyedAuditor.append = self._timed("audit_append", KeyedAuditor.append)  # type: ignore[method-assign]
        KeyedAuditor.flush = self._timed("flush", KeyedAuditor.flush)  # type: ignore[method-assign]
        run_pass = loop.run_pass

        def timed_pass(*args: Any, **kwargs: Any) -> PassReport:
            with self.lock:
                self.current = PassTiming(time.monotonic())
                self.running = True
            started = time.perf_counter()
            try:
                report = run_pass(*args, **kwargs)
            finally:
                with self.changed:
                    assert self.current is not None
                    self.current.wall = time.perf_counter() - started
                    self.running = False
                    self.last_end = time.monotonic()
            with self.changed:
                self.current.projects = len(report.results)
                self.current.writes = sum(
                    len(r.applied) + len(r.pruned) + len(r.stopped) + r.status_writes
                    for r in report.results
                )
                self.passes.append(self.current)
                self.current = None
                self.changed.notify_all()
            return report

        loop.run_pass = timed_pass  # type: ignore[attr-defined]

    def wait_idle(self, timeout: float = 600.0) -> None:
        """Until no pass has run for IDLE_SECONDS and the last one wrote nothing (or, should
        no pass follow a pass that wrote, for QUIET_SECONDS)."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                quiet = time.monotonic() - self.last_end
                last_wrote = bool(self.passes) and self.passes[-1].writes > 0
                enough = IDLE_SECONDS if not last_wrote else QUIET_SECONDS
                if not self.running and quiet >= enough:
                    return
                if time.monotonic() > deadline:
                    raise SystemExit(f"benchmark: the controller did not go idle in {timeout}s")
                self.changed.wait(0.1)

    def since(self, t: float) -> list[PassTiming]:
        with self.lock:
            return [p for p in self.passes if p.started >= t]


# --- the script's own watches --------------------------------------------------------------------


class Watcher:
    """Records when each Workspace is first seen Ready and when each pod is deleted."""

    def __init__(self, kube: Kube, stop: threading.Event) -> None:
        self.kube = kube
        self.stop = stop
        self.ready_at: dict[str, float] = {}
        self.deleted_at: dict[tuple[str, str], float] = {}
        self.lock = threading.Condition()

    def start(self) -> None:
        for path, handler in (
            (WORKSPACES.path(), self._workspace),
            (PODS.path(), self._pod),
        ):
            threading.Thread(
                target=self._run, args=(path, handler), daemon=True, name=f"bench watch {path}"
            ).start()

    def _workspace(self, kind: str, obj: Manifest, at: float) -> None:
        if kind in ("ADDED", "MODIFIED") and (obj.get("status") or {}).get("phase") == "Ready":
            self.ready_at.setdefault(obj["metadata"]["name"], at)

    def _pod(self, kind: str, obj: Manifest, at: float) -> None:
        if kind == "DELETED":
            meta = obj["metadata"]
            self.deleted_at.setdefault((meta["namespace"], meta["name"]), at)

    def _run(self, path: str, handler: Callable[[str, Manifest, float], None]) -> None:
        while not self.stop.is_set():
            try:
                listed = self.kube.request("GET", path)
                with self.lock:
                    for item in listed.get("items", []):
                        handler("ADDED", item, time.monotonic())
                    self.lock.notify_all()
                response = self.kube.api.call_api(
                    path,
                    "GET",
                    query_params=[
                        ("watch", "1"),
                        ("resourceVersion", listed["metadata"]["resourceVersion"]),
                        ("timeoutSeconds", "3600"),
                    ],
                    header_params={"Accept": "application/json"},
                    auth_settings=["BearerToken"],
                    _preload_content=False,
                    _request_timeout=3700,
                )
                raw = response[0] if isinstance(response, tuple) else response
                pending = b""
                for chunk in raw.stream(65536, decode_content=True):
                    at = time.monotonic()
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    expired = False
                    with self.lock:
                        for line in lines:
                            if not line.strip():
                                continue
                            event = json.loads(line)
                            if event["type"] == "ERROR":  # e.g. 410 Gone: list again
                                expired = True
                            elif event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                                handler(event["type"], event["object"], at)
                        self.lock.notify_all()
                    if expired:
                        break
                    if self.stop.is_set():
                        return
            except Exception as exc:
                if not self.stop.is_set():
                    say(f"  bench watch {path} restarting: {exc}")
                    self.stop.wait(1)

    def wait_for(self, check: Callable[[], float | None], timeout: float) -> float:
        deadline = time.monotonic() + timeout
        with self.lock:
            while True:
                at = check()
                if at is not None:
                    return at
                if time.monotonic() > deadline:
                    raise SystemExit(f"benchmark: nothing seen within {timeout}s")
                self.lock.wait(0.05)


# --- setup ---------------------------------------------------------------------------------------


def guest(i: int) -> str:
    return f"guest-{i:02d}"


def pending_name(i: int) -> str:
    return f"lat-{i:03d}"


def owner_of(i: int) -> str:
    """The lead file_and_approve gives project i: the project's owner."""
    return f"lead-{i % 7:02d}"


def file_guest_request(
    i: int,
    n_guest: int,
    owner: Kube,
    approvers: list[Kube],
    datasets: dict[str, Dataset],
    today: dt.date,
) -> str:
    """A second request for project i, filed by its owner, adding one guest to the data the
    project already has (its first dataset, as file_and_approve chose it)."""
    name = sorted(datasets)[i % len(datasets)]
    chosen = {name: datasets[name]}
    spec = AccessRequestSpec(
        project=project_name(i),
        requester=owner_of(i),
        lead=owner_of(i),
        members=[guest(n_guest)],
        datasets=list(chosen),
        purpose=f"Benchmark project {i}: a guest who will be revoked",
        start_date=today,
        end_date=today + dt.timedelta(days=90),
        compute_tier=ComputeTier.SMALL,
    )
    request = AccessRequest(name=f"{project_name(i)}-guest", spec=spec)
    live = owner.create(request.to_object())
    for approver, kube in zip(APPROVERS, approvers, strict=True):
        live = decide(kube, live, approver, DecisionAction.APPROVE, chosen)
    return request.name


def file_pending(
    i: int, requesters: list[Kube], first: Kube, datasets: dict[str, Dataset], today: dt.date
) -> str:
    """A new project whose sensitive data needs two approvals; approved once."""
    names = sorted(datasets)
    chosen = [names[i % len(names)]]
    requester = f"researcher-{i % REQUESTERS:02d}"
    spec = AccessRequestSpec(
        project=pending_name(i),
        requester=requester,
        lead=requester,
        members=[requester],
        datasets=chosen,
        purpose=f"Benchmark project lat {i}: approval latency",
        start_date=today,
        end_date=today + dt.timedelta(days=90),
        compute_tier=ComputeTier.SMALL,
    )
    name = f"{pending_name(i)}-access"
    live = requesters[i % REQUESTERS].create(AccessRequest(name=name, spec=spec).to_object())
    decide(first, live, APPROVERS[0], DecisionAction.APPROVE, {d: datasets[d] for d in chosen})
    return name


def decide(
    kube: Kube,
    live: Manifest,
    by: str,
    action: DecisionAction,
    datasets: dict[str, Dataset],
) -> Manifest:
    """Append one decision as `tre request approve|revoke` does (pins for an approval)."""
    decision = Decision(
        action=action,
        by=by,
        at=dt.datetime.now(dt.UTC).replace(microsecond=0),
        comment="benchmark",
        manifest_hashes={
            n: d.status.manifest.sha256 for n, d in datasets.items() if d.status.manifest
        }
        if action is DecisionAction.APPROVE
        else {},
        classifications={n: d.spec.classification for n, d in datasets.items()}
        if action is DecisionAction.APPROVE
        else {},
    )
    live["spec"]["decisions"] = [*live["spec"].get("decisions", []), decision.to_wire()]
    return kube.replace(live)


def notebook_pod(namespace: str, user: str) -> Manifest:
    """A notebook pod as the hub starts it (tests/integration/workspace_world.py)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"jupyter-{user}",
            "namespace": namespace,
            "labels": {"component": "singleuser-server"},
            "annotations": {ANNOTATION_USER: user},
        },
        "spec": {
            "automountServiceAccountToken": False,
            "containers": [
                {
                    "name": "notebook",
                    "image": "registry.invalid/notebook:1",
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "runAsNonRoot": True,
                        "capabilities": {"drop": ["ALL"]},
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                }
            ],
        },
    }


def start_pod(hub: Kube, pod: Manifest, timeout: float = 60.0) -> None:
    """Create as the hub; the pod policies read their parameters from a cache, so a just
    provisioned namespace refuses for a moment ("no params found"), as the hub sees too."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            hub.create(pod)
            return
        except RefusedError as exc:
            if "no params found" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


# --- measuring -----------------------------------------------------------------------------------


@dataclass
class Sample:
    name: str
    seconds: float
    write_seconds: float  # of which the decision's own request
    passes: list[PassTiming] = field(default_factory=list)


def retrying_decide(
    kube: Kube, name: str, by: str, action: DecisionAction, datasets: dict[str, Dataset]
) -> tuple[float, float]:
    """(monotonic time just before the accepted request was sent, its duration)."""
    for _ in range(10):
        live = kube.get(ACCESS_REQUESTS, name)
        assert live is not None, name
        sent = time.monotonic()
        try:
            decide(kube, live, by, action, datasets)
        except ConflictError:
            continue
        return sent, time.monotonic() - sent
    raise SystemExit(f"benchmark: {name} kept changing")


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile: the smallest value with at least q% of the samples at or
    below it (so p99 of 50 or of 20 samples is the largest)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


@dataclass
class Breakdown:
    snapshot: float
    inputs: float
    plan: float
    known: float
    load_keys: float  # the first known(): every audit entry read from S3, signature checked
    projects: int
    objects: int


def take_apart(kube: Kube, settings: Settings, audit: KeyedAuditor) -> Breakdown:
    """One unchanged pass's parts, single-threaded, with the controller stopped."""
    started = time.perf_counter()
    snapshot = reconcile.read_snapshot(kube)
    t_snapshot = time.perf_counter() - started
    projects = sorted(snapshot.projects())
    started = time.perf_counter()
    for p in projects:
        loop.project_inputs(snapshot, p)
    t_inputs = time.perf_counter() - started
    started = time.perf_counter()
    known = audit.known()  # the first call reads and checks every entry of the log
    t_load = time.perf_counter() - started
    started = time.perf_counter()
    for _ in projects:
        known = audit.known()
    t_known = time.perf_counter() - started
    started = time.perf_counter()
    now = dt.datetime.now(dt.UTC)
    for p in projects:
        reconcile.plan_project(settings, p, snapshot, now, known)
    t_plan = time.perf_counter() - started
    objects = (
        len(snapshot.owned) + len(snapshot.foreign) + len(snapshot.pods) + len(snapshot.requests)
    )
    return Breakdown(t_snapshot, t_inputs, t_plan, t_known, t_load, len(projects), objects)


# --- main ----------------------------------------------------------------------------------------


@dataclass
class Results:
    n: int
    provision_seconds: float
    setup_seconds: float
    approvals: list[Sample]
    revokes: list[Sample]
    breakdowns: list[Breakdown]
    audit_keys: int
    command: str
    steady_passes: list[PassTiming]
    provisioning_passes: list[PassTiming]
    flooded_revokes: list[Sample] = field(default_factory=list)
    flood_counts: tuple[int, int, int] | None = None  # filed, refused, failed


@contextmanager
def platform(work: Path) -> Iterator[DevCluster]:
    cluster = DevCluster(work / "platform")
    try:
        cluster.up(lambda m: say(f"  {m}"))
        yield cluster
    finally:
        say("stopping the platform")
        cluster.down(lambda m: say(f"  {m}"), purge=True)


@dataclass
class World:
    """The platform's people and the controller, as API clients."""

    cluster: DevCluster
    settings: Settings
    admin: Kube
    controller: Kube
    hub: Kube
    steward: Kube
    requesters: list[Kube]
    approvers: list[Kube]

    @classmethod
    def on(cls, cluster: DevCluster) -> World:
        settings = dev_settings(cluster)
        admin = Kube(api_client(cluster.kubeconfig))
        install_platform(admin, settings, lambda m: say(f"  {m}"))
        token = write_service_account_kubeconfig(
            admin,
            cluster.kubeconfig,
            settings.controller_user,
            cluster.state_dir / "controller.kubeconfig",
        )
        hub = hub_user(settings)
        return cls(
            cluster,
            settings,
            admin,
            Kube(api_client(token)),
            Kube(api_client(cluster.kubeconfig, as_user=hub)),
            Kube(api_client(cluster.kubeconfig, as_user=STEWARD, as_groups=(STEWARD_GROUP,))),
            [
                Kube(api_client(cluster.kubeconfig, as_user=f"researcher-{r:02d}"))
                for r in range(REQUESTERS)
            ],
            [
                Kube(
                    api_client(cluster.kubeconfig, as_user=a, as_groups=(settings.approver_group,))
                )
                for a in APPROVERS
            ],
        )

    def as_user(self, user: str) -> Kube:
        return Kube(api_client(self.cluster.kubeconfig, as_user=user))


@dataclass
class Setup:
    datasets: dict[str, Dataset]
    revoke_projects: list[int]
    guest_requests: dict[int, str]
    pending: list[str]
    seconds: float


def set_up(w: World, n: int, n_approvals: int, n_revokes: int) -> Setup:
    say(f"setup: datasets, {n} projects approved, {n_revokes} guests, {n_approvals} pending")
    started = time.monotonic()
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    today = now.date()
    datasets = register_datasets(w.steward, w.controller, w.settings, now)
    with ThreadPoolExecutor(8) as pool:
        for future in [
            pool.submit(file_and_approve, i, w.requesters, w.approvers, datasets, today)
            for i in range(n)
        ]:
            future.result()
    revoke_projects = list(range(n - n_revokes, n))
    guest_requests = {
        i: file_guest_request(i, g, w.as_user(owner_of(i)), w.approvers, datasets, today)
        for g, i in enumerate(revoke_projects)
    }
    pending = [
        file_pending(i, w.requesters, w.approvers[0], datasets, today) for i in range(n_approvals)
    ]
    seconds = time.monotonic() - started
    say(f"setup done in {seconds:.1f}s")
    return Setup(datasets, revoke_projects, guest_requests, pending, seconds)


class Controller:
    """`run_controller` in a thread, opened as `tre controller run` opens it."""

    def __init__(self, w: World) -> None:
        self.w = w
        self.s3 = s3_client(w.settings)
        ensure_audit_bucket(
            self.s3, w.settings.audit_bucket, retention_days=w.settings.audit_retention_days
        )
        signer = AuditSigner.from_file(w.cluster.audit_signing_key_file)
        self.audit = AnchoredAuditLog(
            open_audit_log(w.settings, self.s3, signer=signer), w.controller, signer
        )
        self.recorder = PassRecorder()
        self.recorder.install()
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.thread = threading.Thread(
            target=run_controller,
            args=(w.controller, w.settings),
            kwargs={
                "lease_namespace": SYSTEM_NAMESPACE,
                "audit": self.audit,
                "s3": self.s3,
                "stop": self.stop,
                "on_pass": self._on_pass,
            },
            daemon=True,
            name="controller",
        )

    def _on_pass(self, report: PassReport) -> None:
        if report.errors:
            first = next(iter(report.errors.items()))
            self.errors.append(f"{len(report.errors)} error(s), e.g. {first}")

    def halt(self) -> None:
        self.stop.set()
        self.thread.join(timeout=60)


def provision(w: World, c: Controller, watcher: Watcher, n: int) -> float:
    say(f"controller started: provisioning {n} workspaces (not timed as a result)")
    started = time.monotonic()
    c.thread.start()
    expected = {project_name(i) for i in range(n)}
    last_report = started
    while len(expected & set(watcher.ready_at)) < n:
        if time.monotonic() - last_report > 30:
            last_report = time.monotonic()
            say(
                f"  {len(expected & set(watcher.ready_at))} of {n} Ready after "
                f"{time.monotonic() - started:.0f}s; {len(c.recorder.passes)} pass(es) done"
                + (f"; last errors: {c.errors[-1]}" if c.errors else "")
            )
        if not c.thread.is_alive():
            raise SystemExit("benchmark: the controller thread stopped")
        time.sleep(0.5)
    seconds = time.monotonic() - started
    say(f"{n} Ready in {seconds:.1f}s ({len(c.recorder.passes)} passes ended so far)")
    c.recorder.wait_idle()
    for p in c.recorder.passes:
        say(f"  provisioning pass: {p.row()}")
    return seconds


def measure_approvals(w: World, c: Controller, watcher: Watcher, setup: Setup) -> list[Sample]:
    samples: list[Sample] = []
    for k, name in enumerate(setup.pending):
        c.recorder.wait_idle()
        project = pending_name(k)
        sent, took = retrying_decide(
            w.approvers[1],
            name,
            APPROVERS[1],
            DecisionAction.APPROVE,
            datasets_for(name, setup.datasets),
        )
        ready = watcher.wait_for(lambda p=project: watcher.ready_at.get(p), SAMPLE_TIMEOUT)
        sample = Sample(project, ready - sent, took)
        samples.append(sample)
        c.recorder.wait_idle()
        sample.passes = c.recorder.since(sent)
        say(
            f"approval {k + 1}/{len(setup.pending)}: {project} Ready after "
            f"{sample.seconds:.3f}s ({len(sample.passes)} pass(es) since; first: "
            f"{sample.passes[0].row() if sample.passes else '-'})"
        )
    return samples


def start_notebooks(w: World, setup: Setup) -> None:
    for g, i in enumerate(setup.revoke_projects):
        start_pod(w.hub, notebook_pod(namespace_name(project_name(i)), guest(g)))
        start_pod(w.hub, notebook_pod(namespace_name(project_name(i)), owner_of(i)))
    say(f"the hub started {2 * len(setup.revoke_projects)} notebook pods")


class Flood:
    """One person filing access requests as fast as the API server answers, from a thread,
    while `on` is set (review 3, F20: one person's flood must not delay another project's
    revoke). Each filing names a new project; the API server refuses those past the person's
    open-request limit (`TRE_MAX_OPEN_REQUESTS`). Bounded: at most `limit` filings."""

    PERSON = "flood-person"

    def __init__(self, w: World, dataset: str, limit: int = 20_000) -> None:
        self.kube = w.as_user(self.PERSON)
        self.dataset = dataset
        self.on = threading.Event()
        self.stop = threading.Event()
        self.limit = limit
        self.filed = self.refused = self.failed = 0
        self.thread = threading.Thread(target=self._run, name="flood", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        today = dt.date.today()
        n = 0
        while not self.stop.is_set() and n < self.limit:
            if not self.on.wait(0.2):
                continue
            n += 1
            spec = AccessRequestSpec(
                project=f"flood-{n:05d}",
                requester=self.PERSON,
                lead=self.PERSON,
                members=[self.PERSON],
                datasets=[self.dataset],
                purpose=f"Benchmark flood {n}: one person filing as fast as possible",
                start_date=today,
                end_date=today + dt.timedelta(days=30),
                compute_tier=ComputeTier.SMALL,
            )
            try:
                self.kube.create(AccessRequest(name=f"flood-{n:05d}", spec=spec).to_object())
                self.filed += 1
            except RefusedError:
                self.refused += 1
            except TreError:
                self.failed += 1

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)


def measure_revokes(
    w: World, c: Controller, watcher: Watcher, setup: Setup, flood: Flood | None = None
) -> tuple[list[Sample], list[Sample]]:
    """The revoke samples, quiet and (with `flood`, every other sample) during the flood."""
    samples: list[Sample] = []
    flooded: list[Sample] = []
    for g, i in enumerate(setup.revoke_projects):
        during = flood is not None and g % 2 == 1
        c.recorder.wait_idle()
        if flood is not None and during:
            flood.on.set()
            time.sleep(1.0)  # the flood under way before the revoke is sent
        project = project_name(i)
        ns = namespace_name(project)
        pod = (ns, f"jupyter-{guest(g)}")
        sent, took = retrying_decide(
            w.approvers[0], setup.guest_requests[i], REVOKER, DecisionAction.REVOKE, {}
        )
        gone = watcher.wait_for(lambda pod=pod: watcher.deleted_at.get(pod), SAMPLE_TIMEOUT)
        if flood is not None:
            flood.on.clear()
        sample = Sample(project, gone - sent, took)
        (flooded if during else samples).append(sample)
        c.recorder.wait_idle()
        sample.passes = c.recorder.since(sent)
        phase = ((w.admin.get(WORKSPACES, project) or {}).get("status") or {}).get("phase")
        if phase != "Ready" or w.admin.get(PODS, f"jupyter-{owner_of(i)}", ns) is None:
            raise SystemExit(f"benchmark: {project} is {phase} after the revoke")
        say(
            f"revoke {g + 1}/{len(setup.revoke_projects)}: {pod[1]} gone after "
            f"{sample.seconds:.3f}s ({len(sample.passes)} pass(es) since; first: "
            f"{sample.passes[0].row() if sample.passes else '-'})"
            + (" during the flood" if during else "")
        )
    return samples, flooded


def run(cluster: DevCluster, args: argparse.Namespace, command: str) -> Results:
    w = World.on(cluster)
    setup = set_up(w, args.workspaces, args.approvals, args.revokes)
    c = Controller(w)
    watcher = Watcher(w.admin, c.stop)
    watcher.start()
    provision_seconds = provision(w, c, watcher, args.workspaces)
    provisioning = list(c.recorder.passes)
    start_notebooks(w, setup)
    approvals = measure_approvals(w, c, watcher, setup)
    flood = Flood(w, sorted(setup.datasets)[0]) if args.flood else None
    revokes, flooded = measure_revokes(w, c, watcher, setup, flood)
    if flood is not None:
        flood.close()
    say("stopping the controller; taking an unchanged pass apart")
    c.halt()
    # Its watch threads (daemons) would otherwise warn once the platform stops.
    logging.getLogger("tre.controller").setLevel(logging.ERROR)
    keyed = KeyedAuditor(c.audit)
    keyed.known()  # load the keys outside the timed passes, as the running controller had
    breakdowns = [take_apart(w.controller, w.settings, KeyedAuditor(c.audit)) for _ in range(3)]
    steady: list[PassTiming] = []
    for _ in range(3):
        before = len(c.recorder.passes)
        loop.run_pass(w.controller, w.settings, dt.datetime.now(dt.UTC), keyed, s3=c.s3)
        steady += c.recorder.passes[before:]
    if c.errors:
        say(f"controller errors during the run: {len(c.errors)}; last: {c.errors[-1]}")
    return Results(
        args.workspaces,
        provision_seconds,
        setup.seconds,
        approvals,
        revokes,
        breakdowns,
        len(keyed.known()),
        command,
        steady,
        provisioning,
        flooded,
        (flood.filed, flood.refused, flood.failed) if flood else None,
    )


def datasets_for(request_name: str, datasets: dict[str, Dataset]) -> dict[str, Dataset]:
    i = int(request_name.split("-")[1])
    name = sorted(datasets)[i % len(datasets)]
    return {name: datasets[name]}


# --- report --------------------------------------------------------------------------------------


def _stats(samples: list[Sample]) -> tuple[float, float, float, float]:
    values = [s.seconds for s in samples]
    return (
        statistics.median(values),
        percentile(values, 99),
        min(values),
        max(values),
    )


def _median_pass(samples: list[Sample]) -> PassTiming | None:
    firsts = [s.passes[0] for s in samples if s.passes]
    if not firsts:
        return None
    return sorted(firsts, key=lambda p: p.wall)[len(firsts) // 2]


def _flood_rows(r: Results) -> list[str]:
    """(b) again, while one person floods the API server with filings (`--flood`)."""
    if not r.flooded_revokes or r.flood_counts is None:
        return []
    f50, f99, fmin, fmax = _stats(r.flooded_revokes)
    filed, refused, failed = r.flood_counts
    return [
        f"| (b) during one person's flood of filings | {len(r.flooded_revokes)} | {f50:.3f} "
        f"| {f99:.3f} | {fmin:.3f} | {fmax:.3f} |",
        "",
        f"The flood (`--flood`, every other revoke): {filed + refused + failed} filings by one "
        f"person while those revokes ran; {filed} admitted, {refused} refused by the API server "
        f"(open-request limit), {failed} failed otherwise.",
    ]


def render(r: Results) -> str:
    a50, a99, amin, amax = _stats(r.approvals)
    v50, v99, vmin, vmax = _stats(r.revokes)
    a_write = statistics.median(s.write_seconds for s in r.approvals)
    v_write = statistics.median(s.write_seconds for s in r.revokes)
    bd = sorted(r.breakdowns, key=lambda b: b.snapshot + b.inputs + b.plan)[len(r.breakdowns) // 2]
    steady = sorted(r.steady_passes, key=lambda p: p.wall)[len(r.steady_passes) // 2]
    ap = _median_pass(r.approvals)
    vp = _median_pass(r.revokes)
    met = "met" if a99 < TARGET_P99 else "**not met**"
    lines = [
        f"Measured {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC with {r.n} Ready workspaces "
        f"(+ {len(r.approvals)} made during (a)); {bd.objects} objects in the controller's "
        f"snapshot; {r.audit_keys} audit entries at the end. Timings from a shared 2-core VM.",
        "",
        f"Reproduce: `{r.command}`",
        "",
        "| | samples | p50 (s) | p99 (s) | min (s) | max (s) |",
        "|---|---:|---:|---:|---:|---:|",
        f"| (a) last approval -> Workspace Ready | {len(r.approvals)} | {a50:.3f} | {a99:.3f} "
        f"| {amin:.3f} | {amax:.3f} |",
        f"| (b) revoke -> notebook pod gone | {len(r.revokes)} | {v50:.3f} | {v99:.3f} "
        f"| {vmin:.3f} | {vmax:.3f} |",
        *_flood_rows(r),
        "",
        f"p99 is the nearest-rank 99th percentile. Of each latency, the decision's own write "
        f"took {a_write * 1000:.0f} ms (approvals, median) and {v_write * 1000:.0f} ms "
        "(revokes).",
        "",
        f"Target (a) p99 under {TARGET_P99:.0f} s: {met} ({a99:.2f} s).",
        "",
        f"Setup (filing and approving, impersonated): {r.setup_seconds:.0f} s. Provisioning the "
        f"{r.n} workspaces with the controller running (watch-driven, audit log signed and "
        f"anchored), until all were Ready: {r.provision_seconds:.0f} s. Its passes: "
        + "; ".join(p.row() for p in r.provisioning_passes)
        + ".",
        "",
        "Where a pass's time goes (wall time of the pass; plan and execute are summed over "
        "the 8 worker threads, so they can exceed the wall time):",
        "",
        "| pass | wall (s) | read_snapshot (s) | inputs fingerprint (s) | plan_project, summed "
        "(s) | execute, summed (s) | of which audit appends (s) | KeyedAuditor.known(), summed "
        "(s) | head publish (s) | writes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, p in (
        ("(a) the pass after an approval (median)", ap),
        ("(b) the pass after a revoke (median)", vp),
        ("unchanged pass (median of 3)", steady),
    ):
        if p is None:
            continue
        lines.append(
            f"| {label} | {p.wall:.2f} | {p.snapshot:.2f} | {p.inputs:.2f} | {p.plan:.2f} "
            f"| {p.execute:.2f} | {p.audit_append:.2f} | {p.known:.2f} | {p.flush:.2f} "
            f"| {p.writes} |"
        )
    lines += [
        "",
        f"The same unchanged pass taken apart single-threaded (controller stopped; median of "
        f"{len(r.breakdowns)}): read_snapshot {bd.snapshot:.2f} s; project_inputs for "
        f"{bd.projects} projects {bd.inputs:.2f} s; plan_project for every project "
        f"{bd.plan:.2f} s; KeyedAuditor.known() once per project {bd.known:.2f} s (after "
        f"its first call, which reads and checks every audit entry: {bd.load_keys:.2f} s for "
        f"{r.audit_keys} entries, once per controller start).",
        "",
        "Machine and versions:",
        "",
        *(f"- {k}: {v}" for k, v in machine_facts().items()),
    ]
    return "\n".join(lines)


WHAT = """What is measured (issue target: p99 under 1 s from the last approval to a Ready
workspace): the controller runs as it does in a cluster (`run_controller`, watch-driven,
leader-elected, as its own ServiceAccount, verifying datasets with its own S3 client,
writing the signed audit log and publishing its head), over N Ready workspaces. (a) With the
controller idle, the second approval of a pending project (sensitive data: two approvers) is
written as `tre request approve` writes it; timed from just before that request is sent
until the script's own watch sees the project's Workspace Ready. (b) With the controller
idle, one of two requests of a Ready project is revoked; timed until the script's watch sees
the revoked member's notebook pod (started by the hub's ServiceAccount) deleted, while the
workspace stays Ready (checked). Each pass of the controller is also timed in parts, by
wrapping the functions it calls (no change to production code)."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workspaces", type=int, default=1000, help="Ready workspaces (1000)")
    parser.add_argument("--approvals", type=int, default=50, help="approval samples (50)")
    parser.add_argument("--revokes", type=int, default=20, help="revoke samples (20)")
    parser.add_argument(
        "--flood",
        action="store_true",
        help="every other revoke runs while one person files access requests as fast as the "
        "API server answers (review 3, F20)",
    )
    parser.add_argument("--write-docs", action="store_true", help=f"update {DOCS.name}")
    args = parser.parse_args()
    if args.revokes > args.workspaces:
        parser.error("--revokes: at most --workspaces")
    command = ".venv/bin/python benchmarks/approval_latency.py " + " ".join(sys.argv[1:])
    with (
        tempfile.TemporaryDirectory(prefix="tre-latency-") as tmp,
        platform(Path(tmp)) as cluster,
    ):
        try:
            results = run(cluster, args, command)
        except TreError as exc:
            raise SystemExit(f"benchmark failed: {exc}") from exc
    section = render(results)
    print(section)
    if args.write_docs:
        update_docs_section(
            SECTION_START, SECTION_END, "## Approval and revoke latency", f"{WHAT}\n\n{section}"
        )


if __name__ == "__main__":
    main()
