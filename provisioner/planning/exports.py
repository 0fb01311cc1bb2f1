"""Pure rules: what the reviews of an ExportRequest mean.

The API server guarantees who may write which review (admission policies: the caller, an
output checker, neither the author nor a member of the project, once, nothing after a
decision); this module decides what the reviews *mean*, for the controller and the tests:

- **Withdrawn** once its author withdraws it (nothing is decided after that);
- **Rejected** as soon as a counted reviewer rejects any file;
- **Returned** when a counted reviewer asks for changes (the author files a new request);
- **Approved** once `required` distinct counted reviewers approved every output file;
- **Submitted** until then. Released and Revoked are the airlock's and are kept.

Reviews by the author or anyone who has been a member, lead or owner of the project never
count (the API server refuses them anyway; this holds for reviews written before a reviewer
joined the project too, and for former members: review 3, S8).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from provisioner.models.resources import (
    ExportFileKind,
    ExportPhase,
    ExportRequest,
    Vote,
    WorkspaceSpec,
)
from provisioner.models.types import ClassificationTier

# Phases set by the airlock when it releases or revokes: the reviews no longer decide them.
AIRLOCK_PHASES = (ExportPhase.RELEASED, ExportPhase.REVOKED)


@dataclass(frozen=True)
class ExportEvaluation:
    phase: ExportPhase
    reviewers: tuple[str, ...]
    message: str


def required_reviewers(
    tiers: Collection[ClassificationTier], by_tier: Mapping[ClassificationTier, int]
) -> int:
    """Distinct output checkers an export needs: the most any dataset of the workspace asks,
    at least two (two independent reviews is the floor of the platform)."""
    return max([2, *(by_tier.get(t, 2) for t in tiers)])


def export_reviewers(spec: WorkspaceSpec, by_tier: Mapping[ClassificationTier, int]) -> int:
    """What an export of the workspace needs: the most its data asks now or ever asked
    (`spec.export_reviewers`, kept by the controller while the workspace is Frozen too)."""
    tiers = {d.classification for d in spec.datasets}
    return max(spec.export_reviewers, required_reviewers(tiers, by_tier))


def evaluate_export(
    request: ExportRequest, people: Collection[str], required: int
) -> ExportEvaluation:
    """`people`: everyone who has been the project's (`approvals.project_people`)."""
    spec = request.spec
    if request.status.phase in AIRLOCK_PHASES:
        return ExportEvaluation(
            request.status.phase, tuple(request.status.reviewers), request.status.phase.value
        )
    if spec.withdrawn:
        return ExportEvaluation(ExportPhase.WITHDRAWN, (), f"withdrawn by {spec.author}")
    excluded = {spec.author, *people}
    outputs = {f.path for f in spec.files if f.kind is ExportFileKind.OUTPUT}
    approvers: list[str] = []
    for review in spec.reviews:
        if review.by in excluded:
            continue
        votes = {v.path: v for v in review.votes}
        rejected = [v for v in review.votes if v.vote is Vote.REJECT]
        if rejected:
            return ExportEvaluation(
                ExportPhase.REJECTED,
                (review.by,),
                f"rejected by {review.by}: {rejected[0].path}: "
                f"{rejected[0].comment or 'no comment'}",
            )
        changes = [v for v in review.votes if v.vote is Vote.CHANGES]
        if changes:
            return ExportEvaluation(
                ExportPhase.RETURNED,
                (review.by,),
                f"{review.by} asks for changes to {changes[0].path}: "
                f"{changes[0].comment or 'no comment'}",
            )
        approves = all(p in votes and votes[p].vote is Vote.APPROVE for p in outputs)
        if approves and review.by not in approvers:
            approvers.append(review.by)
    if len(approvers) >= required:
        return ExportEvaluation(
            ExportPhase.APPROVED, tuple(approvers), f"approved by {', '.join(approvers)}"
        )
    return ExportEvaluation(
        ExportPhase.SUBMITTED,
        tuple(approvers),
        f"{len(approvers)} of {required} independent reviews",
    )
