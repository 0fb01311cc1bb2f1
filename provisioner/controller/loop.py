"""`tre controller run`: the control loop around `reconcile_project`.

Each pass reads a snapshot (one list per kind), then reconciles every project. A pass starts
when a watched object changes (AccessRequests, Datasets, Workspaces, our NetworkPolicies),
when a request reaches a start or end date, or every `settings.resync_seconds` to repair drift
that no watch reports. Only the holder of the Lease acts.

Errors in one project do not stop the others: a TemporaryError is retried with back-off on the
next pass, a PermanentError is reported on that project and retried only when something changes.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from provisioner.controller.leader import LeaderElector
from provisioner.controller.reconcile import (
    Auditor,
    ReconcileResult,
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
) -> PassReport:
    """Reconcile every project (or `projects`) once."""
    snapshot = read_snapshot(kube)
    report = PassReport()
    for project in sorted(projects or snapshot.projects()):
        try:
            result = reconcile_project(kube, settings, project, snapshot, now, audit)
        except TreError as exc:
            report.errors[project] = str(exc)
            log.warning("project %s: %s", project, exc)
            continue
        report.results.append(result)
        if result.requeue_at and (report.next_wake is None or result.requeue_at < report.next_wake):
            report.next_wake = result.requeue_at
    return report


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
