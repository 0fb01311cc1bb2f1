"""Pure rules: what a project's AccessRequests mean, and what its workspace holds.

The API server guarantees who may write which decision (admission policies); this module
decides what the decisions *mean*, the same way for the controller, the CLI and the tests.

A project is the unit of authorisation:
- Its **owner** is the lead of its first approved request (recorded by the controller in the
  Workspace, kept until the workspace is TornDown). Every other request for the project is an
  **amendment** and counts only when the owner filed it; any other request stays **Pending**
  with reason `NotProjectOwner`: it is never merged into someone else's workspace.
- A request is judged against the workspace it would produce: the project's active
  requests, whatever their creation order, plus itself. Its approvers may not be members of
  that union (nor its requester or lead): an approval or content pin given before its
  approver joined the project stops counting when they join. It needs two distinct
  approvers when any dataset of that union is at or above `settings.two_approver_tier`, by
  the highest tier recorded in an approval or current.
- The owner holds the lead's powers (release and download of exports, revoking a release as
  lead, filing amendments) only while a current member of the workspace (`acting_lead`); a
  recorded owner whose own access was revoked or ended keeps the slug, not the powers.

A request is:
- **Revoked** after a revoke decision and **Rejected** after a reject, whatever came before;
- **Pending** while it names a dataset that does not exist, lacks enough counted approvals,
  or is an amendment by someone other than the owner;
- **Approved** once enough distinct counted approvers approved it;
- **Expired** the day after its effective end date: `spec.endDate`, or a later date that as
  many distinct counted approvers extended it to as its approval needed.

A dataset of an active request is mounted only with content that enough of its approvers
saw: for a two-approver tier, two distinct approvals must pin the dataset's *current*
manifest hash. Otherwise it is withheld and reported (`DatasetChanged`), never silently shown
with new content.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from provisioner.models.resources import (
    AccessRequest,
    Dataset,
    DecisionAction,
    RequestPhase,
    WorkspaceDataset,
    WorkspacePhase,
    WorkspaceSpec,
)
from provisioner.models.settings import Settings
from provisioner.models.types import ClassificationTier, ComputeTier
from provisioner.planning.names import namespace_name

_TIER_ORDER = list(ComputeTier)
NOT_PROJECT_OWNER = "NotProjectOwner"


@dataclass(frozen=True)
class ProjectUnion:
    """The workspace a request would join: its project's earlier active requests."""

    members: frozenset[str] = frozenset()
    datasets: frozenset[str] = frozenset()


@dataclass(frozen=True)
class RequestEvaluation:
    phase: RequestPhase
    reason: str  # CamelCase, for the status condition
    message: str
    approvers: tuple[str, ...] = ()
    required_approvers: int = 1
    effective_end_date: dt.date | None = None
    # dataset -> the current manifest sha256, for datasets enough approvers saw as they are
    mounted_manifests: Mapping[str, str] = field(default_factory=dict)
    # dataset -> the hash its approvers pinned ("" if none), for datasets withheld
    withheld: Mapping[str, str] = field(default_factory=dict)
    # when the approval that made it Approved was given (the owner is the first one's lead)
    approved_at: dt.datetime | None = None

    def active_on(self, request: AccessRequest, today: dt.date) -> bool:
        return (
            self.phase is RequestPhase.APPROVED
            and request.spec.start_date <= today
            and self.effective_end_date is not None
            and today <= self.effective_end_date
        )


def excluded_approvers(request: AccessRequest, union: ProjectUnion) -> frozenset[str]:
    """Who may not approve or extend `request`: everyone it would give access to."""
    spec = request.spec
    return frozenset({spec.requester, spec.lead, *spec.members, *union.members})


def highest_tier(
    request: AccessRequest, datasets: Mapping[str, Dataset], union: ProjectUnion
) -> ClassificationTier | None:
    """The strictest tier of the data the request's workspace would hold: the current tier
    of every dataset of the request and of the union, and every tier an approval recorded."""
    tiers = [
        datasets[name].spec.classification
        for name in {*request.spec.datasets, *union.datasets}
        if name in datasets
    ]
    for decision in request.spec.decisions:
        tiers.extend(decision.classifications.values())
    return max(tiers, key=lambda t: t.rank, default=None)


def required_approvers(
    request: AccessRequest,
    datasets: Mapping[str, Dataset],
    settings: Settings,
    union: ProjectUnion = ProjectUnion(),
) -> int:
    tier = highest_tier(request, datasets, union)
    return 2 if tier is not None and tier.rank >= settings.two_approver_tier.rank else 1


def effective_end_date(request: AccessRequest, excluded: frozenset[str], needed: int) -> dt.date:
    """`spec.endDate`, moved to the latest date that `needed` distinct counted approvers all
    extended the request to (at least)."""
    furthest: dict[str, dt.date] = {}
    for decision in request.spec.decisions:
        if (
            decision.action is DecisionAction.EXTEND
            and decision.end_date is not None
            and decision.by not in excluded
        ):
            furthest[decision.by] = max(decision.end_date, furthest.get(decision.by, dt.date.min))
    agreed = sorted(furthest.values(), reverse=True)
    if len(agreed) < needed:
        return request.spec.end_date
    return max(request.spec.end_date, agreed[needed - 1])


def evaluate_request(
    request: AccessRequest,
    datasets: Mapping[str, Dataset],
    settings: Settings,
    today: dt.date,
    union: ProjectUnion = ProjectUnion(),
) -> RequestEvaluation:
    """The phase of one request, judged against the workspace it would join (`union`)."""
    spec = request.spec
    excluded = excluded_approvers(request, union)
    needed = required_approvers(request, datasets, settings, union)
    end = effective_end_date(request, excluded, needed)
    for decision in spec.decisions:
        if decision.action is DecisionAction.REVOKE:
            return RequestEvaluation(
                RequestPhase.REVOKED,
                "Revoked",
                f"revoked by {decision.by} at {decision.at:%Y-%m-%d %H:%M}Z: "
                f"{decision.comment or 'no comment'}",
                effective_end_date=end,
            )
    for decision in spec.decisions:
        if decision.action is DecisionAction.REJECT:
            return RequestEvaluation(
                RequestPhase.REJECTED,
                "Rejected",
                f"rejected by {decision.by}: {decision.comment or 'no comment'}",
                effective_end_date=end,
            )
    missing = [name for name in spec.datasets if name not in datasets]
    if missing:
        return RequestEvaluation(
            RequestPhase.PENDING,
            "UnknownDataset",
            f"dataset(s) {', '.join(missing)} do not exist; register them or amend the request",
            effective_end_date=end,
        )
    approvers: list[str] = []
    approved_at: dt.datetime | None = None
    for decision in spec.decisions:
        counted = decision.action is DecisionAction.APPROVE and decision.by not in excluded
        if counted and decision.by not in approvers:
            approvers.append(decision.by)
            if len(approvers) == needed:
                approved_at = decision.at
    if len(approvers) < needed:
        return RequestEvaluation(
            RequestPhase.PENDING,
            "AwaitingApproval",
            f"{len(approvers)} of {needed} distinct approvals by people outside the project",
            approvers=tuple(approvers),
            required_approvers=needed,
            effective_end_date=end,
        )
    mounted, withheld = _content_approved(request, datasets, excluded, settings)
    approved = RequestEvaluation(
        RequestPhase.APPROVED,
        "Approved",
        f"approved by {', '.join(approvers)}",
        approvers=tuple(approvers),
        required_approvers=needed,
        effective_end_date=end,
        mounted_manifests=mounted,
        withheld=withheld,
        approved_at=approved_at,
    )
    if today > end:
        return replace(
            approved, phase=RequestPhase.EXPIRED, reason="Expired", message=f"ended on {end}"
        )
    return approved


def _content_approved(
    request: AccessRequest,
    datasets: Mapping[str, Dataset],
    excluded: frozenset[str],
    settings: Settings,
) -> tuple[dict[str, str], dict[str, str]]:
    """(mounted, withheld): per dataset, whether enough counted approvers pinned its current
    manifest (two for a two-approver tier, by the highest tier recorded or current)."""
    mounted: dict[str, str] = {}
    withheld: dict[str, str] = {}
    threshold = settings.two_approver_tier.rank
    for name in request.spec.datasets:
        dataset = datasets[name]
        current = dataset.status.manifest.sha256 if dataset.status.manifest else None
        pins: dict[str, set[str]] = {}
        tiers = [dataset.spec.classification]
        last_pin = ""
        for decision in request.spec.decisions:
            if decision.action is not DecisionAction.APPROVE or decision.by in excluded:
                continue
            if name in decision.classifications:
                tiers.append(decision.classifications[name])
            if name in decision.manifest_hashes:
                last_pin = decision.manifest_hashes[name]
                pins.setdefault(last_pin, set()).add(decision.by)
        need = 2 if max(t.rank for t in tiers) >= threshold else 1
        if current is not None and len(pins.get(current, ())) >= need:
            mounted[name] = current
        else:
            withheld[name] = last_pin
    return mounted, withheld


def evaluate_project(
    requests: Sequence[AccessRequest],
    datasets: Mapping[str, Dataset],
    settings: Settings,
    today: dt.date,
    *,
    owner: str | None,
    founding_request: str | None,
) -> tuple[list[tuple[AccessRequest, RequestEvaluation]], str | None, str | None]:
    """Every request of one project, judged against the people and data of all its active
    requests, whatever their creation order; returns them with the project's owner and
    founding request.

    Two passes (review 3, S19): the first judges each request in creation order against
    the earlier active ones, as it was judged when approved; the second judges each request
    the first found active again, against the union of *all* of them. So an approval or a
    content pin by someone who joined the project later stops counting. The second pass
    only takes requests out of the first's active set, so the people it leaves active are
    within the union it excluded: no third pass is needed, and every pass ends the same.

    `owner`/`founding_request`: as recorded in the live Workspace (None when the project has
    none yet, or its workspace was TornDown). Without one, the lead of the request that was
    approved first founds the project.
    """
    ordered = sorted(requests, key=lambda r: (r.created_at or dt.datetime.min, r.name))
    if owner is None:
        founding = _first_approved(ordered, datasets, settings, today)
        if founding is not None:
            owner, founding_request = founding.spec.lead, founding.name
    first = _evaluate_in_order(ordered, datasets, settings, today, owner, founding_request)
    everyone = _joined(ProjectUnion(), [r for r, e in first if e.active_on(r, today)])
    evaluated = [
        (request, _judged_with(request, evaluation, everyone, datasets, settings, today))
        for request, evaluation in first
    ]
    return evaluated, owner, founding_request


def _judged_with(
    request: AccessRequest,
    evaluation: RequestEvaluation,
    union: ProjectUnion,
    datasets: Mapping[str, Dataset],
    settings: Settings,
    today: dt.date,
) -> RequestEvaluation:
    """An active `request` judged again against `union` (all the active requests); any
    other keeps its first judgement, so nothing becomes active in this pass."""
    if not evaluation.active_on(request, today):
        return evaluation
    return evaluate_request(request, datasets, settings, today, union)


def _evaluate_in_order(
    ordered: Sequence[AccessRequest],
    datasets: Mapping[str, Dataset],
    settings: Settings,
    today: dt.date,
    owner: str | None,
    founding_request: str | None,
) -> list[tuple[AccessRequest, RequestEvaluation]]:
    """Each request judged against the union of the earlier active ones (the founding
    request first)."""
    ordered = list(ordered)
    # The founding request comes first: every amendment is judged with it in the union.
    ordered.sort(key=lambda r: r.name != founding_request)
    union = ProjectUnion()
    evaluated: list[tuple[AccessRequest, RequestEvaluation]] = []
    for _, group in itertools.groupby(
        ordered, key=lambda r: (r.name != founding_request, r.created_at)
    ):
        # Requests filed in the same second have no order: each is judged with the others'
        # people and data in its union, which can only make it stricter.
        same_time = list(group)
        for request in same_time:
            if (
                owner is not None
                and request.name != founding_request
                and (request.spec.requester != owner)
            ):
                evaluation = _not_owner(request, owner)
            else:
                others = [o for o in same_time if o is not request]
                evaluation = evaluate_request(
                    request, datasets, settings, today, _joined(union, others)
                )
            evaluated.append((request, evaluation))
        union = _joined(
            union, [r for r, e in evaluated[-len(same_time) :] if e.active_on(r, today)]
        )
    return evaluated


def _joined(union: ProjectUnion, requests: Iterable[AccessRequest]) -> ProjectUnion:
    members, names = set(union.members), set(union.datasets)
    for request in requests:
        members.update({request.spec.lead, *request.spec.members})
        names.update(request.spec.datasets)
    return ProjectUnion(members=frozenset(members), datasets=frozenset(names))


def _first_approved(
    ordered: Sequence[AccessRequest],
    datasets: Mapping[str, Dataset],
    settings: Settings,
    today: dt.date,
) -> AccessRequest | None:
    """The request whose approval completed first (judged on its own), if any is approved."""
    approved = []
    for index, request in enumerate(ordered):
        evaluation = evaluate_request(request, datasets, settings, today)
        if evaluation.phase is RequestPhase.APPROVED and evaluation.approved_at is not None:
            approved.append((evaluation.approved_at, index, request))
    return min(approved, key=lambda t: (t[0], t[1]))[2] if approved else None


def _not_owner(request: AccessRequest, owner: str) -> RequestEvaluation:
    return RequestEvaluation(
        RequestPhase.PENDING,
        NOT_PROJECT_OWNER,
        f"project {request.spec.project!r} belongs to {owner}, and only its owner may file "
        f"further requests for it (filed by {request.spec.requester}); ask {owner} to file an "
        "amendment, or choose another project slug",
    )


def decision_refusal(
    request: AccessRequest,
    me: str,
    action: DecisionAction,
    *,
    project_members: frozenset[str] = frozenset(),
) -> str | None:
    """Why `me` may not append `action` to `request`, or None: the rules the admission
    policies enforce, for a friendly message before the API server says the same."""
    spec = request.spec
    granting = action in (DecisionAction.APPROVE, DecisionAction.EXTEND)
    if granting and me in (spec.requester, spec.lead, *spec.members):
        role = "requester" if me == spec.requester else "lead" if me == spec.lead else "a member"
        return (
            f"you ({me}) are {role} of request {request.name} and may not {action.value} it: "
            "nobody approves their own access; another approver must decide"
        )
    if granting and me in project_members:
        return (
            f"you ({me}) are a member of project {spec.project} and may not {action.value} "
            "access to it; another approver must decide"
        )
    final = [
        d for d in spec.decisions if d.action in (DecisionAction.REJECT, DecisionAction.REVOKE)
    ]
    if final and action is not DecisionAction.REVOKE:
        return (
            f"request {request.name} was already {final[0].action.value}d by {final[0].by}; "
            "file a new request instead"
        )
    if action is DecisionAction.REVOKE and any(
        d.action is DecisionAction.REVOKE for d in spec.decisions
    ):
        return f"request {request.name} is already revoked"
    return None


def reserved_slug_refusal(project: str, reserved: Sequence[str]) -> str | None:
    if project in reserved:
        return (
            f"request.project: {project!r} would use the platform namespace "
            f"{namespace_name(project)}; choose another project slug"
        )
    return None


def owner_refusal(
    project: str, workspace: WorkspaceSpec | None, phase: WorkspacePhase | None, me: str
) -> str | None:
    """Why `me` may not file a request for `project` (its live workspace, None when it has
    none or was TornDown), or None: the rules of the project-owner admission policy."""
    owner = workspace.owner if workspace is not None else None
    if workspace is None or owner is None:
        return None
    if owner != me:
        return (
            f"request.project: project {project!r} belongs to {owner}, and only its owner may "
            f"file further requests for it; ask {owner} to file an amendment, or choose "
            "another project slug"
        )
    if acting_lead(workspace, phase) != me:
        return (
            f"request.project: you own project {project!r} but are not a current member of "
            "its workspace (your own access was revoked or has ended), so you file no "
            "amendment; an approver extends your own request first"
        )
    return None


def project_people(spec: WorkspaceSpec) -> frozenset[str]:
    """Everyone who has been a member, lead or owner of the project: they never review its
    exports, whenever they left."""
    return frozenset({*spec.people, *spec.members, *([spec.owner] if spec.owner else [])})


def acting_lead(spec: WorkspaceSpec, phase: WorkspacePhase | None) -> str | None:
    """Who holds the lead's powers now (release, download, revoking as lead, amendments):
    the owner, while a current member of the workspace; nobody otherwise (review 3, S9).

    Frozen and TornDown workspaces have no members. A workspace not yet Ready (the first
    pass writes it before its status) counts, so its owner may amend it at once; nothing is
    released or downloaded from it before it is Ready (the access ConfigMap has no lead
    until then)."""
    if phase in (WorkspacePhase.FROZEN, WorkspacePhase.TORN_DOWN) or spec.owner is None:
        return None
    return spec.owner if spec.owner in spec.members else None


@dataclass(frozen=True)
class DatasetChange:
    """An approved dataset whose content no longer matches what the approvers saw."""

    dataset: str
    approved_sha256: str
    current_sha256: str | None


def plan_workspace_spec(
    project: str,
    requests: Iterable[tuple[AccessRequest, RequestEvaluation]],
    datasets: Mapping[str, Dataset],
    today: dt.date,
    *,
    owner: str | None = None,
    founding_request: str | None = None,
) -> tuple[WorkspaceSpec, list[DatasetChange]]:
    """The effective state of `project`: the union of its active requests."""
    members: set[str] = set()
    chosen: dict[str, WorkspaceDataset] = {}
    changes: dict[str, DatasetChange] = {}
    tier = ComputeTier.SMALL
    expires: dt.date | None = None
    names: list[str] = []
    for request, evaluation in requests:
        if request.spec.project != project or not evaluation.active_on(request, today):
            continue
        names.append(request.name)
        members.update(request.spec.members)
        members.add(request.spec.lead)
        if _TIER_ORDER.index(request.spec.compute_tier) > _TIER_ORDER.index(tier):
            tier = request.spec.compute_tier
        end = evaluation.effective_end_date
        expires = end if expires is None or (end and end > expires) else expires
        for name, approved in evaluation.withheld.items():
            manifest = datasets[name].status.manifest
            changes[name] = DatasetChange(name, approved, manifest.sha256 if manifest else None)
        for name, sha256 in evaluation.mounted_manifests.items():
            dataset = datasets[name]
            chosen[name] = WorkspaceDataset(
                name=name,
                manifest_sha256=sha256,
                classification=dataset.spec.classification,
                source=dataset.spec.source,
            )
    for name in chosen:  # approved by another active request with the current content
        changes.pop(name, None)
    spec = WorkspaceSpec(
        project=project,
        owner=owner,
        founding_request=founding_request,
        namespace=namespace_name(project),
        members=sorted(members),
        datasets=[chosen[n] for n in sorted(chosen)],
        compute_tier=tier,
        expires_at=expires,
        requests=sorted(names),
    )
    return spec, [changes[n] for n in sorted(changes)]


def next_review_date(
    requests: Iterable[tuple[AccessRequest, RequestEvaluation]], today: dt.date
) -> dt.date | None:
    """The next day on which some request starts or stops counting: requeue then."""
    dates: list[dt.date] = []
    for request, evaluation in requests:
        if evaluation.phase is not RequestPhase.APPROVED:
            continue
        if request.spec.start_date > today:
            dates.append(request.spec.start_date)
        if evaluation.effective_end_date and evaluation.effective_end_date >= today:
            dates.append(evaluation.effective_end_date + dt.timedelta(days=1))
    return min(dates, default=None)
