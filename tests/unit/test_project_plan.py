"""The parts of a project's plan that judge what is already in its namespace (pure).

Behaviours under test:
- a namespace is the project's only if its uid is the one recorded, or (none recorded yet)
  it carries our labels and is no older than the Workspace; a squatter's namespace, or one
  that replaced ours, is a conflict with a message that says what to do;
- pods stop when the workspace is not Ready, when their user is no longer a member, when they
  mount a claim the plan no longer holds, or when the hub did not start them for a member;
  pods already stopping are left alone;
- NetworkPolicies and RoleBindings the controller did not make are pruned;
- a project's failure is held: a temporary one with growing back-off, a permanent one until
  its inputs change; other projects are never held up;
- a custom resource the models refuse is reported and left out, never stops the pass;
- every notebook start is audited with its user and the datasets (and pinned manifests) it
  mounts; a notebook whose pod is gone or exited is audited as stopped, and stays listed in
  the Workspace status until that stop is in the log.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from provisioner.controller.loop import Dirty, ErrorMemory, projects_of_event
from provisioner.controller.reconcile import parse_each
from provisioner.errors import InvalidInputError, TemporaryError
from provisioner.models.resources import (
    AccessRequest,
    NotebookRecord,
    Workspace,
    WorkspacePhase,
    WorkspaceSpec,
)
from provisioner.models.settings import Settings
from provisioner.planning.project import (
    Unparsable,
    foreign_prunes,
    namespace_conflict,
    notebook_audit,
    pods_to_stop,
)
from provisioner.planning.workspace import workspace_access

NOW = dt.datetime(2026, 11, 30, 12, tzinfo=dt.UTC)
OURS = {"app.kubernetes.io/managed-by": "ucloud-tre", "tre.ucloud.org/project": "cardio"}


def namespace(uid: str, created: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": "tre-cardio",
            "uid": uid,
            "creationTimestamp": created,
            "labels": labels or {},
        },
    }


WS = {"metadata": {"name": "cardio", "creationTimestamp": "2026-11-30T10:00:00Z"}}


@pytest.mark.parametrize(
    ("live", "recorded", "conflict"),
    [
        (None, None, None),
        (namespace("u1", "2026-11-30T10:00:01Z", OURS), "u1", None),
        (namespace("u1", "2026-11-30T10:00:00Z", OURS), None, None),
        (namespace("u2", "2026-11-30T10:00:05Z", OURS), "u1", "was replaced"),
        (namespace("u1", "2026-11-29T08:00:00Z", OURS), None, "already existed"),
        (namespace("u1", "2026-11-30T10:00:05Z"), None, "already existed"),
    ],
    ids=["none-yet", "recorded", "made-after-crash", "replaced", "squatter", "unlabelled"],
)
def test_namespace_ownership(
    live: dict[str, Any] | None, recorded: str | None, conflict: str | None
) -> None:
    got = namespace_conflict(live, WS, recorded)
    if conflict is None:
        assert got is None
    else:
        assert got is not None and conflict in got and "Delete that namespace" in got


def workspace(members: list[str]) -> Workspace:
    return Workspace(
        name="cardio",
        spec=WorkspaceSpec(project="cardio", namespace="tre-cardio", members=members),
    )


def pod(name: str, user: str | None, claims: list[str], stopping: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "tre-cardio"}
    if user is not None:
        meta["annotations"] = {"tre.ucloud.org/user": user}
    if stopping:
        meta["deletionTimestamp"] = "2026-11-30T11:00:00Z"
    return {
        "metadata": meta,
        "spec": {
            "volumes": [{"name": c, "persistentVolumeClaim": {"claimName": c}} for c in claims]
        },
    }


def test_pods_that_lost_access_stop() -> None:
    ws = workspace(["lea", "ravi"])
    desired = [
        workspace_access(ws, WorkspacePhase.READY, ["ds-labs", "project-storage"], Settings())
    ]
    pods = [
        pod("jupyter-lea", "lea", ["ds-labs", "project-storage"]),
        pod("jupyter-nina", "nina", ["project-storage"]),
        pod("jupyter-ravi", "ravi", ["ds-cohort"]),
        pod("stray", None, []),
        pod("jupyter-gone", "nina", [], stopping=True),
    ]
    stops = pods_to_stop(pods, ws, WorkspacePhase.READY, desired)
    assert [(s.name, s.why) for s in stops] == [
        ("jupyter-nina", "nina is no longer a member"),
        ("jupyter-ravi", "mounts ds-cohort, which is no longer granted"),
        ("stray", "not started by the hub for a member"),
    ]


def test_every_pod_stops_while_not_ready() -> None:
    ws = workspace([])
    pods = [pod("jupyter-lea", "lea", ["project-storage"])]
    frozen = workspace_access(ws, WorkspacePhase.FROZEN, [], Settings())
    stops = pods_to_stop(pods, ws, WorkspacePhase.FROZEN, [frozen])
    assert [(s.name, s.why) for s in stops] == [("jupyter-lea", "the workspace is Frozen")]


def test_foreign_network_policies_and_bindings_are_pruned() -> None:
    foreign = [
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "allow-all", "namespace": "tre-cardio"},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "admin", "namespace": "tre-cardio"},
        },
    ]
    assert [(c.action, c.name, c.why) for c in foreign_prunes(foreign)] == [
        ("prune", "NetworkPolicy/allow-all", "not made by the controller"),
        ("prune", "RoleBinding/admin", "not made by the controller"),
    ]


def test_temporary_failures_back_off_and_permanent_ones_wait_for_new_inputs() -> None:
    memory = ErrorMemory(max_backoff=8)
    memory.failed("a", TemporaryError("API server away"), "in-1", NOW)
    assert memory.held("a", lambda: "in-1", NOW) is not None
    assert memory.held("a", lambda: "in-1", NOW + dt.timedelta(seconds=1)) is None
    memory.failed("a", TemporaryError("still away"), "in-1", NOW)
    assert memory.held("a", lambda: "in-1", NOW + dt.timedelta(seconds=1)) is not None  # 2 s now
    memory.failed("b", InvalidInputError("bad"), "in-2", NOW)
    assert memory.held("b", lambda: "in-2", NOW + dt.timedelta(days=1)) is not None
    assert memory.held("b", lambda: "in-3", NOW) is None  # its inputs changed
    assert memory.held("c", lambda: "in-4", NOW) is None  # never failed
    memory.succeeded("a")
    assert memory.held("a", lambda: "in-1", NOW) is None
    assert memory.next_retry() is None  # only b, which waits for new inputs


def test_an_object_the_models_refuse_is_reported_and_left_out() -> None:
    bad = {"metadata": {"name": "broken"}, "spec": {"project": "Not A Slug"}}
    unparsable: list[Unparsable] = []
    assert parse_each([bad], AccessRequest, unparsable) == []
    assert [(u.kind, u.name) for u in unparsable] == [("AccessRequest", "broken")]
    assert "project" in unparsable[0].error


@pytest.mark.parametrize(
    ("kind", "obj", "projects"),
    [
        ("AccessRequest", {"metadata": {"name": "r"}, "spec": {"project": "cardio"}}, {"cardio"}),
        ("Workspace", {"metadata": {"name": "cardio"}}, {"cardio"}),
        ("NetworkPolicy", {"metadata": {"name": "x", "namespace": "tre-cardio"}}, {"cardio"}),
        ("RoleBinding", {"metadata": {"name": "x", "namespace": "kube-system"}}, set()),
        ("Pod", {"metadata": {"name": "jupyter-a", "namespace": "tre-cardio"}}, {"cardio"}),
        ("Pod", {"metadata": {"name": "x", "namespace": "kube-system"}}, set()),
        ("Dataset", {"metadata": {"name": "cohort"}}, None),
    ],
    ids=[
        "request",
        "workspace",
        "policy-in-project",
        "binding-elsewhere",
        "pod-in-project",
        "pod-elsewhere",
        "dataset-any",
    ],
)
def test_watch_events_name_the_projects_they_concern(
    kind: str, obj: dict[str, Any], projects: set[str] | None
) -> None:
    assert projects_of_event(kind, obj) == projects


def test_dirty_hands_over_what_accumulated_once() -> None:
    dirty = Dirty()
    dirty.projects({"a"})
    dirty.projects({"b"})
    assert dirty.event.is_set()
    assert dirty.take() == (False, {"a", "b"})
    assert not dirty.event.is_set()
    dirty.everything()
    assert dirty.take() == (True, set())


def notebook(name: str, uid: str, user: str, phase: str = "Running") -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "uid": uid,
            "namespace": "tre-cardio",
            "annotations": {"tre.ucloud.org/user": user},
        },
        "spec": {
            "containers": [{"name": "notebook", "image": "ucloud-tre/notebook:1"}],
            "volumes": [
                {"name": "d", "persistentVolumeClaim": {"claimName": "ds-cohort"}},
                {"name": "p", "persistentVolumeClaim": {"claimName": "project"}},
            ],
        },
        "status": {"phase": phase},
    }


PINNED_SPEC = {"datasets": [{"name": "cohort", "manifestSha256": "a" * 64}]}


def test_a_notebook_start_is_audited_with_user_and_pinned_datasets() -> None:
    running, events = notebook_audit(
        "cardio", [notebook("jupyter-alice", "u1", "alice")], [], PINNED_SPEC, set()
    )
    assert running == [NotebookRecord(pod="jupyter-alice", uid="u1", user="alice")]
    assert [(e.key, e.action) for e in events] == [
        ("notebook/cardio/u1/started", "notebook.started")
    ]
    assert events[0].details == {
        "user": "alice",
        "pod": "jupyter-alice",
        "datasets": {"cohort": "a" * 64},
        "image": "ucloud-tre/notebook:1",
    }


def test_a_check_probe_pod_is_audited_as_a_start_naming_the_admin() -> None:
    pod = notebook("tre-check-probe-1a2b3c4d", "u9", "alice")
    pod["metadata"]["annotations"]["tre.ucloud.org/check-probe-by"] = "admin-ann"
    pod["spec"]["volumes"] = []
    _, events = notebook_audit("cardio", [pod], [], PINNED_SPEC, set())
    assert [(e.action, e.details) for e in events] == [
        (
            "notebook.started",
            {
                "user": "alice",
                "pod": "tre-check-probe-1a2b3c4d",
                "datasets": {},
                "image": "ucloud-tre/notebook:1",
                "checkProbeBy": "admin-ann",
            },
        )
    ]


def test_a_stop_is_audited_and_kept_in_status_until_it_is_in_the_log() -> None:
    seen = [NotebookRecord(pod="jupyter-alice", uid="u1", user="alice")]
    started = {"notebook/cardio/u1/started"}
    # The pod is gone: a stop, and the record stays while the stop is not logged ...
    running, events = notebook_audit("cardio", [], seen, PINNED_SPEC, started)
    assert running == seen
    assert [(e.key, e.details) for e in events] == [
        ("notebook/cardio/u1/stopped", {"user": "alice", "pod": "jupyter-alice"})
    ]
    # ... and goes once it is.
    running, _ = notebook_audit(
        "cardio", [], seen, PINNED_SPEC, {*started, "notebook/cardio/u1/stopped"}
    )
    assert running == []
    # Without an audit log nothing is kept waiting.
    assert notebook_audit("cardio", [], seen, PINNED_SPEC, None)[0] == []


def test_an_exited_pod_is_a_stop_even_if_never_seen_running() -> None:
    running, events = notebook_audit(
        "cardio", [notebook("jupyter-bob", "u2", "bob", phase="Failed")], [], PINNED_SPEC, set()
    )
    assert [e.key for e in events] == ["notebook/cardio/u2/started", "notebook/cardio/u2/stopped"]
    assert running == [NotebookRecord(pod="jupyter-bob", uid="u2", user="bob")]  # until logged
