"""`tre check` against the real control plane, with network-config-analyzer for real.

Behaviours under test:
- two Ready workspaces, one with a member's notebook pod mounting its dataset read-only: every
  check passes for both (network proven by NCA on the live policies, Pod Security, no foreign
  objects, RBAC by SubjectAccessReview, read-only datasets, the audit chain), exit 0, and
  each entry carries its SATRE statement;
- one NetworkPolicy of one workspace patched to allow egress to 0.0.0.0/0 (the controller
  is not running, so nothing restores it): `tre check` exits 1 and names that workspace's
  internet, metadata and allowed-paths findings and the policy that differs from the plan,
  while the other workspace still passes;
- a RoleBinding someone else made in a workspace namespace is named;
- a user granted get and create on nodes/proxy by a ClusterRoleBinding (the kubelet's exec
  and run, past tre-pod-no-exec) fails the cluster's rbac-kubelet-api finding, named with the
  binding; once it is removed the finding passes;
- on a platform with a node (`tre dev up --node`), `--probe-from-pods --outside <a test host>`
  runs a listener and a prober pod in each of two workspaces: the hub API and DNS answer, and
  the API server, the kubelet, the outside host (which the node itself reaches) and the other
  workspace's pod do not, so every runtime check passes; the pods are gone afterwards. With
  one workspace's policy opened to 0.0.0.0/0 the runtime checks of that workspace name the
  outside host and the kubelet it reached, while the other's still pass;
- probe pods that cannot be scheduled within --probe-timeout fail every runtime check with
  the scheduler's reason, and are removed; so are those of a run stopped by SIGTERM.
"""

from __future__ import annotations

import contextlib
import copy
import json
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from provisioner.audit.anchor import publish_head
from provisioner.devcluster.cluster import DevCluster
from provisioner.devcluster.node import NODE_IP, NODE_NAME
from provisioner.errors import RefusedError
from provisioner.kube.resources import (
    CLUSTER_ROLE_BINDINGS,
    CLUSTER_ROLES,
    NETWORK_POLICIES,
    NODES,
    PODS,
    RESOURCES,
    ROLE_BINDINGS,
)
from provisioner.models.settings import Settings
from provisioner.planning.admission import (
    DATASET_PLATFORM_BUCKET_POLICY,
    WORKSPACE_POLICY,
    plan_admission_policies,
)
from provisioner.planning.compliance import platform_bucket_datasets
from provisioner.planning.names import (
    EXPORT_AUTHOR_ROLE_NAME,
    POLICY_ALLOW_AIRLOCK,
    dataset_pvc_name,
    namespace_name,
)
from provisioner.planning.runtime_probes import LABEL_CHECK_RUN, RUNTIME_CHECKS
from tests.integration.platform_with_node import OUTSIDE_PORT, TRE, connect_from_node
from tests.integration.workspace_world import World, create_pod_when_admitted, notebook_pod

NETWORK_CHECKS = {
    "net-internet",
    "net-metadata",
    "net-apiserver",
    "net-cross-project",
    "net-allowed-paths",
    "net-as-planned",
}
POLICY_BINDINGS = RESOURCES[("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicyBinding")]
WORKSPACE_CHECKS = NETWORK_CHECKS | {
    "psa-restricted",
    "no-foreign-objects",
    "rbac-researcher",
    "rbac-hub",
    "rbac-controller",
    "datasets-read-only",
}


@pytest.fixture(scope="module")
def world(
    installed_platform: Settings, dev_platform: DevCluster, tmp_path_factory: pytest.TempPathFactory
) -> World:
    return World(installed_platform, dev_platform.kubeconfig, tmp_path_factory.mktemp("check"))


@pytest.fixture(scope="module")
def two_ready_workspaces(world: World) -> Iterator[tuple[str, str]]:
    """Two provisioned projects; lea's notebook runs in the first with its dataset mounted."""
    projects = []
    for _ in range(2):
        _, project, dataset = world.approved_project()
        result = world.reconcile(project)
        assert result.phase is not None and result.phase.value == "Ready", result
        projects.append((project, dataset))
    (first, dataset), (second, _) = projects
    pod = notebook_pod(namespace_name(first), "lea", [dataset_pvc_name(dataset)])
    create_pod_when_admitted(world.hub, pod)
    publish_audit_head(world)
    yield first, second


def publish_audit_head(world: World) -> None:
    """What the running controller does after each append: publish the log's signed head."""
    head = world.audit.head()
    assert head is not None
    publish_head(world.controller, head, world.signer.public_key, log=world.audit)


def check(
    world: World, *projects: str, extra: Sequence[str] = ()
) -> tuple[int, dict[str, Any], str]:
    args = [a for p in projects for a in ("--project", p)]
    result = world.tre("-o", "json", "check", *args, *extra)
    return result.exit_code, json.loads(result.stdout), result.stderr


def by_scope(report: dict[str, Any], scope: str) -> dict[str, dict[str, Any]]:
    return {c["id"]: c for c in report["checks"] if c["scope"] == scope}


def test_everything_passes_on_ready_workspaces(
    world: World, two_ready_workspaces: tuple[str, str]
) -> None:
    code, report, stderr = check(world, *two_ready_workspaces)
    failed = [c for c in report["checks"] if not c["passed"]]
    assert (code, report["passed"], failed) == (0, True, []), stderr
    for project in two_ready_workspaces:
        checks = by_scope(report, project)
        assert set(checks) == WORKSPACE_CHECKS
        assert "network-config-analyzer" in checks["net-internet"]["detail"]
    assert by_scope(report, "cluster")["audit-chain"]["satre"] == "2.5.03"
    airlock = by_scope(report, "cluster")["rbac-airlock"]
    assert (airlock["passed"], airlock["satre"]) == (True, "2.2.09")
    assert by_scope(report, "cluster")["rbac-kubelet-api"]["passed"]
    assert {c["satre"] for c in report["checks"]} >= {"2.1.14", "2.2.10", "2.2.11", "3.2.03"}
    buckets = by_scope(report, "cluster")["dataset-platform-buckets"]
    assert all(b in buckets["detail"] for b in world.settings.platform_buckets), buckets
    # the operator sees whom the installed policies exempt, by name
    exempt = by_scope(report, "cluster")["admission-exemptions"]["detail"]
    assert "namespace-controller (tre-audit-head-controller-only, " in exempt
    assert "generic-garbage-collector (" in exempt


def test_a_policy_opened_to_the_internet_is_named(
    world: World, two_ready_workspaces: tuple[str, str]
) -> None:
    broken, intact = two_ready_workspaces
    namespace = namespace_name(broken)
    policy = world.admin.get(NETWORK_POLICIES, POLICY_ALLOW_AIRLOCK, namespace)
    assert policy is not None
    opened = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        # its labels kept: still the controller's own policy, only its rule is wrong
        "metadata": {
            "name": POLICY_ALLOW_AIRLOCK,
            "namespace": namespace,
            "labels": policy["metadata"]["labels"],
        },
        "spec": {**policy["spec"], "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}]},
    }
    # As the controller: admission lets no one else write there, so this is what a
    # compromised or mistaken controller could do (and what its next pass would undo).
    world.controller.apply(opened)
    try:
        code, report, stderr = check(world, broken, intact)
        assert code == 1
        assert report["passed"] is False
        failed = {i for i, c in by_scope(report, broken).items() if not c["passed"]}
        assert failed == {
            "net-internet",
            "net-metadata",
            "net-apiserver",
            "net-allowed-paths",
            "net-as-planned",
        }
        checks = by_scope(report, broken)
        assert "0.0.0.0-" in checks["net-internet"]["detail"]
        assert f"{POLICY_ALLOW_AIRLOCK} differs from the plan" in checks["net-as-planned"]["detail"]
        assert all(c["passed"] for c in by_scope(report, intact).values())
        assert f"net-internet ({broken})" in stderr
    finally:
        world.controller.apply(
            policy
            | {"metadata": {k: policy["metadata"][k] for k in ("name", "namespace", "labels")}}
        )
    code, _, stderr = check(world, broken, intact)
    assert code == 0, stderr


def test_a_user_who_holds_nodes_proxy_is_named(
    world: World, two_ready_workspaces: tuple[str, str]
) -> None:
    """The review's S15 reproduction, as an admin would grant it to a monitoring user."""
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "r3-np"},
        "rules": [{"apiGroups": [""], "resources": ["nodes/proxy"], "verbs": ["get", "create"]}],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "r3-np"},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "r3-np",
        },
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "mon"}],
    }
    world.admin.apply(role)
    world.admin.apply(binding)
    try:
        code, report, stderr = check(world, *two_ready_workspaces)
        assert code == 1
        failed = [(c["id"], c["scope"]) for c in report["checks"] if not c["passed"]]
        assert failed == [("rbac-kubelet-api", "cluster")]
        kubelet = by_scope(report, "cluster")["rbac-kubelet-api"]
        assert kubelet["detail"] == (
            "User mon holds nodes/proxy (ClusterRoleBinding r3-np, ClusterRole r3-np): it can "
            "run commands in and read notebooks through the kubelet, past tre-pod-no-exec; "
            "remove the binding"
        )
        assert "rbac-kubelet-api (cluster)" in stderr
    finally:
        world.admin.delete(CLUSTER_ROLE_BINDINGS, "r3-np")
        world.admin.delete(CLUSTER_ROLES, "r3-np")
    code, report, stderr = check(world, *two_ready_workspaces)
    assert (code, by_scope(report, "cluster")["rbac-kubelet-api"]["passed"]) == (0, True), stderr


@contextlib.contextmanager
def platform_bucket_rule_unbound(world: World) -> Iterator[None]:
    """Without the binding of tre-dataset-not-platform-bucket (a custom-resource guard, so
    deleting it is safe), until the API server admits a dataset on the audit bucket."""
    planned = plan_admission_policies(world.settings)
    binding = next(
        p
        for p in planned
        if p["kind"] == "ValidatingAdmissionPolicyBinding"
        and p["metadata"]["name"] == DATASET_PLATFORM_BUCKET_POLICY
    )
    probe = platform_bucket_datasets(world.settings)[world.settings.audit_bucket]

    def admitted() -> bool:
        try:
            world.admin.create(probe, dry_run=True)
            return True
        except RefusedError:
            return False

    world.admin.delete(POLICY_BINDINGS, DATASET_PLATFORM_BUCKET_POLICY)
    try:
        deadline = time.monotonic() + 30
        while not admitted():
            assert time.monotonic() < deadline, "the unbound rule still refused after 30s"
            time.sleep(0.25)
        yield
    finally:
        world.admin.apply(binding)
        deadline = time.monotonic() + 30
        while admitted() and time.monotonic() < deadline:
            time.sleep(0.25)


def test_a_platform_bucket_admitted_and_an_unplanned_exemption_are_named(
    world: World, two_ready_workspaces: tuple[str, str]
) -> None:
    """The review's S6 and S20 as `tre check` sees them on the live cluster: the rule that
    keeps datasets off the platform's buckets unbound, and a policy edited to exempt one
    more kube-system account (as a GitOps agent's installer might)."""
    planned = plan_admission_policies(world.settings)
    policy = next(p for p in planned if p["metadata"]["name"] == WORKSPACE_POLICY)
    agent = "system:serviceaccount:kube-system:gitops-agent"
    edited = copy.deepcopy(policy)
    edited["spec"]["matchConditions"] = [
        *edited["spec"].get("matchConditions", []),
        {"name": "not-the-agent", "expression": f"request.userInfo.username != '{agent}'"},
    ]
    world.admin.apply(edited)
    try:
        with platform_bucket_rule_unbound(world):
            code, report, stderr = check(world, *two_ready_workspaces)
    finally:
        world.admin.apply(policy)
    assert code == 1
    failed = {c["id"]: c["detail"] for c in report["checks"] if not c["passed"]}
    assert set(failed) == {"dataset-platform-buckets", "admission-exemptions"}, failed
    assert (
        f"a dataset reading all of {world.settings.audit_bucket} was admitted"
        in failed["dataset-platform-buckets"]
    )
    assert f"{agent} is exempt in {WORKSPACE_POLICY}" in failed["admission-exemptions"]
    assert "dataset-platform-buckets (cluster)" in stderr


def test_a_foreign_role_binding_is_named(
    world: World, two_ready_workspaces: tuple[str, str]
) -> None:
    project = two_ready_workspaces[1]
    namespace = namespace_name(project)
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "backdoor", "namespace": namespace},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": EXPORT_AUTHOR_ROLE_NAME,
        },
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "eve"}],
    }
    world.controller.create(binding)  # without the controller's labels: not its own
    try:
        code, report, _ = check(world, project)
        assert code == 1
        foreign = by_scope(report, project)["no-foreign-objects"]
        assert (foreign["passed"], foreign["detail"]) == (
            False,
            "RoleBinding backdoor not made by the controller",
        )
    finally:
        world.controller.delete(ROLE_BINDINGS, "backdoor", namespace)


def test_runtime_probes_without_a_node_fail_rather_than_pass(
    world: World, two_ready_workspaces: tuple[str, str]
) -> None:
    # The session's platform has no node (test_node.py adds one, and runs after this module):
    # nothing can run, so nothing is proven, and no pod is made.
    assert world.admin.list(NODES) == [], "this test needs the session platform without a node"
    probe = ["--probe-from-pods", "--outside", "192.0.2.1:80"]
    code, report, stderr = check(world, *two_ready_workspaces, extra=probe)
    assert code == 1
    for project in two_ready_workspaces:
        runtime = {i: c for i, c in by_scope(report, project).items() if i.startswith("runtime-")}
        assert {i: (c["passed"], c["detail"]) for i, c in runtime.items()} == {
            check: (
                False,
                "unproven: no Ready node in the cluster: the probes need a node to run on",
            )
            for check in RUNTIME_CHECKS
        }
    assert probe_pods(world) == []
    assert f"runtime-hub-api ({two_ready_workspaces[0]})" in stderr


# --- runtime probes from pods, on a platform with a node ---------------------------------------


@contextlib.contextmanager
def opened_to_everything(world: World, project: str) -> Iterator[None]:
    """The workspace's airlock policy allows egress to 0.0.0.0/0 until the block ends (as the
    controller, as above; no controller runs on this platform to restore it)."""
    namespace = namespace_name(project)
    policy = world.admin.get(NETWORK_POLICIES, POLICY_ALLOW_AIRLOCK, namespace)
    assert policy is not None
    meta = {k: policy["metadata"][k] for k in ("name", "namespace", "labels")}
    world.controller.apply(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": meta,
            "spec": {**policy["spec"], "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}]},
        }
    )
    try:
        yield
    finally:
        world.controller.apply(policy | {"metadata": meta})


def probe_pods(world: World) -> list[str]:
    return [p["metadata"]["name"] for p in world.admin.list(PODS, selector=LABEL_CHECK_RUN)]


def test_runtime_probes_from_pods_pass_and_name_an_opened_path(
    world_with_node: World, platform_with_node: DevCluster, outside_host: str
) -> None:
    world = world_with_node
    first, second = (world.approved_project()[1] for _ in range(2))
    for project in (first, second):
        assert world.reconcile(project).phase.value == "Ready"  # type: ignore[union-attr]
    publish_audit_head(world)
    outside = f"{outside_host}:{OUTSIDE_PORT}"
    # the outside host answers the node: a refusal from the pods is the policy's doing
    assert connect_from_node(platform_with_node, outside_host, OUTSIDE_PORT) == "connected"
    probe = ["--probe-from-pods", "--outside", outside]

    started = time.monotonic()
    code, report, stderr = check(world, first, second, extra=probe)
    took = time.monotonic() - started
    print(f"tre check --probe-from-pods on 2 workspaces: {took:.1f}s")
    for project in (first, second):
        runtime = {i: c for i, c in by_scope(report, project).items() if i.startswith("runtime-")}
        assert set(runtime) == set(RUNTIME_CHECKS)
        assert {runtime[c]["satre"] for c in RUNTIME_CHECKS} == {"2.2.09", "2.2.10", "2.2.11"}
        failed = {i: c["detail"] for i, c in runtime.items() if not c["passed"]}
        assert failed == {}, stderr
        assert f"outside {outside}" in runtime["runtime-outside"]["detail"]
        assert f"{NODE_IP}:10250" in runtime["runtime-kubelet"]["detail"]
        other = second if project == first else first
        assert f"{project} -> workspace {other}" in runtime["runtime-cross-project"]["detail"]
        assert f"{other} -> workspace {project}" in runtime["runtime-cross-project"]["detail"]
    assert code == 0, stderr
    assert all(c["passed"] for c in report["checks"]), stderr
    deadline = time.monotonic() + 30
    while probe_pods(world):
        assert time.monotonic() < deadline, f"probe pods left behind: {probe_pods(world)}"
        time.sleep(0.5)

    with opened_to_everything(world, first):
        code, report, stderr = check(world, first, second, extra=probe)
    assert code == 1
    broken = {i: c["detail"] for i, c in by_scope(report, first).items() if not c["passed"]}
    assert broken.keys() >= {"runtime-outside", "runtime-kubelet"}, broken
    assert broken["runtime-outside"] == f"outside {outside}: connected"
    assert broken["runtime-kubelet"] == f"kubelet tre-node {NODE_IP}:10250: connected"
    intact = by_scope(report, second)
    assert all(c["passed"] for i, c in intact.items() if i.startswith("runtime-")), intact
    assert f"runtime-outside ({first})" in stderr


@contextlib.contextmanager
def cordoned(world: World) -> Iterator[None]:
    """The node takes no new pods (an admin's `kubectl cordon`) until the block ends."""

    def schedulable(value: bool) -> None:
        world.admin.request(
            "PATCH",
            NODES.path(name=NODE_NAME),
            body={"spec": {"unschedulable": None if value else True}},
            content_type="application/merge-patch+json",
        )

    schedulable(False)
    try:
        yield
    finally:
        schedulable(True)


def test_probe_pods_that_cannot_run_fail_the_runtime_checks_and_are_removed(
    world_with_node: World,
) -> None:
    world = world_with_node
    _, project, _ = world.approved_project()
    world.reconcile(project)
    probe = ["--probe-from-pods", "--outside", "10.98.0.2:8443", "--probe-timeout", "10"]
    with cordoned(world):
        code, report, _ = check(world, project, extra=probe)
        assert probe_pods(world) == []  # deleted as the check ended, though never scheduled
    assert code == 1
    runtime = {i: c for i, c in by_scope(report, project).items() if i.startswith("runtime-")}
    assert set(runtime) == set(RUNTIME_CHECKS)
    for entry in runtime.values():
        assert entry["passed"] is False
        assert entry["detail"].startswith(
            "unproven: the listener pod did not run within 10s (--probe-timeout): Unschedulable: "
        ), entry["detail"]


def test_an_interrupted_check_removes_its_probe_pods(world_with_node: World) -> None:
    world = world_with_node
    _, project, _ = world.approved_project()
    world.reconcile(project)
    # The CLI as a person runs it, stopped as a cancelled CI job or `timeout` stops it.
    probe = ["--probe-from-pods", "--outside", "10.98.0.2:8443", "--probe-timeout", "300"]
    with cordoned(world):  # the pods wait unscheduled: the run is surely under way
        running = subprocess.Popen([*TRE, "check", "-p", project, *probe], text=True)
        try:
            deadline = time.monotonic() + 60
            while not probe_pods(world):
                assert running.poll() is None and time.monotonic() < deadline, "no probe pod"
                time.sleep(0.2)
            running.send_signal(signal.SIGTERM)
            assert running.wait(timeout=30) != 0
        finally:
            running.kill()
            running.wait()
    deadline = time.monotonic() + 30
    while probe_pods(world):
        assert time.monotonic() < deadline, f"probe pods left behind: {probe_pods(world)}"
        time.sleep(0.5)
