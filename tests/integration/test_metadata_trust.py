"""Nobody deletes an access request or an export behind the audit log's back (review 3, S7):
the real kube-apiserver with the platform installed and kube-controller-manager running (its
garbage collector and namespace controller included), the controller with its own token.

Behaviours under test:
- an approver who may update every AccessRequest cannot give one an owner reference (the
  garbage collector would delete it: access gone with no decision and no audit entry) or a
  finalizer, nor lift the controller's; neither can the requester when filing;
- an output checker and a member, acting through the airlock (the marked impersonation the
  export policies let through), cannot give an ExportRequest an owner reference or a
  finalizer (one would hold a torn-down namespace Terminating for good), nor lift the
  controller's;
- the controller sets its finalizer on every request and export; an administrator's delete
  waits for it: the controller's next pass writes the object's records (decisions, or the
  airlock's access records) and a `deleted` entry, then lets it go; `tre audit export` shows
  them, each once, also when the pass died between writing them and lifting the finalizer;
- a project torn down with an export in its namespace still tears down: the first pass logs
  the export's records, lifts its finalizer and closes the namespace to new exports, the
  next deletes the namespace, which then goes entirely.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from provisioner.devcluster.cluster import DevCluster
from provisioner.errors import RefusedError, TemporaryError
from provisioner.kube.api import Kube
from provisioner.kube.resources import (
    ACCESS_REQUESTS,
    CONFIG_MAPS,
    EXPORT_REQUESTS,
    NAMESPACES,
    Resource,
)
from provisioner.models.settings import Settings
from provisioner.planning.admission import METADATA_POLICY
from provisioner.planning.names import AUDITED_FINALIZER, WORKSPACE_ACCESS_NAME, namespace_name
from tests.integration.test_exports import CHECKERS, as_, export_body, file_export, review
from tests.integration.test_trust_model import as_ as person
from tests.integration.test_trust_model import refused
from tests.integration.workspace_world import APPROVERS, World, unique

pytestmark = pytest.mark.integration

# An owner that does not exist: the garbage collector deletes whatever names it.
DANGLING_OWNER = [{"apiVersion": "v1", "kind": "Namespace", "name": "s7-gone",
                   "uid": "00000000-0000-0000-0000-000000000007"}]  # fmt: skip


@pytest.fixture
def world(installed_platform: Settings, dev_platform: DevCluster, tmp_path: Path) -> World:
    return World(installed_platform, dev_platform.kubeconfig, tmp_path)


@pytest.fixture
def ready(world: World) -> tuple[str, str]:
    """(request, project): lea's request approved by ann and bob, its workspace Ready."""
    name, project, _ = world.approved_project()
    world.reconcile(project)
    return name, project


def finalizers(world: World, resource: Resource, name: str, namespace: str | None = None) -> list:
    obj = world.admin.get(resource, name, namespace)
    assert obj is not None
    return list(obj["metadata"].get("finalizers") or [])


def gone(world: World, resource: Resource, name: str, namespace: str | None = None) -> bool:
    """Whether the object is gone within 60 s (the namespace controller works in rounds)."""
    deadline = time.monotonic() + 60
    while world.admin.get(resource, name, namespace) is not None:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


def logged(world: World, subject: str) -> list[dict[str, Any]]:
    """The entries about `subject`, as `tre audit export` prints the log."""
    result = world.tre("audit", "export")
    assert result.exit_code == 0, result.output
    entries = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    return [e for e in entries if e["subject"] == subject]


def wait_for_the_policy(world: World) -> None:
    """The API server loads a policy within moments of its install: wait until it refuses a
    dry run that only it refuses (a request filed with an owner)."""
    body = {
        "apiVersion": "tre.ucloud.org/v1alpha1",
        "kind": "AccessRequest",
        "metadata": {"generateName": "s7-", "ownerReferences": DANGLING_OWNER},
        "spec": _spec(unique("s7")),
    }
    wait_until_refused(lambda: person(world, "lea").create(body, dry_run=True), METADATA_POLICY)


def wait_until_refused(call: Callable[[], Any], *fragments: str) -> None:
    """Until `call` (a dry run) is refused naming one of `fragments`: the API server's caches
    (a new policy, a changed parameter or binding) catch up within moments."""
    deadline = time.monotonic() + 30
    while True:
        try:
            call()
        except RefusedError as exc:
            if any(fragment in str(exc) for fragment in fragments):
                return
            raise
        if time.monotonic() > deadline:
            pytest.fail(f"not refused ({', '.join(fragments)}) after 30 s")
        time.sleep(0.5)


def _spec(project: str) -> dict[str, Any]:
    today = dt.date.today()
    return {
        "project": project,
        "requester": "lea",
        "lead": "lea",
        "members": ["lea"],
        "datasets": ["none"],
        "purpose": "A test of who may set metadata.",
        "startDate": today.isoformat(),
        "endDate": (today + dt.timedelta(days=30)).isoformat(),
    }


# --- AccessRequests ------------------------------------------------------------------------------


def test_an_approver_cannot_give_a_request_an_owner_or_a_finalizer_nor_lift_ours(
    world: World, ready: tuple[str, str]
) -> None:
    request, project = ready
    wait_for_the_policy(world)
    # Filing with either is refused too.
    for field, value in (("ownerReferences", DANGLING_OWNER), ("finalizers", ["s7/hold"])):
        body = {
            "apiVersion": "tre.ucloud.org/v1alpha1",
            "kind": "AccessRequest",
            "metadata": {"generateName": "s7-", field: value},
            "spec": _spec(project + "-x"),
        }
        refused(lambda body=body: person(world, "lea").create(body), METADATA_POLICY, field)
    assert finalizers(world, ACCESS_REQUESTS, request) == [AUDITED_FINALIZER]
    ann = person(world, "ann", APPROVERS)
    attacks = {
        "ownerReferences": DANGLING_OWNER,
        "finalizers": [AUDITED_FINALIZER, "s7/hold"],
    }
    for field, value in attacks.items():
        obj = world.request_object(request)
        obj["metadata"][field] = value
        message = refused(lambda obj=obj: ann.replace(obj), METADATA_POLICY, f"metadata.{field}")
        controller = world.settings.controller_user
        why = {
            "ownerReferences": "an AccessRequest takes none: the garbage collector would "
            "delete it once its owner is gone, and accessrequests are deleted by "
            "administrators only; remove the entry",
            "finalizers": f"s7/hold: only the controller ({controller}) adds a finalizer to "
            f"an AccessRequest, its own ({AUDITED_FINALIZER}); any other would hold its "
            "deletion; remove the entry",
        }
        assert message.endswith(f"metadata.{field}: {why[field]}"), message
    obj = world.request_object(request)
    obj["metadata"]["finalizers"] = []
    refused(
        lambda: ann.replace(obj),
        METADATA_POLICY,
        f"metadata.finalizers: {AUDITED_FINALIZER} is lifted by the controller",
    )
    # With the garbage collector running, the request is still there, as it was.
    time.sleep(2)
    live = world.request_object(request)
    assert "ownerReferences" not in live["metadata"]
    assert live["metadata"]["finalizers"] == [AUDITED_FINALIZER]


def test_an_admins_delete_waits_until_the_request_is_in_the_audit_log(
    world: World, ready: tuple[str, str]
) -> None:
    request, project = ready
    uid = world.request_object(request)["metadata"]["uid"]
    # A revoke the controller has not seen yet, then the delete.
    revoke = world.tre("request", "revoke", request, "-m", "s7", user="carl", group=APPROVERS)
    assert revoke.exit_code == 0, revoke.output
    world.admin.delete(ACCESS_REQUESTS, request)
    live = world.request_object(request)
    assert live["metadata"].get("deletionTimestamp")
    # A pass that dies after writing the records, before lifting the finalizer ...
    with pytest.raises(TemporaryError):
        world.reconcile(project, kube=_dies_when_lifting(world))
    assert finalizers(world, ACCESS_REQUESTS, request) == [AUDITED_FINALIZER]
    # ... and the next one lets it go, writing nothing twice.
    world.reconcile(project)
    assert gone(world, ACCESS_REQUESTS, request)
    entries = logged(world, f"accessrequest/{request}")
    keys = [e["key"] for e in entries]
    assert len(keys) == len(set(keys))
    actions = {e["key"]: e["action"] for e in entries}
    assert actions[f"decision/{uid}/2"] == "request.revoke"
    deleted = next(e for e in entries if e["key"] == f"request/{uid}/deleted")
    assert deleted["action"] == "request.deleted"
    assert deleted["details"]["phase"] == "Approved"  # the last the controller recorded
    # It granted nothing once deleted: the workspace froze.
    ws = world.workspace(project)
    assert ws is not None and ws["status"]["phase"] == "Frozen"


class _DiesWhenLifting(Kube):
    def patch_finalizers(self, *args: Any, **kwargs: Any) -> bool:
        raise TemporaryError("the controller died here")


def _dies_when_lifting(world: World) -> Kube:
    return _DiesWhenLifting(world.controller.api)


# --- ExportRequests ------------------------------------------------------------------------------


def test_a_checker_or_member_cannot_give_an_export_an_owner_or_a_finalizer_nor_lift_ours(
    world: World, ready: tuple[str, str]
) -> None:
    _, project = ready
    namespace = namespace_name(project)
    wait_for_the_policy(world)
    body = export_body(project)
    body["metadata"]["finalizers"] = ["s7/hold"]
    refused(lambda: file_export(world, project, body), METADATA_POLICY, "metadata.finalizers")
    name = file_export(world, project, export_body(project))
    world.reconcile(project)
    assert finalizers(world, EXPORT_REQUESTS, name, namespace) == [AUDITED_FINALIZER]
    checker, member = as_(world, "olga", CHECKERS), as_(world, "lea")
    for who in (checker, member):
        for field, value in (
            ("ownerReferences", DANGLING_OWNER),
            ("finalizers", [AUDITED_FINALIZER, "s7/hold"]),
            ("finalizers", []),
        ):
            obj = world.admin.get(EXPORT_REQUESTS, name, namespace)
            assert obj is not None
            obj["metadata"][field] = value
            refused(lambda obj=obj, who=who: who.replace(obj), METADATA_POLICY, f"metadata.{field}")
    # A review through the airlock still works: only the metadata is guarded.
    obj = world.admin.get(EXPORT_REQUESTS, name, namespace)
    assert obj is not None
    obj["spec"]["reviews"] = [review("olga")]
    checker.replace(obj)
    time.sleep(2)
    live = world.admin.get(EXPORT_REQUESTS, name, namespace)
    assert live is not None and "ownerReferences" not in live["metadata"]
    assert live["metadata"]["finalizers"] == [AUDITED_FINALIZER]


def filed_and_reviewed_unseen(world: World, project: str) -> tuple[str, str]:
    """(name, uid) of an export lea filed, which the controller has seen, then reviewed by
    olga (through the airlock), which it has not."""
    name = file_export(world, project, export_body(project))
    world.reconcile(project)
    obj = world.admin.get(EXPORT_REQUESTS, name, namespace_name(project))
    assert obj is not None
    obj["spec"]["reviews"] = [review("olga")]
    as_(world, "olga", CHECKERS).replace(obj)
    return name, obj["metadata"]["uid"]


def test_an_admins_delete_of_an_export_waits_for_its_records(
    world: World, ready: tuple[str, str]
) -> None:
    _, project = ready
    namespace = namespace_name(project)
    name, uid = filed_and_reviewed_unseen(world, project)
    world.admin.delete(EXPORT_REQUESTS, name, namespace)
    assert finalizers(world, EXPORT_REQUESTS, name, namespace) == [AUDITED_FINALIZER]
    world.reconcile(project)
    assert gone(world, EXPORT_REQUESTS, name, namespace)
    actions = {e["key"]: e["action"] for e in logged(world, f"exportrequest/{namespace}/{name}")}
    assert actions[f"export/{uid}/submitted"] == "export.submit"
    assert actions[f"export/{uid}/review/0"] == "export.review"
    assert actions[f"export/{uid}/deleted"] == "export.deleted"


def test_a_project_torn_down_with_an_export_still_tears_down(
    world: World, ready: tuple[str, str]
) -> None:
    request, project = ready
    name, uid = filed_and_reviewed_unseen(world, project)
    revoke = world.tre("request", "revoke", request, "-m", "s7", user="carl", group=APPROVERS)
    assert revoke.exit_code == 0, revoke.output
    namespace = namespace_name(project)
    # No retention: from Ready straight to TornDown. The first pass holds the namespace: it
    # logs the export's records, lifts the finalizer and closes the namespace to new exports.
    at_once = world.settings.model_copy(update={"retention_days": 0})
    first = world.reconcile(project, settings=at_once)
    assert first.phase is not None and first.phase.value == "TornDown"
    ns = world.admin.get(NAMESPACES, namespace)
    assert ns is not None and not ns["metadata"].get("deletionTimestamp")
    assert finalizers(world, EXPORT_REQUESTS, name, namespace) == []
    access = world.admin.get(CONFIG_MAPS, WORKSPACE_ACCESS_NAME, namespace)
    assert access is not None and access["data"]["phase"] == "Frozen"
    body = export_body(project)
    # RBAC (the members' RoleBinding is gone) or the create policy (not Ready), whichever the
    # API server's caches see first.
    wait_until_refused(
        lambda: as_(world, "lea").create(body, dry_run=True), "cannot create", "Ready workspace"
    )
    actions = {e["key"]: e["action"] for e in logged(world, f"exportrequest/{namespace}/{name}")}
    assert actions[f"export/{uid}/review/0"] == "export.review"
    # The next pass deletes the namespace, and nothing holds it.
    world.reconcile(project, settings=at_once)
    assert gone(world, NAMESPACES, namespace)
    # Torn down for good: a further pass writes nothing.
    last = world.reconcile(project, settings=at_once)
    assert (last.applied, last.pruned, last.finalizers) == ([], [], [])
