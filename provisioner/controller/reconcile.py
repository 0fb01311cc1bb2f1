"""Reconcile one project: read the world, decide with pure functions, write the difference.

Level-triggered and idempotent: every call recomputes the desired state from the current
AccessRequests and Datasets, whatever happened before. A reconcile killed half-way leaves only
objects that a later call would also create (apply order puts the hub RoleBinding last, so a
half-made workspace cannot spawn pods without its NetworkPolicies), and the next call
completes it or prunes what is no longer wanted.

Writes per call, in order:
1. AccessRequest status (phase, approvers, end date, condition) where it changed;
2. the workspace's objects: server-side apply of what differs, prune of owned leftovers;
3. the Workspace resource (spec by apply, status by the status subresource);
4. one audit entry per request or workspace phase change.
An unchanged project sends no write at all.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol

from provisioner.kube.api import Kube, Manifest
from provisioner.kube.resources import (
    ACCESS_REQUESTS,
    DATASETS,
    OWNED_KINDS,
    RESOURCES,
    WORKSPACES,
)
from provisioner.models.resources import (
    AccessRequest,
    Condition,
    Dataset,
    RequestPhase,
    Workspace,
    WorkspacePhase,
    WorkspaceSpec,
    WorkspaceStatus,
)
from provisioner.models.settings import Settings
from provisioner.planning.approvals import (
    DatasetChange,
    RequestEvaluation,
    evaluate_request,
    next_review_date,
    plan_workspace_spec,
)
from provisioner.planning.drift import declared_fields_match, needs_apply, needs_replace
from provisioner.planning.lifecycle import PhaseDecision, next_phase
from provisioner.planning.names import LABEL_MANAGED_BY, LABEL_PROJECT, MANAGED_BY, namespace_name
from provisioner.planning.workspace import plan_frozen_workspace, plan_workspace

PODS = RESOURCES[("v1", "Pod")]
NAMESPACES = RESOURCES[("v1", "Namespace")]
CONTROLLER_ACTOR = "tre-controller"


class Auditor(Protocol):
    def append(
        self, actor: str, action: str, subject: str, details: Mapping[str, Any] | None = None
    ) -> Any: ...


@dataclass(frozen=True)
class Snapshot:
    """What the controller read: every request and dataset, every Workspace, owned objects."""

    requests: list[AccessRequest]
    datasets: dict[str, Dataset]
    workspaces: dict[str, Manifest]
    # (apiVersion, kind, namespace, name) -> live object, for objects with our labels
    owned: dict[tuple[str, str, str, str], Manifest] = field(default_factory=dict)

    def projects(self) -> set[str]:
        return {r.spec.project for r in self.requests} | set(self.workspaces)

    def owned_by(self, project: str) -> dict[tuple[str, str, str, str], Manifest]:
        return self._by_project.get(project, {})

    @cached_property
    def _by_project(self) -> dict[str, dict[tuple[str, str, str, str], Manifest]]:
        # Built once per snapshot: scanning every owned object per project would make a
        # resync grow with the square of the number of workspaces.
        index: dict[str, dict[tuple[str, str, str, str], Manifest]] = {}
        for key, obj in self.owned.items():
            project = (obj["metadata"].get("labels") or {}).get(LABEL_PROJECT)
            if project:
                index.setdefault(project, {})[key] = obj
        return index


def read_snapshot(kube: Kube) -> Snapshot:
    """One list per kind for the whole cluster: cheap enough for hundreds of projects."""
    requests = [AccessRequest.from_object(o) for o in kube.list(ACCESS_REQUESTS)]
    datasets = {o["metadata"]["name"]: Dataset.from_object(o) for o in kube.list(DATASETS)}
    workspaces = {o["metadata"]["name"]: o for o in kube.list(WORKSPACES)}
    owned: dict[tuple[str, str, str, str], Manifest] = {}
    for resource in OWNED_KINDS:
        for obj in kube.list(resource, selector=f"{LABEL_MANAGED_BY}={MANAGED_BY}"):
            meta = obj["metadata"]
            owned[
                (resource.api_version, resource.kind, meta.get("namespace", ""), meta["name"])
            ] = obj
    return Snapshot(requests, datasets, workspaces, owned)


@dataclass
class ReconcileResult:
    project: str
    phase: WorkspacePhase | None
    applied: list[str] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)
    status_writes: int = 0
    requeue_at: dt.datetime | None = None


def _key(obj: Manifest) -> tuple[str, str, str, str]:
    meta = obj["metadata"]
    return (obj["apiVersion"], obj["kind"], meta.get("namespace", ""), meta["name"])


def _condition(
    type_: str,
    ok: bool,
    reason: str,
    message: str,
    now: dt.datetime,
    previous: list[dict[str, Any]],
) -> dict[str, Any]:
    status = "True" if ok else "False"
    old = next((c for c in previous if c.get("type") == type_), None)
    since = old.get("lastTransitionTime") if old and old.get("status") == status else None
    return Condition(
        type=type_, status=status, reason=reason, message=message, last_transition_time=since or now
    ).to_wire()


def _request_status(
    ev: RequestEvaluation, request_obj: AccessRequest, now: dt.datetime
) -> dict[str, Any]:
    previous = [c.to_wire() for c in request_obj.status.conditions]
    return {
        "phase": ev.phase.value,
        "approvers": list(ev.approvers),
        **(
            {"effectiveEndDate": ev.effective_end_date.isoformat()} if ev.effective_end_date else {}
        ),
        "conditions": [
            _condition(
                "Approved", ev.phase is RequestPhase.APPROVED, ev.reason, ev.message, now, previous
            )
        ],
    }


def _same_status(desired: dict[str, Any], live: dict[str, Any]) -> bool:
    # lastTransitionTime is kept from `live` when the status did not flip, so a plain
    # declared-fields comparison tells whether anything changed.
    return declared_fields_match(desired, live)


@dataclass(frozen=True)
class ObjectChange:
    """One write a reconcile would make to an owned object, and why."""

    action: str  # "create" or "update" (server-side apply), "replace" or "prune"
    key: tuple[str, str, str, str]  # (apiVersion, kind, namespace, name)
    manifest: Manifest | None  # None for a prune
    why: str

    @property
    def name(self) -> str:
        return f"{self.key[1]}/{self.key[3]}"


def object_changes(
    desired: list[Manifest],
    owned: dict[tuple[str, str, str, str], Manifest],
    phase: WorkspacePhase,
) -> list[ObjectChange]:
    """What differs, in plan order; then leftovers to prune, access-granting kinds first."""
    changes = []
    for manifest in desired:
        key = _key(manifest)
        live = owned.get(key)
        if live is not None and needs_replace(manifest, live):
            # Someone added to a security object: put back exactly what we planned, as a
            # whole-object update on top of the version we read.
            version = live["metadata"]["resourceVersion"]
            whole = {**manifest, "metadata": {**manifest["metadata"], "resourceVersion": version}}
            changes.append(ObjectChange("replace", key, whole, "has additions not in the plan"))
        elif live is None:
            changes.append(ObjectChange("create", key, manifest, "missing"))
        elif needs_apply(manifest, live):
            changes.append(ObjectChange("update", key, manifest, "differs from the plan"))
    changes = _new_quota_after_new_claims(changes)
    wanted = {_key(m) for m in desired}
    prune_order = {(r.api_version, r.kind): i for i, r in enumerate(OWNED_KINDS)}
    for key in sorted(set(owned) - wanted, key=lambda k: prune_order[(k[0], k[1])]):
        if key[1] == "Namespace" and phase is not WorkspacePhase.TORN_DOWN:
            continue
        changes.append(ObjectChange("prune", key, None, "no longer granted"))
    return changes


def _new_quota_after_new_claims(changes: list[ObjectChange]) -> list[ObjectChange]:
    """Create a missing ResourceQuota after the claims the same reconcile creates.

    The plan puts the quota before the claims, so that a raised claim limit is in force
    before new claims need it. But a quota that exists while claims are created makes the
    quota admission plugin rewrite the quota's status once per claim; created after them,
    the quota controller counts them once (measured: about 500 fewer writes per 200 new
    workspaces, docs/performance.md). The hub RoleBinding stays last, so the quota still
    exists before any pod can.
    """
    quota = [c for c in changes if c.action == "create" and c.key[1] == "ResourceQuota"]
    rest = [c for c in changes if c not in quota]
    claims = [i for i, c in enumerate(rest) if c.key[1] == "PersistentVolumeClaim"]
    if not quota or not claims:
        return changes
    after = claims[-1] + 1
    return [*rest[:after], *quota, *rest[after:]]


@dataclass(frozen=True)
class ProjectPlan:
    """Everything one reconcile decides for a project, before it writes anything."""

    evaluated: list[tuple[AccessRequest, RequestEvaluation]]
    dataset_changes: list[DatasetChange]
    live_ws: Manifest | None
    live_status: WorkspaceStatus
    decision: PhaseDecision | None  # None: no workspace to provision, freeze or tear down
    workspace: Workspace
    objects: list[ObjectChange]


def plan_project(
    settings: Settings, project: str, snapshot: Snapshot, now: dt.datetime
) -> ProjectPlan:
    """Read-only: what `reconcile_project` would do (also `tre workspace plan`)."""
    today = now.date()
    requests = [r for r in snapshot.requests if r.spec.project == project]
    evaluated = [(r, evaluate_request(r, snapshot.datasets, settings, today)) for r in requests]
    spec, dataset_changes = plan_workspace_spec(project, evaluated, snapshot.datasets, today)
    live_ws = snapshot.workspaces.get(project)
    live_status = WorkspaceStatus.model_validate((live_ws or {}).get("status") or {})
    decision = next_phase(
        active=bool(spec.requests),
        live_phase=live_status.phase if live_ws else None,
        frozen_at=live_status.frozen_at,
        now=now,
        retention=dt.timedelta(days=settings.retention_days),
    )
    phase = decision.phase if decision else None
    if phase is not None and phase is not WorkspacePhase.READY:
        # A frozen workspace grants nothing: no members, no datasets, only its identity.
        spec = WorkspaceSpec(
            project=project, namespace=namespace_name(project), compute_tier=spec.compute_tier
        )
    workspace = Workspace(name=project, spec=spec)
    if phase is WorkspacePhase.READY:
        desired = plan_workspace(workspace, settings)
    elif phase is WorkspacePhase.FROZEN:
        desired = plan_frozen_workspace(workspace, settings)
    else:
        desired = []
    objects = (
        object_changes(desired, snapshot.owned_by(project), phase) if phase is not None else []
    )
    return ProjectPlan(
        evaluated, dataset_changes, live_ws, live_status, decision, workspace, objects
    )


def reconcile_project(
    kube: Kube,
    settings: Settings,
    project: str,
    snapshot: Snapshot,
    now: dt.datetime,
    audit: Auditor | None = None,
) -> ReconcileResult:
    plan = plan_project(settings, project, snapshot, now)
    result = ReconcileResult(project, None)
    result.status_writes += _sync_request_statuses(kube, project, plan.evaluated, now, audit)
    if plan.decision is None:
        return result
    phase = plan.decision.phase
    live_ws, live_status, workspace = plan.live_ws, plan.live_status, plan.workspace
    spec = workspace.spec
    _write_objects(kube, plan.objects, result)
    if phase is WorkspacePhase.FROZEN and live_status.phase is not WorkspacePhase.FROZEN:
        _stop_notebooks(kube, namespace_name(project))

    status = WorkspaceStatus(
        phase=phase,
        frozen_at=plan.decision.frozen_at,
        torn_down_at=(live_status.torn_down_at or now)
        if phase is WorkspacePhase.TORN_DOWN
        else None,
        conditions=_workspace_conditions(phase, spec, plan.dataset_changes, settings, now, live_ws),
    )
    _sync_workspace(kube, workspace, status, live_ws, result)
    if live_ws is None or live_status.phase is not phase:
        _audit(
            audit,
            "workspace.phase",
            f"workspace/{project}",
            {
                "from": live_status.phase.value if live_ws else None,
                "to": phase.value,
                "members": spec.members,
                "datasets": [d.name for d in spec.datasets],
                "requests": spec.requests,
            },
        )
    result.phase = phase
    result.requeue_at = _requeue_at(plan.evaluated, plan.decision, settings, now.date())
    return result


def _sync_request_statuses(
    kube: Kube,
    project: str,
    evaluated: list[tuple[AccessRequest, RequestEvaluation]],
    now: dt.datetime,
    audit: Auditor | None,
) -> int:
    writes = 0
    for request, ev in evaluated:
        desired = _request_status(ev, request, now)
        if _same_status(desired, request.status.to_wire()):
            continue
        kube.patch_status(ACCESS_REQUESTS, request.name, desired)
        writes += 1
        if request.status.phase is not ev.phase or not request.status.conditions:
            _audit(
                audit,
                "request.phase",
                f"accessrequest/{request.name}",
                {
                    "project": project,
                    "from": request.status.phase.value,
                    "to": ev.phase.value,
                    "reason": ev.reason,
                },
            )
    return writes


def _write_objects(kube: Kube, changes: list[ObjectChange], result: ReconcileResult) -> None:
    for change in changes:
        if change.action == "prune":
            api_version, kind, namespace, name = change.key
            kube.delete(RESOURCES[(api_version, kind)], name, namespace or None)
            result.pruned.append(change.name)
            continue
        assert change.manifest is not None
        if change.action == "replace":
            kube.replace(change.manifest)  # carries the live resourceVersion
        else:
            kube.apply(change.manifest)
        result.applied.append(change.name)


def _workspace_conditions(
    phase: WorkspacePhase,
    spec: WorkspaceSpec,
    changes: list[DatasetChange],
    settings: Settings,
    now: dt.datetime,
    live_ws: Manifest | None,
) -> list[Condition]:
    previous = ((live_ws or {}).get("status") or {}).get("conditions") or []
    ready = _condition(
        "Ready",
        phase is WorkspacePhase.READY,
        phase.value,
        _phase_message(phase, spec, settings),
        now,
        previous,
    )
    return [
        Condition.model_validate(c) for c in (ready, _dataset_condition(changes, now, previous))
    ]


def _sync_workspace(
    kube: Kube,
    workspace: Workspace,
    status: WorkspaceStatus,
    live_ws: Manifest | None,
    result: ReconcileResult,
) -> None:
    ws_object = workspace.to_object()
    if needs_apply(ws_object, live_ws):
        kube.apply(ws_object)
        result.applied.append(f"Workspace/{workspace.name}")
    wire = status.to_wire()
    live = (live_ws or {}).get("status") or {}
    # A merge patch only removes a field when told to: null out what we no longer set.
    stale = {k: None for k in ("frozenAt", "tornDownAt") if k in live and k not in wire}
    if stale or not _same_status(wire, live):
        kube.patch_status(WORKSPACES, workspace.name, {**wire, **stale})
        result.status_writes += 1


def _requeue_at(
    evaluated: list[tuple[AccessRequest, RequestEvaluation]],
    decision: PhaseDecision,
    settings: Settings,
    today: dt.date,
) -> dt.datetime | None:
    """When this project must be looked at again even if nothing changes."""
    candidates = []
    if (day := next_review_date(evaluated, today)) is not None:
        candidates.append(dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC))
    if decision.phase is WorkspacePhase.FROZEN and decision.frozen_at is not None:
        candidates.append(decision.frozen_at + dt.timedelta(days=settings.retention_days))
    return min(candidates, default=None)


def _phase_message(phase: WorkspacePhase, spec: WorkspaceSpec, settings: Settings) -> str:
    if phase is WorkspacePhase.READY:
        return (
            f"{len(spec.members)} member(s), {len(spec.datasets)} dataset(s), "
            f"until {spec.expires_at}"
        )
    if phase is WorkspacePhase.FROZEN:
        return (
            f"no active access request; project storage kept for "
            f"{settings.retention_days} days, then deleted"
        )
    return "retention ended; namespace deleted"


def _dataset_condition(
    changes: list[DatasetChange], now: dt.datetime, previous: list[dict[str, Any]]
) -> dict[str, Any]:
    if not changes:
        return _condition(
            "DatasetChanged",
            False,
            "AsApproved",
            "every mounted dataset matches its approved manifest",
            now,
            previous,
        )
    detail = "; ".join(
        f"{c.dataset}: approved {c.approved_sha256[:12] or 'nothing'}, now "
        f"{(c.current_sha256 or 'unverified')[:12]}"
        for c in changes
    )
    return _condition(
        "DatasetChanged",
        True,
        "ManifestMismatch",
        f"not mounted until re-approved: {detail}",
        now,
        previous,
    )


def _stop_notebooks(kube: Kube, namespace: str) -> None:
    for pod in kube.list(PODS, namespace=namespace, selector="component=singleuser-server"):
        kube.delete(PODS, pod["metadata"]["name"], namespace)


def _audit(audit: Auditor | None, action: str, subject: str, details: dict[str, Any]) -> None:
    if audit is not None:
        audit.append(CONTROLLER_ACTOR, action, subject, details)
