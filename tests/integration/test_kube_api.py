"""Our Kubernetes wrapper against the real API server.

Behaviours under test:
- an apply is sent with fieldValidation=Ignore (it saves the server a second parse), and an
  unknown field is still refused, not silently dropped: in a planned NetworkPolicy and in a
  ConfigMap; the server answers that with HTTP 500 (kubernetes#139253), which we report as a
  refusal, not as a temporary error to retry;
- `write_service_account_kubeconfig` gives a kubeconfig that authenticates as exactly that
  ServiceAccount (the server says so in a SelfSubjectReview), with no impersonation; a name
  that is not a ServiceAccount username is refused before anything is asked of the server.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from kubernetes import client

from provisioner.errors import InvalidInputError, RefusedError
from provisioner.kube.api import Kube
from provisioner.kube.client import api_client, write_service_account_kubeconfig
from provisioner.kube.resources import RESOURCES
from provisioner.models.settings import Settings
from provisioner.planning.network_policies import network_policies

pytestmark = pytest.mark.integration

CONFIG_MAPS = RESOURCES[("v1", "ConfigMap")]


def test_apply_refuses_an_unknown_field_in_a_network_policy(
    admin_api: client.ApiClient, namespace: str
) -> None:
    policy = network_policies("fieldcheck", Settings())[0]
    policy["metadata"]["namespace"] = namespace
    spec = policy["spec"]
    typo = {**policy, "spec": {**spec, "podSelectr": spec["podSelector"]}}
    kube = Kube(admin_api)
    kube.apply(policy, dry_run=True)  # the planned object itself is fine
    with pytest.raises(RefusedError, match=r"\.spec\.podSelectr: field not declared in schema"):
        kube.apply(typo, dry_run=True)


def test_apply_refuses_an_unknown_top_level_field(
    admin_api: client.ApiClient, namespace: str
) -> None:
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "fieldcheck", "namespace": namespace},
        "data": {"a": "b"},
        "bogus": 1,
    }
    kube = Kube(admin_api)
    with pytest.raises(RefusedError, match=r"\.bogus: field not declared in schema"):
        kube.apply(config_map)
    assert kube.get(CONFIG_MAPS, "fieldcheck", namespace) is None


def test_service_account_kubeconfig_authenticates_as_that_account(
    admin_api: client.ApiClient, kubeconfig: Path, namespace: str, tmp_path: Path
) -> None:
    admin = Kube(admin_api)
    admin.apply(
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "robot", "namespace": namespace},
        }
    )
    username = f"system:serviceaccount:{namespace}:robot"
    path = write_service_account_kubeconfig(
        admin, kubeconfig, username, tmp_path / "robot.kubeconfig"
    )
    assert path.stat().st_mode & 0o777 == 0o600
    api = api_client(path)
    assert "Impersonate-User" not in api.default_headers
    review = Kube(api).request(
        "POST",
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        body={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
    )
    assert review["status"]["userInfo"]["username"] == username


def test_service_account_kubeconfig_refuses_a_person(
    admin_api: client.ApiClient, kubeconfig: Path, tmp_path: Path
) -> None:
    with pytest.raises(InvalidInputError, match="'lea' is not a ServiceAccount username"):
        write_service_account_kubeconfig(
            Kube(admin_api), kubeconfig, "lea", tmp_path / "lea.kubeconfig"
        )
    assert not (tmp_path / "lea.kubeconfig").exists()
