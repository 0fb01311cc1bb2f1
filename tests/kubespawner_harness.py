"""Driving the real KubeSpawner without a running hub: what the unit tests of hub_config and
the integration tests of notebook pods share.

KubeSpawner is constructed with `_mock=True` (no hub database) but still loads a kubeconfig and
needs a running event loop; the pod it would create is taken from `get_pod_manifest()` and
`modify_pod_hook`, exactly as `KubeSpawner._start` does right before it calls the API.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from jupyterhub import orm
from kubernetes_asyncio.client import ApiClient
from kubernetes_asyncio.config import kube_config
from kubespawner import KubeSpawner
from pydantic import SecretStr
from traitlets.config import Config

from hub_config import config as hub
from provisioner.models.resources import Workspace
from provisioner.models.settings import Settings

Manifest = dict[str, Any]


class HubUser:
    """What KubeSpawner reads from JupyterHub's User wrapper."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.id = 7
        self.url = f"/user/{name}/"


def workspace_reader(workspaces: Sequence[Workspace]) -> Any:
    async def read() -> Sequence[Workspace]:
        return list(workspaces)

    return read


# The development sign-in: what `tre dev up` gives the hub (no identity provider in tests).
DEV_AUTH = hub.AuthInputs(dev_password=SecretStr("a-test-password"))


def dev_settings(settings: Settings) -> Settings:
    """`settings` with the development sign-in turned on."""
    return settings.model_copy(update={"hub_dev_authenticator": True})


def hub_config_for(settings: Settings, workspaces: Sequence[Workspace]) -> Config:
    """Our hub configuration (development sign-in), applied to a bare traitlets Config,
    reading `workspaces`."""
    c = Config()
    hub.apply_config(
        c, dev_settings(settings), DEV_AUTH, workspace_reader=workspace_reader(workspaces)
    )
    return c


def make_spawner(c: Config, user: str, server_name: str) -> KubeSpawner:
    # Needs a running event loop: KubeSpawner creates its shared API client in __init__.
    return KubeSpawner(
        config=c, user=HubUser(user), orm_spawner=orm.Spawner(name=server_name), _mock=True
    )


async def pod_manifest(spawner: KubeSpawner) -> Manifest:
    """The pod KubeSpawner would create, camelCase as the API server would receive it."""
    await spawner.load_user_options()
    pod = await spawner.get_pod_manifest()
    if spawner.modify_pod_hook is not None:  # as KubeSpawner._start does, right before create
        pod = spawner.modify_pod_hook(spawner, pod)
    async with ApiClient() as api:
        manifest: Manifest = api.sanitize_for_serialization(pod)
    return manifest


def kubeconfig_to_nowhere(path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """KubeSpawner loads a kubeconfig even with _mock=True: write one at `path` that points at
    nothing and make both kubernetes clients read it."""
    path.write_text(
        "apiVersion: v1\n"
        "kind: Config\n"
        "clusters:\n"
        "- name: nowhere\n"
        "  cluster: {server: 'https://127.0.0.1:1'}\n"
        "users:\n"
        "- name: nobody\n"
        "  user: {token: not-a-token}\n"
        "contexts:\n"
        "- name: nowhere\n"
        "  context: {cluster: nowhere, user: nobody}\n"
        "current-context: nowhere\n"
    )
    monkeypatch.setenv("KUBECONFIG", str(path))
    # Second trap: kubernetes_asyncio reads $KUBECONFIG once, when it is imported (here: at
    # collection), so the variable alone comes too late.
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    return path
