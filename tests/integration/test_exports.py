"""ExportRequests against the real API server: who may file them, who may review them, and
what the controller makes of the reviews.

Behaviours under test, each played with the raw API as the person, as the airlock makes the
call (impersonation with its mark, the user extra `tre.ucloud.org/via: airlock`):
- a member of a Ready workspace files an export in their own name in its namespace; someone
  else's name, or a non-member, is refused;
- an output checker appends one review covering every file; the author, a project member, a
  non-checker, a second review by the same checker, a review missing a file, and any review
  after the decision are refused with the reason;
- the controller writes the status: one review leaves it Submitted, two independent
  approvals make it Approved; nobody else may write that status;
- the author withdraws it; nothing is reviewed after that;
- people read exports only through the airlock (S16): while an export is under review, a
  member's and a checker's own `get` and `list` are refused (403), and so is their own write
  without the airlock's mark (a no-op update or patch, which would answer with the whole
  object, hidden reviews included).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from provisioner.devcluster.cluster import DevCluster
from provisioner.errors import RefusedError
from provisioner.kube.api import Kube
from provisioner.kube.client import api_client
from provisioner.kube.resources import EXPORT_REQUESTS
from provisioner.models.settings import Settings
from provisioner.planning.names import (
    AIRLOCK_VIA_EXTRA,
    AIRLOCK_VIA_VALUE,
    RESOURCE_QUOTA_NAME,
    namespace_name,
)
from tests.integration.workspace_world import World, catching_up, unique

pytestmark = pytest.mark.integration
CHECKERS = "tre:output-checkers"


@pytest.fixture
def world(installed_platform: Settings, dev_platform: DevCluster, tmp_path: Path) -> World:
    return World(installed_platform, dev_platform.kubeconfig, tmp_path)


@pytest.fixture
def ready(world: World) -> str:
    """A Ready workspace of lea and ravi; returns its project."""
    _, project, _ = world.approved_project()
    world.reconcile(project)
    return project


def as_(world: World, user: str, group: str | None = None, *, via_airlock: bool = True) -> Kube:
    """`user` (in `group`) as the airlock acts for them, or on their own (`via_airlock`
    False: their own kubectl)."""
    extra = {AIRLOCK_VIA_EXTRA: AIRLOCK_VIA_VALUE} if via_airlock else None
    groups = (group,) if group else ()
    return Kube(api_client(world.kubeconfig, as_user=user, as_groups=groups, as_extra=extra))


def export_body(project: str, author: str = "lea") -> dict[str, Any]:
    return {
        "apiVersion": "tre.ucloud.org/v1alpha1",
        "kind": "ExportRequest",
        "metadata": {"name": unique("x"), "namespace": namespace_name(project)},
        "spec": {
            "project": project,
            "author": author,
            "files": [
                {
                    "path": "out/table.csv",
                    "size": 120,
                    "sha256": "a" * 64,
                    "kind": "output",
                    "description": "readmissions by age band",
                },
                {
                    "path": "src/model.py",
                    "size": 900,
                    "sha256": "b" * 64,
                    "kind": "supporting",
                    "description": "the code that made it",
                },
            ],
            "context": "Counts over a cohort of 4000 patients; no cell below 10.",
        },
    }


def review(
    by: str, vote: str = "approve", files: tuple[str, ...] = ("out/table.csv", "src/model.py")
) -> dict[str, Any]:
    return {
        "by": by,
        "at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "votes": [{"path": p, "vote": vote} for p in files],
    }


def file_export(world: World, project: str, body: dict[str, Any], user: str = "lea") -> str:
    """Create as `user`, waiting out the moment the API server's parameter cache needs to
    see a new workspace's access ConfigMap (it fails closed meanwhile)."""
    deadline = time.monotonic() + 15
    while True:
        try:
            as_(world, user).create(body)
            return str(body["metadata"]["name"])
        except RefusedError as exc:
            if not catching_up(str(exc)) or time.monotonic() > deadline:
                raise


def add_review(
    world: World,
    project: str,
    name: str,
    entry: dict[str, Any],
    user: str,
    group: str | None = CHECKERS,
) -> None:
    # As the airlock: read with its own identity (people have no read), write as the person.
    obj = world.admin.get(EXPORT_REQUESTS, name, namespace_name(project))
    assert obj is not None
    obj["spec"]["reviews"] = [*obj["spec"].get("reviews", []), entry]
    as_(world, user, group).replace(obj)


def refused(call: Callable[[], Any], *fragments: str) -> None:
    with pytest.raises(RefusedError) as caught:
        call()
    for fragment in fragments:
        assert fragment in str(caught.value), str(caught.value)


def phase(world: World, project: str, name: str) -> str:
    obj = world.admin.get(EXPORT_REQUESTS, name, namespace_name(project))
    assert obj is not None
    return str((obj.get("status") or {}).get("phase", ""))


def test_only_members_file_exports_in_their_own_name(world: World, ready: str) -> None:
    name = file_export(world, ready, export_body(ready))
    assert world.admin.get(EXPORT_REQUESTS, name, namespace_name(ready)) is not None
    refused(
        lambda: as_(world, "lea").create(export_body(ready, author="ravi"), dry_run=True),
        "spec.author: must be the caller lea (got ravi)",
    )
    refused(
        lambda: as_(world, "mallory").create(export_body(ready, author="mallory"), dry_run=True)
    )


def test_reviews_are_independent_complete_and_once(world: World, ready: str) -> None:
    name = file_export(world, ready, export_body(ready))
    refused(
        lambda: add_review(world, ready, name, review("ravi"), "ravi"),
        "ravi is the author or has been a member, lead or owner of project",
    )
    refused(
        lambda: add_review(world, ready, name, review("lea"), "lea"),
        "lea is the author or has been a member, lead or owner of project",
    )
    refused(
        lambda: add_review(world, ready, name, review("nico"), "nico", group=None),
    )
    refused(
        lambda: add_review(world, ready, name, review("olga", files=("out/table.csv",)), "olga"),
        "a review votes on every file of the export",
    )
    refused(
        lambda: add_review(world, ready, name, review("piet"), "olga"),
        "by must be the caller olga (got piet)",
    )
    add_review(world, ready, name, review("olga"), "olga")
    refused(
        lambda: add_review(world, ready, name, review("olga"), "olga"),
        "olga has already reviewed this export",
    )


def test_two_independent_approvals_make_it_approved_and_end_the_review(
    world: World, ready: str
) -> None:
    name = file_export(world, ready, export_body(ready))
    add_review(world, ready, name, review("olga"), "olga")
    world.reconcile(ready)
    assert phase(world, ready, name) == "Submitted"
    obj = world.admin.get(EXPORT_REQUESTS, name, namespace_name(ready))
    assert obj is not None
    obj["status"] = {"phase": "Approved"}
    refused(
        lambda: world.admin.request(
            "PUT",
            EXPORT_REQUESTS.path(namespace_name(ready), name) + "/status",
            body=obj,
        ),
        "may not write the status of exports",
    )
    add_review(world, ready, name, review("piet"), "piet")
    world.reconcile(ready)
    assert phase(world, ready, name) == "Approved"
    refused(
        lambda: add_review(world, ready, name, review("quinn"), "quinn"),
        "this export is already Approved",
    )
    entries = [e for e in world.audit.read_all() if e.subject.endswith(f"/{name}")]
    assert [e.action for e in entries if e.action == "export.review"] == [
        "export.review",
        "export.review",
    ]


def test_the_author_withdraws_and_nothing_is_reviewed_after(world: World, ready: str) -> None:
    name = file_export(world, ready, export_body(ready))
    obj = world.admin.get(EXPORT_REQUESTS, name, namespace_name(ready))
    assert obj is not None
    obj["spec"]["withdrawn"] = True
    as_(world, "lea").replace(obj)
    world.reconcile(ready)
    assert phase(world, ready, name) == "Withdrawn"
    refused(
        lambda: add_review(world, ready, name, review("olga"), "olga"),
        "this export was withdrawn",
    )


def test_people_read_and_change_exports_only_through_the_airlock(world: World, ready: str) -> None:
    name = file_export(world, ready, export_body(ready))
    secret = "olga's vote, hidden until the decision"
    entry = review("olga")
    entry["votes"][0]["comment"] = secret
    add_review(world, ready, name, entry, "olga")
    namespace = namespace_name(ready)
    path = EXPORT_REQUESTS.path(namespace, name)
    people = [("lea", None), ("ravi", None), ("olga", CHECKERS), ("piet", CHECKERS)]
    for user, group in people:
        own = as_(world, user, group, via_airlock=False)
        # RefusedError is the API server's 403
        cannot = f'User "{user}" cannot'
        refused(lambda own=own: own.get(EXPORT_REQUESTS, name, namespace), f"{cannot} get")
        refused(lambda own=own: own.list(EXPORT_REQUESTS, namespace=namespace), f"{cannot} list")
        refused(lambda own=own: own.list(EXPORT_REQUESTS), f"{cannot} list")
    # A no-op write would answer with the whole object: refused, without the object.
    current = world.admin.get(EXPORT_REQUESTS, name, namespace)
    assert current is not None
    for user, group in people:
        own = as_(world, user, group, via_airlock=False)
        with pytest.raises(RefusedError) as put:
            own.replace(dict(current))
        assert secret not in str(put.value)
        assert "may change exports only through the airlock" in str(put.value)
        with pytest.raises(RefusedError) as patch:
            own.request(
                "PATCH", path, body={}, content_type="application/merge-patch+json", what="patch"
            )
        assert secret not in str(patch.value)
    # The airlock's mark with another value is not the airlock's mark.
    forged = Kube(api_client(world.kubeconfig, as_user="lea", as_extra={AIRLOCK_VIA_EXTRA: "lea"}))
    refused(lambda: forged.replace(dict(current)), "only through the airlock")
    # Through the airlock the same write is judged by the export rules (here: admitted).
    as_(world, "lea").replace(dict(current))


def test_a_project_files_no_more_exports_than_its_quota(world: World, ready: str) -> None:
    """Exports are never deleted, so the project's ResourceQuota bounds what it files in its
    life (`TRE_MAX_EXPORT_REQUESTS`), refused by the API server whoever files (F20)."""
    world.reconcile(ready, settings=world.settings.model_copy(update={"max_export_requests": 1}))
    file_export(world, ready, export_body(ready))
    with pytest.raises(RefusedError) as caught:
        file_export(world, ready, export_body(ready, author="ravi"), user="ravi")
    assert f"exceeded quota: {RESOURCE_QUOTA_NAME}" in str(caught.value)
    assert "limited: count/exportrequests.tre.ucloud.org=1" in str(caught.value)
