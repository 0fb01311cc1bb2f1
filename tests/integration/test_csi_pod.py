"""A dataset reaches a pod on the real dev node through its PV/PVC, mounted by the CSI driver.

The session's node (kubelet + containerd, `tests/integration/test_node.py`'s fixture) gets the
k8s-csi-s3 node plugin and registrar through `provisioner.devcluster.csi`, inside its own
namespaces, reading the session's SeaweedFS through the node's relay with the plugin's own
read-only key. `tre install`'s objects for the driver (CSIDriver, endpoint Secret) and the PV
exactly as `provisioner.planning.storage` plans it are applied; only the PV's claimRef points
at this test's plain namespace instead of a project's (the project namespaces' pod policy
admits only the hub's pods). Behaviours:

- the kubelet registers the driver (CSINode lists it);
- a restricted pod (uid 1000) with the claim read-only reads the dataset's files, sees its
  mount as a read-only rclone FUSE mount, and cannot write ("Read-only file system");
- after the pod is deleted the kubelet unpublishes and unstages: no mount is left in the node.
"""

from __future__ import annotations

import copy
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from provisioner.devcluster.binaries import ensure_csi_binaries
from provisioner.devcluster.cluster import DevCluster
from provisioner.devcluster.csi import (
    DRIVER,
    KUBELET_DIR,
    fuse_mounts,
    start_csi_node,
    stop_csi_node,
)
from provisioner.devcluster.node import NODE_NAME
from provisioner.devcluster.s3server import S3Endpoint, dataset_reader_credentials
from provisioner.kube.api import Kube
from provisioner.models.resources import DatasetSource, S3Source, WorkspaceDataset
from provisioner.models.settings import Settings
from provisioner.models.types import ClassificationTier, DatasetCsiDriver
from provisioner.planning.names import SYSTEM_NAMESPACE
from provisioner.planning.storage import (
    dataset_claim,
    dataset_driver_objects,
    dataset_persistent_volume,
)
from tests.integration.node_world import restricted_pod, run_to_completion

PREFIX = "cohort/2026/"
README = "synthetic cohort, read through the CSI driver\n"


@pytest.fixture(scope="module")
def settings(s3_endpoint: S3Endpoint) -> Settings:
    # The node reaches S3 at the same 127.0.0.1 port through its relay.
    return Settings(
        dataset_csi_driver=DatasetCsiDriver.K8S_CSI_S3,
        s3_endpoint_url=s3_endpoint.url,
        s3_region=s3_endpoint.region,
    )


@pytest.fixture(scope="module")
def csi_on_node(
    node_platform: DevCluster,
    s3_server_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[list[str]]:
    prefix = node_platform.node().enter_argv(mount=True)
    access_key, secret_key = dataset_reader_credentials(s3_server_dir)
    state = tmp_path_factory.mktemp("csi-on-node")
    start_csi_node(
        state,
        ensure_csi_binaries(print),
        prefix,
        node_name=NODE_NAME,
        access_key=access_key,
        secret_key=secret_key,
    )
    try:
        yield prefix
    finally:
        stop_csi_node(state, prefix)


@pytest.fixture
def namespace(admin_api: client.ApiClient) -> Iterator[str]:
    core = client.CoreV1Api(admin_api)
    name = f"csi-{uuid.uuid4().hex[:8]}"
    core.create_namespace(
        {"metadata": {"name": name, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}}
    )
    deadline = time.monotonic() + 30  # the ServiceAccount controller must create `default`
    while time.monotonic() < deadline:
        try:
            core.read_namespaced_service_account("default", name)
            break
        except client.ApiException:
            time.sleep(0.2)
    yield name
    core.delete_namespace(name)


def _dataset(s3: Any, bucket: str) -> WorkspaceDataset:
    s3.put_object(Bucket=bucket, Key=PREFIX + "readme.txt", Body=README.encode())
    return WorkspaceDataset(
        name="cohort",
        manifest_sha256="e" * 64,
        classification=ClassificationTier.CONFIDENTIAL,
        source=DatasetSource(s3=S3Source(bucket=bucket, prefix=PREFIX)),
    )


def test_a_pod_reads_a_dataset_through_the_driver_and_cannot_write_it(
    csi_on_node: list[str],
    admin_api: client.ApiClient,
    settings: Settings,
    namespace: str,
    s3: Any,
    bucket: str,
) -> None:
    core = client.CoreV1Api(admin_api)
    kube = Kube(admin_api, field_manager="tre-tests")
    deadline = time.monotonic() + 30
    while DRIVER not in _registered_drivers(admin_api):
        assert time.monotonic() < deadline, f"the kubelet did not register {DRIVER}"
        time.sleep(0.5)

    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": SYSTEM_NAMESPACE}})
    for manifest in dataset_driver_objects(settings):
        kube.apply(manifest)
    dataset = _dataset(s3, bucket)
    project = f"csipod{uuid.uuid4().hex[:6]}"
    volume = dataset_persistent_volume(project, dataset, settings)
    claim = copy.deepcopy(dataset_claim(project, dataset))
    # The one deviation from the plan: the claim lives in this test's plain namespace.
    volume["spec"]["claimRef"]["namespace"] = claim["metadata"]["namespace"] = namespace
    kube.apply(volume)
    kube.apply(claim)

    pod = restricted_pod(
        "reader",
        "{ cat /data/cohort/readme.txt; grep ' /data/cohort ' /proc/mounts; "
        "echo x > /data/cohort/new.txt || true; } > /dev/termination-log 2>&1",
    )
    pod["spec"]["containers"][0]["volumeMounts"] = [
        {"name": "cohort", "mountPath": "/data/cohort", "readOnly": True}
    ]
    pod["spec"]["volumes"] = [
        {
            "name": "cohort",
            "persistentVolumeClaim": {"claimName": claim["metadata"]["name"], "readOnly": True},
        }
    ]
    try:
        phase, message = run_to_completion(core, namespace, pod, timeout=120)
        assert phase == "Succeeded", message
        lines = message.splitlines()
        assert lines[0] == README.strip()
        mount = lines[1].split(" ")
        assert (mount[1], mount[2]) == ("/data/cohort", "fuse.rclone")
        assert "ro" in mount[3].split(",")
        assert len(lines) == 3, message
        assert "Read-only file system" in lines[2]
    finally:
        core.delete_namespaced_pod("reader", namespace, grace_period_seconds=0)
    deadline = time.monotonic() + 60
    while fuse_mounts(csi_on_node, under=KUBELET_DIR):
        assert time.monotonic() < deadline, "the kubelet left the dataset mounted"
        time.sleep(0.5)
    core.delete_namespaced_persistent_volume_claim(claim["metadata"]["name"], namespace)
    core.delete_persistent_volume(volume["metadata"]["name"])


def _registered_drivers(admin_api: client.ApiClient) -> list[str]:
    storage = client.StorageV1Api(admin_api)
    try:
        # Raw: the client's model refuses a CSINode whose drivers are still null.
        response = storage.read_csi_node(NODE_NAME, _preload_content=False)
    except client.ApiException:
        return []
    drivers = json.loads(response.data)["spec"].get("drivers") or []
    return [d["name"] for d in drivers]
