"""What the query commands print, read from the wire form (`provisioner.cli.views`), equals
what the models gave (`tests/model_rows.py`), to the key order:

- a request without a status is Pending, its end is the spec's; with a status, the
  effective end date and the approvers;
- decisions carry the models' defaults when the stored form leaves them out, in the models'
  field order (the API server returns keys sorted), with UTC written 'Z' and fractional
  seconds as the models write them; an extension keeps its endDate;
- a workspace without a status is Provisioning; optional fields (owner, expiry, datasets)
  absent or set;
- `tre request show` counts the members and datasets of a live workspace, and not those of
  a TornDown one.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from provisioner.cli import views
from provisioner.models.resources import (
    AccessRequest,
    AccessRequestSpec,
    AccessRequestStatus,
    DatasetManifest,
    Decision,
    DecisionAction,
    RequestPhase,
    Workspace,
    WorkspaceDataset,
    WorkspacePhase,
    WorkspaceSpec,
    WorkspaceStatus,
)
from provisioner.models.types import ClassificationTier
from tests import model_rows

SHA = "a" * 64


def as_served(obj: dict[str, Any]) -> dict[str, Any]:
    """`obj` as the API server returns it: JSON with every object's keys sorted."""
    served: dict[str, Any] = json.loads(json.dumps(obj, sort_keys=True))
    return served


def request_object(*, status: AccessRequestStatus | None = None) -> dict[str, Any]:
    approved_at = dt.datetime(2026, 11, 30, 9, 0, 1, 120000, tzinfo=dt.UTC)
    spec = AccessRequestSpec(
        project="heart-study",
        requester="lea",
        lead="lea",
        members=["max", "lea.b"],
        datasets=["cardio", "lab-values"],
        purpose="predict heart failure from lab values",
        start_date=dt.date(2026, 11, 1),
        end_date=dt.date(2027, 5, 1),
        decisions=[
            Decision(
                action=DecisionAction.APPROVE,
                by="ann",
                at=approved_at,
                comment="ok",
                manifest_hashes={"lab-values": SHA, "cardio": SHA},
                classifications={"cardio": ClassificationTier.SENSITIVE},
            ),
            Decision(
                action=DecisionAction.EXTEND,
                by="bob",
                at=approved_at + dt.timedelta(days=3),
                end_date=dt.date(2027, 6, 1),
            ),
        ],
    )
    request = AccessRequest(name="heart-study-1a2b3c", spec=spec)
    if status is not None:
        request = request.model_copy(update={"status": status})
    obj = request.to_object(with_status=status is not None)
    obj["metadata"].update(uid="u-1", creationTimestamp="2026-11-01T08:00:00Z")
    return as_served(obj)


APPROVED = AccessRequestStatus(
    phase=RequestPhase.APPROVED,
    approvers=["ann", "bob"],
    effective_end_date=dt.date(2027, 6, 1),
)


@pytest.mark.parametrize("status", [None, APPROVED], ids=["no status", "approved"])
def test_a_request_row_is_the_models(status: AccessRequestStatus | None) -> None:
    obj = request_object(status=status)
    row = views.request_row(obj)
    assert list(row.items()) == list(model_rows.request_row(obj).items())
    assert row["phase"] == ("Approved" if status else "Pending")


@pytest.mark.parametrize(
    ("stored", "printed"),
    [
        ("2026-11-30T09:00:01Z", "2026-11-30T09:00:01Z"),
        ("2026-11-30T09:00:01.12Z", "2026-11-30T09:00:01.120000Z"),
        ("2026-11-30T09:00:01.000000Z", "2026-11-30T09:00:01Z"),
        ("2026-11-30T09:00:01+00:00", "2026-11-30T09:00:01Z"),
        ("2026-11-30T09:00:01-00:00", "2026-11-30T09:00:01Z"),
        ("2026-11-30T10:00:01+01:00", "2026-11-30T10:00:01+01:00"),
    ],
)
def test_a_decision_written_by_another_client_prints_as_the_models_print_it(
    stored: str, printed: str
) -> None:
    """kubectl may store a decision without its defaults and with another spelling of UTC."""
    obj = request_object()
    obj["spec"]["decisions"] = [{"action": "approve", "at": stored, "by": "ann"}]
    row = views.request_row(obj)
    expected = model_rows.request_row(obj)["decisions"]
    assert [list(d.items()) for d in row["decisions"]] == [list(d.items()) for d in expected]
    assert row["decisions"][0]["at"] == printed


def test_decision_fields_are_the_models_in_their_order() -> None:
    wire = [field.alias or name for name, field in Decision.model_fields.items()]
    assert [name for name, _ in views.DECISION_FIELDS] == wire


def workspace_object(*, full: bool, phase: WorkspacePhase | None) -> dict[str, Any]:
    source = {"s3": {"bucket": "cohorts", "prefix": "cardio/"}}
    spec = WorkspaceSpec(
        project="heart-study",
        namespace="tre-heart-study",
        **(
            {
                "owner": "lea",
                "founding_request": "heart-study-1a2b3c",
                "members": ["lea", "max"],
                "datasets": [
                    WorkspaceDataset.model_validate(
                        {
                            "name": "cardio",
                            "manifestSha256": SHA,
                            "classification": "sensitive",
                            "source": source,
                        }
                    )
                ],
                "expires_at": dt.date(2027, 6, 1),
                "requests": ["heart-study-1a2b3c"],
            }
            if full
            else {}
        ),
    )
    workspace = Workspace(name="heart-study", spec=spec)
    if phase is not None:
        workspace = workspace.model_copy(update={"status": WorkspaceStatus(phase=phase)})
    return as_served(workspace.to_object(with_status=phase is not None))


@pytest.mark.parametrize("full", [False, True], ids=["bare", "full"])
@pytest.mark.parametrize("phase", [None, WorkspacePhase.READY], ids=["no status", "ready"])
def test_a_workspace_row_is_the_models(full: bool, phase: WorkspacePhase | None) -> None:
    obj = workspace_object(full=full, phase=phase)
    row = views.workspace_row(obj)
    assert list(row.items()) == list(model_rows.workspace_row(obj).items())
    assert row["phase"] == (phase or "Provisioning")


@pytest.mark.parametrize(
    "phase", [None, WorkspacePhase.READY, WorkspacePhase.FROZEN, WorkspacePhase.TORN_DOWN]
)
@pytest.mark.parametrize("has_workspace", [False, True])
def test_request_show_judges_the_whole_live_project(
    phase: WorkspacePhase | None, has_workspace: bool
) -> None:
    obj = request_object(status=APPROVED)
    workspace = workspace_object(full=True, phase=phase) if has_workspace else None
    detail = views.request_detail(obj, workspace)
    assert list(detail.items()) == list(model_rows.request_detail(obj, workspace).items())
    torn_down = phase is WorkspacePhase.TORN_DOWN
    expected_owner = "lea" if has_workspace and not torn_down else None
    assert detail["projectOwner"] == expected_owner


def dataset_object(
    source: dict[str, Any], *, manifest: bool, verified: dict[str, Any] | None
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "tre.ucloud.org/v1alpha1",
        "kind": "Dataset",
        "metadata": {"name": "cardio", "uid": "u-2"},
        "spec": {
            "title": "Cardio cohort",
            "steward": "sam",
            "classification": "sensitive",
            "source": source,
        },
    }
    status: dict[str, Any] = {}
    if manifest:
        status["manifest"] = {
            "objectCount": 3,
            "bytes": 1024,
            "sha256": SHA,
            "computedAt": "2026-11-30T09:00:00.5+00:00",
        }
    if verified is not None:
        status["conditions"] = [verified]
    if status:
        obj["status"] = status
    return as_served(obj)


VERIFIED = {"type": "Verified", "status": "True", "reason": "Listed", "message": "3 objects"}
NO_MESSAGE = {"type": "Verified", "status": "False", "reason": "ListFailed"}


@pytest.mark.parametrize(
    "source",
    [
        {"s3": {"bucket": "cohorts", "prefix": "cardio/"}},
        {"s3": {"bucket": "cohorts", "prefix": "cardio"}},  # as kubectl may store it
        {"s3": {"bucket": "cohorts"}},
        {"s3": {"bucket": "cohorts", "region": "eu-west-1"}},
        {"nfs": {"server": "nfs.example.org", "path": "/exports/cardio"}},
    ],
    ids=["s3", "s3 without the slash", "whole bucket", "s3 with its region", "nfs"],
)
@pytest.mark.parametrize(
    ("manifest", "verified"),
    [(False, None), (True, VERIFIED), (True, NO_MESSAGE)],
    ids=["new", "verified", "condition without message"],
)
def test_a_dataset_row_and_detail_are_the_models(
    source: dict[str, Any], manifest: bool, verified: dict[str, Any] | None
) -> None:
    obj = dataset_object(source, manifest=manifest, verified=verified)
    assert list(views.dataset_row(obj).items()) == list(model_rows.dataset_row(obj).items())
    detail = views.dataset_detail(obj)
    assert list(detail.items()) == list(model_rows.dataset_detail(obj).items())
    if manifest:
        assert list(detail["manifest"]) == ["objectCount", "bytes", "sha256", "computedAt"]
        assert detail["manifest"]["computedAt"] == "2026-11-30T09:00:00.500000Z"


def test_manifest_fields_are_the_models_in_their_order() -> None:
    wire = [field.alias or name for name, field in DatasetManifest.model_fields.items()]
    assert list(views.MANIFEST_FIELDS) == wire
