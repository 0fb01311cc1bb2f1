"""What the reviews of an ExportRequest mean (planning/exports.py).

Behaviours under test: two distinct independent reviewers approving every output file make it
Approved (supporting files need no approval); a review by the author or a project member
never counts; one reject rejects, one request for changes returns it; withdrawn is final;
released and revoked are the airlock's and kept; the number of reviewers follows the
workspace's highest tier and is never below two.
"""

from __future__ import annotations

import datetime as dt

import pytest

from provisioner.models.resources import (
    ExportFile,
    ExportFileKind,
    ExportPhase,
    ExportRequest,
    ExportRequestSpec,
    ExportRequestStatus,
    ExportReview,
    FileVote,
    Vote,
)
from provisioner.models.types import ClassificationTier as T
from provisioner.planning.exports import evaluate_export, required_reviewers

AT = dt.datetime(2026, 11, 30, 12, tzinfo=dt.UTC)
MEMBERS = {"lea", "ravi"}


def review(by: str, table: Vote = Vote.APPROVE, code: Vote = Vote.APPROVE) -> ExportReview:
    return ExportReview(
        by=by,
        at=AT,
        votes=[
            FileVote(path="out/table.csv", vote=table),
            FileVote(path="src/model.py", vote=code),
        ],
    )


def export(
    *reviews: ExportReview, withdrawn: bool = False, phase: ExportPhase | None = None
) -> ExportRequest:
    return ExportRequest(
        name="x",
        namespace="tre-cardio",
        spec=ExportRequestSpec(
            project="cardio",
            author="lea",
            files=[
                ExportFile(path="out/table.csv", size=10, sha256="a" * 64, description="counts"),
                ExportFile(
                    path="src/model.py",
                    size=10,
                    sha256="b" * 64,
                    kind=ExportFileKind.SUPPORTING,
                    description="the code",
                ),
            ],
            context="Readmission counts by age band, cohort of 4000 patients.",
            reviews=list(reviews),
            withdrawn=withdrawn,
        ),
        status=ExportRequestStatus(phase=phase or ExportPhase.SUBMITTED),
    )


@pytest.mark.parametrize(
    ("request_", "phase", "reviewers"),
    [
        (export(), ExportPhase.SUBMITTED, ()),
        (export(review("olga")), ExportPhase.SUBMITTED, ("olga",)),
        (export(review("olga"), review("piet")), ExportPhase.APPROVED, ("olga", "piet")),
        (
            export(review("olga"), review("piet", code=Vote.REJECT)),
            ExportPhase.REJECTED,
            ("piet",),
        ),
        (export(review("olga"), review("ravi")), ExportPhase.SUBMITTED, ("olga",)),
        (export(review("lea"), review("olga")), ExportPhase.SUBMITTED, ("olga",)),
        (export(review("olga", table=Vote.CHANGES)), ExportPhase.RETURNED, ("olga",)),
        (export(review("olga"), review("piet"), withdrawn=True), ExportPhase.WITHDRAWN, ()),
        (export(phase=ExportPhase.RELEASED), ExportPhase.RELEASED, ()),
    ],
    ids=[
        "no-review",
        "one-of-two",
        "two-independent",
        "one-reject-rejects",
        "member-does-not-count",
        "author-does-not-count",
        "changes-return-it",
        "withdrawn-is-final",
        "released-is-kept",
    ],
)
def test_evaluate_export(
    request_: ExportRequest, phase: ExportPhase, reviewers: tuple[str, ...]
) -> None:
    got = evaluate_export(request_, MEMBERS, 2)
    assert (got.phase, got.reviewers) == (phase, reviewers)


def test_required_reviewers_follow_the_highest_tier_and_never_go_below_two() -> None:
    by_tier = {T.PUBLIC: 1, T.INTERNAL: 2, T.CONFIDENTIAL: 2, T.SENSITIVE: 3}
    assert required_reviewers({T.PUBLIC}, by_tier) == 2
    assert required_reviewers({T.INTERNAL, T.SENSITIVE}, by_tier) == 3
    assert required_reviewers(set(), by_tier) == 2
