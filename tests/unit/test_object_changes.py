"""The writes one reconcile makes to a workspace's objects, and their order (pure).

Behaviours under test:
- a new workspace is created in plan order, except that its ResourceQuota follows the claims
  (so the quota admission plugin does not rewrite the quota's status once per claim), and the
  hub RoleBinding is still the last write;
- a quota that already exists is updated before the claims the same reconcile adds, so a
  raised claim limit is in force before the new claims need it;
- an unchanged workspace needs no write.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from provisioner.models.resources import (
    DatasetSource,
    S3Source,
    Workspace,
    WorkspaceDataset,
    WorkspacePhase,
    WorkspaceSpec,
)
from provisioner.models.settings import Settings
from provisioner.models.types import ClassificationTier, ComputeTier
from provisioner.planning.names import POLICY_DEFAULT_DENY
from provisioner.planning.project import ObjectChange, object_changes
from provisioner.planning.workspace import plan_workspace

PROJECT = "diabetes-2026"

Manifest = dict[str, Any]


@pytest.fixture
def settings() -> Settings:
    return Settings(hub_namespace="tre-hub", airlock_namespace="tre-system")


def _dataset(name: str) -> WorkspaceDataset:
    return WorkspaceDataset(
        name=name,
        manifest_sha256="a" * 64,
        classification=ClassificationTier.CONFIDENTIAL,
        source=DatasetSource(s3=S3Source(bucket="tre-datasets", prefix=name)),
    )


def _plan(settings: Settings, datasets: list[str]) -> list[Manifest]:
    workspace = Workspace(
        name=PROJECT,
        spec=WorkspaceSpec(
            project=PROJECT,
            namespace=f"tre-{PROJECT}",
            members=["alice", "bob"],
            datasets=[_dataset(d) for d in datasets],
            compute_tier=ComputeTier.MEDIUM,
            expires_at=dt.date(2027, 6, 30),
            requests=[f"{PROJECT}-initial"],
        ),
    )
    return plan_workspace(workspace, settings)


def _live(manifests: list[Manifest]) -> dict[tuple[str, str, str, str], Manifest]:
    """The objects as the server would return them after an apply."""
    live = {}
    for m in manifests:
        meta = m["metadata"]
        key = (m["apiVersion"], m["kind"], meta.get("namespace", ""), meta["name"])
        live[key] = {**m, "metadata": {**meta, "resourceVersion": "1", "uid": "u"}}
    return live


def _index(changes: list[ObjectChange], kind: str) -> list[int]:
    return [i for i, c in enumerate(changes) if c.key[1] == kind]


def test_new_workspace_creates_its_quota_after_the_claims(settings: Settings) -> None:
    plan = _plan(settings, ["census", "admissions"])
    changes = object_changes(plan, {}, WorkspacePhase.READY, namespace_exists=False)

    assert {c.action for c in changes} == {"create"}
    assert sorted(c.key for c in changes) == sorted(_live(plan))  # every object, once
    (quota,) = _index(changes, "ResourceQuota")
    assert max(_index(changes, "PersistentVolumeClaim")) < quota
    assert changes[-1].key[1] == "RoleBinding"
    # everything else keeps the plan's order: namespace first, deny-all right after it
    rest = [c for c in changes if c.key[1] != "ResourceQuota"]
    assert [c.manifest for c in rest] == [m for m in plan if m["kind"] != "ResourceQuota"]
    assert changes[1].key[3] == POLICY_DEFAULT_DENY


def test_existing_quota_is_raised_before_new_claims(settings: Settings) -> None:
    before = _plan(settings, ["census"])
    after = _plan(settings, ["census", "admissions", "lab-results", "imaging"])
    changes = object_changes(after, _live(before), WorkspacePhase.READY)

    (quota,) = _index(changes, "ResourceQuota")
    assert changes[quota].action == "update"
    new_claims = _index(changes, "PersistentVolumeClaim")
    assert len(new_claims) == 3
    assert quota < min(new_claims)


def test_unchanged_workspace_needs_no_write(settings: Settings) -> None:
    plan = _plan(settings, ["census"])
    assert object_changes(plan, _live(plan), WorkspacePhase.READY) == []
