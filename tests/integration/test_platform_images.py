"""The platform's own images (images/platform, images/hub), built locally from their Dockerfiles
and run by the dev node's kubelet, as the chart runs them.

Behaviours under test:
- each archive is a valid OCI image under the reference of the chart's default values
  (images.tre, images.hub) with the runtime config its Dockerfile says (user 10001:10001);
- imported into the node's containerd, each runs under the chart's pod and container security
  contexts (runAsNonRoot as uid/gid 10001, read-only root file system, no capabilities,
  RuntimeDefault seccomp, never pulled):
  - the platform image: `tre --version` is this checkout's, and the modules of `tre controller
    run` and `tre airlock serve` import (their dependencies, tornado among them, are in it);
  - the hub image: `jupyterhub --version` is requirements.lock's, `configurable-http-proxy
    --version` is package-lock.json's (on Debian's Node.js), the chart's hub.configFile is
    there, and hub_config, KubeSpawner, oauthenticator and the idle culler import.

Needs root, mmdebstrap and npm (a cold build of both images takes minutes) and the node's
binaries; without them the tests FAIL saying what to install (never skip).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from provisioner import __version__
from provisioner.chart.values import default_values
from provisioner.devcluster.binaries import cache_dir
from provisioner.devcluster.cluster import DevCluster
from provisioner.devcluster.dockerfile import image_recipe
from provisioner.devcluster.images import (
    HUB,
    PLATFORM,
    REPO_ROOT,
    LocalImage,
    build_image,
    read_oci_archive,
)
from tests.integration.node_world import restricted_pod, wait_pod
from tests.integration.test_node import busybox_archive, node_platform  # noqa: F401 (fixtures)

pytestmark = pytest.mark.timeout(1800)  # a cold build downloads and installs a few hundred MB

CHART_UID = 10001  # helm/ucloud-tre/templates/_helpers.tpl, tre.podSecurityContext


def locked(name: str) -> str:
    """The version requirements.lock pins `name` to."""
    for line in (REPO_ROOT / "requirements.lock").read_text().splitlines():
        if line.lower().startswith(f"{name.lower()}=="):
            return line.split("==")[1]
    raise AssertionError(f"{name} is not in requirements.lock")


@pytest.fixture(scope="module")
def archives() -> dict[str, Path]:
    return {
        image.name: build_image(image, cache_dir(), lambda message: print(f"[images] {message}"))
        for image in (PLATFORM, HUB)
    }


@pytest.mark.parametrize(("image", "chart_key"), [(PLATFORM, "tre"), (HUB, "hub")])
def test_archive_is_the_charts_image_configured_as_its_dockerfile(
    archives: dict[str, Path], image: LocalImage, chart_key: str
) -> None:
    summary = read_oci_archive(archives[image.name])
    chart = default_values()["images"][chart_key]

    assert summary.ref == image.ref == f"docker.io/{chart['repository']}:{chart['tag']}"
    assert summary.config["config"] == image_recipe(image.dockerfile.read_text()).runtime_config
    assert summary.config["config"]["User"] == f"{CHART_UID}:{CHART_UID}"


@pytest.fixture(scope="module")
def imported(node_platform: DevCluster, archives: dict[str, Path]) -> DevCluster:  # noqa: F811
    node = node_platform.node()
    for image in (PLATFORM, HUB):
        node.import_image(archives[image.name])
        assert node.has_image(image.ref)
    return node_platform


@pytest.fixture
def core(imported: DevCluster, admin_api: client.ApiClient) -> Iterator[client.CoreV1Api]:
    api = client.CoreV1Api(admin_api)
    yield api


@pytest.fixture
def namespace(core: client.CoreV1Api) -> Iterator[str]:
    """A namespace where PodSecurity enforces `restricted`, as the chart's namespace may."""
    name = f"images-{uuid.uuid4().hex[:8]}"
    core.create_namespace(
        {"metadata": {"name": name, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}}
    )
    yield name
    core.delete_namespace(name)


def chart_pod(name: str, image: str, script: str) -> dict[str, Any]:
    """A pod with the chart's security contexts (tre.podSecurityContext and
    tre.containerSecurityContext), running `script` in the image's sh."""
    pod = restricted_pod(name, script)
    pod["spec"]["securityContext"].update(
        {"runAsUser": CHART_UID, "runAsGroup": CHART_UID, "fsGroup": CHART_UID}
    )
    (container,) = pod["spec"]["containers"]
    container.update({"image": image, "command": ["sh", "-c", script]})
    container["securityContext"].update({"readOnlyRootFilesystem": True, "runAsNonRoot": True})
    return pod


def run(core: client.CoreV1Api, namespace: str, pod: dict[str, Any]) -> list[str]:
    """Run `pod` to its end on the node; the lines it printed (it must succeed)."""
    core.create_namespaced_pod(namespace, pod)
    name = pod["metadata"]["name"]
    ended = wait_pod(core, namespace, name, {"Succeeded", "Failed"}, timeout=180)
    # Raw bytes: the client's deserialisation of a plain-text body gives repr(bytes).
    response = core.read_namespaced_pod_log(name, namespace, _preload_content=False)
    log = response.data.decode()
    assert ended.status.phase == "Succeeded", log
    return log.splitlines()


def test_platform_image_runs_tre_under_the_charts_security_context(
    core: client.CoreV1Api, namespace: str
) -> None:
    # What `tre controller run` and `tre airlock serve` import, also inside their functions.
    modules = [
        "provisioner.cli.controller",
        "provisioner.cli.airlock",
        "provisioner.airlock.desk",
        "provisioner.airlock.hub_sign_in",
        "provisioner.airlock.service",
        "provisioner.kube.api",
        "provisioner.kube.client",
        "provisioner.kube.http",
        "provisioner.secret_files",
        "tornado",
    ]
    script = (
        f"tre --version && id -u && python -c 'import {', '.join(modules)}; print(tornado.version)'"
    )
    lines = run(core, namespace, chart_pod("platform", PLATFORM.ref, script))

    assert lines == [f"tre {__version__}", str(CHART_UID), locked("tornado")]


def test_hub_image_runs_jupyterhub_and_the_proxy(core: client.CoreV1Api, namespace: str) -> None:
    config_file = default_values()["hub"]["configFile"]
    script = (
        "jupyterhub --version && configurable-http-proxy --version && "
        f"test -f {config_file} && echo config-file && "
        "python -c 'import hub_config.config, hub_config.workspaces, kubespawner, "
        'oauthenticator, jupyterhub_idle_culler; print("imports")\''
    )
    lines = run(core, namespace, chart_pod("hub", HUB.ref, script))
    lock = json.loads((REPO_ROOT / "package-lock.json").read_text())
    proxy = lock["packages"]["node_modules/configurable-http-proxy"]["version"]

    assert lines == [locked("jupyterhub"), proxy, "config-file", "imports"]
