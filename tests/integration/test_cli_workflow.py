"""The `tre` workflow commands beyond submit and approve, against the real platform.

Behaviours under test: `request extend` moves the effective end date and the workspace
expiry, and refuses a date beyond the maximum duration; `workspace plan` lists each change
and why before anything is applied, and nothing once reconciled; `request show` and
`dataset list` are scriptable; `audit verify` passes on an intact log and names the entry
when one is edited behind its back.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from provisioner.audit.anchor import AnchoredAuditLog
from provisioner.audit.log import ensure_audit_bucket, open_audit_log
from provisioner.devcluster.cluster import DevCluster
from provisioner.models.settings import Settings
from tests.integration.workspace_world import APPROVERS, World, unique

pytestmark = pytest.mark.integration


@pytest.fixture
def world(installed_platform: Settings, dev_platform: DevCluster, tmp_path: Path) -> World:
    return World(installed_platform, dev_platform.kubeconfig, tmp_path)


def test_extend_moves_end_date_within_the_maximum(world: World) -> None:
    name, project, _ = world.approved_project()
    start = dt.date.fromisoformat(world.request_object(name)["spec"]["startDate"])
    too_far = start + dt.timedelta(days=400)
    refused = world.tre(
        "request", "extend", name, "--until", too_far.isoformat(), user="ann", group=APPROVERS
    )
    assert refused.exit_code == 2
    assert f"--until: must be within 365 days of startDate {start} (got {too_far})" in (
        refused.output
    )
    new_end = start + dt.timedelta(days=200)
    done = world.tre(
        "request",
        "extend",
        name,
        "--until",
        new_end.isoformat(),
        "-m",
        "ok",
        user="ann",
        group=APPROVERS,
    )
    assert done.exit_code == 0, done.output
    world.reconcile(project)
    shown = world.tre_json("request", "show", name)
    assert shown["end"] == new_end.isoformat()
    assert shown["decisions"][-1]["action"] == "extend"
    ws = world.workspace(project)
    assert ws is not None and ws["spec"]["expiresAt"] == new_end.isoformat()


def test_workspace_plan_shows_changes_and_why(world: World) -> None:
    dataset = world.dataset()
    name, project = world.submit(datasets=[dataset])
    world.approve(name, "ann")
    planned = world.tre_json("workspace", "plan", project)
    changes = {(row["change"], row["object"]) for row in planned}
    assert ("status", f"AccessRequest/{name}") in changes
    assert ("create", f"Namespace/tre-{project}") in changes
    assert ("create", "NetworkPolicy/default-deny-all") in changes
    assert ("create", "RoleBinding/tre-hub-spawner") in changes
    assert all(row["why"] for row in planned)
    assert world.workspace(project) is None  # planning changed nothing
    world.reconcile(project)
    after = world.tre_json("workspace", "plan", project)
    assert [r for r in after if r["change"] != "status"] == []


def test_dataset_list_is_scriptable(world: World) -> None:
    name = world.dataset(classification="confidential", files=3)
    rows = {r["name"]: r for r in world.tre_json("dataset", "list")}
    assert rows[name]["classification"] == "confidential"
    assert rows[name]["objects"] == 3


def test_audit_verify_detects_an_edited_entry(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = unique("audit")
    monkeypatch.setenv("TRE_AUDIT_BUCKET", bucket)
    settings = world.settings.model_copy(update={"audit_bucket": bucket})
    ensure_audit_bucket(world.s3, bucket, retention_days=settings.audit_retention_days)
    # The controller writes (signed) and publishes the head, as its own ServiceAccount.
    log = AnchoredAuditLog(
        open_audit_log(settings, world.s3, signer=world.signer), world.controller, world.signer
    )
    for name in ("a", "b"):
        log.append("tre-controller", "dataset.register", f"dataset/{name}", key=f"ds/{name}")
    ok = world.tre("audit", "verify")
    assert ok.exit_code == 0, ok.output
    assert "ok: 2 entries, chain intact and signed by the controller" in ok.stdout
    key = "audit/v1/entries/000000000001.json"
    entry = json.loads(world.s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    entry["actor"] = "someone-else"
    world.s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(entry).encode())
    bad = world.tre("audit", "verify")
    assert bad.exit_code == 6
    assert "failed verification" in bad.output
    assert "entry 1 was edited: its content hashes to" in bad.output
    assert "entry 1 was overwritten after it was written" in bad.output
