"""Reconcile one project: read the world, plan with pure functions, execute the plan.

Level-triggered and idempotent: every call recomputes the desired state from the current
AccessRequests and Datasets (`provisioner.planning.project.plan_project`), whatever happened
before, and this module only carries out the plan's writes in the plan's order. A reconcile
killed half-way leaves only objects that a later call would also create (the hub RoleBinding
is written last), and the next call completes it or prunes what is no longer wanted. An
unchanged project sends no write at all. The controller's finalizer on requests and exports
is set and lifted last, after the pass's audit entries: a pass that dies before lifts it on
the next one, and the entries it wrote are not written again (their keys are in the log).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from pydantic import ValidationError

from provisioner.errors import NotFoundError, TemporaryError, TreError
from provisioner.kube.api import Kube, Manifest
from provisioner.kube.resources import (
    ACCESS_REQUESTS,
    BROWSER_ACTIVITIES,
    CLUSTER_ROLE_BINDINGS,
    CLUSTER_ROLES,
    CONFIG_MAPS,
    DATASETS,
    EXPORT_REQUESTS,
    NAMESPACES,
    NETWORK_POLICIES,
    OWNED_KINDS,
    PODS,
    RESOURCES,
    ROLE_BINDINGS,
    WORKSPACES,
)
from provisioner.models.resources import (
    AccessRequest,
    BrowserActivity,
    Dataset,
    ExportRequest,
    WorkspacePhase,
)
from provisioner.models.settings import Settings
from provisioner.planning.admission import open_requests_configmap
from provisioner.planning.names import (
    LABEL_MANAGED_BY,
    LABEL_PROJECT,
    MANAGED_BY,
    NAMESPACE_PREFIX,
    OPEN_REQUESTS_CONFIGMAP,
    SYSTEM_NAMESPACE,
)
from provisioner.planning.project import (
    AuditEvent,
    ObjectChange,
    ProjectPlan,
    Snapshot,
    Unparsable,
    condition,
    object_key,
    plan_project,
    workspace_grants_event,
)

log = logging.getLogger("tre.controller")
_MANAGED = f"{LABEL_MANAGED_BY}={MANAGED_BY}"

__all__ = [
    "Auditor",
    "ReconcileResult",
    "Snapshot",
    "read_project_snapshot",
    "read_snapshot",
    "reconcile_project",
]


class Auditor(Protocol):
    """The audit log as the controller uses it: idempotent appends by key."""

    def append(
        self,
        actor: str,
        action: str,
        subject: str,
        details: Mapping[str, Any] | None = None,
        *,
        key: str,
    ) -> Any: ...

    def keys(self) -> set[str]: ...


def read_snapshot(kube: Kube) -> Snapshot:
    """One list per kind for the whole cluster: cheap enough for hundreds of projects.

    Custom resources are parsed one at a time: one the models refuse is reported in
    `Snapshot.unparsable` and left out (an AccessRequest then counts as not active, a
    Dataset as missing, so the requests naming it stay Pending); it never stops the pass.
    """
    unparsable: list[Unparsable] = []
    requests = parse_each(kube.list(ACCESS_REQUESTS), AccessRequest, unparsable)
    datasets = {d.name: d for d in parse_each(kube.list(DATASETS), Dataset, unparsable)}
    workspaces = {o["metadata"]["name"]: o for o in kube.list(WORKSPACES)}
    owned: dict[tuple[str, str, str, str], Manifest] = {}
    for resource in OWNED_KINDS:
        if resource in (NETWORK_POLICIES, ROLE_BINDINGS, NAMESPACES):
            continue  # listed whole below
        for obj in kube.list(resource, selector=_MANAGED):
            owned[object_key(obj)] = obj
    namespaces = {
        o["metadata"]["name"]: o
        for o in kube.list(NAMESPACES)
        if o["metadata"]["name"].startswith(NAMESPACE_PREFIX)
    }
    for obj in namespaces.values():
        if _is_ours(obj):
            owned[object_key(obj)] = obj
    # Every NetworkPolicy and RoleBinding in a project namespace, not only ours: one that the
    # controller did not make could open the network or grant rights, so it is pruned.
    foreign: list[Manifest] = []
    for resource in (NETWORK_POLICIES, ROLE_BINDINGS):
        for obj in kube.list(resource):
            if obj["metadata"].get("namespace") not in namespaces:
                continue
            if _is_ours(obj):
                owned[object_key(obj)] = obj
            else:
                foreign.append(obj)
    pods = [p for p in kube.list(PODS) if p["metadata"].get("namespace") in namespaces]
    exports = parse_each(
        [e for e in kube.list(EXPORT_REQUESTS) if e["metadata"].get("namespace") in namespaces],
        ExportRequest,
        unparsable,
    )
    browser = parse_each(
        [a for a in kube.list(BROWSER_ACTIVITIES) if a["metadata"].get("namespace") in namespaces],
        BrowserActivity,
        unparsable,
    )
    return Snapshot(
        requests,
        datasets,
        workspaces,
        owned,
        namespaces=namespaces,
        foreign=foreign,
        pods=pods,
        unparsable=unparsable,
        exports=exports,
        browser=browser,
        grants=_read_grants(kube, f"{_MANAGED},{LABEL_PROJECT}"),
        open_requests=read_open_requests(kube),
    )


def read_project_snapshot(kube: Kube, project: str) -> Snapshot:
    """What `read_snapshot` would hold for one project, read with about a dozen requests
    whatever the number of projects: its requests (a field selector on spec.project), the
    datasets they name, its Workspace and namespace, and what is in the namespace.

    The watch-driven path: an approval or a revoke is acted on without listing the world.
    """
    unparsable: list[Unparsable] = []
    listed = kube.list(ACCESS_REQUESTS, fields=f"spec.project={project}")
    requests = parse_each(listed, AccessRequest, unparsable)
    names = sorted({name for r in requests for name in r.spec.datasets})
    found = [obj for name in names if (obj := kube.get(DATASETS, name)) is not None]
    datasets = {d.name: d for d in parse_each(found, Dataset, unparsable)}
    workspace = kube.get(WORKSPACES, project)
    namespace_name_ = f"{NAMESPACE_PREFIX}{project}"
    namespace = kube.get(NAMESPACES, namespace_name_)
    owned: dict[tuple[str, str, str, str], Manifest] = {}
    foreign: list[Manifest] = []
    pods: list[Manifest] = []
    exports: list[ExportRequest] = []
    browser: list[BrowserActivity] = []
    if namespace is not None:
        if _is_ours(namespace):
            owned[object_key(namespace)] = namespace
        for resource in OWNED_KINDS:
            if not resource.namespaced:
                continue
            whole = resource in (NETWORK_POLICIES, ROLE_BINDINGS)
            for obj in kube.list(
                resource, namespace=namespace_name_, selector=None if whole else _MANAGED
            ):
                if _is_ours(obj):
                    owned[object_key(obj)] = obj
                elif whole:
                    foreign.append(obj)
        pods = kube.list(PODS, namespace=namespace_name_)
        listed_exports = kube.list(EXPORT_REQUESTS, namespace=namespace_name_)
        exports = parse_each(listed_exports, ExportRequest, unparsable)
        listed_browser = kube.list(BROWSER_ACTIVITIES, namespace=namespace_name_)
        browser = parse_each(listed_browser, BrowserActivity, unparsable)
    for resource in OWNED_KINDS:
        if not resource.namespaced and resource is not NAMESPACES:
            selector = f"{_MANAGED},{LABEL_PROJECT}={project}"
            for obj in kube.list(resource, selector=selector):
                owned[object_key(obj)] = obj
    return Snapshot(
        requests,
        datasets,
        {project: workspace} if workspace is not None else {},
        owned,
        namespaces={namespace_name_: namespace} if namespace is not None else {},
        foreign=foreign,
        pods=pods,
        unparsable=unparsable,
        exports=exports,
        browser=browser,
        grants=_read_grants(kube, f"{_MANAGED},{LABEL_PROJECT}={project}"),
        open_requests=read_open_requests(kube),
    )


def _read_grants(kube: Kube, selector: str) -> dict[tuple[str, str, str, str], Manifest]:
    """The people's read grants (planning/read_grants.py) the selector picks, by key."""
    return {
        object_key(obj): obj
        for resource in (CLUSTER_ROLES, CLUSTER_ROLE_BINDINGS)
        for obj in kube.list(resource, selector=selector)
    }


def read_open_requests(kube: Kube) -> dict[str, str]:
    """The published open requests (request name -> requester); none when not published."""
    obj = kube.get(CONFIG_MAPS, OPEN_REQUESTS_CONFIGMAP, SYSTEM_NAMESPACE)
    return dict((obj or {}).get("data") or {})


def publish_open_requests(kube: Kube, changes: Mapping[str, str | None]) -> None:
    """Apply `changes` (None removes a request) to the published open requests, as a merge
    patch, so that projects reconciled at once never overwrite each other's entries; the
    ConfigMap is made when missing (an operator deleted it: every filing is refused then)."""
    if not changes:
        return
    path = CONFIG_MAPS.path(SYSTEM_NAMESPACE, OPEN_REQUESTS_CONFIGMAP)
    try:
        kube.request(
            "PATCH",
            path,
            query=[("fieldManager", kube.field_manager)],
            body={"data": dict(changes)},
            content_type="application/merge-patch+json",
            what=f"publish the open requests in {SYSTEM_NAMESPACE}/{OPEN_REQUESTS_CONFIGMAP}",
        )
    except NotFoundError:
        configmap = open_requests_configmap()
        configmap["data"] = {k: v for k, v in changes.items() if v is not None}
        kube.create(configmap)


def _is_ours(obj: Manifest) -> bool:
    labels = obj["metadata"].get("labels") or {}
    return labels.get(LABEL_MANAGED_BY) == MANAGED_BY and LABEL_PROJECT in labels


_Parsed = TypeVar("_Parsed", AccessRequest, BrowserActivity, Dataset, ExportRequest)


def parse_each(
    objects: list[Manifest], model: type[_Parsed], unparsable: list[Unparsable]
) -> list[_Parsed]:
    parsed: list[_Parsed] = []
    for obj in objects:
        try:
            parsed.append(model.from_object(obj))
        except (ValidationError, KeyError, TypeError) as exc:
            name = obj.get("metadata", {}).get("name", "?")
            unparsable.append(Unparsable(model.kind, name, _one_line(exc)))
    return parsed


def _one_line(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
    return str(exc)


@dataclass
class ReconcileResult:
    project: str
    phase: WorkspacePhase | None
    applied: list[str] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    audited: int = 0
    status_writes: int = 0
    finalizers: list[str] = field(default_factory=list)
    requeue_at: dt.datetime | None = None
    conflict: str | None = None


def reconcile_project(
    kube: Kube,
    settings: Settings,
    project: str,
    snapshot: Snapshot,
    now: dt.datetime,
    audit: Auditor | None = None,
    audited: AbstractSet[str] | None = None,
) -> ReconcileResult:
    """Plan `project` and execute the plan. `audited`: keys already in the audit log
    (default: `audit.keys()`)."""
    if audit is not None and audited is None:
        audited = frozenset(audit.keys())
    plan = plan_project(settings, project, snapshot, now, audited if audit else None)
    return execute(kube, plan, audit)


def execute(kube: Kube, plan: ProjectPlan, audit: Auditor | None) -> ReconcileResult:
    """Carry out `plan`'s writes in order (see `provisioner.planning.project`)."""
    result = ReconcileResult(plan.project, plan.phase, conflict=plan.conflict)
    # First: a filer reads their request back as soon as the controller has seen it.
    for change in plan.read_grants:
        if change.action == "prune":
            _delete(kube, change)
            result.pruned.append(change.name)
        else:
            _write(kube, change)
            result.applied.append(change.name)
    for write in plan.request_statuses:
        kube.patch_status(ACCESS_REQUESTS, write.name, write.status)
        result.status_writes += 1
    publish_open_requests(kube, plan.open_requests)
    for export in plan.export_statuses:
        kube.patch_status(EXPORT_REQUESTS, export.name, export.status, export.namespace)
        result.status_writes += 1
    applied_ws: Manifest | None = None
    if plan.bootstrap is not None:
        applied_ws = kube.apply(plan.bootstrap)
        result.applied.append(f"Workspace/{plan.project}")
    namespace_uid: str | None = None
    for change in plan.writes:
        live = _write(kube, change)
        if change.key[1] == "Namespace" and change.action == "create":
            namespace_uid = live["metadata"].get("uid")
        result.applied.append(change.name)
    for stop in plan.pod_stops:
        if kube.delete(PODS, stop.name, stop.namespace):
            log.info("project %s: stopped pod %s (%s)", plan.project, stop.name, stop.why)
        result.stopped.append(f"{stop.name}: {stop.why}")
    for change in plan.prunes:
        _delete(kube, change)
        result.pruned.append(change.name)
    if plan.workspace_apply is not None:
        applied_ws = kube.apply(plan.workspace_apply)
        result.applied.append(f"Workspace/{plan.project}")
    status = plan.workspace_status
    if namespace_uid is not None:
        status = {**(status or {}), "namespaceUid": namespace_uid}
    if status is not None:
        kube.patch_status(WORKSPACES, plan.project, status)
        result.status_writes += 1
    events = list(plan.audit)
    if applied_ws is not None and audit is not None:
        events.append(workspace_grants_event(applied_ws))
    try:
        result.audited = _append(audit, plan.project, events)
    except TemporaryError as exc:
        if plan.desired_status is not None:
            # Visible where operators look: the Workspace says its audit trail is behind.
            failed = condition("AuditLogged", False, "AuditWriteFailed", str(exc), now(), [])
            conditions = [*plan.desired_status.get("conditions", []), failed]
            kube.patch_status(WORKSPACES, plan.project, {"conditions": conditions})
        raise
    _let_audited_go(kube, plan, result)
    result.requeue_at = plan.requeue_at
    return result


def _let_audited_go(kube: Kube, plan: ProjectPlan, result: ReconcileResult) -> None:
    """Only now, with every record of them in the log, may requests and exports go (their
    finalizers lifted), and the browser gates' batches (their counts in the status too)."""
    for held in plan.finalizers:
        resource = ACCESS_REQUESTS if held.kind == AccessRequest.kind else EXPORT_REQUESTS
        if kube.patch_finalizers(resource, held.name, held.namespace or None, held.old, held.new):
            result.finalizers.append(f"{held.kind}/{held.name}: {held.why}")
    for done in plan.browser_done:
        kube.delete(BROWSER_ACTIVITIES, done.name, done.namespace)


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _write(kube: Kube, change: ObjectChange) -> Manifest:
    assert change.manifest is not None
    if change.key[1] == "Namespace" and change.action == "create":
        # Created, never applied: an apply would silently adopt a namespace someone else made.
        return kube.create(change.manifest)
    if change.action == "replace":
        return kube.replace(change.manifest)  # carries the live resourceVersion
    return kube.apply(change.manifest)


def _delete(kube: Kube, change: ObjectChange) -> None:
    api_version, kind, namespace, name = change.key
    kube.delete(RESOURCES[(api_version, kind)], name, namespace or None)


def _append(audit: Auditor | None, project: str, events: list[AuditEvent]) -> int:
    """Write the events; a failure is raised as temporary (the next pass writes what is
    still missing, since every event is derived from state and keyed)."""
    if audit is None:
        return 0
    written = 0
    for event in events:
        try:
            audit.append(event.actor, event.action, event.subject, event.details, key=event.key)
        except TreError as exc:
            raise TemporaryError(
                f"project {project}: audit entry {event.key} not written ({exc}); the change "
                "it records is done and the entry is retried on the next pass"
            ) from exc
        written += 1
    return written
