"""The `tre` command's API client against the real API server: repeated --as-group reaches
the server as several groups (a SelfSubjectReview lists them), with the light client of the
CLI and with the official client of the controller and the tests alike."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from provisioner.cli.app import app
from provisioner.devcluster.cluster import DevCluster
from provisioner.kube.api import Kube
from provisioner.kube.client import api_client, cli_client
from provisioner.kube.http import HttpClient

pytestmark = pytest.mark.integration
GROUPS = ("tre:approvers", "tre:stewards")


def user_info(kube: Kube) -> dict[str, object]:
    review = kube.request(
        "POST",
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        body={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
    )
    return dict(review["status"]["userInfo"])


@pytest.mark.parametrize("make", [cli_client, api_client])
def test_every_group_reaches_the_api_server(dev_platform: DevCluster, make: object) -> None:
    assert callable(make)
    kube = Kube(make(dev_platform.kubeconfig, as_user="ann", as_groups=GROUPS))
    info = user_info(kube)
    assert info["username"] == "ann"
    assert list(info["groups"]) == [*GROUPS, "system:authenticated"]  # type: ignore[call-overload]


def test_the_cli_uses_the_light_client_for_a_plain_kubeconfig(dev_platform: DevCluster) -> None:
    assert isinstance(cli_client(dev_platform.kubeconfig), HttpClient)


def test_tre_whoami_with_groups_before_and_after_the_subcommand(
    dev_platform: DevCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(dev_platform.kubeconfig))
    result = CliRunner().invoke(
        app,
        ["--as", "ann", "--as-group", GROUPS[0], "whoami", "-o", "json", "--as-group", GROUPS[1]],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "username": "ann",
        "groups": [*GROUPS, "system:authenticated"],
    }


def test_inline_credentials_work_too(dev_platform: DevCluster, tmp_path: Path) -> None:
    """A kubeconfig with certificate data inline (as kind and cloud providers write them)."""
    import base64

    import yaml

    config = yaml.safe_load(dev_platform.kubeconfig.read_text())
    cluster = config["clusters"][0]["cluster"]
    user = config["users"][0]["user"]
    for section, key in ((cluster, "certificate-authority"), (user, "client-certificate"),
                         (user, "client-key")):  # fmt: skip
        section[f"{key}-data"] = base64.b64encode(Path(section.pop(key)).read_bytes()).decode()
    inline = tmp_path / "kubeconfig"
    inline.write_text(yaml.safe_dump(config))
    client = cli_client(inline)
    assert isinstance(client, HttpClient)
    assert user_info(Kube(client))["username"] == "tre-admin"
