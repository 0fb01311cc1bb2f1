"""Session fixtures shared by every tier.

The integration tier runs against one real local control plane (etcd + kube-apiserver +
kube-controller-manager) and one real S3 server, started once per test session by
`dev_platform`. If either cannot start, every integration test FAILS: a missing service must
never look like a green run.

Options:
  --reuse-platform DIR   use an already running `tre dev up --state-dir DIR` instead of
                         starting one (fast local iteration)
  --reuse-node-platform DIR
                         the same for the modules on `platform_with_node`: a running
                         `tre dev up --node --state-dir DIR` (tests/integration/conftest.py)
  TRE_TEST_KEEP=1        keep the platform and the per-test namespaces after the run, for
                         debugging; the state directory is printed.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kubernetes import client

from provisioner.devcluster.cluster import DevCluster
from provisioner.errors import TreError
from provisioner.kube.client import api_client


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--reuse-platform",
        metavar="DIR",
        default=None,
        help="state directory of a running `tre dev up` to use instead of starting one",
    )
    parser.addoption(
        "--reuse-node-platform",
        metavar="DIR",
        default=None,
        help="state directory of a running `tre dev up --node` for the modules on "
        "platform_with_node, instead of one started per module",
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    # Lets fixtures see whether the test body failed (to dump cluster state).
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"rep_{report.when}", report)


def reused_platform(request: pytest.FixtureRequest, option: str) -> DevCluster | None:
    """The running platform `option` names (None when not given); fails if it is not up."""
    reuse = request.config.getoption(option)
    if not reuse:
        return None
    cluster = DevCluster(Path(reuse))
    if not cluster.is_ready():
        pytest.fail(f"{option} {reuse}: no running platform there; `tre dev up`")
    return cluster


@pytest.fixture(scope="session")
def dev_platform(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DevCluster]:
    reused = reused_platform(request, "--reuse-platform")
    if reused is not None:
        yield reused
        return
    cluster = DevCluster(tmp_path_factory.mktemp("platform"))
    try:
        cluster.up(lambda message: print(f"[dev platform] {message}"))
    except TreError as exc:
        cluster.down(lambda _: None, purge=False)
        pytest.fail(f"the local platform did not start, so no integration test can run:\n{exc}")
    yield cluster
    keep = os.environ.get("TRE_TEST_KEEP") == "1"
    if keep:
        print(f"\nTRE_TEST_KEEP=1: platform left running in {cluster.state_dir}")
    else:
        cluster.down(lambda _: None, purge=True)


@pytest.fixture(scope="session")
def kubeconfig(dev_platform: DevCluster) -> Path:
    return dev_platform.kubeconfig


@pytest.fixture(scope="session")
def admin_api(kubeconfig: Path) -> client.ApiClient:
    """The platform admin (group system:masters)."""
    return api_client(kubeconfig)


@pytest.fixture(scope="session")
def as_user(kubeconfig: Path) -> Callable[..., client.ApiClient]:
    """Factory: an ApiClient that impersonates `user` (optionally in one `group`)."""

    def make(user: str, group: str | None = None) -> client.ApiClient:
        return api_client(kubeconfig, as_user=user, as_groups=(group,) if group else ())

    return make


@pytest.fixture
def namespace(request: pytest.FixtureRequest, admin_api: client.ApiClient) -> Iterator[str]:
    """A fresh namespace for one test; deleted afterwards, its events printed if it failed."""
    core = client.CoreV1Api(admin_api)
    name = f"t-{uuid.uuid4().hex[:10]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        events = core.list_namespaced_event(name).items
        print(f"\n--- events in {name} ---")
        for ev in events:
            print(
                f"{ev.last_timestamp} {ev.type} {ev.reason} "
                f"{ev.involved_object.kind}/{ev.involved_object.name}: {ev.message}"
            )
    if os.environ.get("TRE_TEST_KEEP") != "1":
        core.delete_namespace(name)
