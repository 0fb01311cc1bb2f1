"""The platform's own images (images/platform, images/hub, images/dns), built locally from their
Dockerfiles and run by the dev node's kubelet, as the chart runs them.

Behaviours under test:
- each archive is a valid OCI image under the reference of the chart's default values
  (images.tre, images.hub, images.dns) with the runtime config its Dockerfile says (user
  10001:10001);
- imported into the node's containerd, each runs under the chart's pod and container security
  contexts (runAsNonRoot as uid/gid 10001, read-only root file system, no capabilities,
  RuntimeDefault seccomp, never pulled):
  - the platform image: `tre --version` is this checkout's, and the modules of `tre controller
    run` and `tre airlock serve` import (their dependencies, tornado among them, are in it);
  - the hub image: `jupyterhub --version` is requirements.lock's, `configurable-http-proxy
    --version` is package-lock.json's (on Debian's Node.js), the chart's hub.configFile is
    there, and hub_config, KubeSpawner, oauthenticator and the idle culler import;
  - the resolver image, as the chart's own tre-dns pod (its rendered pod template and Corefile
    ConfigMap: uid 10001, read-only root, no capabilities, the sysctl for port 53, a `hosts`
    table and `template ANY ANY { rcode NXDOMAIN }`): it becomes Ready (the chart's TCP probe
    on 53) without a restart, and a query from the node's network namespace to the pod gets
    the table's address for the hub's name and NXDOMAIN for any other name, over UDP. (This
    node cannot show that the sysctl is needed: containerd 2.x opens unprivileged ports in
    every sandbox by default, enable_unprivileged_ports; the pod also runs without it here.)

Needs root, mmdebstrap and npm (a cold build of the Python images takes minutes), Go (the
resolver, seconds with warm Go caches), helm (`make helm`) and the node's binaries; without
them the tests FAIL saying what to install (never skip).
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from provisioner import __version__
from provisioner.chart.generate import CHART_DIR
from provisioner.chart.values import default_values
from provisioner.devcluster.binaries import cache_dir
from provisioner.devcluster.cluster import DevCluster
from provisioner.devcluster.dockerfile import recipe_of
from provisioner.devcluster.images import (
    DNS,
    HUB,
    PLATFORM,
    REPO_ROOT,
    LocalImage,
    build_image,
    read_oci_archive,
)
from tests.integration.node_world import pod_events, restricted_pod, wait_pod
from tests.integration.test_chart import ALL_ON, RELEASE, RELEASE_NAMESPACE, Tools
from tests.integration.test_resolver import NOERROR, NXDOMAIN

pytestmark = pytest.mark.timeout(1800)  # a cold build downloads and installs a few hundred MB

CHART_UID = 10001  # helm/ucloud-tre/templates/_helpers.tpl, tre.podSecurityContext


def locked(name: str) -> str:
    """The version requirements.lock pins `name` to."""
    for line in (REPO_ROOT / "requirements.lock").read_text().splitlines():
        if line.lower().startswith(f"{name.lower()}=="):
            return line.split("==")[1]
    raise AssertionError(f"{name} is not in requirements.lock")


@pytest.fixture(scope="module")
def archive() -> Callable[[LocalImage], Path]:
    """The archive of an image, built (or found in the cache) the first time a test asks, so
    the resolver's tests never wait for the Python images."""

    @functools.cache
    def built(image: LocalImage) -> Path:
        return build_image(image, cache_dir(), lambda message: print(f"[images] {message}"))

    return built


@pytest.mark.parametrize(("image", "chart_key"), [(PLATFORM, "tre"), (HUB, "hub"), (DNS, "dns")])
def test_archive_is_the_charts_image_configured_as_its_dockerfile(
    archive: Callable[[LocalImage], Path], image: LocalImage, chart_key: str
) -> None:
    summary = read_oci_archive(archive(image))
    chart = default_values()["images"][chart_key]

    assert summary.ref == image.ref == f"docker.io/{chart['repository']}:{chart['tag']}"
    assert summary.config["config"] == recipe_of(image.dockerfile.read_text()).runtime_config
    assert summary.config["config"]["User"] == f"{CHART_UID}:{CHART_UID}"


@pytest.fixture(scope="module")
def imported(
    node_platform: DevCluster,
    archive: Callable[[LocalImage], Path],
) -> Callable[[LocalImage], None]:
    """Import an image into the node's containerd (once per module)."""

    @functools.cache
    def into_the_node(image: LocalImage) -> None:
        node = node_platform.node()
        node.import_image(archive(image))
        assert node.has_image(image.ref)

    return into_the_node


@pytest.fixture
def core(
    node_platform: DevCluster,
    admin_api: client.ApiClient,
) -> Iterator[client.CoreV1Api]:
    api = client.CoreV1Api(admin_api)
    yield api


@pytest.fixture
def namespace(core: client.CoreV1Api) -> Iterator[str]:
    """A namespace where PodSecurity enforces `restricted`, as the chart's namespace may."""
    name = f"images-{uuid.uuid4().hex[:8]}"
    core.create_namespace(
        {"metadata": {"name": name, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}}
    )
    deadline = time.monotonic() + 30  # the ServiceAccount controller must create `default`
    while not core.list_namespaced_service_account(name).items:
        assert time.monotonic() < deadline, f"no ServiceAccount in {name} after 30 s"
        time.sleep(0.2)
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
    core: client.CoreV1Api, namespace: str, imported: Callable[[LocalImage], None]
) -> None:
    imported(PLATFORM)
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


def test_hub_image_runs_jupyterhub_and_the_proxy(
    core: client.CoreV1Api, namespace: str, imported: Callable[[LocalImage], None]
) -> None:
    imported(HUB)
    config_file = default_values()["hub"]["configFile"]
    script = (
        "jupyterhub --version && configurable-http-proxy --version && "
        f"test -f {config_file} && echo config-file && "
        # provisioner.kube.client: the Workspace cache's list+watch, imported late by the hub
        "python -c 'import hub_config.config, hub_config.workspaces, kubespawner, "
        "provisioner.kube.client, provisioner.kube.api, "
        'oauthenticator, jupyterhub_idle_culler; print("imports")\''
    )
    lines = run(core, namespace, chart_pod("hub", HUB.ref, script))
    lock = json.loads((REPO_ROOT / "package-lock.json").read_text())
    proxy = lock["packages"]["node_modules/configurable-http-proxy"]["version"]

    assert lines == [locked("jupyterhub"), proxy, "config-file", "imports"]


def charts_resolver(tools: Tools) -> tuple[dict[str, Any], dict[str, Any]]:
    """The chart's tre-dns Deployment and its Corefile ConfigMap, rendered with every option on,
    the image by tag (an import has no registry digest) and never pulled."""
    rendered = tools.ok(
        tools.helm(
            "template", RELEASE, str(CHART_DIR), "-n", RELEASE_NAMESPACE, "-f", str(ALL_ON),
            "--set", "images.dns.digest=null", "--set", "images.pullPolicy=Never",
        )
    )  # fmt: skip
    by_kind = {
        d["kind"]: d
        for d in yaml.safe_load_all(rendered)
        if d and d["kind"] in {"Deployment", "ConfigMap"} and d["metadata"]["name"] == "tre-dns"
    }
    return by_kind["Deployment"], by_kind["ConfigMap"]


def lookups_from_the_node(node: DevCluster, server: str, names: list[str]) -> list[Any]:
    """(rcode, addresses) of an A query for each name, sent over UDP from the node's network
    namespace (where the pod network is) to `server`:53."""
    probe = (
        "import json, sys\n"
        "from tests.integration.test_resolver import lookup\n"
        "print(json.dumps([lookup(name, 53, sys.argv[1]) for name in sys.argv[2:]]))"
    )
    result = subprocess.run(
        [*node.node().enter_argv(mount=False), sys.executable, "-c", probe, server, *names],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    answers: list[Any] = json.loads(result.stdout)
    return answers


def wait_ready(core: client.CoreV1Api, namespace: str, name: str) -> client.V1Pod:
    """The pod once its readiness probe passes; a failure names its phase, its container's
    state and its events."""
    wait_pod(core, namespace, name, {"Running", "Failed", "Succeeded"})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        pod = core.read_namespaced_pod(name, namespace)
        conditions = {c.type: c.status for c in pod.status.conditions or []}
        if conditions.get("Ready") == "True":
            return pod
        time.sleep(0.5)
    pytest.fail(
        f"pod {namespace}/{name} not Ready after 60 s (phase {pod.status.phase}, "
        f"{pod.status.container_statuses}); events:\n{pod_events(core, namespace, name)}"
    )


def test_dns_image_answers_its_table_and_nxdomain_as_the_charts_resolver(
    core: client.CoreV1Api,
    namespace: str,
    imported: Callable[[LocalImage], None],
    node_platform: DevCluster,
    tmp_path: Path,
) -> None:
    imported(DNS)
    deployment, config_map = charts_resolver(Tools(node_platform.kubeconfig, tmp_path))
    corefile = config_map["data"]["Corefile"]
    hub_ip = yaml.safe_load(ALL_ON.read_text())["hub"]["serviceIp"]
    assert f"{hub_ip} hub.tre-hub.svc.cluster.local" in corefile
    assert "template ANY ANY {\n        rcode NXDOMAIN" in corefile
    template = deployment["spec"]["template"]
    (container,) = template["spec"]["containers"]
    assert f"docker.io/{container['image']}" == DNS.ref

    config_map["metadata"] = {"name": config_map["metadata"]["name"]}
    core.create_namespaced_config_map(namespace, config_map)
    # The chart's resolver runs as a token-less account of its own (the project policies trust
    # its label only on that account, in the chart's namespace).
    account = template["spec"]["serviceAccountName"]
    core.create_namespaced_service_account(
        namespace,
        {"metadata": {"name": account}, "automountServiceAccountToken": False},
    )
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "tre-dns", "labels": template["metadata"]["labels"]},
        "spec": template["spec"],
    }
    core.create_namespaced_pod(namespace, pod)
    running = wait_ready(core, namespace, "tre-dns")

    answers = lookups_from_the_node(
        node_platform,
        running.status.pod_ip,
        ["hub.tre-hub.svc.cluster.local", "example.org", "kubernetes.default.svc.cluster.local"],
    )

    assert answers == [[NOERROR, [hub_ip]], [NXDOMAIN, []], [NXDOMAIN, []]]
    assert running.status.container_statuses[0].restart_count == 0
