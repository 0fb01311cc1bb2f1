"""Fixtures shared by the integration tests.

S3 (one real SeaweedFS `weed mini`, the one the session's dev platform started):
- `s3_server_dir`: its state directory (pid file, log, credentials);
- `s3_endpoint`: its `S3Endpoint` (URL on 127.0.0.1, credentials, region);
- `s3_settings`: `Settings` pointing at it; `s3`: a boto3 client from `s3_client`;
- `bucket`: a fresh, empty, versioned bucket for one test.
Custom resources and the platform:
- `crds`: our CRDs applied and Established;
- `installed_platform`: CRDs, admission policies and RBAC installed and active.
A platform with a node of its own (`tre dev up --node`, root; test_node.py's `node_platform`
is the session's platform with a node added instead), one per module that asks for it, started
with the command people run and torn down after the module, unless `--reuse-node-platform DIR`
names one already running (left running):
- `platform_with_node`: the platform, the hub in the node's network namespace;
- `settings_with_node`: its settings (`tre dev env`), in the environment of the module's CLI
  calls while the module runs;
- `world_with_node`: a `World` on it;
- `outside_host`: a host outside the node, in a network namespace of the test's own, linked
  to the node as its upstream network would be (traffic goes only to loopback, to pods, and
  to this host).
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from kubernetes import client
from pydantic import SecretStr

from provisioner.controller.install import install_platform, plan_platform
from provisioner.devcluster.binaries import pinned_node_binaries
from provisioner.devcluster.cluster import DevCluster
from provisioner.devcluster.hub import DevHub
from provisioner.devcluster.node import POD_CIDR
from provisioner.devcluster.s3server import S3Endpoint
from provisioner.errors import RefusedError, TreError
from provisioner.kube.api import Kube
from provisioner.kube.client import api_client
from provisioner.models.resources import AccessRequest, AccessRequestSpec, Workspace, WorkspaceSpec
from provisioner.models.settings import Settings
from provisioner.planning.crds import plan_crds
from provisioner.planning.names import ANNOTATION_USER, SYSTEM_NAMESPACE, hub_user, namespace_name
from provisioner.planning.workspace import plan_workspace
from provisioner.storage.s3 import ensure_bucket, s3_client
from tests.conftest import reused_platform
from tests.integration.node_world import busybox_image, host_kernel_settings
from tests.integration.platform_with_node import (
    OUTSIDE_LISTENER,
    OUTSIDE_PORT,
    TRE,
    Start,
    run_checked,
    start_server,
)
from tests.integration.workspace_world import World
from tests.jupyter_clients import Hub, HubError, Notebook
from tests.jupyter_clients import sign_in as sign_in_form

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


@pytest.fixture(scope="session")
def s3_server_dir(dev_platform: DevCluster) -> Path:
    return dev_platform.state_dir / "s3"


@pytest.fixture(scope="session")
def s3_endpoint(dev_platform: DevCluster) -> S3Endpoint:
    return dev_platform.s3()


@pytest.fixture(scope="session")
def s3_settings(s3_endpoint: S3Endpoint) -> Settings:
    return Settings(
        s3_endpoint_url=s3_endpoint.url,
        s3_region=s3_endpoint.region,
        s3_access_key_id=SecretStr(s3_endpoint.access_key),
        s3_secret_access_key=SecretStr(s3_endpoint.secret_key),
    )


@pytest.fixture(scope="session")
def s3(s3_settings: Settings) -> S3Client:
    return s3_client(s3_settings)


@pytest.fixture
def bucket(s3: S3Client) -> str:
    """A new versioned bucket, named for this test only."""
    name = f"t-{uuid.uuid4().hex[:16]}"
    ensure_bucket(s3, name, versioning=True)
    return name


FIELD_MANAGER = "tre-tests"
SESSION_MAX_OPEN_REQUESTS = 1000


@pytest.fixture(scope="session")
def crds(admin_api: client.ApiClient) -> None:
    """Our three CRDs, server-side applied from `plan_crds()` and Established.

    They stay installed for the rest of the session (re-applying is idempotent); the platform
    is thrown away at the end.
    """
    ext = client.ApiextensionsV1Api(admin_api)
    planned = plan_crds()
    apply = Kube(admin_api, FIELD_MANAGER).apply
    for crd in planned:
        apply(crd)
    # The filing limit's parameter, in its namespace: its policy stays bound once any module
    # installed it (guards_custom_resources), and refuses every filing without it.
    for obj in plan_platform(Settings()):
        if obj["kind"] == "ConfigMap" or (
            obj["kind"] == "Namespace" and obj["metadata"]["name"] == SYSTEM_NAMESPACE
        ):
            apply(obj)
    deadline = time.monotonic() + 60
    for crd in planned:
        name = crd["metadata"]["name"]
        while True:
            status = ext.read_custom_resource_definition(name).status
            conditions = {c.type: c for c in (status.conditions or [])}
            if "NonStructuralSchema" in conditions:
                pytest.fail(f"{name}: {conditions['NonStructuralSchema'].message}")
            established = conditions.get("Established")
            if established is not None and established.status == "True":
                break
            if time.monotonic() > deadline:
                pytest.fail(f"{name} not Established after 60s: {status}")
            time.sleep(0.2)


# --- the installed platform (CRDs, admission policies, RBAC) on the session's control plane --


@pytest.fixture(scope="module")
def installed_platform(dev_platform: DevCluster) -> Settings:
    """CRDs, admission policies and RBAC installed; the process environment points at the
    session's platform (the CLI reads TRE_* and KUBECONFIG, as a person's shell would).

    Module-scoped and idempotent (server-side apply), so a module that removes a policy for
    its own purposes cannot leave the next module unguarded.
    """
    os.environ.update(dev_platform.env())
    # The session's people file hundreds of requests that are never decided; the filing
    # limit's own test (test_scoped_reads.py) installs the limit it needs.
    os.environ["TRE_MAX_OPEN_REQUESTS"] = str(SESSION_MAX_OPEN_REQUESTS)
    settings = Settings()
    install_platform(Kube(api_client(dev_platform.kubeconfig)), settings, lambda _: None)
    wait_for_policies(Kube(api_client(dev_platform.kubeconfig, as_user="probe-user")))
    wait_for_pod_policy(dev_platform.kubeconfig, settings)
    return settings


def own_platform(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[DevCluster]:
    """A control plane and S3 of a module's own, for tests whose objects would clash with the
    session platform's (`yield from own_platform(...)` in a module-scoped fixture)."""
    cluster = DevCluster(tmp_path_factory.mktemp(name))
    cluster.up(lambda message: print(f"[{name}] {message}"))
    try:
        yield cluster
    finally:
        cluster.down(print)


def wait_for_policies(kube: Kube, timeout: float = 30.0) -> None:
    """Admission policies load asynchronously: probe until a forged request is refused."""
    probe = AccessRequest(
        name=f"probe-{uuid.uuid4().hex[:8]}",
        spec=AccessRequestSpec(
            project="probe",
            requester="someone-else",
            lead="someone-else",
            members=["someone-else"],
            datasets=["probe-data"],
            purpose="policy probe only",
            start_date=dt.date.today(),
            end_date=dt.date.today() + dt.timedelta(days=1),
        ),
    ).to_object()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            kube.create(probe, dry_run=True)
        except RefusedError as exc:
            if "requester" in str(exc):
                return
        time.sleep(0.25)
    pytest.fail("the admission policies did not become active within 30s")


def wait_for_pod_policy(kubeconfig: Path, settings: Settings, timeout: float = 60.0) -> None:
    """The pod policies read the deny-all NetworkPolicy and the workspace access ConfigMap
    through informers the API server starts when their bindings are (re)created; until they
    have synced, every pod in a project namespace is refused. Provision a project namespace of
    our own as the controller and probe, as the hub, until a compliant pod is admitted."""
    probe = Workspace(
        name="policy-probe",
        spec=WorkspaceSpec(
            project="policy-probe", namespace=namespace_name("policy-probe"), members=["probe"]
        ),
    )
    controller = Kube(api_client(kubeconfig, as_user=settings.controller_user))
    for manifest in plan_workspace(probe, settings):
        controller.apply(manifest)
    hub = Kube(api_client(kubeconfig, as_user=hub_user(settings)))
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "probe",
            "namespace": namespace_name("policy-probe"),
            "annotations": {ANNOTATION_USER: "probe"},
        },
        "spec": {
            "automountServiceAccountToken": False,
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [
                {
                    "name": "probe",
                    "image": "registry.invalid/probe:1",
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
        },
    }
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            hub.create(pod, dry_run=True)
            return
        except RefusedError as exc:
            last = str(exc)
        time.sleep(0.25)
    pytest.fail(f"the pod admission policy did not become ready within {timeout:.0f}s: {last}")


# --- the session's platform with a node added (test_node, test_csi_pod, test_platform_images) ---


@pytest.fixture(scope="session")
def busybox_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return busybox_image(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="session")
def kernel_settings_before_the_node(dev_platform: DevCluster) -> list[str]:
    """The host's kernel settings before the session's node starts (host_kernel_settings)."""
    return host_kernel_settings()


@pytest.fixture(scope="session")
def node_platform(
    dev_platform: DevCluster, busybox_archive: Path, kernel_settings_before_the_node: list[str]
) -> DevCluster:
    """The session's platform with a node added: started the first time a node test asks,
    so a run without node tests never pays for it. It stops with the platform."""
    missing = pinned_node_binaries().missing()
    if missing:  # a cold build (~11 min) would run into the per-test timeout: say what to do
        pytest.fail(f"the node's binaries are not built ({missing[0]}): run 'make node-binaries'")
    if not dev_platform.has_node():
        try:
            dev_platform.add_node(lambda message: print(f"[dev node] {message}"))
        except TreError as exc:
            pytest.fail(f"the node did not start, so no node test can run:\n{exc}")
    dev_platform.node().import_image(busybox_archive)
    return dev_platform


# --- a platform with a node ------------------------------------------------------------------


@pytest.fixture(scope="module")
def platform_with_node(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DevCluster]:
    """A platform with a node and the hub in it, as `tre dev up --node` makes it. A test module
    may set PLATFORM_ENV (TRE_* settings for the platform's hub and airlock, which inherit
    them), e.g. small browser budgets that a test can cross in seconds."""
    if os.geteuid() != 0:
        pytest.fail("a platform with a node needs root (CI runs as root)")
    reused = reused_platform(request, "--reuse-node-platform")
    if reused is not None:
        yield reused
        return
    state = tmp_path_factory.mktemp("node-platform") / "platform"
    up = subprocess.run(
        [*TRE, "dev", "up", "--node", "--state-dir", str(state)],
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
        env={**os.environ, **getattr(request.module, "PLATFORM_ENV", {})},
    )
    cluster = DevCluster(state)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        yield cluster
    finally:
        subprocess.run([*TRE, "dev", "down", "--state-dir", str(state)], check=False, timeout=300)


@pytest.fixture(scope="module")
def settings_with_node(platform_with_node: DevCluster) -> Iterator[Settings]:
    """This platform's settings (as `tre dev env` prints them) in the environment of the
    module's CLI calls, and as the controller's Settings."""
    env = {**platform_with_node.env(), "KUBECONFIG": str(platform_with_node.kubeconfig)}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        patch.delenv("TRE_KUBECONFIG", raising=False)
        yield Settings()


@pytest.fixture(scope="module")
def world_with_node(
    platform_with_node: DevCluster,
    settings_with_node: Settings,
    tmp_path_factory: pytest.TempPathFactory,
) -> World:
    kubeconfig = platform_with_node.kubeconfig
    return World(settings_with_node, kubeconfig, tmp_path_factory.mktemp("world"))


@pytest.fixture(scope="module")
def hub_url(platform_with_node: DevCluster) -> str:
    """The node platform's hub, as people reach it (its proxy)."""
    endpoints = DevHub(platform_with_node).endpoints()
    assert endpoints is not None, "tre dev up --node started no hub"
    return endpoints.probe_url


@pytest.fixture(scope="module")
def sign_in(
    request: pytest.FixtureRequest, platform_with_node: DevCluster, hub_url: str
) -> Callable[[str], Hub]:
    """A person signed in on the node platform's hub with the development password: their
    own API token, as their browser session has."""
    password = DevHub(platform_with_node).password_file.read_text().strip()

    def signed_in(user: str) -> Hub:
        return Hub(hub_url, sign_in_form(hub_url, user, password, request.module.__name__)[1])

    return signed_in


@pytest.fixture
def start() -> Iterator[Start]:
    """`start_server`, and every server a test started is stopped when it ends: the node has
    two cores, and the compute tier's CPU requests of servers left running would keep the next
    test's pod from being scheduled."""
    started: list[tuple[Hub, str, str]] = []

    def starting(hub: Hub, user: str, project: str) -> Notebook:
        started.append((hub, user, project))
        return start_server(hub, user, project)

    yield starting
    for hub, user, project in started:
        try:
            hub.stop(user, project)
            hub.wait_gone(user, project, 120)
        except HubError:
            pass  # already gone (a revoked member's, a test that stopped it itself)


# Screenshots are kept here for people to look at (CI keeps the directory as an artifact).
ARTIFACTS = Path(os.environ.get("TRE_TEST_ARTIFACTS", Path(__file__).parents[2] / "test-artifacts"))

Browse = Callable[[str, str, str, str, str], "tuple[subprocess.CompletedProcess[str], Path]"]


@pytest.fixture(scope="module")
def browse(platform_with_node: DevCluster) -> Browse:
    """Run a session of browser_session.py (SESSION USER WHAT DETAIL, as it documents) as USER
    with the hub's development password, in the node's network namespace (the hub's proxy is
    there, and no route out); its screenshot is kept as test-artifacts/<name>."""
    hub = DevHub(platform_with_node)
    endpoints = hub.endpoints()
    assert endpoints is not None
    password = hub.password_file.read_text().strip()

    def run(
        session: str, user: str, what: str, detail: str, name: str
    ) -> tuple[subprocess.CompletedProcess[str], Path]:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        screenshot = ARTIFACTS / name
        screenshot.unlink(missing_ok=True)
        done = subprocess.run(
            [
                "nsenter", "-t", str(platform_with_node.node().holder_pid), "-n", "--",
                sys.executable, str(Path(__file__).with_name("browser_session.py")),
                session, endpoints.public_url, user, password, what, detail, str(screenshot),
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
        )  # fmt: skip
        return done, screenshot

    return run


@pytest.fixture
def outside_host(platform_with_node: DevCluster, settings_with_node: Settings) -> Iterator[str]:
    """A host outside the node, in a network namespace of this test, linked to the node as its
    upstream network would be; it listens on OUTSIDE_PORT and on the airlock's port (the one
    port the notebooks may reach, at the airlock's address only). Yields its address."""
    holder = platform_with_node.node().holder_pid
    tag = uuid.uuid4().hex[:6]
    node_end, outside_end = f"tre-o{tag}", f"tre-p{tag}"
    node_ip, outside_ip = "10.98.0.1", "10.98.0.2"
    outside = subprocess.Popen(["unshare", "--net", "sleep", "infinity"])
    server: subprocess.Popen[bytes] | None = None
    try:
        time.sleep(0.3)
        in_node = ["nsenter", "-t", str(holder), "-n", "--"]
        in_outside = ["nsenter", "-t", str(outside.pid), "-n", "--"]
        run = run_checked
        run([*in_node, "ip", "link", "add", node_end, "type", "veth", "peer", "name",
             outside_end, "netns", str(outside.pid)])  # fmt: skip
        run([*in_node, "ip", "addr", "add", f"{node_ip}/30", "dev", node_end])
        run([*in_node, "ip", "link", "set", node_end, "up"])
        run([*in_outside, "ip", "link", "set", "lo", "up"])
        run([*in_outside, "ip", "addr", "add", f"{outside_ip}/30", "dev", outside_end])
        run([*in_outside, "ip", "link", "set", outside_end, "up"])
        # Replies find their way back to the pods: only the policy may stop a connection.
        run([*in_outside, "ip", "route", "add", POD_CIDR, "via", node_ip])
        ports = [str(OUTSIDE_PORT), str(settings_with_node.airlock_port)]
        server = subprocess.Popen(
            [*in_outside, sys.executable, "-c", OUTSIDE_LISTENER, outside_ip, *ports]
        )
        time.sleep(1.0)
        yield outside_ip
    finally:
        if server is not None:
            server.kill()
            server.wait()
        outside.kill()  # the namespace, its veth end and so the node's end go with it
        outside.wait()
