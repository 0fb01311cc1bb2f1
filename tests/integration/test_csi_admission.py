"""With `TRE_DATASET_CSI_DRIVER=ru.yandex.s3.csi`, what `tre install` writes and what the
controller may write, against a real API server.

The session's platform is installed for the default driver and shared by every other test, so
this module starts a control plane of its own and installs the platform for k8s-csi-s3:

- `tre install` writes the driver's CSIDriver (no attach) and the endpoint Secret (endpoint and
  region, no keys) in tre-system;
- the controller may create the dataset PV exactly as planned for this driver;
- it may not create one naming any other stage Secret, a publish Secret, or another driver.
"""

from __future__ import annotations

import base64
import copy
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from provisioner.controller.install import install_platform
from provisioner.devcluster.cluster import DevCluster
from provisioner.errors import RefusedError
from provisioner.kube.api import Kube
from provisioner.kube.client import api_client
from provisioner.models.resources import DatasetSource, S3Source, WorkspaceDataset
from provisioner.models.settings import Settings
from provisioner.models.types import ClassificationTier, DatasetCsiDriver
from provisioner.planning.storage import dataset_persistent_volume
from tests.integration.conftest import own_platform, wait_for_policies


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevCluster]:
    yield from own_platform(tmp_path_factory, "csi-admission")


@pytest.fixture(scope="module")
def settings(platform: DevCluster) -> Settings:
    s3 = platform.s3()
    return Settings(
        dataset_csi_driver=DatasetCsiDriver.K8S_CSI_S3,
        s3_endpoint_url=s3.url,
        s3_region=s3.region,
        audit_retention_days=0,  # this platform's audit bucket is not needed here
    )


@pytest.fixture(scope="module")
def kubeconfig(platform: DevCluster, settings: Settings) -> Path:
    install_platform(Kube(api_client(platform.kubeconfig)), settings, print)
    wait_for_policies(Kube(api_client(platform.kubeconfig, as_user="probe-user")))
    return platform.kubeconfig


@pytest.fixture(scope="module")
def planned(settings: Settings) -> dict[str, Any]:
    dataset = WorkspaceDataset(
        name="cohort",
        manifest_sha256="f" * 64,
        classification=ClassificationTier.CONFIDENTIAL,
        source=DatasetSource(s3=S3Source(bucket="registry-data", prefix="cohort/2026")),
    )
    return dataset_persistent_volume("csi-admission", dataset, settings)


@pytest.fixture(scope="module")
def controller(kubeconfig: Path, settings: Settings, planned: dict[str, Any]) -> Kube:
    """The controller's identity, once the controller-scope policy is seen refusing."""
    kube = Kube(api_client(kubeconfig, as_user=settings.controller_user))
    other_driver = copy.deepcopy(planned)
    other_driver["spec"]["csi"]["driver"] = "s3.csi.aws.com"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            kube.create(other_driver, dry_run=True)
        except RefusedError:
            return kube
        time.sleep(0.25)
    pytest.fail("the policy tre-controller-scope did not become active within 30s")


def test_install_writes_the_drivers_csidriver_and_its_endpoint_secret(
    kubeconfig: Path, settings: Settings
) -> None:
    api = api_client(kubeconfig)
    driver = client.StorageV1Api(api).read_csi_driver("ru.yandex.s3.csi")
    assert (driver.spec.attach_required, driver.spec.volume_lifecycle_modes) == (
        False,
        ["Persistent"],
    )
    secret = client.CoreV1Api(api).read_namespaced_secret("tre-dataset-s3", "tre-system")
    assert {k: base64.b64decode(v).decode() for k, v in secret.data.items()} == {
        "endpoint": settings.s3_endpoint_url,
        "region": settings.s3_region,
    }


def test_the_controller_may_write_the_planned_volume(
    controller: Kube, planned: dict[str, Any]
) -> None:
    created = controller.create(planned, dry_run=True)
    assert created["spec"]["csi"] == planned["spec"]["csi"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("nodeStageSecretRef", {"name": "aws-admin", "namespace": "kube-system"}),
        ("nodeStageSecretRef", {"name": "tre-dataset-s3", "namespace": "tre-someproject"}),
        ("nodePublishSecretRef", {"name": "tre-dataset-s3", "namespace": "tre-system"}),
        ("driver", "s3.csi.aws.com"),
    ],
)
def test_the_controller_may_not_name_another_secret_or_driver(
    controller: Kube, planned: dict[str, Any], field: str, value: object
) -> None:
    volume = copy.deepcopy(planned)
    volume["spec"]["csi"][field] = value
    with pytest.raises(RefusedError, match=r"only tre-\* dataset volumes of the ru\.yandex"):
        controller.create(volume, dry_run=True)
