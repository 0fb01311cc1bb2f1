"""People read the requests and workspaces that concern them, and file a bounded number (F20).

Each test plays the person with their own rights against the real API server: the raw API
(as `kubectl` would) and `tre`. RBAC gives people no list on AccessRequests or Workspaces;
the controller's read grants (planning/read_grants.py) give each person `get` on exactly what
concerns them; approvers list everything they must decide on; policy
`tre-controller-read-grants` keeps the controller's own grants to that; policy
`tre-open-requests-limit` refuses a filing beyond the open-request limit.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from provisioner.devcluster.cluster import DevCluster
from provisioner.errors import ForbiddenError, RefusedError
from provisioner.kube.api import Kube
from provisioner.kube.client import api_client
from provisioner.kube.resources import (
    ACCESS_REQUESTS,
    CLUSTER_ROLE_BINDINGS,
    CLUSTER_ROLES,
    RESOURCES,
    WORKSPACES,
)
from provisioner.models.settings import Settings
from provisioner.planning.admission import OPEN_REQUESTS_POLICY, plan_admission_policies
from provisioner.planning.names import read_grant_name
from tests.integration.workspace_world import APPROVERS, World, unique

pytestmark = pytest.mark.integration

POLICIES = RESOURCES[("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicy")]


@pytest.fixture
def world(installed_platform: Settings, dev_platform: DevCluster, tmp_path: Path) -> World:
    return World(installed_platform, dev_platform.kubeconfig, tmp_path)


def as_(world: World, user: str, group: str | None = None) -> Kube:
    return Kube(api_client(world.kubeconfig, as_user=user, as_groups=(group,) if group else ()))


def forbidden(call: Callable[[], Any]) -> str:
    with pytest.raises(ForbiddenError) as caught:
        call()
    return str(caught.value)


def own_project(world: World, person: str) -> tuple[str, str]:
    """A Ready workspace of `person` alone, reconciled: (request, project)."""
    dataset = world.dataset()
    name, project = world.submit(by=person, lead=person, members=[person], datasets=[dataset])
    world.approve(name, "ann", "bob")
    world.reconcile(project)
    return name, project


def test_a_researcher_reads_their_own_projects_and_nobody_elses(world: World) -> None:
    name, project = own_project(world, lea := unique("lea"))
    other_name, other = own_project(world, unique("omar"))
    me = as_(world, lea)
    # no list at all: RBAC cannot filter a list by what it holds
    forbidden(lambda: me.list(ACCESS_REQUESTS))
    forbidden(lambda: me.list(WORKSPACES))
    # not another project's request or workspace, by name either
    forbidden(lambda: me.get(ACCESS_REQUESTS, other_name))
    forbidden(lambda: me.get(WORKSPACES, other))
    # their own, yes
    assert me.get(ACCESS_REQUESTS, name) is not None
    assert me.get(WORKSPACES, project) is not None
    # tre lists and shows exactly those, and says why another is refused
    assert [r["name"] for r in world.tre_json("request", "list", user=lea)] == [name]
    assert [w["project"] for w in world.tre_json("workspace", "list", user=lea)] == [project]
    assert world.tre_json("request", "show", name, user=lea)["projectOwner"] == lea
    for args in (("request", "show", other_name), ("workspace", "show", other)):
        result = world.tre(*args, user=lea)
        assert result.exit_code == 4, result.output
        assert "you may not read it" in result.output


def test_an_approver_still_sees_everything_they_must_decide(world: World) -> None:
    pending, _ = world.submit(by=unique("filer"), datasets=[world.dataset()])
    name, project = own_project(world, unique("omar"))
    approver = as_(world, "ann", APPROVERS)
    assert {pending, name} <= {o["metadata"]["name"] for o in approver.list(ACCESS_REQUESTS)}
    assert project in {o["metadata"]["name"] for o in approver.list(WORKSPACES)}
    listed = world.tre_json("request", "list", "--phase", "Pending", user="ann", group=APPROVERS)
    assert pending in {r["name"] for r in listed}
    shown = world.tre_json("workspace", "show", project, user="ann", group=APPROVERS)
    assert shown["project"] == project


def test_members_read_the_projects_requests_and_someone_named_on_one_reads_only_that(
    world: World,
) -> None:
    lead, guest = unique("lea"), unique("gus")
    dataset = world.dataset()
    name, project = world.submit(by=lead, lead=lead, members=[lead, "ravi"], datasets=[dataset])
    world.approve(name, "ann", "bob")
    world.reconcile(project)
    # the owner's amendment names a guest; still pending, it opens nothing else to them
    amendment, _ = world.submit(
        by=lead, project=project, lead=lead, members=[guest], datasets=[dataset]
    )
    world.reconcile(project)
    ravi = as_(world, "ravi")
    assert ravi.get(ACCESS_REQUESTS, amendment) is not None  # a member: the project's history
    assert ravi.get(WORKSPACES, project) is not None
    visitor = as_(world, guest)
    assert visitor.get(ACCESS_REQUESTS, amendment) is not None
    forbidden(lambda: visitor.get(ACCESS_REQUESTS, name))
    forbidden(lambda: visitor.get(WORKSPACES, project))
    # the grants are what the controller planned: one pair per person, by name
    grant = read_grant_name(project, guest)
    role = world.admin.get(CLUSTER_ROLES, grant)
    assert role is not None
    assert role["rules"] == [
        {
            "apiGroups": ["tre.ucloud.org"],
            "resources": ["accessrequests"],
            "verbs": ["get"],
            "resourceNames": [amendment],
        }
    ]


def test_a_filer_reads_their_request_back_at_once_and_by_name_after_the_controller(
    world: World,
) -> None:
    filer = unique("filer")
    path = world.request_file(lead=filer, members=[filer], datasets=[world.dataset()])
    submitted = world.tre_json("request", "submit", "-f", str(path), user=filer)
    # the create's own answer: everything they filed, before any controller has run
    assert submitted["requester"] == filer
    assert submitted["members"] == [filer]
    assert submitted["phase"] == "Pending"
    refused = world.tre("request", "show", submitted["name"], user=filer)
    assert refused.exit_code == 4
    assert "once the controller has seen it" in refused.output
    world.reconcile(submitted["project"])
    shown = world.tre_json("request", "show", submitted["name"], user=filer)
    assert shown["purpose"] == "A test of the workspace controller."
    listed = world.tre_json("request", "list", user=filer)
    assert [r["name"] for r in listed] == [submitted["name"]]


def test_the_controllers_credential_grants_nothing_but_reads_by_name(world: World) -> None:
    """Its RBAC lets it bind any right it holds to anyone; the policy keeps it to the
    people's read grants."""
    c = world.controller
    grant = read_grant_name(unique("proj"), "mallory")
    rule = {"apiGroups": ["tre.ucloud.org"], "resources": ["accessrequests"], "verbs": ["get"]}
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": grant},
        "rules": [{**rule, "resourceNames": ["some-request"]}],
    }
    for wider in ({**rule, "verbs": ["get", "list"]}, rule):  # a list; a get of every request
        message = forbidden(partial(c.create, {**role, "rules": [wider]}, dry_run=True))
        assert "only get on accessrequests or workspaces, by resourceNames" in message
    c.create(role)  # a grant as the controller makes them
    binding: dict[str, Any] = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": grant},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": grant},
        "subjects": [
            {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Group",
                "name": "system:authenticated",
            }
        ],
    }
    try:
        message = forbidden(lambda: c.create(binding, dry_run=True))
    finally:
        c.delete(CLUSTER_ROLES, grant)
    assert "never a Group" in message
    # its own role, bound to a person under another name
    own: dict[str, Any] = {
        **binding,
        "metadata": {"name": "mallory-is-the-controller"},
        "roleRef": {**binding["roleRef"], "name": "tre-controller"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "mallory"}],
    }
    message = forbidden(lambda: c.create(own, dry_run=True))
    assert "only the read grants tre-reads-*" in message
    assert world.admin.get(CLUSTER_ROLE_BINDINGS, "mallory-is-the-controller") is None


# --- the filing limit -----------------------------------------------------------------------


@pytest.fixture
def limit_of_two(world: World) -> Iterator[int]:
    """The limit policy with `TRE_MAX_OPEN_REQUESTS=2` for this test, the session's after."""

    def install(limit: int) -> None:
        settings = world.settings.model_copy(update={"max_open_requests": limit})
        planned = plan_admission_policies(settings)
        world.admin.apply(next(p for p in planned if p["metadata"]["name"] == OPEN_REQUESTS_POLICY))

    install(2)
    try:
        yield 2
    finally:
        install(world.settings.max_open_requests)


def test_the_request_past_the_limit_is_refused_naming_it(world: World, limit_of_two: int) -> None:
    filer = unique("filer")
    dataset = world.dataset()
    first, project = world.submit(by=filer, lead=filer, members=[filer], datasets=[dataset])
    second, other = world.submit(by=filer, lead=filer, members=[filer], datasets=[dataset])
    for p in (project, other):
        world.reconcile(p)  # the controller publishes what is open
    third = world.request_file(lead=filer, members=[filer], datasets=[dataset])
    message = _refused_once_loaded(world, filer, third)
    open_ones = ", ".join(sorted((first, second)))
    assert f"{filer} has 2 access requests awaiting a decision ({open_ones})" in message
    assert f"at most {limit_of_two} open at once (TRE_MAX_OPEN_REQUESTS)" in message
    # someone else is not counted against them
    world.submit(by=unique("other"), datasets=[dataset])
    # once one is decided, they file again
    result = world.tre("request", "reject", first, "-m", "no", user="ann", group=APPROVERS)
    assert result.exit_code == 0, result.output
    world.reconcile(project)
    deadline = time.monotonic() + 30  # until the API server has the published change
    while (result := world.tre("request", "submit", "-f", str(third), user=filer)).exit_code:
        assert "TRE_MAX_OPEN_REQUESTS" in result.output, result.output
        assert time.monotonic() < deadline, result.output
        time.sleep(0.25)


def _refused_once_loaded(world: World, filer: str, path: Path) -> str:
    """The third filing, tried until the API server has loaded the new limit (policies and
    their parameters load asynchronously); each try is a dry run, so nothing is filed."""
    from provisioner.cli.inputs import load_mapping
    from provisioner.models.resources import AccessRequest, AccessRequestSpec

    raw = {**load_mapping(path, "request"), "requester": filer, "decisions": []}
    body = AccessRequest(name=unique("r"), spec=AccessRequestSpec.model_validate(raw)).to_object()
    deadline = time.monotonic() + 30
    while True:
        try:
            as_(world, filer).create(body, dry_run=True)
        except RefusedError as exc:
            assert "TRE_MAX_OPEN_REQUESTS" in str(exc), exc
            return str(exc)
        if time.monotonic() > deadline:
            pytest.fail("the open-request limit was not in force within 30s")
        time.sleep(0.25)
