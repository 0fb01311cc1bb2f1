"""The browser gates' records: what the airlock takes (pure parts of `airlock.gate_records`)
and what the controller makes of them (`planning.browser`, `planning.project`)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from provisioner.airlock.gate_records import GatePod, activity_from_batch, gate_pod
from provisioner.errors import InvalidInputError, RefusedError
from provisioner.models.resources import MAX_BROWSER_FIELD, BrowserActivity, BrowserUsage
from provisioner.models.settings import Settings
from provisioner.models.types import ClassificationTier
from provisioner.planning import browser
from provisioner.planning.notebook_pods import gate_container
from provisioner.planning.project import browser_audit_events

TODAY = dt.date(2026, 12, 7)
NOW = dt.datetime(2026, 12, 7, 10, 0, tzinfo=dt.UTC)
POD = GatePod("tre-cardio", "cardio", "jupyter-ravi--cardio", "1b2c-uid")


@pytest.fixture
def platform_settings() -> Settings:
    return Settings(hub_namespace="tre-hub", airlock_namespace="tre-airlock")


def review(**status: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "authenticated": True,
        "audiences": ["tre-gate"],
        "user": {
            "username": "system:serviceaccount:tre-cardio:default",
            "extra": {
                "authentication.kubernetes.io/pod-name": ["jupyter-ravi--cardio"],
                "authentication.kubernetes.io/pod-uid": ["1b2c-uid"],
            },
        },
    }
    return {"status": {**base, **status}}


def test_a_pod_bound_gate_token_names_its_pod_and_project(platform_settings: Settings) -> None:
    assert gate_pod(review(), platform_settings) == POD


@pytest.mark.parametrize(
    ("status", "refusal"),
    [
        ({"authenticated": False, "error": "token expired"}, "token expired"),
        ({"audiences": ["https://kubernetes.default.svc"]}, "audience tre-gate"),
        ({"user": {"username": "lea"}}, "not a pod's ServiceAccount"),
        (
            {"user": {"username": "system:serviceaccount:tre-cardio:default", "extra": {}}},
            "not bound to a pod",
        ),
        (
            {
                "user": {
                    "username": "system:serviceaccount:tre-system:default",
                    "extra": {
                        "authentication.kubernetes.io/pod-name": ["x"],
                        "authentication.kubernetes.io/pod-uid": ["y"],
                    },
                }
            },
            "not a project's",
        ),
    ],
)
def test_anything_but_a_gates_token_is_refused(
    platform_settings: Settings, status: dict[str, Any], refusal: str
) -> None:
    with pytest.raises(RefusedError, match=refusal):
        gate_pod(review(**status), platform_settings)


def record(seq: int, event: str = "file.served", **fields: Any) -> dict[str, Any]:
    return {"seq": seq, "event": event, "at": NOW.isoformat(), "user": "ravi", **fields}


def body(*records: dict[str, Any], **usage: Any) -> dict[str, Any]:
    return {
        "user": "ravi",
        "project": "cardio",
        "usage": {"day": TODAY.isoformat(), "content": 10, "other": 5, **usage},
        "records": list(records),
    }


def test_a_batch_is_filed_in_the_pods_namespace_as_text_fields() -> None:
    activity = activity_from_batch(
        body(record(1, path="/project/a.csv", bytes=12, sha256="ab" * 32)), POD
    )
    assert activity.namespace == "tre-cardio"
    assert (activity.spec.project, activity.spec.user, activity.spec.pod_uid) == (
        "cardio",
        "ravi",
        "1b2c-uid",
    )
    (only,) = activity.spec.records
    assert only.fields == {"bytes": "12", "path": "/project/a.csv", "sha256": "ab" * 32}
    # the same batch is the same object; another batch another
    assert (
        activity_from_batch(
            body(record(1, path="/project/a.csv", bytes=12, sha256="ab" * 32)), POD
        ).name
        == activity.name
    )
    assert activity_from_batch(body(record(2)), POD).name != activity.name


def test_long_values_are_cut_and_the_body_cannot_choose_the_project() -> None:
    long = activity_from_batch(body(record(1, path="/p/" + "x" * 5000)), POD)
    assert len(long.spec.records[0].fields["path"]) == MAX_BROWSER_FIELD
    with pytest.raises(RefusedError, match="belongs to project cardio"):
        activity_from_batch({**body(), "project": "other"}, POD)
    with pytest.raises(InvalidInputError, match="seq"):
        activity_from_batch(body(record(0)), POD)
    with pytest.raises(InvalidInputError, match="user"):
        activity_from_batch({**body(), "user": "Not A Name"}, POD)


def activity(*records: dict[str, Any], user: str = "ravi", **usage: Any) -> BrowserActivity:
    made = activity_from_batch({**body(*records, **usage), "user": user}, POD)
    return made


def test_each_record_is_one_audit_entry_keyed_by_pod_and_seq() -> None:
    events = browser_audit_events("cardio", [activity(record(1, path="/a"), record(2))])
    assert [(e.key, e.actor, e.action, e.subject) for e in events] == [
        (
            "browser/1b2c-uid/1",
            "ravi",
            "browser.file.served",
            "pod/tre-cardio/jupyter-ravi--cardio",
        ),
        (
            "browser/1b2c-uid/2",
            "ravi",
            "browser.file.served",
            "pod/tre-cardio/jupyter-ravi--cardio",
        ),
    ]
    assert events[0].details["path"] == "/a"


def test_the_days_count_is_the_highest_reported_and_crossings_are_kept() -> None:
    held = [BrowserUsage(user="ravi", day=TODAY, content=50, other=1)]
    crossed = record(3, "budget.crossed", meter="content")
    usage = browser.usage_today(
        held, [activity(content=40, other=9), activity(crossed, content=60)], TODAY
    )
    assert usage == [BrowserUsage(user="ravi", day=TODAY, content=60, other=9, crossed=["content"])]
    # yesterday's count is not today's
    old = [BrowserUsage(user="ravi", day=TODAY - dt.timedelta(days=1), content=99)]
    assert browser.usage_today(old, [], TODAY) == []
    ok, reason, message = browser.budget_condition(usage)
    assert (ok, reason) == (False, "BudgetUsedUp") and "ravi (content)" in message
    assert browser.budget_condition([])[0] is True


def test_a_batch_is_cleared_only_when_audited_and_counted() -> None:
    batch = activity(record(1), content=10, other=5)
    keys = {"browser/1b2c-uid/1"}
    counted = [BrowserUsage(user="ravi", day=TODAY, content=10, other=5)]
    assert browser.finished([batch], keys, counted, TODAY) == [batch]
    # not yet in the log, not yet counted, or no audit log at all: kept
    assert browser.finished([batch], set(), counted, TODAY) == []
    short = [BrowserUsage(user="ravi", day=TODAY, content=9, other=5)]
    assert browser.finished([batch], keys, short, TODAY) == []
    assert browser.finished([batch], None, counted, TODAY) == []


def test_a_new_gate_starts_from_the_days_count_and_a_used_up_budget_stays_used_up(
    platform_settings: Settings,
) -> None:
    def env(usage: BrowserUsage | None) -> dict[str, str]:
        gate = gate_container(
            platform_settings,
            user="ravi",
            project="cardio",
            prefix="/user/ravi/cardio/",
            tier=ClassificationTier.PUBLIC,
            used_today=usage,
        )
        return {e["name"]: e["value"] for e in gate["env"]}

    assert (env(None)["GATE_CONTENT_USED"], env(None)["GATE_OTHER_USED"]) == ("0", "0")
    counted = env(BrowserUsage(user="ravi", day=TODAY, content=700, other=9))
    assert (counted["GATE_CONTENT_USED"], counted["GATE_OTHER_USED"]) == ("700", "9")
    crossed = env(BrowserUsage(user="ravi", day=TODAY, content=700, crossed=["content"]))
    assert crossed["GATE_CONTENT_USED"] == crossed["GATE_CONTENT_BUDGET"]
