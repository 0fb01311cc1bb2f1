"""One project's reconcile as a pure plan: every write the controller will make, as data.

`plan_project(settings, project, snapshot, now, audited)` reads only the snapshot (what the
controller listed) and returns a `ProjectPlan`; `provisioner.controller.reconcile` executes
it and nothing else, and `tre workspace plan` prints it. So the rules of the trust model are
table-driven unit tests here and attack tests against the real API server there.

The plan, in the order the executor runs it:
1. `request_statuses`: AccessRequest status (phase, approvers, end date, condition);
2. `bootstrap`: the Workspace object itself when it does not exist yet, *before* its
   namespace, so a namespace the controller creates is always younger than its Workspace
   (the rule that tells our namespace from a squatter's, see `namespace_ownership`);
3. `writes`: the workspace's objects that are missing or differ (apply; the Namespace by
   create, never adopted), access narrowed before anything is stopped;
4. `pod_stops`: pods that may no longer run: every pod while the workspace is not Ready;
   otherwise pods of people who are no longer members, pods that mount a claim the plan no
   longer holds, and pods the hub did not start;
5. `prunes`: owned objects no longer wanted (access-granting kinds first) and NetworkPolicies
   or RoleBindings in the project namespace that the controller did not make;
6. `workspace_apply` / `workspace_status`: the Workspace spec and status;
7. `audit`: the audit events the state implies and the log does not hold yet, each with an
   idempotency key, so a failed append is simply written by the next pass;
8. `finalizers`: the controller's finalizer (`names.AUDITED_FINALIZER`) set on every
   AccessRequest and ExportRequest that lacks it, and lifted from those being deleted, and
   from the exports of a namespace being torn down, only once the audit entries above are
   written: nothing of theirs is deleted before its records are in the log.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Final, Literal

from provisioner.models.resources import (
    AccessRequest,
    BrowserActivity,
    Condition,
    Dataset,
    DatasetManifest,
    DatasetSpec,
    ExportPhase,
    ExportRequest,
    NotebookRecord,
    RequestPhase,
    Workspace,
    WorkspacePhase,
    WorkspaceSpec,
    WorkspaceStatus,
)
from provisioner.models.settings import Settings
from provisioner.planning import browser, names
from provisioner.planning.approvals import (
    DatasetChange,
    RequestEvaluation,
    evaluate_project,
    next_review_date,
    plan_workspace_spec,
    project_people,
)
from provisioner.planning.datasets import source_uri
from provisioner.planning.drift import declared_fields_match, needs_apply, needs_replace
from provisioner.planning.exports import evaluate_export, export_reviewers
from provisioner.planning.lifecycle import PhaseDecision, next_phase
from provisioner.planning.read_grants import plan_read_grants
from provisioner.planning.workspace import (
    PRUNE_ORDER,
    plan_for_phase,
    workspace_access,
    workspace_claims,
)

Manifest = dict[str, Any]
Key = tuple[str, str, str, str]  # (apiVersion, kind, namespace, name)
CONTROLLER_ACTOR: Final = "tre-controller"
# Pods the hub starts carry the JupyterHub user they belong to (hub_config.workspaces).
ANNOTATION_USER: Final = names.ANNOTATION_USER
FOREIGN: Final = "not made by the controller"


def object_key(obj: Manifest) -> Key:
    meta = obj["metadata"]
    return (obj["apiVersion"], obj["kind"], meta.get("namespace", ""), meta["name"])


@dataclass(frozen=True)
class Unparsable:
    """A custom resource the models refuse: reported, and treated as absent (fail closed)."""

    kind: str
    name: str
    error: str


@dataclass(frozen=True)
class Snapshot:
    """What the controller read in one pass: one LIST per kind for the whole cluster."""

    requests: list[AccessRequest]
    datasets: dict[str, Dataset]
    workspaces: dict[str, Manifest]
    # objects carrying our managed-by label, by key
    owned: dict[Key, Manifest] = field(default_factory=dict)
    # every namespace named like a project namespace (ours or not), by name
    namespaces: dict[str, Manifest] = field(default_factory=dict)
    # NetworkPolicies and RoleBindings without our label, and pods, in such namespaces
    foreign: list[Manifest] = field(default_factory=list)
    pods: list[Manifest] = field(default_factory=list)
    unparsable: list[Unparsable] = field(default_factory=list)
    # ExportRequests in project namespaces
    exports: list[ExportRequest] = field(default_factory=list)
    # the browser gates' records not yet audited and counted (planning.browser)
    browser: list[BrowserActivity] = field(default_factory=list)
    # the people's read grants (planning/read_grants.py), by key
    grants: dict[Key, Manifest] = field(default_factory=dict)
    # the published open requests (names.OPEN_REQUESTS_CONFIGMAP): request name -> requester
    open_requests: dict[str, str] = field(default_factory=dict)

    def projects(self) -> set[str]:
        return {r.spec.project for r in self.requests} | set(self.workspaces)

    def owned_by(self, project: str) -> dict[Key, Manifest]:
        return self._owned_index.get(project, {})

    def foreign_in(self, namespace: str) -> list[Manifest]:
        return self._foreign_index.get(namespace, [])

    def pods_in(self, namespace: str) -> list[Manifest]:
        return self._pod_index.get(namespace, [])

    def exports_in(self, namespace: str) -> list[ExportRequest]:
        return [e for e in self.exports if e.namespace == namespace]

    def browser_in(self, namespace: str) -> list[BrowserActivity]:
        return [a for a in self.browser if a.namespace == namespace]

    def grants_of(self, project: str) -> dict[Key, Manifest]:
        return self._grant_index.get(project, {})

    @cached_property
    def _owned_index(self) -> dict[str, dict[Key, Manifest]]:
        # Built once per snapshot: scanning every owned object per project would make a
        # resync grow with the square of the number of workspaces.
        return _by_project(self.owned)

    @cached_property
    def _grant_index(self) -> dict[str, dict[Key, Manifest]]:
        return _by_project(self.grants)

    @cached_property
    def _foreign_index(self) -> dict[str, list[Manifest]]:
        return _by_namespace(self.foreign)

    @cached_property
    def _pod_index(self) -> dict[str, list[Manifest]]:
        return _by_namespace(self.pods)


def _by_project(objects: Mapping[Key, Manifest]) -> dict[str, dict[Key, Manifest]]:
    """`objects` by the project their label names (objects without one are left out)."""
    index: dict[str, dict[Key, Manifest]] = {}
    for key, obj in objects.items():
        project = (obj["metadata"].get("labels") or {}).get(names.LABEL_PROJECT)
        if project:
            index.setdefault(project, {})[key] = obj
    return index


def _by_namespace(objects: Sequence[Manifest]) -> dict[str, list[Manifest]]:
    index: dict[str, list[Manifest]] = {}
    for obj in objects:
        index.setdefault(obj["metadata"].get("namespace", ""), []).append(obj)
    return index


# --- the typed writes ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ObjectChange:
    """One write to a workspace object, and why."""

    action: Literal["create", "update", "replace", "prune"]
    key: Key
    manifest: Manifest | None  # None for a prune
    why: str

    @property
    def name(self) -> str:
        return f"{self.key[1]}/{self.key[3]}"


@dataclass(frozen=True)
class RequestStatusWrite:
    name: str
    status: Manifest
    why: str


@dataclass(frozen=True)
class ExportStatusWrite:
    namespace: str
    name: str
    status: Manifest
    why: str


@dataclass(frozen=True)
class FinalizerWrite:
    """The controller's finalizer set on, or lifted from, one AccessRequest or ExportRequest:
    metadata.finalizers from `old` to `new`."""

    kind: str
    namespace: str
    name: str
    old: tuple[str, ...]
    new: tuple[str, ...]
    why: str


def audited_finalizer(
    obj: AccessRequest | ExportRequest, *, keep: bool = True
) -> FinalizerWrite | None:
    """The write that puts the controller's finalizer where it belongs, or None: on `obj`
    while it lives and `keep`; off once it is being deleted or not kept (the executor lifts
    it only after the pass's audit entries are written)."""
    held = names.AUDITED_FINALIZER in obj.finalizers
    if obj.deleted_at is None and keep:
        if held:
            return None
        new = (*obj.finalizers, names.AUDITED_FINALIZER)
        why = "deleted only once its records are in the audit log"
    elif held:
        new = tuple(f for f in obj.finalizers if f != names.AUDITED_FINALIZER)
        why = "deleted" if obj.deleted_at is not None else "its namespace is torn down"
        why += ": its records are in the audit log"
    else:
        return None
    return FinalizerWrite(obj.kind, obj.namespace, obj.name, obj.finalizers, new, why)


@dataclass(frozen=True)
class PodStop:
    namespace: str
    name: str
    why: str


@dataclass(frozen=True)
class AuditEvent:
    """One audit entry the state implies; `key` makes writing it idempotent."""

    key: str
    actor: str
    action: str
    subject: str
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ProjectPlan:
    """Everything one reconcile of a project will write, in order (see the module doc)."""

    project: str
    evaluated: list[tuple[AccessRequest, RequestEvaluation]]
    dataset_changes: list[DatasetChange]
    decision: PhaseDecision | None  # None: no workspace to provision, freeze or tear down
    workspace: Workspace | None
    conflict: str | None = None  # why the project namespace is not ours
    # who reads which of the project's requests and its Workspace: written first
    read_grants: list[ObjectChange] = field(default_factory=list)
    request_statuses: list[RequestStatusWrite] = field(default_factory=list)
    # changes to the published open requests (None: no longer open), after the statuses
    open_requests: dict[str, str | None] = field(default_factory=dict)
    export_statuses: list[ExportStatusWrite] = field(default_factory=list)
    bootstrap: Manifest | None = None
    writes: list[ObjectChange] = field(default_factory=list)
    pod_stops: list[PodStop] = field(default_factory=list)
    prunes: list[ObjectChange] = field(default_factory=list)
    workspace_apply: Manifest | None = None
    workspace_status: Manifest | None = None  # merge patch (None values remove fields)
    desired_status: Manifest | None = None  # the whole status the Workspace should have
    audit: list[AuditEvent] = field(default_factory=list)
    finalizers: list[FinalizerWrite] = field(default_factory=list)
    requeue_at: dt.datetime | None = None
    # browser gate batches already audited and counted: deleted after this pass's audit
    browser_done: list[BrowserActivity] = field(default_factory=list)

    @property
    def objects(self) -> list[ObjectChange]:
        return [*self.writes, *self.prunes]

    @property
    def phase(self) -> WorkspacePhase | None:
        return self.decision.phase if self.decision else None


def plan_export_statuses(
    exports: Sequence[ExportRequest],
    workspace: WorkspaceSpec,
    settings: Settings,
    now: dt.datetime,
) -> list[ExportStatusWrite]:
    """The status each export's reviews give it (planning/exports.py), where it differs:
    judged against everyone who has been the project's and the most reviewers its data
    ever asked, also while Frozen (review 3, S8)."""
    required = export_reviewers(workspace, settings.export_reviewers_by_tier)
    people = project_people(workspace)
    writes = []
    for export in sorted(exports, key=lambda e: e.name):
        evaluation = evaluate_export(export, people, required)
        previous = [c.to_wire() for c in export.status.conditions]
        decided = evaluation.phase is not ExportPhase.SUBMITTED
        status = {
            "phase": evaluation.phase.value,
            "reviewers": list(evaluation.reviewers),
            "conditions": [
                condition(
                    "Decided", decided, evaluation.phase.value, evaluation.message, now, previous
                )
            ],
        }
        if not declared_fields_match(status, export.status.to_wire()):
            writes.append(
                ExportStatusWrite(
                    export.namespace,
                    export.name,
                    status,
                    f"{export.status.phase.value} -> {evaluation.phase.value}",
                )
            )
    return writes


def export_audit_events(
    project: str,
    exports: Sequence[ExportRequest],
    planned: Sequence[ExportStatusWrite],
    now: dt.datetime,
) -> list[AuditEvent]:
    """Every submission and review (keyed by the export's uid and the review's index), every
    record the airlock keeps (each access by its index, the release, the revocation: the
    API server lets only the airlock write them, append-only or once) and every export phase
    since its last transition."""
    statuses = {w.name: w.status for w in planned}
    events: list[AuditEvent] = []
    for export in exports:
        subject = f"exportrequest/{export.namespace}/{export.name}"
        uid = export.uid or export.name
        events.append(
            AuditEvent(
                key=f"export/{uid}/submitted",
                actor=export.spec.author,
                action="export.submit",
                subject=subject,
                details={
                    "project": project,
                    "files": [
                        {"path": f.path, "sha256": f.sha256, "kind": f.kind.value}
                        for f in export.spec.files
                    ],
                },
            )
        )
        for index, review in enumerate(export.spec.reviews):
            events.append(
                AuditEvent(
                    key=f"export/{uid}/review/{index}",
                    actor=review.by,
                    action="export.review",
                    subject=subject,
                    details={
                        "project": project,
                        "votes": {v.path: v.vote.value for v in review.votes},
                    },
                )
            )
        events += _airlock_audit_events(project, export, subject, uid)
        status = statuses.get(export.name) or export.status.to_wire()
        conditions = status.get("conditions") or []
        since = conditions[0].get("lastTransitionTime") if conditions else None
        since_text = since.isoformat() if isinstance(since, dt.datetime) else str(since or now)
        events.append(
            AuditEvent(
                key=f"export/{uid}/phase/{status.get('phase')}/{since_text}",
                actor=CONTROLLER_ACTOR,
                action="export.phase",
                subject=subject,
                details={"project": project, "phase": status.get("phase")},
            )
        )
        if export.deleted_at is not None:
            events.append(_deleted_event(f"export/{uid}", "export", subject, project, export))
    return events


def _deleted_event(
    prefix: str, kind: str, subject: str, project: str, obj: AccessRequest | ExportRequest
) -> AuditEvent:
    """That `obj` is being deleted, and in which phase (the API server's audit log names who
    deleted it); written before the controller lifts its finalizer."""
    assert obj.deleted_at is not None
    return AuditEvent(
        key=f"{prefix}/deleted",
        actor=CONTROLLER_ACTOR,
        action=f"{kind}.deleted",
        subject=subject,
        details={
            "project": project,
            "phase": obj.status.phase.value,
            "deletedAt": obj.deleted_at.isoformat(),
        },
    )


def _airlock_audit_events(
    project: str, export: ExportRequest, subject: str, uid: str
) -> list[AuditEvent]:
    """The airlock's records of one export as audit events, in the order they happened: each
    view or download (`export/<uid>/access/<index>`: the list only grows, so an index names
    one record for good), the release and the revocation (each written once)."""
    timed: list[tuple[dt.datetime, AuditEvent]] = []

    def record(at: dt.datetime, key: str, by: str, action: str, **details: Any) -> None:
        details = {"project": project, **details, "at": at.isoformat()}
        timed.append((at, AuditEvent(f"export/{uid}/{key}", by, action, subject, details)))

    status = export.status
    for index, seen in enumerate(status.access):
        record(seen.at, f"access/{index}", seen.by, f"export.{seen.action.value}", path=seen.path)
    if (release := status.release) is not None:
        record(
            release.at,
            "released",
            release.by,
            "export.release",
            manifestSha256=release.manifest_sha256,
            files=release.files,
        )
    if (revocation := status.revocation) is not None:
        record(revocation.at, "revoked", revocation.by, "export.revoke", reason=revocation.reason)
    # sorted() is stable: records with the same time keep the list's order.
    return [event for _, event in sorted(timed, key=lambda pair: pair[0])]


def describe(plan: ProjectPlan) -> list[dict[str, str]]:
    """Every write of `plan` as a row (change, object, why), in the order they happen."""
    rows = [{"change": c.action, "object": c.name, "why": c.why} for c in plan.read_grants]
    rows += [
        {"change": "status", "object": f"AccessRequest/{w.name}", "why": w.why}
        for w in plan.request_statuses
    ]
    rows += [
        {
            "change": "publish",
            "object": f"ConfigMap/{names.SYSTEM_NAMESPACE}/{names.OPEN_REQUESTS_CONFIGMAP}",
            "why": f"{name}: {'open' if requester else 'decided'}",
        }
        for name, requester in plan.open_requests.items()
    ]
    rows += [
        {"change": "status", "object": f"ExportRequest/{w.name}", "why": w.why}
        for w in plan.export_statuses
    ]
    if plan.conflict:
        rows.append(
            {"change": "refuse", "object": f"Namespace/{plan.project}", "why": plan.conflict}
        )
    if plan.bootstrap is not None:
        rows.append({"change": "create", "object": f"Workspace/{plan.project}", "why": "missing"})
    rows += [{"change": c.action, "object": c.name, "why": c.why} for c in plan.writes]
    rows += [
        {"change": "stop", "object": f"Pod/{s.namespace}/{s.name}", "why": s.why}
        for s in plan.pod_stops
    ]
    rows += [{"change": c.action, "object": c.name, "why": c.why} for c in plan.prunes]
    if plan.workspace_apply is not None:
        rows.append(
            {
                "change": "update",
                "object": f"Workspace/{plan.project}",
                "why": "members, data or dates",
            }
        )
    if plan.workspace_status is not None:
        rows.append(
            {
                "change": "status",
                "object": f"Workspace/{plan.project}",
                "why": f"phase {plan.workspace_status.get('phase')}",
            }
        )
    rows += [
        {
            "change": "withhold",
            "object": f"Dataset/{c.dataset}",
            "why": "not enough approvals of its current content",
        }
        for c in plan.dataset_changes
    ]
    rows += [{"change": "audit", "object": e.subject, "why": e.action} for e in plan.audit]
    rows += [
        {
            "change": "finalizer" if len(w.new) > len(w.old) else "lift finalizer",
            "object": f"{w.kind}/{w.name}",
            "why": w.why,
        }
        for w in plan.finalizers
    ]
    return rows


# --- the plan -----------------------------------------------------------------------------------


def plan_project(
    settings: Settings,
    project: str,
    snapshot: Snapshot,
    now: dt.datetime,
    audited: AbstractSet[str] | None = None,
) -> ProjectPlan:
    """Read-only: what the next reconcile of `project` writes. `audited`: the idempotency keys
    already in the audit log (None: plan no audit events)."""
    today = now.date()
    live_ws = snapshot.workspaces.get(project)
    live_status = WorkspaceStatus.model_validate((live_ws or {}).get("status") or {})
    live_spec = (live_ws or {}).get("spec") or {}
    torn_down = live_status.phase is WorkspacePhase.TORN_DOWN
    requests = [r for r in snapshot.requests if r.spec.project == project]
    # A request being deleted grants nothing more; its records are written, then it goes.
    deleted = [r for r in requests if r.deleted_at is not None]
    finalizers = [w for r in requests if (w := audited_finalizer(r)) is not None]
    evaluated, owner, founding = evaluate_project(
        [r for r in requests if r.deleted_at is None],
        snapshot.datasets,
        settings,
        today,
        owner=None if torn_down or live_ws is None else live_spec.get("owner"),
        founding_request=None if torn_down or live_ws is None else live_spec.get("foundingRequest"),
    )
    spec, dataset_changes = plan_workspace_spec(
        project, evaluated, snapshot.datasets, today, owner=owner, founding_request=founding
    )
    spec = with_history(spec, {} if torn_down else live_spec, settings)
    request_statuses = [
        RequestStatusWrite(r.name, status, f"{r.status.phase.value} -> {ev.phase.value}")
        for r, ev in evaluated
        if not declared_fields_match(status := request_status(ev, r, now), r.status.to_wire())
    ]
    decision = next_phase(
        active=bool(spec.requests),
        live_phase=live_status.phase if live_ws else None,
        frozen_at=live_status.frozen_at,
        now=now,
        retention=dt.timedelta(days=settings.retention_days),
    )
    namespace = names.namespace_name(project)
    live_ns = snapshot.namespaces.get(namespace)
    if decision is None and torn_down and _namespace_kept(live_ns, live_ws, live_status):
        # Torn down, but its namespace waited for its exports' records (below): go on.
        decision = PhaseDecision(WorkspacePhase.TORN_DOWN, live_status.frozen_at)
    audit_events = _request_audit_events(project, evaluated, request_statuses, now)
    audit_events += [e for r in deleted for e in _deleted_request_events(project, r)]
    if decision is None:
        return ProjectPlan(
            project,
            evaluated,
            dataset_changes,
            None,
            None,
            read_grants=_read_grants(project, requests, None, snapshot),
            request_statuses=request_statuses,
            open_requests=open_requests_changes(evaluated, snapshot.open_requests),
            audit=_unaudited(audit_events, audited),
            finalizers=finalizers,
        )
    phase = decision.phase
    if phase is not WorkspacePhase.READY:
        # A frozen workspace grants nothing: no members, no datasets; it keeps its identity
        # and its owner (the slug stays theirs until TornDown).
        # Its people and reviewer floor stay too, for its exports (review 3, S8).
        spec = WorkspaceSpec(
            project=project,
            namespace=names.namespace_name(project),
            compute_tier=spec.compute_tier,
            owner=None if phase is WorkspacePhase.TORN_DOWN else owner,
            founding_request=None if phase is WorkspacePhase.TORN_DOWN else founding,
            people=spec.people,
            export_reviewers=spec.export_reviewers,
        )
    workspace = Workspace(name=project, spec=spec)
    ws_object = workspace.to_object()
    conflict = namespace_conflict(live_ns, live_ws, live_status.namespace_uid)
    live_exports = snapshot.exports_in(namespace) if conflict is None and live_ns else []
    writes, stops, prunes, held = (
        _namespace_changes(settings, snapshot, workspace, phase, live_ns, live_exports, audited)
        if conflict is None
        else ([], [], [], False)
    )
    status = _workspace_status(
        phase,
        decision,
        spec,
        dataset_changes,
        settings,
        now,
        live_ws,
        live_status,
        conflict,
        live_ns,
    )
    exports = (
        plan_export_statuses(snapshot.exports_in(namespace), spec, settings, now)
        if conflict is None and live_ns is not None
        else []
    )
    notebooks, notebook_events = notebook_audit(
        project,
        snapshot.pods_in(namespace) if conflict is None else [],
        live_status.notebooks,
        live_spec,
        audited,
    )
    status["notebooks"] = [n.to_wire() for n in notebooks]
    activities = snapshot.browser_in(namespace) if conflict is None else []
    status = _with_browser_usage(status, live_status, activities, now)
    live_status_wire = (live_ws or {}).get("status") or {}
    stale = {
        k: None
        for k in ("frozenAt", "tornDownAt", "namespaceUid")
        if k in live_status_wire and k not in status
    }
    status_patch = (
        {**status, **stale}
        if stale or not declared_fields_match(status, live_status_wire)
        else None
    )
    audit_events += _workspace_audit_events(project, live_ws, status, prunes)
    audit_events += notebook_events
    audit_events += browser_audit_events(project, activities)
    audit_events += export_audit_events(project, live_exports, exports, now)
    keep = phase is not WorkspacePhase.TORN_DOWN
    finalizers += [w for e in live_exports if (w := audited_finalizer(e, keep=keep)) is not None]
    return ProjectPlan(
        project,
        evaluated,
        dataset_changes,
        decision,
        workspace,
        conflict=conflict,
        read_grants=_read_grants(project, requests, spec, snapshot),
        request_statuses=request_statuses,
        open_requests=open_requests_changes(evaluated, snapshot.open_requests),
        export_statuses=exports,
        bootstrap=ws_object if live_ws is None else None,
        writes=writes,
        pod_stops=stops,
        prunes=prunes,
        workspace_apply=(
            ws_object if live_ws is not None and needs_apply(ws_object, live_ws) else None
        ),
        workspace_status=status_patch,
        desired_status=status,
        audit=_unaudited(audit_events, audited),
        finalizers=finalizers,
        requeue_at=now if held else _requeue_at(evaluated, decision, settings, today),
        browser_done=browser.finished(activities, audited, live_status.browser, today),
    )


def with_history(spec: WorkspaceSpec, live_spec: Manifest, settings: Settings) -> WorkspaceSpec:
    """`spec` with the project's people and export reviewer floor as they ever were: the
    live Workspace's (`{}` when there is none, or it was TornDown), grown by this pass's.
    Both only grow, so a pass that is run again writes the same."""
    people = project_people(spec) | set(live_spec.get("people") or [])
    floor = max(
        int(live_spec.get("exportReviewers") or 2),
        export_reviewers(spec, settings.export_reviewers_by_tier),
    )
    return spec.model_copy(update={"people": sorted(people), "export_reviewers": floor})


def _namespace_changes(
    settings: Settings,
    snapshot: Snapshot,
    workspace: Workspace,
    phase: WorkspacePhase,
    live_ns: Manifest | None,
    exports: Sequence[ExportRequest],
    audited: AbstractSet[str] | None,
) -> tuple[list[ObjectChange], list[PodStop], list[ObjectChange], bool]:
    """In our namespace (no conflict): the writes, pod stops and prunes, and whether teardown
    holds the namespace for its exports' records (`namespace_held`)."""
    project, namespace = workspace.spec.project, workspace.spec.namespace
    desired = plan_for_phase(workspace, phase, settings)
    owned = dict(snapshot.owned_by(project))
    stops: list[PodStop] = []
    prunes: list[ObjectChange] = []
    if live_ns is not None:
        owned[object_key(live_ns)] = live_ns
    held = (
        phase is WorkspacePhase.TORN_DOWN
        and live_ns is not None
        and namespace_held(exports, owned, project, audited)
    )
    if held:
        # Kept, and closed: exports can be neither filed (not Ready) nor changed without it.
        desired = [workspace_access(workspace, WorkspacePhase.FROZEN, [], settings)]
    if live_ns is not None and (phase is not WorkspacePhase.TORN_DOWN or held):
        # Our namespace, staying for now: anything in it is the controller's to judge.
        stops = pods_to_stop(snapshot.pods_in(namespace), workspace, phase, desired)
        prunes += foreign_prunes(snapshot.foreign_in(namespace))
    changes = object_changes(desired, owned, phase, namespace_exists=live_ns is not None)
    changes = [c for c in changes if not (held and c.key[1] == "Namespace")]
    writes = [c for c in changes if c.action != "prune"]
    return writes, stops, [*(c for c in changes if c.action == "prune"), *prunes], held


def _namespace_kept(
    live_ns: Manifest | None, live_ws: Manifest | None, live_status: WorkspaceStatus
) -> bool:
    """A torn-down workspace's namespace still stands, ours and not being deleted: teardown
    held it for its exports' records (`namespace_held`) and goes on."""
    return (
        live_ns is not None
        and not live_ns["metadata"].get("deletionTimestamp")
        and namespace_conflict(live_ns, live_ws, live_status.namespace_uid) is None
    )


def namespace_held(
    exports: Sequence[ExportRequest],
    owned: Mapping[Key, Manifest],
    project: str,
    audited: AbstractSet[str] | None,
) -> bool:
    """Whether a namespace being torn down must wait before it is deleted (deleting it deletes
    its exports): while an export in it still carries the controller's finalizer, while an
    export's records (submission, reviews, access, release, revocation) are not all in the
    audit log, or while its access ConfigMap still lets members file exports (Ready). The
    pass that holds it writes those records, lifts the finalizers and closes the ConfigMap;
    the next one deletes the namespace. The export admission policies need that ConfigMap to
    let the controller lift its finalizer, so it goes with the namespace, never before."""
    access_key = ("v1", "ConfigMap", names.namespace_name(project), names.WORKSPACE_ACCESS_NAME)
    access = owned.get(access_key)
    if access is not None and (access.get("data") or {}).get("phase") == "Ready":
        return True
    if any(names.AUDITED_FINALIZER in e.finalizers for e in exports):
        return True
    if audited is None:
        return False
    records = export_audit_events("", exports, [], dt.datetime.min.replace(tzinfo=dt.UTC))
    return any(e.action != "export.phase" and e.key not in audited for e in records)


def open_requests_changes(
    evaluated: Sequence[tuple[AccessRequest, RequestEvaluation]], published: Mapping[str, str]
) -> dict[str, str | None]:
    """What to change in the published open requests for these requests: each awaiting a
    decision after this reconcile is listed with its requester, each decided is removed."""
    changes: dict[str, str | None] = {}
    for request, evaluation in evaluated:
        wanted = request.spec.requester if evaluation.phase is RequestPhase.PENDING else None
        if published.get(request.name) != wanted:
            changes[request.name] = wanted
    return changes


def _read_grants(
    project: str,
    requests: Sequence[AccessRequest],
    spec: WorkspaceSpec | None,
    snapshot: Snapshot,
) -> list[ObjectChange]:
    """Who reads what of the project after this reconcile: its people are the planned
    Workspace's members and owner (none once it is torn down)."""
    people = {*spec.members, *([spec.owner] if spec.owner else [])} if spec else set()
    desired = plan_read_grants(project, requests, people)
    return read_grant_changes(desired, snapshot.grants_of(project))


def namespace_conflict(
    live_ns: Manifest | None, live_ws: Manifest | None, recorded_uid: str | None
) -> str | None:
    """Why the project's namespace is not ours (then nothing is written into it), or None.

    Ours: the uid the Workspace recorded when the controller created it; or, if none was
    recorded yet (a pass that stopped right after creating it), a namespace with our labels
    created no earlier than the Workspace. The controller writes a new Workspace before its
    namespace, and only the controller may create project namespaces (admission policy), so a
    namespace that predates its Workspace was made by someone else: never adopted.
    """
    if live_ns is None:
        return None
    meta = live_ns["metadata"]
    if recorded_uid is not None:
        if meta.get("uid") == recorded_uid:
            return None
        return (
            f"namespace {meta['name']} was replaced (uid {meta.get('uid')}, created "
            f"{meta.get('creationTimestamp')}; the controller created uid {recorded_uid}); "
            "nothing is written into it. Delete that namespace; the controller then recreates "
            "its own"
        )
    labels = meta.get("labels") or {}
    ours = labels.get(names.LABEL_MANAGED_BY) == names.MANAGED_BY
    ws_created = ((live_ws or {}).get("metadata") or {}).get("creationTimestamp")
    created = meta.get("creationTimestamp")
    if ours and ws_created is not None and created is not None and created >= ws_created:
        return None
    return (
        f"namespace {meta['name']} already existed before this project's workspace (created "
        f"{created} by someone else); the controller never adopts a namespace, so nothing is "
        "written into it. Delete that namespace (and find out who made it); the controller "
        "then creates its own"
    )


def pods_to_stop(
    pods: Sequence[Manifest],
    workspace: Workspace,
    phase: WorkspacePhase,
    desired: Sequence[Manifest],
) -> list[PodStop]:
    """Pods that may not keep running in the project namespace, with the reason."""
    members = set(workspace.spec.members)
    claims = workspace_claims(desired)
    stops = []
    for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
        meta = pod["metadata"]
        if meta.get("deletionTimestamp"):
            continue  # already stopping
        why = _stop_reason(pod, members, claims, phase)
        if why is not None:
            stops.append(PodStop(meta["namespace"], meta["name"], why))
    return stops


def _stop_reason(
    pod: Manifest, members: set[str], claims: set[str], phase: WorkspacePhase
) -> str | None:
    if phase is not WorkspacePhase.READY:
        return f"the workspace is {phase.value}"
    user = (pod["metadata"].get("annotations") or {}).get(ANNOTATION_USER)
    if user is None:
        return "not started by the hub for a member"
    if user not in members:
        return f"{user} is no longer a member"
    for volume in (pod.get("spec") or {}).get("volumes") or []:
        claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
        if claim is not None and claim not in claims:
            return f"mounts {claim}, which is no longer granted"
    return None


def foreign_prunes(objects: Sequence[Manifest]) -> list[ObjectChange]:
    """NetworkPolicies and RoleBindings the controller did not make: they could widen the
    workspace's network or give someone rights in it, so they go."""
    return [
        ObjectChange("prune", object_key(obj), None, FOREIGN)
        for obj in sorted(objects, key=object_key)
        if obj["kind"] in ("NetworkPolicy", "RoleBinding")
    ]


def object_changes(
    desired: list[Manifest],
    owned: Mapping[Key, Manifest],
    phase: WorkspacePhase,
    *,
    namespace_exists: bool = True,
) -> list[ObjectChange]:
    """What differs, in plan order; then leftovers to prune, access-granting kinds first."""
    changes: list[ObjectChange] = []
    for manifest in desired:
        key = object_key(manifest)
        live = owned.get(key)
        if key[1] == "Namespace":
            if not namespace_exists:
                changes.append(ObjectChange("create", key, manifest, "missing"))
            elif live is not None and needs_apply(manifest, live):
                changes.append(ObjectChange("update", key, manifest, "differs from the plan"))
            continue
        change = object_change(manifest, live)
        if change is not None:
            changes.append(change)
    changes = _new_quota_after_new_claims(changes)
    wanted = {object_key(m) for m in desired}
    for key in sorted(set(owned) - wanted, key=lambda k: PRUNE_ORDER.index(k[1])):
        if key[1] == "Namespace" and phase is not WorkspacePhase.TORN_DOWN:
            continue
        changes.append(ObjectChange("prune", key, None, "no longer granted"))
    return changes


def object_change(manifest: Manifest, live: Manifest | None) -> ObjectChange | None:
    """The write that makes `live` what `manifest` plans, or None when it already is."""
    key = object_key(manifest)
    if live is not None and needs_replace(manifest, live):
        # Someone added to a security object: put back exactly what we planned, as a
        # whole-object update on top of the version we read.
        version = live["metadata"]["resourceVersion"]
        whole = {**manifest, "metadata": {**manifest["metadata"], "resourceVersion": version}}
        return ObjectChange("replace", key, whole, "has additions not in the plan")
    if live is None:
        return ObjectChange("create", key, manifest, "missing")
    if needs_apply(manifest, live):
        return ObjectChange("update", key, manifest, "differs from the plan")
    return None


def read_grant_changes(desired: list[Manifest], live: Mapping[Key, Manifest]) -> list[ObjectChange]:
    """The project's read grants (planning/read_grants.py) made as planned, then the ones no
    longer planned removed, each binding before its role."""
    changes = [c for m in desired if (c := object_change(m, live.get(object_key(m)))) is not None]
    wanted = {object_key(m) for m in desired}
    leftovers = sorted(set(live) - wanted, key=lambda k: (k[3], k[1] != "ClusterRoleBinding"))
    return changes + [
        ObjectChange("prune", key, None, "no longer concerns them") for key in leftovers
    ]


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


# --- statuses and conditions --------------------------------------------------------------------


def condition(
    type_: str,
    ok: bool,
    reason: str,
    message: str,
    now: dt.datetime,
    previous: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """A condition that keeps its lastTransitionTime while its status does not flip."""
    status = "True" if ok else "False"
    old = next((c for c in previous if c.get("type") == type_), None)
    since = old.get("lastTransitionTime") if old and old.get("status") == status else None
    return Condition(
        type=type_, status=status, reason=reason, message=message, last_transition_time=since or now
    ).to_wire()


def request_status(
    evaluation: RequestEvaluation, request: AccessRequest, now: dt.datetime
) -> dict[str, Any]:
    previous = [c.to_wire() for c in request.status.conditions]
    approved = evaluation.phase is RequestPhase.APPROVED
    return {
        "phase": evaluation.phase.value,
        "approvers": list(evaluation.approvers),
        **(
            {"effectiveEndDate": evaluation.effective_end_date.isoformat()}
            if evaluation.effective_end_date
            else {}
        ),
        "conditions": [
            condition("Approved", approved, evaluation.reason, evaluation.message, now, previous)
        ],
    }


def _workspace_status(
    phase: WorkspacePhase,
    decision: PhaseDecision,
    spec: WorkspaceSpec,
    changes: list[DatasetChange],
    settings: Settings,
    now: dt.datetime,
    live_ws: Manifest | None,
    live_status: WorkspaceStatus,
    conflict: str | None,
    live_ns: Manifest | None,
) -> dict[str, Any]:
    previous = ((live_ws or {}).get("status") or {}).get("conditions") or []
    if conflict is not None:
        # Nothing was written: the workspace stays what it was, never Ready.
        shown_phase = (
            live_status.phase
            if live_ws is not None and live_status.phase is not WorkspacePhase.READY
            else WorkspacePhase.PROVISIONING
        )
        return WorkspaceStatus(
            phase=shown_phase,
            frozen_at=live_status.frozen_at,
            namespace_uid=live_status.namespace_uid,
            conditions=[
                Condition.model_validate(
                    condition("Ready", False, "NamespaceConflict", conflict, now, previous)
                )
            ],
        ).to_wire()
    ready = condition(
        "Ready",
        phase is WorkspacePhase.READY,
        phase.value,
        _phase_message(phase, spec, settings),
        now,
        previous,
    )
    uid = None
    if live_ns is not None and phase is not WorkspacePhase.TORN_DOWN:
        uid = live_ns["metadata"].get("uid")
    elif phase is not WorkspacePhase.TORN_DOWN:
        uid = live_status.namespace_uid  # the executor fills in the new namespace's uid
    return WorkspaceStatus(
        phase=phase,
        frozen_at=decision.frozen_at,
        torn_down_at=(live_status.torn_down_at or now)
        if phase is WorkspacePhase.TORN_DOWN
        else None,
        namespace_uid=uid,
        conditions=[
            Condition.model_validate(c) for c in (ready, _dataset_condition(changes, now, previous))
        ],
    ).to_wire()


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
    changes: list[DatasetChange], now: dt.datetime, previous: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    if not changes:
        return condition(
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
    return condition(
        "DatasetChanged",
        True,
        "ManifestMismatch",
        f"not mounted until enough approvers approve the current content: {detail}",
        now,
        previous,
    )


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


# --- audit events, derived from state -----------------------------------------------------------


def _request_audit_events(
    project: str,
    evaluated: list[tuple[AccessRequest, RequestEvaluation]],
    statuses: list[RequestStatusWrite],
    now: dt.datetime,
) -> list[AuditEvent]:
    """Every decision (keyed by request uid and index, whoever's client wrote it) and every
    request phase since its last transition (keyed by phase and transition time)."""
    planned = {s.name: s.status for s in statuses}
    events: list[AuditEvent] = []
    for request, evaluation in evaluated:
        subject = f"accessrequest/{request.name}"
        uid = request.uid or request.name
        events += _decision_events(project, request, subject, uid)
        status = planned.get(request.name) or request.status.to_wire()
        conditions = status.get("conditions") or []
        since = conditions[0].get("lastTransitionTime") if conditions else None
        since_text = since.isoformat() if isinstance(since, dt.datetime) else str(since or now)
        events.append(
            AuditEvent(
                key=f"request/{uid}/phase/{evaluation.phase.value}/{since_text}",
                actor=CONTROLLER_ACTOR,
                action="request.phase",
                subject=subject,
                details={
                    "project": project,
                    "phase": evaluation.phase.value,
                    "reason": evaluation.reason,
                    "message": evaluation.message,
                    "approvers": list(evaluation.approvers),
                },
            )
        )
    return events


def _decision_events(
    project: str, request: AccessRequest, subject: str, uid: str
) -> list[AuditEvent]:
    """Every decision of `request`, keyed by its uid and index, whoever's client wrote it."""
    events: list[AuditEvent] = []
    for index, decision in enumerate(request.spec.decisions):
        events.append(
            AuditEvent(
                key=f"decision/{uid}/{index}",
                actor=decision.by,
                action=f"request.{decision.action.value}",
                subject=subject,
                details={
                    "project": project,
                    "index": index,
                    "at": decision.at.isoformat(),
                    "comment": decision.comment,
                    **({"endDate": decision.end_date.isoformat()} if decision.end_date else {}),
                    **(
                        {"manifestHashes": dict(decision.manifest_hashes)}
                        if decision.manifest_hashes
                        else {}
                    ),
                    **(
                        {
                            "classifications": {
                                k: v.value for k, v in decision.classifications.items()
                            }
                        }
                        if decision.classifications
                        else {}
                    ),
                },
            )
        )
    return events


def _deleted_request_events(project: str, request: AccessRequest) -> list[AuditEvent]:
    """A request being deleted: its decisions (they may have come after the last pass) and its
    deletion, with the phase it had."""
    subject = f"accessrequest/{request.name}"
    uid = request.uid or request.name
    return [
        *_decision_events(project, request, subject, uid),
        _deleted_event(f"request/{uid}", "request", subject, project, request),
    ]


def _workspace_audit_events(
    project: str,
    live_ws: Manifest | None,
    status: Manifest,
    prunes: list[ObjectChange],
) -> list[AuditEvent]:
    """The workspace's phase (keyed by phase and transition time), what the live Workspace
    grants (keyed by its generation), and every foreign object removed from its namespace."""
    subject = f"workspace/{project}"
    ready: Mapping[str, Any] = next(
        (c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {}
    )
    since = ready.get("lastTransitionTime")
    since_text = since.isoformat() if isinstance(since, dt.datetime) else str(since)
    events = [
        AuditEvent(
            key=f"workspace/{project}/phase/{status['phase']}/{since_text}",
            actor=CONTROLLER_ACTOR,
            action="workspace.phase",
            subject=subject,
            details={"phase": status["phase"], "reason": ready.get("reason")},
        )
    ]
    if live_ws is not None:
        events.append(workspace_grants_event(live_ws))
    for change in prunes:
        if change.why == FOREIGN:
            _, kind, namespace, name = change.key
            events.append(
                AuditEvent(
                    key=f"workspace/{project}/removed/{kind}/{namespace}/{name}/{since_text}",
                    actor=CONTROLLER_ACTOR,
                    action="workspace.foreign-object-removed",
                    subject=subject,
                    details={"kind": kind, "namespace": namespace, "name": name},
                )
            )
    return events


def notebook_audit(
    project: str,
    pods: Sequence[Manifest],
    recorded: Sequence[NotebookRecord],
    live_spec: Mapping[str, Any],
    audited: AbstractSet[str] | None,
) -> tuple[list[NotebookRecord], list[AuditEvent]]:
    """Every notebook start and stop, derived from the pods in the project namespace.

    A pod seen for the first time is a start, with its user and the datasets it mounts (name
    and the manifest the workspace pins). A pod listed in the Workspace status and gone from
    the namespace is a stop. The status keeps listing a stopped pod until its stop is in the
    log, so a stop between two passes, or one whose append failed, is still written. Returns
    the status list and the events (filtered by `audited` later, like every event).
    """
    pinned = {
        names.dataset_pvc_name(d["name"]): (d["name"], d.get("manifestSha256"))
        for d in live_spec.get("datasets") or []
    }
    subject = f"workspace/{project}"
    running: list[NotebookRecord] = []
    exited: list[NotebookRecord] = []
    events: list[AuditEvent] = []
    for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
        meta = pod["metadata"]
        spec = pod.get("spec") or {}
        record = NotebookRecord(
            pod=meta["name"],
            uid=meta.get("uid") or meta["name"],
            user=(meta.get("annotations") or {}).get(ANNOTATION_USER, ""),
        )
        claims = [
            claim
            for volume in spec.get("volumes") or []
            if (claim := (volume.get("persistentVolumeClaim") or {}).get("claimName"))
        ]
        # `tre check`'s probe pods are started for a member as well (admission wants one):
        # the admin who ran the check is named, so the log does not pin it on the member.
        probe_by = (meta.get("annotations") or {}).get(names.ANNOTATION_CHECK_PROBE_BY)
        events.append(
            AuditEvent(
                key=_notebook_key(project, record, "started"),
                actor=CONTROLLER_ACTOR,
                action="notebook.started",
                subject=subject,
                details={
                    "user": record.user,
                    "pod": record.pod,
                    "datasets": {pinned[c][0]: pinned[c][1] for c in claims if c in pinned},
                    "image": next((c.get("image") for c in spec.get("containers") or []), None),
                    **({"checkProbeBy": probe_by} if probe_by else {}),
                },
            )
        )
        # An exited pod (its object may linger) has stopped, whether or not we saw it run.
        exited_phase = (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")
        (exited if exited_phase else running).append(record)
    running_uids = {record.uid for record in running}
    recorded_uids = {record.uid for record in recorded}
    stopped = [r for r in recorded if r.uid not in running_uids]
    stopped += [r for r in exited if r.uid not in recorded_uids]
    pending: list[NotebookRecord] = []
    for record in stopped:
        stop = AuditEvent(
            key=_notebook_key(project, record, "stopped"),
            actor=CONTROLLER_ACTOR,
            action="notebook.stopped",
            subject=subject,
            details={"user": record.user, "pod": record.pod},
        )
        events.append(stop)
        if audited is not None and stop.key not in audited:
            pending.append(record)
    return sorted([*running, *pending], key=lambda r: (r.pod, r.uid)), events


def _with_browser_usage(
    status: dict[str, Any],
    live: WorkspaceStatus,
    activities: Sequence[BrowserActivity],
    now: dt.datetime,
) -> dict[str, Any]:
    """`status` with the day's browser counts and, once anyone's browser was counted, the
    budget condition (`planning.browser`)."""
    usage = browser.usage_today(live.browser, activities, now.date())
    conditions = status.get("conditions") or []
    if usage or any(c.type == browser.CONDITION for c in live.conditions):
        ok, reason, message = browser.budget_condition(usage)
        previous = [c.to_wire() for c in live.conditions]
        conditions = [*conditions, condition(browser.CONDITION, ok, reason, message, now, previous)]
    return {**status, "browser": [u.to_wire() for u in usage], "conditions": conditions}


def browser_audit_events(project: str, activities: Sequence[BrowserActivity]) -> list[AuditEvent]:
    """Every record of the browser gates: the person is the actor (what their browser
    received or sent), the pod the subject; keyed by the pod's uid and the record's number."""
    return [
        AuditEvent(
            key=browser.record_key(activity, record.seq),
            actor=activity.spec.user,
            action=f"browser.{record.event}",
            subject=f"pod/{activity.namespace}/{activity.spec.pod}",
            details={
                "project": project,
                "at": record.at.isoformat(),
                "seq": record.seq,
                **record.fields,
            },
        )
        for activity in activities
        for record in activity.spec.records
    ]


def _notebook_key(project: str, record: NotebookRecord, what: str) -> str:
    return f"notebook/{project}/{record.uid}/{what}"


def workspace_grants_event(live_ws: Manifest) -> AuditEvent:
    """What a Workspace object grants (members, pinned datasets, owner), keyed by its uid and
    generation: the API server bumps the generation on every spec change, so each state is
    logged once, including a return to an earlier one."""
    meta = live_ws["metadata"]
    spec = live_ws.get("spec") or {}
    return AuditEvent(
        key=f"workspace/{meta['name']}/{meta.get('uid', '')}/generation/{meta.get('generation')}",
        actor=CONTROLLER_ACTOR,
        action="workspace.grants",
        subject=f"workspace/{meta['name']}",
        details={
            "generation": meta.get("generation"),
            "owner": spec.get("owner"),
            "members": list(spec.get("members") or []),
            "datasets": {d["name"]: d.get("manifestSha256") for d in spec.get("datasets") or []},
            "requests": list(spec.get("requests") or []),
        },
    )


def dataset_manifest_event(
    name: str, uid: str, spec: DatasetSpec, manifest: DatasetManifest
) -> AuditEvent:
    """A manifest the controller recorded, keyed by dataset uid and the time it was computed;
    derived from each pass's snapshot too, so an append that failed is written later."""
    return AuditEvent(
        key=f"dataset/{uid or name}/manifest/{manifest.computed_at.isoformat()}",
        actor=CONTROLLER_ACTOR,
        action="dataset.verified",
        subject=f"dataset/{name}",
        details={
            "source": source_uri(spec.source),
            "classification": spec.classification.value,
            "sha256": manifest.sha256,
            "objects": manifest.object_count,
            "bytes": manifest.bytes,
        },
    )


def dataset_audit_events(
    datasets: Mapping[str, Dataset], audited: AbstractSet[str]
) -> list[AuditEvent]:
    """The recorded manifest of every dataset, for those the log does not hold yet."""
    events = [
        dataset_manifest_event(d.name, d.uid, d.spec, d.status.manifest)
        for d in sorted(datasets.values(), key=lambda d: d.name)
        if d.status.manifest is not None
    ]
    return [e for e in events if e.key not in audited]


def _unaudited(events: list[AuditEvent], audited: AbstractSet[str] | None) -> list[AuditEvent]:
    if audited is None:
        return []
    return [e for e in events if e.key not in audited]
