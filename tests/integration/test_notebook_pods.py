"""Notebook pods as the hub would create them, against a workspace the controller made.

Behaviours under test (security invariants 1 to 4) on the real API server:
- no pod is admitted in a workspace namespace whose deny-all NetworkPolicy is missing or
  weakened (admission policy), and pods are admitted again once the controller restores it;
- the pod KubeSpawner builds from our hub config for a member of a Ready workspace is admitted
  in the workspace namespace (PSA `restricted` enforced), created by the hub's own
  ServiceAccount identity; it mounts no ServiceAccount token, and every dataset is read-only
  in the pod volume and the mount, bound to a PV that is read-only too;
- the hub's identity cannot create that pod in a namespace it was not granted (another
  project, or a frozen workspace whose RoleBinding was pruned);
- KubeSpawner's default pod is refused by Pod Security Admission in the same namespace.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio.config import kube_config
from traitlets.config import Config

from hub_config.workspaces import make_profile_list
from provisioner.devcluster.cluster import DevCluster
from provisioner.errors import RefusedError
from provisioner.kube.api import Kube
from provisioner.kube.client import api_client
from provisioner.kube.resources import RESOURCES
from provisioner.models.resources import Workspace
from provisioner.models.settings import Settings
from provisioner.planning.names import (
    POLICY_DEFAULT_DENY,
    dataset_pv_name,
    hub_user,
    namespace_name,
)
from tests.integration.workspace_world import APPROVERS, World, create_pod_when_admitted
from tests.kubespawner_harness import (
    hub_config_for,
    make_spawner,
    pod_manifest,
    workspace_reader,
)

pytestmark = pytest.mark.integration
PVS = RESOURCES[("v1", "PersistentVolume")]
NETWORK_POLICIES = RESOURCES[("networking.k8s.io/v1", "NetworkPolicy")]


@pytest.fixture
def world(
    installed_platform: Settings,
    dev_platform: DevCluster,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> World:
    # KubeSpawner(_mock=True) still loads a kubeconfig, through kubernetes_asyncio's copy of
    # $KUBECONFIG taken at import: point both at the session's platform.
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(dev_platform.kubeconfig))
    return World(installed_platform, dev_platform.kubeconfig, tmp_path)


def hub_identity(world: World) -> Kube:
    return Kube(api_client(world.kubeconfig, as_user=hub_user(world.settings)))


def notebook_pod(
    world: World, project: str, user: str, config: Config | None = None
) -> dict[str, Any]:
    obj = world.workspace(project)
    assert obj is not None
    workspace = Workspace.from_object(obj)
    if config is None:
        config = hub_config_for(world.settings, [workspace])

    async def build() -> dict[str, Any]:
        return await pod_manifest(make_spawner(config, user, project))

    pod = asyncio.run(build())
    pod["metadata"]["namespace"] = namespace_name(project)
    return {"apiVersion": "v1", "kind": "Pod", **pod}


def test_member_pod_is_admitted_read_only_and_tokenless(world: World) -> None:
    _, project, dataset = world.approved_project()
    world.reconcile(project)
    created = create_pod_when_admitted(hub_identity(world), notebook_pod(world, project, "ravi"))
    spec = created["spec"]
    assert spec["automountServiceAccountToken"] is False
    # No ServiceAccount token but the browser gate's own (audience tre-gate), which only the
    # gate mounts (tests/integration/test_gate_records.py).
    tokens = [v for v in spec["volumes"] if "token" in v["name"]]
    assert [v["name"] for v in tokens] == ["gate-token"]
    data = next(v for v in spec["volumes"] if v["name"] == f"ds-{dataset}")
    assert data["persistentVolumeClaim"]["readOnly"] is True
    # The notebook, and the browser gate beside it, which mounts no data at all.
    container, gate = spec["containers"]
    assert gate["name"] == "gate"
    assert {m["name"] for m in gate["volumeMounts"]} == {"gate-state", "gate-token"}
    assert all("token" not in m["name"] for m in container["volumeMounts"])
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == f"/data/{dataset}")
    assert mount["readOnly"] is True
    pv = world.admin.get(PVS, dataset_pv_name(project, dataset))
    assert pv is not None and pv["spec"]["csi"]["readOnly"] is True
    assert "read-only" in pv["spec"]["mountOptions"]


def test_hub_cannot_spawn_outside_its_granted_workspaces(world: World) -> None:
    request, project, _ = world.approved_project()
    world.reconcile(project)
    _, other, _ = world.approved_project()
    world.reconcile(other)
    pod = notebook_pod(world, project, "ravi")
    pod["metadata"]["namespace"] = namespace_name(other) + "-nonexistent"
    with pytest.raises(RefusedError, match='cannot create resource "pods"'):
        hub_identity(world).create(pod)
    # Freeze the project: its RoleBinding goes, and with it the hub's right to spawn there.
    pod = notebook_pod(world, project, "ravi")
    revoked = world.tre("request", "revoke", request, "-m", "ended", user="carl", group=APPROVERS)
    assert revoked.exit_code == 0, revoked.output
    world.reconcile(project)
    with pytest.raises(RefusedError, match='cannot create resource "pods"'):
        hub_identity(world).create(pod)


def test_kubespawner_default_pod_is_refused_by_pod_security(world: World) -> None:
    _, project, _ = world.approved_project()
    world.reconcile(project)
    obj = world.workspace(project)
    assert obj is not None
    config = Config()
    config.KubeSpawner.profile_list = make_profile_list(
        workspace_reader([Workspace.from_object(obj)]), world.settings
    )
    pod = notebook_pod(world, project, "ravi", config)
    with pytest.raises(RefusedError, match=re.escape('violates PodSecurity "restricted:v1.36"')):
        world.admin.create(pod, dry_run=True)


def test_no_pod_without_the_deny_all_network_policy(world: World) -> None:
    """Invariant 1, enforced by the API server: delete deny-all, and pods are refused."""
    _, project, _ = world.approved_project()
    world.reconcile(project)
    ns = namespace_name(project)
    pod = notebook_pod(world, project, "ravi")
    create_pod_when_admitted(hub_identity(world), pod, dry_run=True)  # admitted: policy there
    # Admins may not touch it (test_trust_model.py); the cluster's own controllers can.
    assert world.cluster_itself.delete(NETWORK_POLICIES, POLICY_DEFAULT_DENY, ns)
    refused_within(
        lambda: hub_identity(world).create(pod, dry_run=True), "tre-pod-requires-deny-all"
    )
    # A weakened policy is no better than none.
    world.reconcile(project)
    weakened = world.admin.get(NETWORK_POLICIES, POLICY_DEFAULT_DENY, ns)
    assert weakened is not None
    weakened["spec"]["egress"] = [{}]  # allow all egress
    world.controller.replace(weakened)  # as only the controller may
    refused_within(
        lambda: hub_identity(world).create(pod, dry_run=True), "no longer denies all traffic"
    )
    world.reconcile(project)  # the controller restores it, and pods are admitted again
    deadline = time.monotonic() + 10
    while True:
        try:
            hub_identity(world).create(pod)
            break
        except RefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def refused_within(create: Callable[[], object], message: str, timeout: float = 10) -> None:
    """The API server reads parameters from an informer cache: a deletion takes effect within
    moments, not at the same instant."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            create()
        except RefusedError as exc:
            assert message in str(exc)
            return
        time.sleep(0.2)
    pytest.fail(f"still admitted after {timeout:.0f}s; expected a refusal naming {message!r}")
