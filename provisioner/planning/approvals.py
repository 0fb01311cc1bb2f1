"""Pure rules: what an AccessRequest's decisions mean, and what a project's workspace holds.

The API server guarantees who may write which decision (admission policies); this module
decides what the decisions *mean*, the same way for the controller, the CLI and the tests:

- A request is **Revoked** after a revoke decision and **Rejected** after a reject, whatever
  came before: both are final.
- It is **Approved** once it has approvals from enough distinct people: one, or two when any
  of its datasets is at or above `settings.two_approver_tier`. Approvals by the requester or
  the lead never count (the API server refuses them anyway; this is defence in depth).
- It is **Expired** the day after its effective end date: the latest of `spec.endDate` and
  any `extend` decision.
- A request that names a dataset that does not exist stays **Pending**: nobody can approve
  access to data we cannot describe.

A workspace is the union of a project's *active* requests (Approved, started, not expired):
members (plus each lead), datasets pinned to the manifest hash the approvers saw, the largest
compute tier and the latest end date. A dataset whose current manifest no longer matches the
approved hash is left out and reported, never silently shown with new content.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from provisioner.models.resources import (
    AccessRequest,
    Dataset,
    DecisionAction,
    RequestPhase,
    WorkspaceDataset,
    WorkspaceSpec,
)
from provisioner.models.settings import Settings
from provisioner.models.types import ComputeTier
from provisioner.planning.names import namespace_name

_TIER_ORDER = list(ComputeTier)


@dataclass(frozen=True)
class RequestEvaluation:
    phase: RequestPhase
    reason: str  # CamelCase, for the status condition
    message: str
    approvers: tuple[str, ...] = ()
    required_approvers: int = 1
    effective_end_date: dt.date | None = None
    # dataset -> manifest sha256 pinned by the latest approval that named it
    pinned_manifests: Mapping[str, str] = field(default_factory=dict)

    def active_on(self, request: AccessRequest, today: dt.date) -> bool:
        return (
            self.phase is RequestPhase.APPROVED
            and request.spec.start_date <= today
            and self.effective_end_date is not None
            and today <= self.effective_end_date
        )


def required_approvers(
    request: AccessRequest, datasets: Mapping[str, Dataset], settings: Settings
) -> int:
    threshold = settings.two_approver_tier.rank
    sensitive = any(
        datasets[name].spec.classification.rank >= threshold
        for name in request.spec.datasets
        if name in datasets
    )
    return 2 if sensitive else 1


def evaluate_request(
    request: AccessRequest,
    datasets: Mapping[str, Dataset],
    settings: Settings,
    today: dt.date,
) -> RequestEvaluation:
    spec = request.spec
    decisions = spec.decisions
    end = max([spec.end_date, *(d.end_date for d in decisions if d.end_date)])
    for decision in decisions:
        if decision.action is DecisionAction.REVOKE:
            return RequestEvaluation(
                RequestPhase.REVOKED,
                "Revoked",
                f"revoked by {decision.by} at {decision.at:%Y-%m-%d %H:%M}Z: "
                f"{decision.comment or 'no comment'}",
                effective_end_date=end,
            )
    for decision in decisions:
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
    excluded = {spec.requester, spec.lead}
    approvers: list[str] = []
    pinned: dict[str, str] = {}
    for decision in decisions:
        if decision.action is DecisionAction.APPROVE and decision.by not in excluded:
            if decision.by not in approvers:
                approvers.append(decision.by)
            pinned.update(decision.manifest_hashes)
    needed = required_approvers(request, datasets, settings)
    if len(approvers) < needed:
        return RequestEvaluation(
            RequestPhase.PENDING,
            "AwaitingApproval",
            f"{len(approvers)} of {needed} distinct approvals",
            tuple(approvers),
            needed,
            end,
        )
    if today > end:
        return RequestEvaluation(
            RequestPhase.EXPIRED,
            "Expired",
            f"ended on {end}",
            tuple(approvers),
            needed,
            end,
            pinned,
        )
    return RequestEvaluation(
        RequestPhase.APPROVED,
        "Approved",
        f"approved by {', '.join(approvers)}",
        tuple(approvers),
        needed,
        end,
        pinned,
    )


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
        for name in request.spec.datasets:
            dataset = datasets[name]
            approved = evaluation.pinned_manifests.get(name)
            current = dataset.status.manifest.sha256 if dataset.status.manifest else None
            if approved is None or approved != current:
                changes[name] = DatasetChange(name, approved or "", current)
                continue
            chosen[name] = WorkspaceDataset(
                name=name,
                manifest_sha256=approved,
                classification=dataset.spec.classification,
                source=dataset.spec.source,
            )
    for name in chosen:  # approved by another active request with the current content
        changes.pop(name, None)
    spec = WorkspaceSpec(
        project=project,
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
