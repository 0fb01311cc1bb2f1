"""Nothing is deleted before its audit entries exist: the controller's finalizer on requests and
exports, and the teardown that waits for it (planning/project.py, pure).

Behaviours under test:
- the finalizer is set on every live request and export that lacks it (others' finalizers
  kept), lifted from one being deleted, and from an export whose namespace is torn down; a
  second plan over the result writes nothing (idempotent);
- a request being deleted grants nothing more, and its plan holds its decisions and its
  deletion (with the phase it had) as audit events, keyed for good, and lifts the finalizer;
- a deleted export gets a `deleted` event keyed by its uid;
- a namespace being torn down waits while its access ConfigMap still lets members file
  exports, while an export in it carries the finalizer, or while an export's records are
  not in the log; an export's phase event (keyed by time) never holds it; without an audit
  log only the first two hold it.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from provisioner.models.resources import (
    AccessRequest,
    Decision,
    DecisionAction,
    ExportPhase,
    ExportRequest,
    Workspace,
    WorkspacePhase,
    WorkspaceSpec,
)
from provisioner.models.settings import Settings
from provisioner.planning.names import AUDITED_FINALIZER, WORKSPACE_ACCESS_NAME
from provisioner.planning.project import (
    FinalizerWrite,
    Snapshot,
    audited_finalizer,
    export_audit_events,
    namespace_held,
    plan_project,
)
from provisioner.planning.workspace import workspace_access
from tests.unit.test_approvals import request as approvals_request
from tests.unit.test_exports import export

NOW = dt.datetime(2026, 11, 30, 12, tzinfo=dt.UTC)
GONE = dt.datetime(2026, 11, 30, 11, 30, tzinfo=dt.UTC)
OTHER = "example.org/hold"


def request(
    name: str = "r1",
    *,
    finalizers: tuple[str, ...] = (),
    deleted_at: dt.datetime | None = None,
    decisions: list[Decision] | None = None,
) -> AccessRequest:
    return approvals_request(name, ["labs"], decisions).model_copy(
        update={"uid": f"uid-{name}", "deleted_at": deleted_at, "finalizers": finalizers}
    )


@pytest.mark.parametrize(
    ("finalizers", "deleted", "keep", "new"),
    [
        ((), False, True, (AUDITED_FINALIZER,)),
        ((OTHER,), False, True, (OTHER, AUDITED_FINALIZER)),
        ((AUDITED_FINALIZER,), False, True, None),
        ((OTHER, AUDITED_FINALIZER), True, True, (OTHER,)),
        ((OTHER,), True, True, None),
        ((AUDITED_FINALIZER,), False, False, ()),
        ((), False, False, None),
    ],
    ids=[
        "set",
        "set-beside-another",
        "already-set",
        "lifted-when-deleted",
        "deleted-without-it",
        "lifted-at-teardown",
        "not-set-at-teardown",
    ],
)
def test_the_finalizer_is_set_while_it_lives_and_lifted_when_it_goes(
    finalizers: tuple[str, ...], deleted: bool, keep: bool, new: tuple[str, ...] | None
) -> None:
    obj = request(finalizers=finalizers, deleted_at=GONE if deleted else None)
    write = audited_finalizer(obj, keep=keep)
    if new is None:
        assert write is None
        return
    assert write == FinalizerWrite("AccessRequest", "", "r1", finalizers, new, write.why)
    # Applied, the same plan has nothing more to write.
    after = obj.model_copy(update={"finalizers": new})
    assert audited_finalizer(after, keep=keep) is None


def snapshot(*requests: AccessRequest) -> Snapshot:
    return Snapshot(list(requests), {}, {})


def test_a_request_being_deleted_is_audited_then_let_go_and_grants_nothing() -> None:
    decision = Decision(action=DecisionAction.APPROVE, by="ann", at=GONE - dt.timedelta(hours=1))
    going = request("r1", finalizers=(AUDITED_FINALIZER,), deleted_at=GONE, decisions=[decision])
    new = request("r2")
    plan = plan_project(Settings(), "cardio", snapshot(going, new), NOW, audited=set())
    assert [r.name for r, _ in plan.evaluated] == ["r2"]
    assert [(w.name, w.new) for w in plan.finalizers] == [
        ("r1", ()),
        ("r2", (AUDITED_FINALIZER,)),
    ]
    events = {e.key: e for e in plan.audit}
    assert events["decision/uid-r1/0"].actor == "ann"
    deleted = events["request/uid-r1/deleted"]
    assert (deleted.action, deleted.details["phase"], deleted.details["deletedAt"]) == (
        "request.deleted",
        "Pending",
        GONE.isoformat(),
    )
    # Once those entries are in the log, a plan (after a crash before the lift) writes none of
    # them again and still lifts the finalizer.
    again = plan_project(Settings(), "cardio", snapshot(going, new), NOW, audited=set(events))
    assert not [e for e in again.audit if "uid-r1" in e.key]
    assert [w.name for w in again.finalizers] == ["r1", "r2"]


def test_a_deleted_export_gets_a_deleted_event_keyed_by_its_uid() -> None:
    gone = export().model_copy(update={"uid": "e1", "deleted_at": GONE})
    events = export_audit_events("cardio", [gone], [], NOW)
    deleted = next(e for e in events if e.action == "export.deleted")
    assert deleted.key == "export/e1/deleted"
    assert deleted.details == {
        "project": "cardio",
        "phase": ExportPhase.SUBMITTED.value,
        "deletedAt": GONE.isoformat(),
    }


def access_config_map(phase: str) -> dict[tuple[str, str, str, str], dict[str, Any]]:
    ws = Workspace(name="cardio", spec=WorkspaceSpec(project="cardio", namespace="tre-cardio"))
    return {
        ("v1", "ConfigMap", "tre-cardio", WORKSPACE_ACCESS_NAME): workspace_access(
            ws, WorkspacePhase(phase), [], Settings()
        )
    }


def _records(exports: list[ExportRequest]) -> set[str]:
    """Every key of the exports' records (not their phase events)."""
    return {
        e.key for e in export_audit_events("cardio", exports, [], NOW) if e.action != "export.phase"
    }


@pytest.mark.parametrize(
    ("phase", "finalizers", "logged", "held"),
    [
        ("Ready", (), True, True),
        ("Frozen", (AUDITED_FINALIZER,), True, True),
        ("Frozen", (), False, True),
        ("Frozen", (), True, False),
    ],
    ids=["still-filing", "finalizer-on-an-export", "records-not-logged", "free-to-go"],
)
def test_a_namespace_is_torn_down_only_once_its_exports_are_in_the_log(
    phase: str, finalizers: tuple[str, ...], logged: bool, held: bool
) -> None:
    exports = [export().model_copy(update={"uid": "e1", "finalizers": finalizers})]
    audited = _records(exports) if logged else set()
    assert namespace_held(exports, access_config_map(phase), "cardio", audited) is held


def test_without_an_audit_log_only_filing_and_finalizers_hold_a_namespace() -> None:
    exports = [export().model_copy(update={"uid": "e1"})]
    assert not namespace_held(exports, access_config_map("Frozen"), "cardio", None)
    assert namespace_held(exports, access_config_map("Ready"), "cardio", None)
