"""JupyterHub running against the session's platform: a real hub process (KubeSpawner, our
`hub_config/`) and its real configurable-http-proxy, started as `tre dev up` starts them, acting
as the platform's hub ServiceAccount (a TokenRequest token, no impersonation).

Behaviours under test, through the proxy and the hub's REST API, with an API token that a user
got by signing in through the login form (the development sign-in):
- the hub answers /hub/api/ through the proxy; its idle culler runs as a hub-managed service;
- a hub given the development sign-in beside an OIDC setting exits with code 1 before it
  listens, and says which settings and what to do;
- starting the default server is refused with the message naming the user's projects;
- a user who is no member of the project is refused, through the REST API and on the spawn
  page a browser opens; so is a member of a Frozen workspace;
- a member of a Ready workspace starting the named server `<project>`: KubeSpawner creates the
  pod in `tre-<project>`, created by the hub's ServiceAccount, with the restricted security
  context, no token, the datasets read-only and /project writable; with no node the pod stays
  Pending and the hub reports the server as pending; stopping the server deletes the pod;
- the hub's Workspace cache follows its watch: every workspace above is made Ready, and one
  then Frozen, after the hub started, and the hub decides on each as it is now;
- the hub's credential is its ServiceAccount's (SelfSubjectReview), not the admin's.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from provisioner.devcluster.cluster import DevCluster
from provisioner.devcluster.hub import DevHub, HubEndpoints
from provisioner.errors import DevClusterError
from provisioner.kube.resources import RESOURCES
from provisioner.models.settings import Settings
from provisioner.planning.names import hub_user, namespace_name
from tests.integration.workspace_world import APPROVERS, World
from tests.jupyter_clients import sign_in as sign_in_form

pytestmark = pytest.mark.integration
PODS = RESOURCES[("v1", "Pod")]
# Seconds. KubeSpawner creates the pod within a second or two of the start request here.
POD_TIMEOUT = 30.0


@pytest.fixture(scope="module")
def hub(installed_platform: Settings, dev_platform: DevCluster) -> Iterator[HubEndpoints]:
    """The platform's hub, started after `tre install` as `tre dev up` starts it."""
    dev_hub = DevHub(dev_platform, "test-hub")
    endpoints = dev_hub.up(installed_platform, lambda m: print(f"[hub] {m}"))
    yield endpoints
    print(f"\n--- last lines of the hub's log ---\n{dev_hub.processes()[-1].log_tail(40)}")
    dev_hub.down(lambda _: None)


@pytest.fixture
def world(installed_platform: Settings, dev_platform: DevCluster, tmp_path: Path) -> World:
    return World(installed_platform, dev_platform.kubeconfig, tmp_path)


class HubUser:
    """One person's session with the hub's REST API, signed in through the login form."""

    def __init__(self, hub: HubEndpoints, name: str, password: str) -> None:
        self.name = name
        self.api = f"{hub.probe_url}/hub/api"
        self.session = requests.Session()
        self.browser, token = sign_in_form(hub.probe_url, name, password, "test_hub")
        self.session.headers["Authorization"] = f"token {token}"

    def start(self, server: str = "") -> requests.Response:
        path = f"/users/{self.name}/servers/{server}" if server else f"/users/{self.name}/server"
        return self.session.post(self.api + path, json={}, timeout=30)

    def stop(self, server: str) -> requests.Response:
        return self.session.delete(f"{self.api}/users/{self.name}/servers/{server}", timeout=60)

    def server(self, server: str) -> dict[str, Any] | None:
        model = self.session.get(f"{self.api}/users/{self.name}", timeout=10).json()
        found: dict[str, Any] | None = model.get("servers", {}).get(server)
        return found


@pytest.fixture
def sign_in(hub: HubEndpoints, dev_platform: DevCluster) -> Callable[[str], HubUser]:
    password = (DevHub(dev_platform, "test-hub").password_file).read_text().strip()
    return lambda name: HubUser(hub, name, password)


def refusal(response: requests.Response, status: int = 403) -> str:
    """The message of a refused start; the status says refused (403), not a project's server
    (400) or cannot decide yet (503), never 500 (a broken hub)."""
    body = response.json()
    if response.status_code == 503 or "there is no project" in body.get("message", ""):
        return ""  # the hub's cache has not seen the new workspace yet: ask again
    assert response.status_code == status, (response.status_code, body)
    return str(body["message"])


def wait_for(condition: Callable[[], Any], what: str, timeout: float = POD_TIMEOUT) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.3)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")


def ready_project(world: World) -> tuple[str, str, str]:
    """(request, project, dataset) of a Ready workspace with members lea and ravi."""
    request, project, dataset = world.approved_project()
    world.reconcile(project)
    workspace = world.workspace(project)
    assert workspace is not None
    assert workspace["status"]["phase"] == "Ready"
    return request, project, dataset


# --- the hub process ---------------------------------------------------------------------------


def test_the_hub_answers_through_the_proxy_with_its_culler(hub: HubEndpoints) -> None:
    answer = requests.get(f"{hub.probe_url}/hub/api/", timeout=10)
    assert answer.status_code == 200
    assert answer.json()["version"] == "6.1.1"
    assert hub.connect_url == hub.hub_api_url  # on the host, pods would call it directly


def test_the_development_sign_in_is_refused_beside_oidc_settings(
    installed_platform: Settings, dev_platform: DevCluster
) -> None:
    refused = DevHub(dev_platform, "refused-hub")
    with pytest.raises(DevClusterError) as failed:
        refused.up(
            installed_platform,
            lambda _: None,
            extra_env={"TRE_HUB_OIDC_ISSUER": "https://login.example.org/realms/tre"},
        )
    message = str(failed.value)
    assert "jupyterhub-refused-hub exited with code 1 while starting" in message
    assert (
        "hub configuration refused: TRE_HUB_DEV_AUTHENTICATOR: the development sign-in is "
        "refused because OIDC settings are present (TRE_HUB_OIDC_ISSUER); a deployment "
        "signs in through OIDC only" in message
    )
    assert refused.processes() == []  # its proxy was stopped and forgotten too


# --- starts through the REST API ---------------------------------------------------------------


def test_the_default_server_is_refused_with_the_users_projects(
    hub: HubEndpoints, world: World, sign_in: Callable[[str], HubUser]
) -> None:
    _, project, _ = ready_project(world)
    ravi = sign_in("ravi")
    message = wait_for(
        lambda: project in (m := refusal(ravi.start(), 400)) and m, f"a refusal naming {project}"
    )
    assert "cannot start a default server: every project has its own named server" in message
    assert ravi.server("") is None


def test_a_non_member_is_refused(
    hub: HubEndpoints, world: World, sign_in: Callable[[str], HubUser]
) -> None:
    _, project, _ = ready_project(world)
    mallory = sign_in("mallory")
    message = wait_for(
        lambda: "not a member" in (m := refusal(mallory.start(project))) and m,
        "the non-member refusal",
    )
    assert f"user 'mallory' is not a member of project {project!r}" in message
    # The spawn page a browser opens says the same.
    page = mallory.browser.get(f"{hub.probe_url}/hub/spawn/mallory/{project}", timeout=30)
    assert page.status_code == 403
    assert f"user &#39;mallory&#39; is not a member of project &#39;{project}&#39;" in page.text
    assert world.admin.list(PODS, namespace=namespace_name(project)) == []


def test_a_member_starts_the_projects_server_and_stopping_deletes_the_pod(
    hub: HubEndpoints, world: World, sign_in: Callable[[str], HubUser]
) -> None:
    _, project, dataset = ready_project(world)
    namespace = namespace_name(project)
    lea = sign_in("lea")

    # The hub's cache learns of the new workspace from its watch, within moments.
    started = wait_for(
        lambda: (r := lea.start(project)).status_code in (201, 202) and r,
        f"the start of {project} to be accepted",
    )
    assert started.status_code in (201, 202), started.text
    pods = wait_for(lambda: world.admin.list(PODS, namespace=namespace), "the notebook pod")
    [pod] = pods
    meta, spec = pod["metadata"], pod["spec"]
    # The hub created it as its ServiceAccount: admission (tre-pod-workspace-access) admits
    # pods in a project namespace from that identity only, and the hub runs with its token.
    assert meta["annotations"]["tre.ucloud.org/user"] == "lea"
    assert meta["labels"]["tre.ucloud.org/project"] == project
    assert meta["labels"]["component"] == "singleuser-server"
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "runAsGroup": 100,
        "fsGroup": 100,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    # The notebook and, in front of it, the browser gate under its own user (images/gate).
    container, gate = spec["containers"]
    assert gate["name"] == "gate" and gate["securityContext"]["runAsUser"] == 10002
    assert gate["securityContext"]["readOnlyRootFilesystem"] is True
    assert "volumeMounts" not in container or all(
        m["name"] != "gate-state" for m in container["volumeMounts"]
    )
    assert container["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "runAsGroup": 100,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts[f"/data/{dataset}"]["readOnly"] is True
    assert mounts["/project"].get("readOnly", False) is False
    claims = {
        v["name"]: v["persistentVolumeClaim"]
        for v in spec["volumes"]
        if "persistentVolumeClaim" in v
    }
    dataset_claim = claims[mounts[f"/data/{dataset}"]["name"]]
    assert dataset_claim["readOnly"] is True
    assert claims[mounts["/project"]["name"]]["claimName"] == "project-storage"
    # The pod is told to call the hub at the connect URL.
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["JUPYTERHUB_API_URL"] == f"{hub.connect_url}/hub/api"
    # No node here: the pod stays Pending, and the hub says the server is starting.
    assert pod["status"]["phase"] == "Pending"
    server = lea.server(project)
    assert server is not None
    assert server["pending"] == "spawn"
    assert server["ready"] is False

    stopped = lea.stop(project)
    assert stopped.status_code in (202, 204), stopped.text
    wait_for(lambda: world.admin.list(PODS, namespace=namespace) == [], "the pod to be deleted")
    wait_for(lambda: (lea.server(project) or {}).get("pending") is None, "the server to stop")


def test_a_frozen_workspace_is_refused(
    hub: HubEndpoints, world: World, sign_in: Callable[[str], HubUser]
) -> None:
    request, project, _ = ready_project(world)
    result = world.tre("request", "revoke", request, "-m", "ended", user="ann", group=APPROVERS)
    assert result.exit_code == 0, result.output
    world.reconcile(project, now=dt.datetime.now(dt.UTC))
    workspace = world.workspace(project)
    assert workspace is not None
    assert workspace["status"]["phase"] == "Frozen"
    lea = sign_in("lea")
    message = wait_for(
        lambda: "Frozen" in (m := refusal(lea.start(project))) and m, "the Frozen refusal"
    )
    assert f"cannot start server {project!r}: project {project!r} is Frozen" in message
    assert world.admin.list(PODS, namespace=namespace_name(project)) == []


def test_the_hub_acts_as_its_service_account(
    hub: HubEndpoints, installed_platform: Settings, dev_platform: DevCluster
) -> None:
    from provisioner.kube.api import Kube
    from provisioner.kube.client import api_client

    hub_kube = Kube(api_client(DevHub(dev_platform, "test-hub").kubeconfig))
    review = hub_kube.request(
        "POST",
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        body={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
    )
    assert review["status"]["userInfo"]["username"] == hub_user(installed_platform)
