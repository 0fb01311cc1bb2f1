"""The browser gates' records reach the audit chain, on the real API server and S3.

A notebook pod as the hub builds it carries a token for the gate alone (a projected
ServiceAccount token, audience `tre-gate`); the airlock checks it with a TokenReview and
files the gate's batch as a BrowserActivity in the pod's namespace; the controller audits
each record once, keeps the person's count of the day in the Workspace's status (from which
the hub starts their next gate), says when a budget was used up, and deletes the batch.

Played here as the people who could try otherwise: the hub (or whoever holds its rights)
giving the token to the notebook container or starting a pod with the data and no gate; a
member, a checker and an admin filing records of their own; a token that is not a pod's, or
not for the gate; a gate of one project writing into another.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from provisioner.airlock.gate_records import GateRecords
from provisioner.devcluster.airlock import airlock_kubeconfig
from provisioner.devcluster.cluster import DevCluster
from provisioner.errors import RefusedError
from provisioner.kube.api import Kube
from provisioner.kube.client import api_client
from provisioner.kube.resources import BROWSER_ACTIVITIES, WORKSPACES
from provisioner.models.settings import Settings
from provisioner.planning import browser
from provisioner.planning.names import hub_user, namespace_name
from provisioner.planning.notebook_pods import GATE_TOKEN_AUDIENCE, GATE_TOKEN_VOLUME
from tests.integration import test_notebook_pods
from tests.integration.test_notebook_pods import notebook_pod
from tests.integration.workspace_world import World, create_pod_when_admitted, unique

pytestmark = pytest.mark.integration
# The same fixture: a World whose kubeconfig KubeSpawner's harness reads.
world = test_notebook_pods.world


@pytest.fixture
def airlock(installed_platform: Settings, dev_platform: DevCluster) -> Kube:
    return Kube(api_client(airlock_kubeconfig(dev_platform, installed_platform)))


def hub(world: World) -> Kube:
    return Kube(api_client(world.kubeconfig, as_user=hub_user(world.settings)))


def started_pod(world: World) -> tuple[str, dict[str, Any]]:
    """A Ready project and ravi's notebook pod in it, as the hub creates it (never scheduled:
    no node is needed to hold a pod-bound token)."""
    _, project, _ = world.approved_project()
    world.reconcile(project)
    pod = create_pod_when_admitted(hub(world), notebook_pod(world, project, "ravi"))
    return project, pod


def token_for(
    world: World,
    pod: dict[str, Any] | None,
    audience: str = GATE_TOKEN_AUDIENCE,
    *,
    namespace: str = "",
) -> str:
    """What the kubelet puts in the gate's token volume: a token of the pod's ServiceAccount,
    bound to the pod, for `audience` (with no pod: the namespace's default account's, bound
    to nothing)."""
    spec: dict[str, Any] = {"audiences": [audience], "expirationSeconds": 600}
    account = "default"
    if pod is not None:
        meta = pod["metadata"]
        namespace, account = meta["namespace"], pod["spec"].get("serviceAccountName", account)
        spec["boundObjectRef"] = {
            "kind": "Pod",
            "apiVersion": "v1",
            "name": meta["name"],
            "uid": meta["uid"],
        }
    answer = world.admin.request(
        "POST",
        f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token",
        body={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec},
    )
    return str(answer["status"]["token"])


def batch(project: str, *records: dict[str, Any], content: int = 0) -> dict[str, Any]:
    today = dt.datetime.now(dt.UTC).date().isoformat()
    return {
        "user": "ravi",
        "project": project,
        "usage": {"day": today, "content": content, "other": 100},
        "records": list(records),
    }


def served(seq: int, path: str = "/project/results.csv") -> dict[str, Any]:
    return {
        "seq": seq,
        "event": "file.served",
        "at": dt.datetime.now(dt.UTC).isoformat(),
        "user": "ravi",
        "project": "ignored",
        "path": path,
        "type": "file",
        "bytes": 1234,
        "sha256": "ab" * 32,
    }


def test_the_gates_token_is_the_gates_alone(world: World) -> None:
    """The hub's pod carries the token for the gate's container only; a pod whose notebook
    container mounts it, or that mounts the workspace's storage without the gate, is refused
    by the API server whoever builds it."""
    project, pod = started_pod(world)
    containers = {c["name"]: c for c in pod["spec"]["containers"]}
    assert [m["name"] for m in containers["gate"]["volumeMounts"]] == ["gate-state", "gate-token"]
    assert all(m["name"] != GATE_TOKEN_VOLUME for m in containers["notebook"]["volumeMounts"])

    stolen = notebook_pod(world, project, "lea")
    notebook = next(c for c in stolen["spec"]["containers"] if c["name"] == "notebook")
    notebook["volumeMounts"].append({"name": GATE_TOKEN_VOLUME, "mountPath": "/tmp/t"})
    with pytest.raises(RefusedError, match="only the browser gate mounts volume gate-token"):
        create_pod_when_admitted(hub(world), stolen, dry_run=True)

    ungated = notebook_pod(world, project, "lea")
    ungated["spec"]["containers"] = [
        c for c in ungated["spec"]["containers"] if c["name"] != "gate"
    ]
    ungated["spec"]["volumes"] = [
        v for v in ungated["spec"]["volumes"] if v["name"] != GATE_TOKEN_VOLUME
    ]
    with pytest.raises(RefusedError, match="runs the browser gate beside it"):
        create_pod_when_admitted(hub(world), ungated, dry_run=True)

    other = notebook_pod(world, project, "lea")
    token = next(v for v in other["spec"]["volumes"] if v["name"] == GATE_TOKEN_VOLUME)
    token["projected"]["sources"][0]["serviceAccountToken"]["audience"] = "https://kubernetes"
    with pytest.raises(RefusedError, match=r"spec\.volumes"):
        create_pod_when_admitted(hub(world), other, dry_run=True)


def test_a_gates_records_are_audited_once_counted_and_cleared(world: World, airlock: Kube) -> None:
    project, pod = started_pod(world)
    records = GateRecords(airlock, world.settings)
    token = token_for(world, pod)
    body = batch(project, served(1), served(2, "/project/model.pkl"), content=2468)
    assert records.file(token, body) == 2
    # the same batch again (its answer was lost): nothing new is filed
    assert records.file(token, body) == 2
    namespace = namespace_name(project)
    filed = world.admin.list(BROWSER_ACTIVITIES, namespace=namespace)
    assert len(filed) == 1
    assert filed[0]["spec"]["project"] == project
    assert filed[0]["spec"]["podUid"] == pod["metadata"]["uid"]

    world.reconcile(project)
    entries = [e for e in world.audit.read_all() if e.action == "browser.file.served"]
    mine = [e for e in entries if e.details.get("project") == project]
    assert [(e.actor, e.details["path"], e.details["sha256"]) for e in mine] == [
        ("ravi", "/project/results.csv", "ab" * 32),
        ("ravi", "/project/model.pkl", "ab" * 32),
    ]
    status = (world.workspace(project) or {})["status"]
    assert status["browser"][0]["user"] == "ravi"
    assert status["browser"][0]["content"] == 2468
    # the next pass finds every record in the log and the count in the status: cleared
    world.reconcile(project)
    assert world.admin.list(BROWSER_ACTIVITIES, namespace=namespace) == []
    world.reconcile(project)
    again = [e for e in world.audit.read_all() if e.details.get("project") == project]
    assert len([e for e in again if e.action == "browser.file.served"]) == 2


def test_a_crossed_budget_is_audited_and_named_on_the_workspace(
    world: World, airlock: Kube
) -> None:
    project, pod = started_pod(world)
    crossing = {
        "seq": 1,
        "event": "budget.crossed",
        "at": dt.datetime.now(dt.UTC).isoformat(),
        "meter": "content",
        "usedBytes": 900,
        "budgetBytes": 1000,
        "refusedBytes": 200,
    }
    GateRecords(airlock, world.settings).file(token_for(world, pod), batch(project, crossing))
    world.reconcile(project)
    obj = world.admin.get(WORKSPACES, project)
    assert obj is not None
    found = next(c for c in obj["status"]["conditions"] if c["type"] == browser.CONDITION)
    assert found["status"] == "False" and "ravi (content)" in found["message"]
    assert any(
        e.action == "browser.budget.crossed" and e.details.get("project") == project
        for e in world.audit.read_all()
    )


def test_only_a_gates_own_pod_token_files_records(world: World, airlock: Kube) -> None:
    project, pod = started_pod(world)
    records = GateRecords(airlock, world.settings)
    # a token for another audience (the API server's own), or for no pod at all
    with pytest.raises(RefusedError, match=r"not a valid browser gate token|audience"):
        records.file(token_for(world, pod, audience="https://kubernetes.default.svc"), {})
    unbound = token_for(world, None, namespace=namespace_name(project))
    with pytest.raises(RefusedError, match="not bound to a pod"):
        records.file(unbound, batch(project, served(1)))
    # a gate that names another project is refused: its namespace decides
    with pytest.raises(RefusedError, match=f"belongs to project {project}"):
        records.file(token_for(world, pod), batch("someone-elses", served(1)))


def test_nobody_but_the_airlock_files_browser_activity(world: World, airlock: Kube) -> None:
    project, _ = started_pod(world)
    namespace = namespace_name(project)
    forged = {
        "apiVersion": "tre.ucloud.org/v1alpha1",
        "kind": "BrowserActivity",
        "metadata": {"name": unique("forged"), "namespace": namespace},
        "spec": {
            "project": project,
            "user": "lea",
            "pod": "jupyter-lea",
            "podUid": "0000",
            "usage": {"user": "lea", "day": dt.date.today().isoformat()},
            "records": [],
        },
    }
    for who, groups in (("ravi", ()), ("carl", ("tre:output-checkers",))):
        kube = Kube(api_client(world.kubeconfig, as_user=who, as_groups=groups))
        with pytest.raises(RefusedError):
            kube.create(forged)
    # an admin is refused by admission: a record nobody's gate wrote
    with pytest.raises(RefusedError, match="only the airlock does"):
        world.admin.create(forged)
    # the airlock itself: only in the project's namespace, for that project
    elsewhere = {**forged, "spec": {**forged["spec"], "project": "another-project"}}
    with pytest.raises(RefusedError, match="filed in its project"):
        airlock.create(elsewhere)
    created = airlock.create(forged)
    # never changed afterwards, by anyone
    created["spec"]["user"] = "ravi"
    with pytest.raises(RefusedError, match="never changed"):
        world.admin.replace(created)
