"""Approved access requests become isolated, read-only-data workspaces (the controller).

Behaviours under test, each against the real API server and S3:
- an approved request is provisioned: Workspace Ready, every planned object exists, dataset
  PV bound to its one PVC, AccessRequest status Approved with both approvers;
- `tre workspace list -o json` gives project, namespace and phase;
- an unchanged reconcile writes nothing;
- a NetworkPolicy deleted by hand is restored by the next reconcile;
- a reconcile killed half-way converges on the next run, with nothing left half-made;
- revoking the only request freezes the workspace (hub RoleBinding, dataset PV/PVC and
  notebook pods removed; NetworkPolicies and project storage kept); after the retention
  period it is torn down (namespace deleted) and both transitions are audited;
- at the end date the request expires and the workspace freezes;
- a dataset whose content changed after approval: `tre dataset verify` says so (exit 7) and,
  once the controller has re-verified it, it is withheld (DatasetChanged condition);
- a sensitive dataset needs two distinct approvers before anything is provisioned;
- two controller replicas never both hold the lease.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from provisioner.controller.leader import LeaderElector
from provisioner.devcluster.cluster import DevCluster
from provisioner.errors import TreError
from provisioner.kube.api import Kube
from provisioner.kube.resources import RESOURCES
from provisioner.models.settings import Settings
from provisioner.planning.names import (
    HUB_ROLE_BINDING_NAME,
    POLICY_DEFAULT_DENY,
    RESOURCE_QUOTA_NAME,
    dataset_pv_name,
    dataset_pvc_name,
    namespace_name,
    project_pvc_name,
)
from tests.integration.workspace_world import World, create_pod_when_admitted, notebook_pod

pytestmark = pytest.mark.integration

NETWORK_POLICIES = RESOURCES[("networking.k8s.io/v1", "NetworkPolicy")]
ROLE_BINDINGS = RESOURCES[("rbac.authorization.k8s.io/v1", "RoleBinding")]
PVS = RESOURCES[("v1", "PersistentVolume")]
PVCS = RESOURCES[("v1", "PersistentVolumeClaim")]
PODS = RESOURCES[("v1", "Pod")]
NAMESPACES = RESOURCES[("v1", "Namespace")]
RESOURCE_QUOTAS = RESOURCES[("v1", "ResourceQuota")]


@pytest.fixture
def world(installed_platform: Settings, dev_platform: DevCluster, tmp_path: Path) -> World:
    return World(installed_platform, dev_platform.kubeconfig, tmp_path)


@pytest.fixture
def ready_project(world: World) -> Iterator[tuple[str, str, str]]:
    """An approved request whose workspace the controller has provisioned."""
    request, project, dataset = world.approved_project()
    result = world.reconcile(project)
    assert result.phase is not None and result.phase.value == "Ready", result
    yield request, project, dataset


def _exists(kube: Kube, resource: Any, name: str, namespace: str | None = None) -> bool:
    return kube.get(resource, name, namespace) is not None


def _gone(kube: Kube, resource: Any, name: str, namespace: str | None = None) -> bool:
    """Deleted, or being deleted (PV and PVC protection finalizers finish asynchronously)."""
    live = kube.get(resource, name, namespace)
    return live is None or bool(live["metadata"].get("deletionTimestamp"))


def test_approved_request_becomes_ready_workspace(
    world: World, ready_project: tuple[str, str, str]
) -> None:
    request, project, dataset = ready_project
    ns = namespace_name(project)
    ws = world.workspace(project)
    assert ws is not None
    assert ws["status"]["phase"] == "Ready"
    assert ws["spec"]["members"] == ["lea", "ravi"]
    assert [d["name"] for d in ws["spec"]["datasets"]] == [dataset]
    status = world.request_object(request)["status"]
    assert status["phase"] == "Approved"
    assert status["approvers"] == ["ann", "bob"]
    for policy in (POLICY_DEFAULT_DENY, "allow-dns", "allow-notebook-to-hub-api"):
        assert _exists(world.admin, NETWORK_POLICIES, policy, ns)
    assert _exists(world.admin, ROLE_BINDINGS, HUB_ROLE_BINDING_NAME, ns)
    assert _exists(world.admin, PVCS, project_pvc_name(), ns)
    pv = world.admin.get(PVS, dataset_pv_name(project, dataset))
    assert pv is not None and pv["spec"]["csi"]["readOnly"] is True
    assert pv["spec"]["claimRef"]["name"] == dataset_pvc_name(dataset)
    listed = world.tre_json("workspace", "list")
    mine = [w for w in listed if w["project"] == project]
    assert mine == [{**mine[0], "project": project, "namespace": ns, "phase": "Ready"}]


def test_unchanged_reconcile_writes_nothing(
    world: World, ready_project: tuple[str, str, str]
) -> None:
    _, project, _ = ready_project
    result = world.reconcile(project)
    assert (result.applied, result.pruned, result.status_writes) == ([], [], 0)


def test_networkpolicy_deleted_by_hand_is_restored(
    world: World, ready_project: tuple[str, str, str]
) -> None:
    _, project, _ = ready_project
    ns = namespace_name(project)
    # Not even an admin may touch it (tests/integration/test_trust_model.py); drift can still
    # come from the cluster's own controllers, so play one of them.
    assert world.cluster_itself.delete(NETWORK_POLICIES, POLICY_DEFAULT_DENY, ns)
    result = world.reconcile(project)
    assert result.applied == [f"NetworkPolicy/{POLICY_DEFAULT_DENY}"]
    assert _exists(world.admin, NETWORK_POLICIES, POLICY_DEFAULT_DENY, ns)


class Killed(BaseException):
    """Stands for the process dying: not an Exception, so nothing on the way catches it."""


class DiesAfter(Kube):
    """The real API, but the process 'dies' after `writes` successful writes."""

    def __init__(self, inner: Kube, writes: int) -> None:
        super().__init__(inner.api, inner.field_manager)
        self.left = writes

    def request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        if method != "GET":
            if self.left == 0:
                raise Killed
            self.left -= 1
        return super().request(method, path, **kwargs)


# Dying before every write of a new workspace's reconcile after the first (18 writes:
# request status, Workspace, 15 objects, Workspace status).
@pytest.mark.parametrize("writes_before_death", range(1, 18))
def test_reconcile_killed_half_way_converges(world: World, writes_before_death: int) -> None:
    _, project, dataset = world.approved_project()
    with pytest.raises(Killed):
        world.reconcile(project, kube=DiesAfter(world.controller, writes_before_death))
    ns = namespace_name(project)
    # Whatever was made, the hub cannot spawn without the deny-all policy and the quota in
    # place (the quota of a new workspace is created late, after its claims).
    if _exists(world.admin, ROLE_BINDINGS, HUB_ROLE_BINDING_NAME, ns):
        assert _exists(world.admin, NETWORK_POLICIES, POLICY_DEFAULT_DENY, ns)
        assert _exists(world.admin, RESOURCE_QUOTAS, RESOURCE_QUOTA_NAME, ns)
    result = world.reconcile(project)
    assert result.phase is not None and result.phase.value == "Ready"
    assert _exists(world.admin, PVS, dataset_pv_name(project, dataset))
    assert _exists(world.admin, ROLE_BINDINGS, HUB_ROLE_BINDING_NAME, ns)
    again = world.reconcile(project)
    assert (again.applied, again.pruned, again.status_writes) == ([], [], 0)


def test_revoke_freezes_then_retention_tears_down(
    world: World, ready_project: tuple[str, str, str]
) -> None:
    request, project, dataset = ready_project
    ns = namespace_name(project)
    create_pod_when_admitted(world.hub, notebook_pod(ns, "lea"))
    result = world.tre(
        "request", "revoke", request, "-m", "consent withdrawn", user="carl", group="tre:approvers"
    )
    assert result.exit_code == 0, result.output

    frozen = world.reconcile(project)
    assert frozen.phase is not None and frozen.phase.value == "Frozen"
    assert world.request_object(request)["status"]["phase"] == "Revoked"
    assert not _exists(world.admin, ROLE_BINDINGS, HUB_ROLE_BINDING_NAME, ns)
    assert _gone(world.admin, PVS, dataset_pv_name(project, dataset))
    assert _gone(world.admin, PVCS, dataset_pvc_name(dataset), ns)
    assert _exists(world.admin, PVCS, project_pvc_name(), ns)  # outputs are kept
    assert _exists(world.admin, NETWORK_POLICIES, POLICY_DEFAULT_DENY, ns)
    pod = world.admin.get(PODS, "jupyter-lea", ns)
    assert pod is None or pod["metadata"].get("deletionTimestamp")
    ws = world.workspace(project)
    assert ws is not None and ws["spec"].get("members", []) == []

    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=world.settings.retention_days, hours=1)
    torn = world.reconcile(project, now=later)
    assert torn.phase is not None and torn.phase.value == "TornDown"
    namespace = world.admin.get(NAMESPACES, ns)
    assert namespace is None or namespace["status"]["phase"] == "Terminating"
    phases = [
        e.details["phase"]
        for e in world.audit.read_all()
        if e.subject == f"workspace/{project}" and e.action == "workspace.phase"
    ]
    assert phases == ["Ready", "Frozen", "TornDown"]


def test_request_expires_at_its_end_date(world: World, ready_project: tuple[str, str, str]) -> None:
    request, project, _ = ready_project
    after_end = dt.datetime.now(dt.UTC) + dt.timedelta(days=91)
    result = world.reconcile(project, now=after_end)
    assert result.phase is not None and result.phase.value == "Frozen"
    assert world.request_object(request)["status"]["phase"] == "Expired"


def test_changed_dataset_is_withheld(world: World, ready_project: tuple[str, str, str]) -> None:
    _, project, dataset = ready_project
    world.s3.put_object(Bucket=world.bucket, Key=f"{dataset}/part-0.csv", Body=b"a,b\n9,9\n")
    check = world.tre("dataset", "verify", dataset, user="sam", group="tre:stewards")
    assert check.exit_code == 7
    assert f"dataset {dataset!r}: the data at s3://{world.bucket}/{dataset}/ no longer matches" in (
        check.output
    )
    # the controller's next verification (once the interval has passed) records the change
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=world.settings.dataset_verify_seconds)
    [verified] = [v for v in world.verify_datasets(later) if v.name == dataset]
    assert verified.changed
    world.reconcile(project)
    ws = world.workspace(project)
    assert ws is not None
    assert ws["spec"].get("datasets", []) == []
    changed = next(c for c in ws["status"]["conditions"] if c["type"] == "DatasetChanged")
    assert changed["status"] == "True"
    assert dataset in changed["message"]
    assert _gone(world.admin, PVS, dataset_pv_name(project, dataset))


def test_sensitive_dataset_needs_two_distinct_approvers(world: World) -> None:
    dataset = world.dataset("sensitive")
    name, project = world.submit(datasets=[dataset])
    world.approve(name, "ann")
    result = world.reconcile(project)
    assert result.phase is None
    assert world.workspace(project) is None
    status = world.request_object(name)["status"]
    assert status["phase"] == "Pending"
    assert "1 of 2" in status["conditions"][0]["message"]
    world.approve(name, "bob")
    assert world.reconcile(project).phase is not None


def test_only_one_controller_holds_the_lease(world: World) -> None:
    first = LeaderElector(world.controller, "tre-system", name="test-lease", duration_seconds=30)
    second = LeaderElector(world.controller, "tre-system", name="test-lease", duration_seconds=30)
    try:
        assert first.try_acquire()
        assert not second.try_acquire()
        assert first.try_acquire()  # renewing is fine
        first.release()
        assert second.try_acquire()
        assert second.holder() == second.identity
    finally:
        second.release()


def test_kube_errors_are_ours(world: World) -> None:
    with pytest.raises(TreError):
        world.controller.delete(NAMESPACES, "kube-system")
