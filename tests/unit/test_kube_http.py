"""The light API client's kubeconfig reading: what it serves, what it hands to the official
client, and how it says a kubeconfig is broken."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from provisioner.errors import PermanentError
from provisioner.kube.http import HttpClient, load_kubeconfig


def kubeconfig(tmp_path: Path, user: dict[str, Any], **cluster: Any) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:9", **cluster}}],
                "users": [{"name": "u", "user": user}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    return path


def test_a_token_becomes_a_bearer_header(tmp_path: Path) -> None:
    client = load_kubeconfig(kubeconfig(tmp_path, {"token": "secret"}))
    assert isinstance(client, HttpClient)
    assert (client.host, client.port, client.context) == ("127.0.0.1", 9, None)
    assert client.headers == [("Authorization", "Bearer secret")]


def test_a_token_file_relative_to_the_kubeconfig(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("from-file\n")
    client = load_kubeconfig(kubeconfig(tmp_path, {"tokenFile": "token"}))
    assert client is not None and client.headers == [("Authorization", "Bearer from-file")]


def test_impersonation_sends_one_header_per_group(tmp_path: Path) -> None:
    client = load_kubeconfig(kubeconfig(tmp_path, {"token": "t"}))
    assert client is not None
    assert client.with_impersonation("ann", ["a", "b"]).headers == [
        ("Authorization", "Bearer t"),
        ("Impersonate-User", "ann"),
        ("Impersonate-Group", "a"),
        ("Impersonate-Group", "b"),
    ]


@pytest.mark.parametrize(
    "user",
    [
        {"exec": {"command": "aws", "apiVersion": "client.authentication.k8s.io/v1"}},
        {"auth-provider": {"name": "oidc"}},
        {"username": "a", "password": "b"},
    ],
)
def test_other_credentials_go_to_the_official_client(tmp_path: Path, user: dict[str, Any]) -> None:
    assert load_kubeconfig(kubeconfig(tmp_path, user)) is None


def test_a_broken_kubeconfig_is_named(tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text("current-context: nowhere\n")
    with pytest.raises(PermanentError, match=r"cannot load Kubernetes credentials \(.*kubeconfig: "
                       r"context 'nowhere' not found\); set KUBECONFIG"):  # fmt: skip
        load_kubeconfig(path)
