"""What the reviews of an ExportRequest mean (planning/exports.py).

Behaviours under test: two distinct independent reviewers approving every output file make it
Approved (supporting files need no approval); a review by the author or a project member
never counts; one reject rejects, one request for changes returns it; withdrawn is final;
released and revoked are the airlock's and kept; the number of reviewers follows the
workspace's highest tier and is never below two.

The airlock's records (release, revocation, access): the controller's status write never
names them, so its merge patch carries them over untouched; each is one audit event with a
key that names it for good (access by its index), in the order they happened, and a second
pass with those keys known derives the same keys again (the log writes only missing ones).
"""

from __future__ import annotations

import datetime as dt

import pytest

from provisioner.models.resources import (
    AccessAction,
    AccessRecord,
    ExportFile,
    ExportFileKind,
    ExportPhase,
    ExportRequest,
    ExportRequestSpec,
    ExportRequestStatus,
    ExportReview,
    FileVote,
    ReleaseRecord,
    RevocationRecord,
    Vote,
    WorkspaceSpec,
)
from provisioner.models.settings import Settings
from provisioner.models.types import ClassificationTier as T
from provisioner.planning.exports import evaluate_export, export_reviewers, required_reviewers
from provisioner.planning.project import export_audit_events, plan_export_statuses

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
        (export(phase=ExportPhase.REVOKED), ExportPhase.REVOKED, ()),
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
        "revoked-is-kept",
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


def minute(n: int) -> dt.datetime:
    return AT + dt.timedelta(minutes=n)


def released(*, revoked: bool = False) -> ExportRequest:
    """Approved by olga and piet, viewed by olga, released by lea, downloaded, maybe revoked."""
    base = export(review("olga"), review("piet"))
    status = ExportRequestStatus(
        phase=ExportPhase.REVOKED if revoked else ExportPhase.RELEASED,
        reviewers=["olga", "piet"],
        release=ReleaseRecord(by="lea", at=minute(10), manifest_sha256="c" * 64, files=1),
        revocation=RevocationRecord(by="olga", at=minute(30), reason="a cell of 3 patients")
        if revoked
        else None,
        access=[
            AccessRecord(by="olga", at=minute(1), action=AccessAction.VIEW, path="out/table.csv"),
            AccessRecord(
                by="lea", at=minute(20), action=AccessAction.DOWNLOAD, path="out/table.csv"
            ),
        ],
    )
    return base.model_copy(update={"status": status, "uid": "u-1"})


@pytest.mark.parametrize("revoked", [False, True], ids=["released", "revoked"])
def test_the_controllers_status_write_never_names_the_airlocks_records(revoked: bool) -> None:
    request = released(revoked=revoked)
    spec = WorkspaceSpec(project="cardio", namespace="tre-cardio", members=["lea", "ravi"])
    (write,) = plan_export_statuses([request], spec, Settings(), AT)
    # A merge patch leaves every key it does not name as it is.
    assert set(write.status) == {"phase", "reviewers", "conditions"}
    assert write.status["phase"] == request.status.phase.value


def test_each_airlock_record_is_one_audit_event_in_the_order_it_happened() -> None:
    events = export_audit_events("cardio", [released(revoked=True)], [], AT)
    airlock = [
        e for e in events if e.action not in ("export.submit", "export.review", "export.phase")
    ]
    assert [(e.key, e.actor, e.action) for e in airlock] == [
        ("export/u-1/access/0", "olga", "export.view"),
        ("export/u-1/released", "lea", "export.release"),
        ("export/u-1/access/1", "lea", "export.download"),
        ("export/u-1/revoked", "olga", "export.revoke"),
    ]
    assert airlock[0].details == {
        "project": "cardio",
        "path": "out/table.csv",
        "at": minute(1).isoformat(),
    }
    assert airlock[1].details == {
        "project": "cardio",
        "manifestSha256": "c" * 64,
        "files": 1,
        "at": minute(10).isoformat(),
    }
    assert airlock[3].details == {
        "project": "cardio",
        "reason": "a cell of 3 patients",
        "at": minute(30).isoformat(),
    }


def test_an_appended_record_adds_one_event_and_keeps_the_others_keys() -> None:
    before = released()
    after = before.model_copy(
        update={
            "status": before.status.model_copy(
                update={
                    "access": [
                        *before.status.access,
                        AccessRecord(
                            by="lea",
                            at=minute(21),
                            action=AccessAction.DOWNLOAD,
                            path="out/table.csv",
                        ),
                    ]
                }
            )
        }
    )
    keys_before = {e.key for e in export_audit_events("cardio", [before], [], AT)}
    keys_after = {e.key for e in export_audit_events("cardio", [after], [], AT)}
    assert keys_after - keys_before == {"export/u-1/access/2"}
    assert keys_before <= keys_after


def test_a_frozen_workspace_judges_exports_by_everyone_it_ever_had_and_its_floor() -> None:
    """Review 3, S8: after a freeze (members emptied) a former member's review still does not
    count, nor does the owner's, and the floor stays what the data asked (3), not 2."""
    frozen = WorkspaceSpec(
        project="cardio",
        namespace="tre-cardio",
        owner="lea",
        people=["lea", "ravi"],
        export_reviewers=3,
    )
    request = export(review("olga"), review("ravi"), review("piet"))
    (write,) = plan_export_statuses([request], frozen, Settings(), AT)
    assert (write.status["phase"], write.status["reviewers"]) == ("Submitted", ["olga", "piet"])
    owner_reviews = export(review("olga"), review("piet"), review("lea"), review("quinn"))
    (write,) = plan_export_statuses(
        [
            owner_reviews.model_copy(
                update={"spec": owner_reviews.spec.model_copy(update={"author": "ravi"})}
            )
        ],
        frozen,
        Settings(),
        AT,
    )
    assert write.status["reviewers"] == ["olga", "piet", "quinn"]
    assert write.status["phase"] == "Approved"


def test_the_floor_is_the_most_the_data_ever_asked() -> None:
    by_tier = {T.INTERNAL: 2, T.SENSITIVE: 3}
    spec = WorkspaceSpec(project="cardio", namespace="tre-cardio", export_reviewers=3)
    assert export_reviewers(spec, by_tier) == 3  # no data now, the sensitive data once
    assert export_reviewers(spec.model_copy(update={"export_reviewers": 2}), by_tier) == 2
