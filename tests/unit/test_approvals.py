"""What a project's decisions mean (pure rules of planning/approvals.py).

Behaviours under test, as a table where they are cases of one rule:
- revoke beats reject beats approve; an unknown dataset keeps a request Pending;
- approvals by the requester, the lead, a member of the request, or a member of the project's
  earlier active requests do not count; two distinct approvers at or above the two-approver
  tier, by the highest tier recorded in an approval or current;
- the lead of the request approved first owns the project; another requester's request for it
  stays Pending (NotProjectOwner) and never joins the workspace; the owner's amendment does,
  judged over the union (its tier and its excluded approvers);
- a dataset is mounted only with content enough approvers pinned; an approval of older content
  does not count for the new content;
- an extension moves the end date only when as many distinct approvers as the tier needs
  agree; the request expires the day after its effective end;
- the friendly refusals of `tre` say what the API server says;
- review 3, S19: an approval or content pin by someone who later joins the project (through
  any active request, whatever its creation order) stops counting; S9: the owner holds the
  lead's powers only as a current member of the workspace; everyone who ever was the project's
  stays one of its people.
"""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

import pytest

from provisioner.models.resources import (
    AccessRequest,
    AccessRequestSpec,
    Dataset,
    DatasetManifest,
    DatasetSource,
    DatasetSpec,
    DatasetStatus,
    Decision,
    DecisionAction,
    RequestPhase,
    S3Source,
    WorkspacePhase,
    WorkspaceSpec,
)
from provisioner.models.settings import Settings
from provisioner.models.types import ClassificationTier
from provisioner.planning.approvals import (
    NOT_PROJECT_OWNER,
    ProjectUnion,
    acting_lead,
    decision_refusal,
    evaluate_project,
    evaluate_request,
    owner_refusal,
    plan_workspace_spec,
    project_people,
)

TODAY = dt.date(2026, 11, 30)
T0 = dt.datetime(2026, 11, 30, 9, tzinfo=dt.UTC)
SETTINGS = Settings(two_approver_tier=ClassificationTier.CONFIDENTIAL)
_clock = itertools.count()


def sha(text: str) -> str:
    return (text * 64)[:64]


def dataset(name: str, tier: str = "internal", content: str = "a") -> Dataset:
    return Dataset(
        name=name,
        spec=DatasetSpec(
            title=name,
            steward="sam",
            classification=ClassificationTier(tier),
            source=DatasetSource(s3=S3Source(bucket="tre-data", prefix=f"{name}/")),
        ),
        status=DatasetStatus(
            manifest=DatasetManifest(object_count=1, bytes=1, sha256=sha(content), computed_at=T0)
        ),
    )


def approve(by: str, *datasets: Dataset, minutes: int = 0) -> Decision:
    return Decision(
        action=DecisionAction.APPROVE,
        by=by,
        at=T0 + dt.timedelta(minutes=minutes),
        manifest_hashes={d.name: d.status.manifest.sha256 for d in datasets if d.status.manifest},
        classifications={d.name: d.spec.classification for d in datasets},
    )


def request(
    name: str,
    datasets: list[str],
    decisions: list[Decision] | None = None,
    *,
    requester: str = "lea",
    lead: str | None = None,
    members: list[str] | None = None,
    project: str = "cardio",
    end: dt.date = dt.date(2027, 6, 30),
    created: int | None = None,
) -> AccessRequest:
    return AccessRequest(
        name=name,
        created_at=T0 + dt.timedelta(seconds=next(_clock) if created is None else created),
        spec=AccessRequestSpec(
            project=project,
            requester=requester,
            lead=lead or requester,
            members=members or [lead or requester],
            datasets=datasets,
            purpose="A study of heart failure.",
            start_date=dt.date(2026, 11, 1),
            end_date=end,
            decisions=decisions or [],
        ),
    )


def by_name(*datasets: Dataset) -> dict[str, Dataset]:
    return {d.name: d for d in datasets}


COHORT = dataset("cohort", "sensitive")
OPEN = dataset("open-data", "public")
LABS = dataset("labs", "internal")


@pytest.mark.parametrize(
    ("decisions", "datasets", "members", "phase", "reason"),
    [
        ([approve("ann", LABS)], ["labs"], None, RequestPhase.APPROVED, "Approved"),
        ([approve("lea", LABS)], ["labs"], None, RequestPhase.PENDING, "AwaitingApproval"),
        (
            [approve("ravi", LABS)],
            ["labs"],
            ["lea", "ravi"],
            RequestPhase.PENDING,
            "AwaitingApproval",
        ),
        ([approve("ann", COHORT)], ["cohort"], None, RequestPhase.PENDING, "AwaitingApproval"),
        (
            [approve("ann", COHORT), approve("ann", COHORT, minutes=1)],
            ["cohort"],
            None,
            RequestPhase.PENDING,
            "AwaitingApproval",
        ),
        (
            [approve("ann", COHORT), approve("bob", COHORT)],
            ["cohort"],
            None,
            RequestPhase.APPROVED,
            "Approved",
        ),
        (
            [approve("ann", LABS), Decision(action=DecisionAction.REJECT, by="bob", at=T0)],
            ["labs"],
            None,
            RequestPhase.REJECTED,
            "Rejected",
        ),
        (
            [
                Decision(action=DecisionAction.REJECT, by="bob", at=T0),
                Decision(action=DecisionAction.REVOKE, by="carl", at=T0),
            ],
            ["labs"],
            None,
            RequestPhase.REVOKED,
            "Revoked",
        ),
        ([approve("ann", LABS)], ["labs", "nowhere"], None, RequestPhase.PENDING, "UnknownDataset"),
    ],
    ids=[
        "one-approver",
        "requester-does-not-count",
        "member-does-not-count",
        "sensitive-needs-two",
        "same-approver-twice-counts-once",
        "sensitive-two-distinct",
        "reject-beats-approve",
        "revoke-beats-reject",
        "unknown-dataset",
    ],
)
def test_evaluate_request(
    decisions: list[Decision],
    datasets: list[str],
    members: list[str] | None,
    phase: RequestPhase,
    reason: str,
) -> None:
    got = evaluate_request(
        request("r", datasets, decisions, members=members),
        by_name(COHORT, OPEN, LABS),
        SETTINGS,
        TODAY,
    )
    assert (got.phase, got.reason) == (phase, reason)


def test_a_recorded_tier_counts_even_if_the_dataset_is_lower_now() -> None:
    lowered = dataset("cohort", "internal")  # the tier the approver saw was sensitive
    got = evaluate_request(
        request("r", ["cohort"], [approve("ann", COHORT)]), by_name(lowered), SETTINGS, TODAY
    )
    assert (got.phase, got.required_approvers) == (RequestPhase.PENDING, 2)


def test_members_of_earlier_requests_of_the_project_do_not_count() -> None:
    union = ProjectUnion(members=frozenset({"ann"}), datasets=frozenset())
    got = evaluate_request(
        request("r", ["labs"], [approve("ann", LABS)]), by_name(LABS), SETTINGS, TODAY, union
    )
    assert got.phase is RequestPhase.PENDING


def test_an_amendment_needs_the_tier_of_the_whole_workspace() -> None:
    union = ProjectUnion(datasets=frozenset({"cohort"}))
    got = evaluate_request(
        request("r", ["open-data"], [approve("ann", OPEN)]),
        by_name(COHORT, OPEN),
        SETTINGS,
        TODAY,
        union,
    )
    assert (got.phase, got.required_approvers) == (RequestPhase.PENDING, 2)


def test_content_changed_after_approval_is_withheld_until_two_pin_it() -> None:
    changed = dataset("cohort", "sensitive", content="b")
    decisions = [approve("ann", COHORT), approve("bob", COHORT)]
    got = evaluate_request(request("r", ["cohort"], decisions), by_name(changed), SETTINGS, TODAY)
    assert got.phase is RequestPhase.APPROVED
    assert (dict(got.mounted_manifests), dict(got.withheld)) == ({}, {"cohort": sha("a")})
    decisions.append(approve("ann", changed, minutes=5))
    one = evaluate_request(request("r", ["cohort"], decisions), by_name(changed), SETTINGS, TODAY)
    assert dict(one.mounted_manifests) == {}  # one approval of the new content is not enough
    decisions.append(approve("carl", changed, minutes=6))
    two = evaluate_request(request("r", ["cohort"], decisions), by_name(changed), SETTINGS, TODAY)
    assert dict(two.mounted_manifests) == {"cohort": sha("b")}


def _extend(by: str, until: dt.date) -> Decision:
    return Decision(action=DecisionAction.EXTEND, by=by, at=T0, end_date=until)


def test_an_extension_needs_as_many_approvers_as_the_tier() -> None:
    end = dt.date(2027, 6, 30)
    later = dt.date(2027, 9, 30)
    approvals = [approve("ann", COHORT), approve("bob", COHORT)]
    one = request("r", ["cohort"], [*approvals, _extend("ann", later)], end=end)
    assert evaluate_request(one, by_name(COHORT), SETTINGS, TODAY).effective_end_date == end
    two = request(
        "r", ["cohort"], [*approvals, _extend("ann", later), _extend("bob", later)], end=end
    )
    assert evaluate_request(two, by_name(COHORT), SETTINGS, TODAY).effective_end_date == later
    own = request("r", ["labs"], [approve("ann", LABS), _extend("lea", later)], end=end)
    assert evaluate_request(own, by_name(LABS), SETTINGS, TODAY).effective_end_date == end


def test_a_request_expires_the_day_after_its_end() -> None:
    r = request("r", ["labs"], [approve("ann", LABS)], end=TODAY)
    assert evaluate_request(r, by_name(LABS), SETTINGS, TODAY).phase is RequestPhase.APPROVED
    tomorrow = TODAY + dt.timedelta(days=1)
    assert evaluate_request(r, by_name(LABS), SETTINGS, tomorrow).phase is RequestPhase.EXPIRED


def _project(
    requests: list[AccessRequest], owner: str | None = None, founding: str | None = None
) -> Any:
    return evaluate_project(
        requests,
        by_name(COHORT, OPEN, LABS),
        SETTINGS,
        TODAY,
        owner=owner,
        founding_request=founding,
    )


def test_the_first_approved_request_founds_the_project() -> None:
    lenas = request("lenas", ["labs"], [approve("ann", LABS, minutes=1)], created=1)
    rival = request(
        "rival", ["open-data"], [approve("bob", OPEN, minutes=2)], requester="mallory", created=0
    )
    evaluated, owner, founding = _project([lenas, rival])
    assert (owner, founding) == ("lea", "lenas")
    phases = {r.name: (e.phase, e.reason) for r, e in evaluated}
    assert phases == {
        "lenas": (RequestPhase.APPROVED, "Approved"),
        "rival": (RequestPhase.PENDING, NOT_PROJECT_OWNER),
    }
    spec, _ = plan_workspace_spec("cardio", evaluated, by_name(LABS, OPEN), TODAY, owner=owner)
    assert (spec.members, [d.name for d in spec.datasets]) == (["lea"], ["labs"])


def test_a_recorded_owner_keeps_the_project_and_amendments_join() -> None:
    founding = request("first", ["labs"], [approve("ann", LABS)], requester="rik", lead="lea")
    amendment = request("amend", ["open-data"], [approve("bob", OPEN)], members=["lea", "nina"])
    intruder = request("sneak", ["open-data"], [approve("bob", OPEN)], requester="mallory")
    evaluated, owner, _ = _project([founding, amendment, intruder], owner="lea", founding="first")
    phases = {r.name: e.reason for r, e in evaluated}
    assert phases == {"first": "Approved", "amend": "Approved", "sneak": NOT_PROJECT_OWNER}
    spec, _ = plan_workspace_spec("cardio", evaluated, by_name(LABS, OPEN), TODAY, owner=owner)
    assert spec.members == ["lea", "nina"]


def test_approvers_of_an_amendment_may_not_be_members_of_the_project() -> None:
    first = request("first", ["labs"], [approve("ann", LABS)], members=["lea", "bob"])
    amendment = request("amend", ["open-data"], [approve("bob", OPEN)])
    evaluated, _, _ = _project([first, amendment])
    assert {r.name: e.reason for r, e in evaluated}["amend"] == "AwaitingApproval"


@pytest.mark.parametrize(
    ("me", "action", "fragment"),
    [
        ("lea", DecisionAction.APPROVE, "are requester of request r and may not approve it"),
        ("ravi", DecisionAction.EXTEND, "are a member of request r and may not extend it"),
        ("ann", DecisionAction.APPROVE, "are a member of project cardio"),
    ],
)
def test_friendly_refusals_name_who_and_why(me: str, action: DecisionAction, fragment: str) -> None:
    r = request("r", ["labs"], members=["lea", "ravi"])
    refusal = decision_refusal(r, me, action, project_members=frozenset({"ann"}))
    assert refusal is not None and fragment in refusal


def test_anyone_in_the_group_may_revoke_even_a_member() -> None:
    r = request("r", ["labs"], members=["lea", "ravi"])
    assert decision_refusal(r, "ravi", DecisionAction.REVOKE) is None


def test_requests_filed_in_the_same_second_are_judged_with_each_other() -> None:
    """Creation times have one-second resolution: an amendment that sorts before the founding
    request by name still needs the founding request's tier."""
    founding = request(
        "zz-first", ["cohort"], [approve("ann", COHORT), approve("bob", COHORT)], created=5
    )
    amendment = request("aa-amend", ["open-data"], [approve("carl", OPEN)], created=5)
    evaluated, owner, _ = _project([amendment, founding], owner="lea", founding="zz-first")
    reasons = {r.name: (e.reason, e.required_approvers) for r, e in evaluated}
    assert owner == "lea"
    assert reasons == {"zz-first": ("Approved", 2), "aa-amend": ("AwaitingApproval", 2)}


# --- review 3, S19: whoever joins later stops counting ------------------------------------------


def test_an_approval_by_someone_who_joins_later_stops_counting() -> None:
    founding = request("first", ["cohort"], [approve("ann", COHORT), approve("bob", COHORT)])
    # ann, who approved the founding request, joins through an amendment
    joins = request(
        "amend",
        ["open-data"],
        [approve("carl", OPEN), approve("dave", OPEN)],
        members=["lea", "ann"],
    )
    evaluated, _, _ = _project([founding, joins], owner="lea", founding="first")
    got = {r.name: (e.reason, e.approvers) for r, e in evaluated}
    assert got == {
        "first": ("AwaitingApproval", ("bob",)),
        "amend": ("Approved", ("carl", "dave")),
    }
    spec, _ = plan_workspace_spec("cardio", evaluated, by_name(COHORT, OPEN), TODAY, owner="lea")
    assert [d.name for d in spec.datasets] == ["open-data"]  # the cohort is withheld
    # a further independent approval brings it back
    again = founding.model_copy(
        update={
            "spec": founding.spec.model_copy(
                update={"decisions": [*founding.spec.decisions, approve("erin", COHORT)]}
            )
        }
    )
    evaluated, _, _ = _project([again, joins], owner="lea", founding="first")
    assert {r.name: e.reason for r, e in evaluated} == {"first": "Approved", "amend": "Approved"}
    assert _project([again, joins], owner="lea", founding="first")[0] == evaluated


def test_a_later_members_pin_of_new_content_stops_counting() -> None:
    changed = dataset("cohort", "sensitive", content="b")
    founding = request(
        "first",
        ["cohort"],
        [approve("carl", COHORT), approve("dave", COHORT), approve("ann", changed)],
    )
    founding.spec.decisions.append(approve("carl", changed))
    joins = request(
        "amend", ["labs"], [approve("erin", LABS), approve("fay", LABS)], members=["lea", "ann"]
    )
    datasets = by_name(changed, LABS)
    alone = evaluate_project(
        [founding], datasets, SETTINGS, TODAY, owner="lea", founding_request="first"
    )[0]
    assert alone[0][1].mounted_manifests == {"cohort": sha("b")}
    evaluated, _, _ = evaluate_project(
        [founding, joins], datasets, SETTINGS, TODAY, owner="lea", founding_request="first"
    )
    first = dict((r.name, e) for r, e in evaluated)["first"]
    assert first.reason == "Approved"  # carl and dave still count for the request
    assert (first.mounted_manifests, first.withheld) == ({}, {"cohort": sha("b")})


# --- review 3, S9: the owner's powers need the owner in the workspace ----------------------------


def _ws(members: list[str], owner: str | None = "lea", people: list[str] | None = None) -> Any:
    return WorkspaceSpec(
        project="cardio",
        namespace="tre-cardio",
        owner=owner,
        members=members,
        people=people or [],
    )


@pytest.mark.parametrize(
    ("members", "phase", "lead"),
    [
        (["lea", "ravi"], WorkspacePhase.READY, "lea"),
        (["ravi"], WorkspacePhase.READY, None),
        (["lea", "ravi"], WorkspacePhase.PROVISIONING, "lea"),
        ([], WorkspacePhase.FROZEN, None),
        (["lea"], WorkspacePhase.FROZEN, None),
        (["lea"], WorkspacePhase.TORN_DOWN, None),
    ],
    ids=["owner-member-ready", "owner-revoked", "not-ready-yet", "frozen", "frozen-stale", "gone"],
)
def test_the_owner_acts_as_lead_only_as_a_current_member_of_the_workspace(
    members: list[str], phase: WorkspacePhase | None, lead: str | None
) -> None:
    assert acting_lead(_ws(members), phase) == lead


def test_project_people_are_everyone_ever_and_the_owner() -> None:
    spec = _ws(["ravi"], people=["nina"])
    assert project_people(spec) == {"lea", "ravi", "nina"}


@pytest.mark.parametrize(
    ("spec", "phase", "me", "fragment"),
    [
        (None, None, "mallory", None),
        (_ws(["lea"]), WorkspacePhase.READY, "lea", None),
        (_ws(["lea"]), WorkspacePhase.READY, "mallory", "belongs to lea"),
        (_ws(["ravi"]), WorkspacePhase.READY, "lea", "you own project 'cardio' but are not a"),
        (_ws([]), WorkspacePhase.FROZEN, "lea", "an approver extends your own request first"),
    ],
    ids=["free", "owner-acts", "someone-else", "owner-revoked", "frozen"],
)
def test_owner_refusal_says_what_the_api_server_says(
    spec: Any, phase: WorkspacePhase | None, me: str, fragment: str | None
) -> None:
    refusal = owner_refusal("cardio", spec, phase, me)
    assert refusal is None if fragment is None else refusal is not None and fragment in refusal
