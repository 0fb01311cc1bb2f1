"""`tre controller run`: the control loop around `reconcile_project`.

Each pass reads a snapshot (one list per kind), then reconciles every project. A pass starts
when a watched object changes (AccessRequests, Datasets, Workspaces, our NetworkPolicies),
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
import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from provisioner.controller.leader import LeaderElector
from provisioner.controller.reconcile import (
    Auditor,
    ReconcileResult,
    Snapshot,
    read_snapshot,
    reconcile_project,
)
from provisioner.errors import TreError
from provisioner.kube.api import Kube
from provisioner.kube.resources import ACCESS_REQUESTS, DATASETS, RESOURCES, WORKSPACES
from provisioner.models.settings import Settings
from provisioner.planning.names import LABEL_MANAGED_BY, MANAGED_BY

log = logging.getLogger("tre.controller")
NETWORK_POLICIES = RESOURCES[("networking.k8s.io/v1", "NetworkPolicy")]
# Projects reconciled at once. On a 2-core dev machine 8 keeps the API server busy without
# queueing; the client's connection pool (kube/client.py) holds at least this many connections.
DEFAULT_WORKERS = 8


@dataclass
class PassReport:
    results: list[ReconcileResult] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    next_wake: dt.datetime | None = None


def run_pass(
    kube: Kube,
    settings: Settings,
    now: dt.datetime,
    audit: Auditor | None = None,
    projects: set[str] | None = None,
    *,
    workers: int = DEFAULT_WORKERS,
) -> PassReport:
    """Reconcile every project (or `projects`) once, `workers` projects at a time.

    The report lists results and errors in project order, whatever order they finished in.
    """
    snapshot = read_snapshot(kube)
    names = sorted(projects or snapshot.projects())
    outcomes: list[ReconcileResult | TreError]
    if workers <= 1 or len(names) <= 1:
        outcomes = [_reconcile(kube, settings, p, snapshot, now, audit) for p in names]
    else:
        serial_audit = _SerialAuditor(audit) if audit is not None else None
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="reconcile") as pool:
            futures = [
                pool.submit(_reconcile, kube, settings, p, snapshot, now, serial_audit)
                for p in names
            ]
            try:
                outcomes = [f.result() for f in futures]
            except BaseException:
                # A bug (not a TreError) stops the pass, as it would in sequence.
                for f in futures:
                    f.cancel()
                raise
    report = PassReport()
    for project, outcome in zip(names, outcomes, strict=True):
        if isinstance(outcome, TreError):
            report.errors[project] = str(outcome)
            log.warning("project %s: %s", project, outcome)
            continue
        report.results.append(outcome)
        if outcome.requeue_at and (
            report.next_wake is None or outcome.requeue_at < report.next_wake
        ):
            report.next_wake = outcome.requeue_at
    return report


def _reconcile(
    kube: Kube,
    settings: Settings,
    project: str,
    snapshot: Snapshot,
    now: dt.datetime,
    audit: Auditor | None,
) -> ReconcileResult | TreError:
    """One project's result, or its error: errors stay with their project."""
    try:
        return reconcile_project(kube, settings, project, snapshot, now, audit)
    except TreError as exc:
        return exc


class _SerialAuditor:
    """Hands appends to the audit log one at a time: concurrent appends would only race for
    the next sequence number and retry."""

    def __init__(self, audit: Auditor) -> None:
        self._audit = audit
        self._lock = threading.Lock()

    def append(
        self, actor: str, action: str, subject: str, details: Mapping[str, Any] | None = None
    ) -> Any:
        with self._lock:
            return self._audit.append(actor, action, subject, details)


def _watch(
    kube: Kube,
    path: str,
    wake: threading.Event,
    stop: threading.Event,
    selector: str | None = None,
) -> None:
    """Set `wake` on every change of the collection at `path`; reconnect on errors.

    Each round lists one item to learn the collection's resourceVersion, then watches from
    there, so a reconnect does not replay every existing object as a fresh event.
    """
    query = [("labelSelector", selector)] if selector else []
    while not stop.is_set():
        try:
            listed = kube.request("GET", path, query=[*query, ("limit", "1")])
            version = listed["metadata"]["resourceVersion"]
            response = kube.api.call_api(
                path,
                "GET",
                query_params=[
                    *query,
                    ("watch", "1"),
                    ("resourceVersion", version),
                    ("timeoutSeconds", "60"),
                    ("allowWatchBookmarks", "false"),
                ],
                header_params={"Accept": "application/json"},
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=90,
            )
            raw = response[0] if isinstance(response, tuple) else response
            for line in raw:
                if line.strip():
                    wake.set()
                if stop.is_set():
                    return
        except Exception as exc:
            log.debug("watch %s restarting: %s", path, exc)
            stop.wait(2)


def run_controller(
    kube: Kube,
    settings: Settings,
    *,
    lease_namespace: str,
    audit: Auditor | None = None,
    stop: threading.Event | None = None,
    on_pass: Callable[[PassReport], None] | None = None,
    clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
) -> None:
    stop = stop or threading.Event()
    wake = threading.Event()
    elector = LeaderElector(kube, lease_namespace)
    watched = [
        (ACCESS_REQUESTS.path(), None),
        (DATASETS.path(), None),
        (WORKSPACES.path(), None),
        (NETWORK_POLICIES.path(), f"{LABEL_MANAGED_BY}={MANAGED_BY}"),
    ]
    for path, selector in watched:
        threading.Thread(
            target=_watch,
            args=(kube, path, wake, stop, selector),
            daemon=True,
            name=f"watch {path}",
        ).start()
    leading = False
    try:
        while not stop.is_set():
            if not elector.try_acquire():
                if leading:
                    log.error("lost the lease to %s; stopping work", elector.holder())
                leading = False
                stop.wait(elector.duration_seconds / 3)
                continue
            if not leading:
                log.info(
                    "acquired lease %s/%s as %s", lease_namespace, elector.name, elector.identity
                )
                leading = True
            wake.clear()
            started = time.monotonic()
            report = run_pass(kube, settings, clock(), audit)
            log.info(
                "pass: %d project(s), %d error(s) in %.2fs",
                len(report.results),
                len(report.errors),
                time.monotonic() - started,
            )
            if on_pass:
                on_pass(report)
            timeout = settings.resync_seconds
            if report.next_wake is not None:
                timeout = min(timeout, max(1.0, (report.next_wake - clock()).total_seconds()))
            if report.errors:
                timeout = min(timeout, 5.0)
            # Renew the lease well before it expires, even when nothing happens.
            deadline = time.monotonic() + timeout
            while not stop.is_set() and not wake.is_set() and time.monotonic() < deadline:
                wake.wait(min(elector.duration_seconds / 3, deadline - time.monotonic()))
                if not wake.is_set() and not elector.try_acquire():
                    break
            time.sleep(0.2)  # let a burst of events settle into one pass
    finally:
        elector.release()
