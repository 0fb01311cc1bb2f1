"""`tre controller run`: the control loop around `reconcile_project`.

Each pass reads a snapshot (one list per kind) and reconciles every project. Datasets are
verified beside it, by a `DatasetVerifier` thread (`controller.datasets`) that writes their
statuses: a pass plans on the manifests recorded so far and never waits for S3, so a listing
of millions of objects does not delay a revoke or an expiry. A pass starts
when a watched object changes (AccessRequests, Datasets, Workspaces, every NetworkPolicy and
RoleBinding),
when a request reaches a start or end date, or every `settings.resync_seconds` to repair drift
that no watch reports. Only the holder of the Lease acts.

Errors in one project do not stop the others: a TemporaryError is retried with back-off on the
next pass, a PermanentError is reported on that project and retried only when something changes.

Projects are reconciled `workers` at a time. Within a project the order of writes is the one
`reconcile_project` gives (confinement before the hub's RoleBinding); projects are independent
of each other, so reconciling several at once changes nothing but the wall time. Nearly all of
a reconcile is waiting for the API server, so threads suffice despite the GIL, and the server
works on several requests at once (benchmarks/provision_workspaces.py, docs/performance.md).
The snapshot is shared by every worker and is only read.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from collections.abc import Set as AbstractSet
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from provisioner.controller.datasets import DatasetVerifier, verify_datasets
from provisioner.controller.leader import LeaderElector
from provisioner.controller.reconcile import (
    Auditor,
    ReconcileResult,
    Snapshot,
    publish_open_requests,
    read_project_snapshot,
    read_snapshot,
    reconcile_project,
)
from provisioner.errors import PermanentError, TreError
from provisioner.kube.api import Kube
from provisioner.kube.resources import (
    ACCESS_REQUESTS,
    BROWSER_ACTIVITIES,
    DATASETS,
    EXPORT_REQUESTS,
    NETWORK_POLICIES,
    PODS,
    ROLE_BINDINGS,
    WORKSPACES,
    Resource,
)
from provisioner.models.settings import Settings
from provisioner.planning.datasets import next_verification_at
from provisioner.planning.names import NAMESPACE_PREFIX
from provisioner.planning.project import dataset_audit_events

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger("tre.controller")
# Projects reconciled at once. On a 2-core dev machine 8 keeps the API server busy without
# queueing; the client's connection pool (kube/client.py) holds at least this many connections.
DEFAULT_WORKERS = 8


@dataclass
class PassReport:
    results: list[ReconcileResult] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    next_wake: dt.datetime | None = None
    # objects the models refuse ("AccessRequest/x" -> why): left out of the pass
    unparsable: dict[str, str] = field(default_factory=dict)
    # projects not reconciled this pass: waiting out a back-off or for their inputs to change
    held: dict[str, str] = field(default_factory=dict)


@dataclass
class _Failure:
    permanent: bool
    attempts: int
    not_before: dt.datetime
    inputs: str  # fingerprint of the project's inputs when it failed
    error: str


class ErrorMemory:
    """Per project, the last failure, as kopf treats handler errors.

    A temporary error (API server unavailable, conflict, audit log unreachable) is retried
    with exponential back-off per project (1 s, 2 s, 4 s ... at most `max_backoff`); a
    permanent one (input the rules refuse) is retried only once that project's inputs change.
    Other projects are never held up by either.
    """

    def __init__(self, max_backoff: float = 300.0) -> None:
        self._failures: dict[str, _Failure] = {}
        self._max_backoff = max_backoff

    def held(self, project: str, inputs: Callable[[], str], now: dt.datetime) -> str | None:
        """Why `project` waits, or None. `inputs` gives its fingerprint now; it is computed
        only for a project that failed before (most never did)."""
        failure = self._failures.get(project)
        if failure is None or failure.inputs != inputs():
            return None
        if failure.permanent:
            return f"waiting for its inputs to change after: {failure.error}"
        if now < failure.not_before:
            return f"retrying at {failure.not_before:%H:%M:%S} after: {failure.error}"
        return None

    def failed(self, project: str, error: TreError, inputs: str, now: dt.datetime) -> None:
        previous = self._failures.get(project)
        attempts = previous.attempts + 1 if previous else 1
        delay = min(self._max_backoff, 2.0 ** (attempts - 1))
        self._failures[project] = _Failure(
            permanent=isinstance(error, PermanentError),
            attempts=attempts,
            not_before=now + dt.timedelta(seconds=delay),
            inputs=inputs,
            error=str(error),
        )

    def succeeded(self, project: str) -> None:
        self._failures.pop(project, None)

    def next_retry(self) -> dt.datetime | None:
        times = [f.not_before for f in self._failures.values() if not f.permanent]
        return min(times, default=None)


def fingerprint(snapshot: Snapshot, project: str, now: dt.datetime) -> str:
    """`project_inputs` and the day: a project held for a permanent error is still looked at
    daily, so that nothing can keep it from expiring."""
    return project_inputs(snapshot, project) + now.date().isoformat()


def project_inputs(snapshot: Snapshot, project: str) -> str:
    """A fingerprint of everything a project's plan reads, to tell when it changed."""
    requests = [r for r in snapshot.requests if r.spec.project == project]
    datasets = sorted({d for r in requests for d in r.spec.datasets})
    payload = {
        "requests": [r.model_dump(mode="json") for r in requests],
        "datasets": [
            snapshot.datasets[d].model_dump(mode="json") for d in datasets if d in snapshot.datasets
        ],
        "workspace": snapshot.workspaces.get(project),
        "owned": sorted(
            o["metadata"].get("resourceVersion", "") for o in snapshot.owned_by(project).values()
        ),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def run_pass(
    kube: Kube,
    settings: Settings,
    now: dt.datetime,
    audit: Auditor | None = None,
    *,
    workers: int = DEFAULT_WORKERS,
    errors: ErrorMemory | None = None,
    s3: S3Client | None = None,
) -> PassReport:
    """Reconcile every project once, `workers` projects at a time.

    With `s3`, the datasets due are verified first, in this call (`tre controller run
    --once`); the running controller passes none and verifies in its `DatasetVerifier`.
    The report lists results and errors in project order, whatever order they finished in.
    """
    snapshot = read_snapshot(kube)
    report = PassReport()
    keyed = audit if audit is None or isinstance(audit, KeyedAuditor) else KeyedAuditor(audit)
    snapshot = _datasets_first(kube, settings, snapshot, now, keyed, s3, report)
    for bad in snapshot.unparsable:
        report.unparsable[f"{bad.kind}/{bad.name}"] = bad.error
        log.warning(
            "%s %s is invalid and left out (%s); fix or delete it", bad.kind, bad.name, bad.error
        )
    memory = errors or ErrorMemory()
    # Requests deleted since they were published no longer count against their requester.
    filed = {r.name for r in snapshot.requests} | {
        u.name for u in snapshot.unparsable if u.kind == "AccessRequest"
    }
    try:
        publish_open_requests(
            kube, {name: None for name in snapshot.open_requests if name not in filed}
        )
    except TreError as exc:
        report.errors["open-requests"] = str(exc)
    names = []
    for project in sorted(snapshot.projects()):
        why = memory.held(project, functools.partial(fingerprint, snapshot, project, now), now)
        if why is None:
            names.append(project)
        else:
            report.held[project] = why
    outcomes: list[ReconcileResult | TreError]
    if workers <= 1 or len(names) <= 1:
        outcomes = [_reconcile(kube, settings, p, snapshot, now, keyed) for p in names]
    else:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="reconcile") as pool:
            futures = [
                pool.submit(_reconcile, kube, settings, p, snapshot, now, keyed) for p in names
            ]
            try:
                outcomes = [f.result() for f in futures]
            except BaseException:
                # A bug (not a TreError) stops the pass, as it would in sequence.
                for f in futures:
                    f.cancel()
                raise
    for project, outcome in zip(names, outcomes, strict=True):
        if isinstance(outcome, TreError):
            memory.failed(project, outcome, fingerprint(snapshot, project, now), now)
            report.errors[project] = str(outcome)
            log.warning("project %s: %s", project, outcome)
            continue
        memory.succeeded(project)
        report.results.append(outcome)
        if outcome.conflict:
            log.warning("project %s: %s", project, outcome.conflict)
        if outcome.requeue_at and (
            report.next_wake is None or outcome.requeue_at < report.next_wake
        ):
            report.next_wake = outcome.requeue_at
    if keyed is not None:
        try:
            keyed.flush()
        except TreError as exc:
            report.errors["audit"] = f"audit head not published: {exc}"
            log.warning("audit head not published: %s", exc)
    retry = memory.next_retry()
    if retry is not None and (report.next_wake is None or retry < report.next_wake):
        report.next_wake = retry
    return report


def _datasets_first(
    kube: Kube,
    settings: Settings,
    snapshot: Snapshot,
    now: dt.datetime,
    keyed: KeyedAuditor | None,
    s3: S3Client | None,
    report: PassReport,
) -> Snapshot:
    """Verify the datasets that are due (with `s3` only) and audit recorded manifests; the
    snapshot to plan on.

    Manifests come first: approvals and mounts are judged against what the data is now."""
    if s3 is not None:
        checked = verify_datasets(kube, s3, snapshot.datasets.values(), now, settings, audit=keyed)
        for failed in (v for v in checked if not v.ok):
            report.unparsable[f"Dataset/{failed.name}"] = f"not verified: {failed.error}"
            log.warning("dataset %s not verified: %s", failed.name, failed.error)
        for warned in (v for v in checked if v.warning):
            log.warning("dataset %s: %s", warned.name, warned.warning)
        if any(v.sha256 is not None for v in checked):
            snapshot = read_snapshot(kube)
        report.next_wake = next_verification_at(
            snapshot.datasets.values(), dt.timedelta(seconds=settings.dataset_verify_seconds)
        )
    if keyed is not None:
        for event in dataset_audit_events(snapshot.datasets, keyed.known()):
            try:
                keyed.append(event.actor, event.action, event.subject, event.details, key=event.key)
            except TreError as exc:
                log.warning("audit entry %s not written, retried next pass: %s", event.key, exc)
                break
    return snapshot


def _reconcile(
    kube: Kube,
    settings: Settings,
    project: str,
    snapshot: Snapshot,
    now: dt.datetime,
    audit: KeyedAuditor | None,
) -> ReconcileResult | TreError:
    """One project's result, or its error: errors stay with their project."""
    try:
        return reconcile_project(
            kube,
            settings,
            project,
            snapshot,
            now,
            audit,
            audit.known() if audit is not None else None,
        )
    except TreError as exc:
        return exc


class KeyedAuditor:
    """The audit log with the keys it holds, read once and then kept current.

    Appends go one at a time (concurrent appends would only race for the next sequence
    number); each project's plan sees the keys already written, so it plans only the events
    still missing.
    """

    def __init__(self, audit: Auditor) -> None:
        # An anchored log publishes its head after each append; within a pass we append to
        # the log beneath it and publish once, in `flush` (one ConfigMap write per pass).
        self._anchored = audit
        self._audit: Auditor = getattr(audit, "log", audit)
        self._lock = threading.Lock()
        self._keys: set[str] | None = None
        self._dirty = False

    def flush(self) -> None:
        """Publish the chain head once after a pass's appends, if the log publishes one."""
        publish = getattr(self._anchored, "publish", None)
        if self._dirty and publish is not None:
            publish()
        self._dirty = False

    def known(self) -> AbstractSet[str]:
        """The keys in the log, as a live read-only view: copying thousands of keys for every
        project of a pass would make a pass grow with the log times the projects."""
        with self._lock:
            if self._keys is None:
                self._keys = set(self._audit.keys())
            return self._keys

    def keys(self) -> set[str]:
        return set(self.known())

    def append(
        self,
        actor: str,
        action: str,
        subject: str,
        details: Mapping[str, Any] | None = None,
        *,
        key: str,
    ) -> Any:
        with self._lock:
            if self._keys is not None and key in self._keys:
                return None
            entry = self._audit.append(actor, action, subject, details, key=key)
            self._dirty = True
            if self._keys is not None:
                self._keys.add(key)
            return entry


class Dirty:
    """What the watches say needs a look: some projects, or everything (a Dataset changed, or
    a watch reconnected and may have missed events). Thread-safe; `event` wakes the loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._projects: set[str] = set()
        self._everything = False
        self.event = threading.Event()

    def projects(self, names: set[str]) -> None:
        if names:
            with self._lock:
                self._projects |= names
            self.event.set()

    def everything(self) -> None:
        with self._lock:
            self._everything = True
        self.event.set()

    def take(self) -> tuple[bool, set[str]]:
        with self._lock:
            everything, projects = self._everything, self._projects
            self._everything, self._projects = False, set()
            self.event.clear()
        return everything, projects


def projects_of_event(kind: str, obj: Mapping[str, Any]) -> set[str] | None:
    """The projects a watch event concerns; None: possibly any (look at everything)."""
    meta = obj.get("metadata") or {}
    if kind == "AccessRequest":
        project = (obj.get("spec") or {}).get("project")
        return {project} if isinstance(project, str) else None
    if kind == "Workspace":
        return {meta["name"]} if "name" in meta else None
    if kind in ("NetworkPolicy", "RoleBinding", "ExportRequest", "Pod", "BrowserActivity"):
        namespace = str(meta.get("namespace", ""))
        if namespace.startswith(NAMESPACE_PREFIX):
            return {namespace[len(NAMESPACE_PREFIX) :]}
        return set()  # not a project namespace
    return None  # a Dataset may concern any project that names it


def _watch(
    kube: Kube,
    resource: Resource,
    dirty: Dirty,
    stop: threading.Event,
) -> None:
    """Report every change of `resource` to `dirty`, by project; reconnect on errors.

    Each round lists one item to learn the collection's resourceVersion, then watches from
    there, so a reconnect does not replay every existing object as a fresh event; what
    happened while it was away is caught by looking at everything once.
    """
    path = resource.path()
    first = True
    while not stop.is_set():
        try:
            listed = kube.request("GET", path, query=[("limit", "1")])
            version = listed["metadata"]["resourceVersion"]
            if not first:
                dirty.everything()
            first = False
            for event in kube.watch(resource, resource_version=version):
                concerned = projects_of_event(resource.kind, event.get("object") or {})
                if concerned is None:
                    dirty.everything()
                else:
                    dirty.projects(concerned)
                if stop.is_set():
                    return
        except Exception as exc:
            # An operator must see a watch that keeps failing: the controller then only
            # acts at its resyncs.
            log.warning("watch %s failed, restarting in 2 s: %s", path, exc)
            stop.wait(2)


def run_projects(
    kube: Kube,
    settings: Settings,
    projects: set[str],
    now: dt.datetime,
    audit: Auditor | None = None,
    *,
    workers: int = DEFAULT_WORKERS,
    errors: ErrorMemory | None = None,
) -> PassReport:
    """Reconcile only `projects`, each from a snapshot of its own (read_project_snapshot):
    what a watch event triggers, at a cost that does not grow with the number of projects."""
    keyed = audit if audit is None or isinstance(audit, KeyedAuditor) else KeyedAuditor(audit)
    memory = errors or ErrorMemory()
    names = sorted(projects)

    def one(project: str) -> tuple[ReconcileResult | TreError, str | None]:
        try:
            snapshot = read_project_snapshot(kube, project)
        except TreError as exc:
            return exc, None
        if why := memory.held(project, lambda: fingerprint(snapshot, project, now), now):
            return PermanentError(why), None
        outcome = _reconcile(kube, settings, project, snapshot, now, keyed)
        failed = isinstance(outcome, TreError)
        return outcome, fingerprint(snapshot, project, now) if failed else None

    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="reconcile") as pool:
        outcomes = list(pool.map(one, names))
    report = PassReport()
    for project, (outcome, inputs) in zip(names, outcomes, strict=True):
        if isinstance(outcome, TreError):
            if inputs is not None:
                memory.failed(project, outcome, inputs, now)
            report.errors[project] = str(outcome)
            log.warning("project %s: %s", project, outcome)
            continue
        memory.succeeded(project)
        report.results.append(outcome)
    if keyed is not None:
        try:
            keyed.flush()
        except TreError as exc:
            report.errors["audit"] = f"audit head not published: {exc}"
    return report


# Every NetworkPolicy and RoleBinding, not only ours: one added by hand in a project namespace
# is removed at once rather than at the next resync. Pods: a notebook's start and stop reach
# the audit log when they happen, not at the next resync; BrowserActivities: what reached a
# browser, likewise. The controller's ClusterRole must
# allow `watch` on each (a refused watch is retried, and every reconnect is a full pass).
WATCHED: Final = (
    ACCESS_REQUESTS,
    DATASETS,
    WORKSPACES,
    EXPORT_REQUESTS,
    BROWSER_ACTIVITIES,
    NETWORK_POLICIES,
    ROLE_BINDINGS,
    PODS,
)


def run_controller(  # noqa: PLR0915 - the one loop: lease, verifier, rounds and wake-ups
    kube: Kube,
    settings: Settings,
    *,
    lease_namespace: str,
    audit: Auditor | None = None,
    s3: S3Client | None = None,
    stop: threading.Event | None = None,
    on_pass: Callable[[PassReport], None] | None = None,
    clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
) -> None:
    """Lead, then: a full pass at start, every `settings.resync_seconds`, at the next date
    any project needs looking at, and whenever a watch may have missed something; in between,
    only the projects the watch events name, each from its own small snapshot.

    With `s3`, a `DatasetVerifier` verifies the datasets in its own thread while this replica
    leads; each full pass (a Dataset changed, or the resync) wakes it."""
    stop = stop or threading.Event()
    dirty = Dirty()
    elector = LeaderElector(kube, lease_namespace)
    keyed = KeyedAuditor(audit) if audit is not None else None
    memory = ErrorMemory()
    verifier = DatasetVerifier(kube, s3, settings, audit=keyed, clock=clock)
    verifier.start()
    for resource in WATCHED:
        threading.Thread(
            target=_watch,
            args=(kube, resource, dirty, stop),
            daemon=True,
            name=f"watch {resource.plural}",
        ).start()
    leading = False
    full_at = time.monotonic()  # the first pass looks at everything
    try:
        while not stop.is_set():
            if not elector.try_acquire():
                if leading:
                    log.error("lost the lease to %s; stopping work", elector.holder())
                leading = False
                verifier.lead(False)
                full_at = time.monotonic()  # whoever led meanwhile: look at everything
                stop.wait(elector.duration_seconds / 3)
                continue
            if not leading:
                log.info(
                    "acquired lease %s/%s as %s", lease_namespace, elector.name, elector.identity
                )
                leading = True
                verifier.lead(True)
            everything, projects = dirty.take()
            started = time.monotonic()
            if everything or started >= full_at:
                report = run_pass(kube, settings, clock(), keyed, errors=memory)
                verifier.wake()
                timeout = settings.resync_seconds
                if report.next_wake is not None:
                    until = (report.next_wake - clock()).total_seconds()
                    timeout = min(timeout, max(1.0, until))
                full_at = started + timeout
                what = "pass"
            else:
                report = run_projects(kube, settings, projects, clock(), keyed, errors=memory)
                what = f"{len(projects)} project(s) on watch events"
                retry = memory.next_retry()
                if retry is not None:  # a project that failed is retried by a full pass
                    until = max(0.5, (retry - clock()).total_seconds())
                    full_at = min(full_at, started + until)
            log.info(
                "%s: %d reconciled, %d error(s) in %.2fs",
                what,
                len(report.results),
                len(report.errors),
                time.monotonic() - started,
            )
            if on_pass:
                on_pass(report)
            # Renew the lease well before it expires, even when nothing happens.
            while not stop.is_set() and not dirty.event.is_set() and time.monotonic() < full_at:
                dirty.event.wait(min(elector.duration_seconds / 3, full_at - time.monotonic()))
                if not dirty.event.is_set() and not elector.try_acquire():
                    break
            time.sleep(0.05)  # let a burst of events settle into one round
    finally:
        verifier.close()  # before the lease goes: nothing is written after it
        elector.release()
