"""Who reads which requests and workspaces (planning/read_grants.py), and how the controller
keeps the grants (planning/project.py): pure, no cluster."""

from __future__ import annotations

import datetime as dt

import pytest

from provisioner.models.settings import Settings
from provisioner.planning import names
from provisioner.planning.project import Snapshot, object_key, plan_project, read_grant_changes
from provisioner.planning.read_grants import plan_read_grants, readers
from tests.unit.test_approvals import approve, by_name, dataset, request

NOW = dt.datetime(2026, 11, 2, 12, tzinfo=dt.UTC)


def test_the_projects_people_read_all_of_it_others_only_what_names_them() -> None:
    founding = request("cardio-1", ["ecg"], requester="lea", members=["lea", "max"])
    rival = request("cardio-2", ["ecg"], requester="eve", lead="eve", members=["eve"])
    grants = readers([founding, rival], {"lea", "max"})
    assert grants == {
        "eve": (["cardio-2"], False),
        "lea": (["cardio-1", "cardio-2"], True),
        "max": (["cardio-1", "cardio-2"], True),
    }
    # before the project exists nobody reads a workspace, and each reads only their own
    assert readers([founding, rival], set()) == {
        "eve": (["cardio-2"], False),
        "lea": (["cardio-1"], False),
        "max": (["cardio-1"], False),
    }


def test_each_grant_is_get_by_name_bound_to_one_person() -> None:
    planned = plan_read_grants("cardio", [request("cardio-1", ["ecg"], requester="lea")], {"lea"})
    role, binding = planned
    name = names.read_grant_name("cardio", "lea")
    assert (role["kind"], binding["kind"]) == ("ClusterRole", "ClusterRoleBinding")
    assert role["metadata"]["name"] == binding["metadata"]["name"] == name
    assert role["metadata"]["labels"][names.LABEL_PROJECT] == "cardio"
    assert role["metadata"]["annotations"][names.ANNOTATION_READER] == "lea"
    assert role["rules"] == [
        {
            "apiGroups": ["tre.ucloud.org"],
            "resources": ["accessrequests"],
            "verbs": ["get"],
            "resourceNames": ["cardio-1"],
        },
        {
            "apiGroups": ["tre.ucloud.org"],
            "resources": ["workspaces"],
            "verbs": ["get"],
            "resourceNames": ["cardio"],
        },
    ]
    assert binding["roleRef"]["name"] == name
    assert binding["subjects"] == [
        {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "lea"}
    ]


def test_grant_names_are_labels_and_differ_per_person() -> None:
    first = names.read_grant_name("a" * 32, "lea@example.org")
    assert names.is_dns1123_label(first)
    assert first.startswith(names.READ_GRANT_PREFIX)
    assert first != names.read_grant_name("a" * 32, "lea@example.org ")


def test_a_grant_no_longer_planned_goes_binding_first() -> None:
    planned = plan_read_grants("cardio", [request("cardio-1", ["ecg"], requester="lea")], set())
    live = {object_key(m): m for m in planned}
    changes = read_grant_changes([], live)
    assert [(c.action, c.key[1]) for c in changes] == [
        ("prune", "ClusterRoleBinding"),
        ("prune", "ClusterRole"),
    ]
    # unchanged: nothing to write; a name someone added is put back as planned
    assert read_grant_changes(planned, live) == []
    widened = {**planned[0], "rules": [{**planned[0]["rules"][0], "resourceNames": ["x", "y"]}]}
    live[object_key(planned[0])] = {
        **widened,
        "metadata": {**widened["metadata"], "resourceVersion": "7"},
    }
    assert [c.action for c in read_grant_changes(planned, live)] == ["replace"]


def test_a_filers_pending_request_is_granted_in_the_pass_that_sees_it() -> None:
    ecg = dataset("ecg")
    filed = request("cardio-1", ["ecg"], requester="lea")
    plan = plan_project(Settings(), "cardio", Snapshot([filed], by_name(ecg), {}), NOW)
    assert plan.decision is None  # no workspace yet: still the filer reads it
    assert [(c.action, c.key[1]) for c in plan.read_grants] == [
        ("create", "ClusterRole"),
        ("create", "ClusterRoleBinding"),
    ]


def test_a_member_reads_the_workspace_once_approved() -> None:
    ecg = dataset("ecg")
    approved = request(
        "cardio-1",
        ["ecg"],
        [approve("ann", ecg)],
        requester="lea",
        members=["lea", "max"],
    )
    plan = plan_project(Settings(), "cardio", Snapshot([approved], by_name(ecg), {}), NOW)
    roles = {
        c.manifest["metadata"]["annotations"][names.ANNOTATION_READER]: c.manifest["rules"]
        for c in plan.read_grants
        if c.manifest is not None and c.key[1] == "ClusterRole"
    }
    assert set(roles) == {"lea", "max"}
    assert all(rules[-1]["resources"] == ["workspaces"] for rules in roles.values())


@pytest.mark.parametrize(
    ("published", "changes"),
    [
        ({"cardio-2": "lea"}, {"cardio-1": "lea", "cardio-2": None}),
        ({"cardio-1": "lea"}, {}),  # published as it should be: nothing to write
    ],
)
def test_open_requests_are_published_and_decided_ones_removed(
    published: dict[str, str], changes: dict[str, str | None]
) -> None:
    ecg = dataset("ecg")
    pending = request("cardio-1", ["ecg"], requester="lea")
    approved = request("cardio-2", ["ecg"], [approve("ann", ecg)], requester="lea")
    snapshot = Snapshot([pending, approved], by_name(ecg), {}, open_requests=published)
    assert plan_project(Settings(), "cardio", snapshot, NOW).open_requests == changes
