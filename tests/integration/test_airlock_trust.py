"""The airlock's identity, its reach and its status records, against the real API server.

The airlock acts with a token of its own ServiceAccount (`airlock_kubeconfig`, as on the dev
platform), and on a person's behalf by constrained impersonation. Behaviours under test, each
attack with the API server's refusal:

- as a member (Impersonate-User) it files an ExportRequest, and the export policy sees the
  member: filing in another's name is refused with the member's name; as an output checker
  (plus Impersonate-Group) it appends a review; it cannot file anything in its own name;
- as that member it cannot create a pod, read a Secret, list namespaces, read or delete an
  export; it cannot impersonate a ServiceAccount, a node, the group system:masters or any
  group but the output checkers', nor a user's extra fields but its own mark with its own
  value and a notebook's project;
- for a call made with a notebook's token (the workspace extra) the export policies admit
  only that project's exports and no review, whatever the airlock decided;
- its own records: it marks an Approved export Released with `status.release` (read back
  into the model unchanged), and Revoked with `status.revocation`; not a Submitted export,
  not without the record, not with another number of files than the export's outputs; a record, once
  written, is never changed or removed; access records are appended (several at once, or one
  by a JSON Patch `add` that needs no read), never edited or removed (a merge patch from a
  stale read is refused), name files of the export, and stop once an export is withdrawn;
- views are budgeted (S17): one person's at most 100, all at most 384, each write one
  person's records, so the lead's 128 downloads always fit; a full list (512 records) is
  within the API server's CEL budget for the policy, and a 513th record is refused by the
  schema;
- nobody else writes those fields: a member, an output checker, the admin, the controller
  (which also cannot make an export Released, nor move it back);
- the controller's status write (the Decided condition following Released) keeps the records,
  and it audits each one once (a second pass adds nothing); the audit chain verifies.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

import pytest

from provisioner.devcluster.airlock import airlock_kubeconfig
from provisioner.devcluster.cluster import DevCluster
from provisioner.errors import RefusedError
from provisioner.kube.api import Kube
from provisioner.kube.client import api_client
from provisioner.kube.resources import EXPORT_REQUESTS, RESOURCES
from provisioner.models.resources import (
    MAX_ACCESS_RECORDS,
    MAX_VIEW_RECORDS,
    MAX_VIEWS_PER_PERSON,
    ExportPhase,
    ExportRequest,
)
from provisioner.models.settings import Settings
from provisioner.planning.names import (
    AIRLOCK_VIA_EXTRA,
    AIRLOCK_VIA_VALUE,
    AIRLOCK_WORKSPACE_EXTRA,
    namespace_name,
)
from tests.integration.test_exports import export_body, phase, refused, review
from tests.integration.workspace_world import World, catching_up, notebook_pod

pytestmark = pytest.mark.integration
CHECKERS = "tre:output-checkers"
NAMESPACES = RESOURCES[("v1", "Namespace")]
SECRETS = RESOURCES[("v1", "Secret")]
PODS = RESOURCES[("v1", "Pod")]


def stamp(minutes: int = 0) -> str:
    at = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=minutes)
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
def world(installed_platform: Settings, dev_platform: DevCluster, tmp_path: Path) -> World:
    return World(installed_platform, dev_platform.kubeconfig, tmp_path)


@pytest.fixture
def airlock_config(installed_platform: Settings, dev_platform: DevCluster) -> Path:
    """The airlock's kubeconfig: a token of its own ServiceAccount, 0600."""
    path = airlock_kubeconfig(dev_platform, installed_platform)
    assert path == dev_platform.state_dir / "airlock" / "kubeconfig"
    assert path.stat().st_mode & 0o777 == 0o600
    return path


class Airlock:
    """The airlock service's two ways of calling the API server."""

    def __init__(self, kubeconfig: Path) -> None:
        self.kubeconfig = kubeconfig
        self.itself = Kube(api_client(kubeconfig))

    def as_(
        self, user: str, *groups: str, marked: bool = True, notebook: str | None = None
    ) -> Kube:
        """On `user`'s behalf: Impersonate-User, one Impersonate-Group per group, and its
        mark (Impersonate-Extra `tre.ucloud.org/via: airlock`), as `Desk` does; for a call
        made with a notebook's token also that notebook's project."""
        extra = {AIRLOCK_VIA_EXTRA: AIRLOCK_VIA_VALUE} if marked else {}
        if notebook is not None:
            extra[AIRLOCK_WORKSPACE_EXTRA] = notebook
        return Kube(api_client(self.kubeconfig, as_user=user, as_groups=groups, as_extra=extra))

    def add_review(self, project: str, name: str, entry: dict[str, Any], user: str) -> None:
        """Append `user`'s review as the service does: read with its own identity (it may not
        read as them), write as the checker (Impersonate-User and -Group)."""
        obj = self.itself.get(EXPORT_REQUESTS, name, namespace_name(project))
        assert obj is not None
        obj["spec"]["reviews"] = [*obj["spec"].get("reviews", []), entry]
        self.as_(user, CHECKERS).replace(obj)

    def write_status(self, project: str, name: str, status: dict[str, Any]) -> None:
        """A merge patch of the status subresource, as the airlock itself."""
        self.itself.patch_status(EXPORT_REQUESTS, name, status, namespace_name(project))


@pytest.fixture
def airlock(airlock_config: Path) -> Airlock:
    return Airlock(airlock_config)


@pytest.fixture
def ready(world: World) -> str:
    """A Ready workspace of lea and ravi; returns its project."""
    return ready_project_of(world)


def file_as(kube: Kube, body: dict[str, Any]) -> str:
    """Create, waiting out the moment the API server's caches need to see a new workspace
    (its access ConfigMap, the members' RoleBinding): they fail closed meanwhile."""
    deadline = time.monotonic() + 15
    while True:
        try:
            kube.create(body)
            return str(body["metadata"]["name"])
        except RefusedError as exc:
            lagging = catching_up(str(exc)) or "cannot create resource" in str(exc)
            if not lagging or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def read(world: World, project: str, name: str) -> ExportRequest:
    obj = world.admin.get(EXPORT_REQUESTS, name, namespace_name(project))
    assert obj is not None
    return ExportRequest.from_object(obj)


def release_record(files: int = 1, by: str = "lea") -> dict[str, Any]:
    return {"by": by, "at": stamp(), "manifestSha256": "d" * 64, "files": files}


def access(by: str, path: str = "out/table.csv", action: str = "view") -> dict[str, Any]:
    return {"by": by, "at": stamp(), "action": action, "path": path}


@pytest.fixture
def approved(world: World, ready: str, airlock: Airlock) -> tuple[str, str]:
    """(project, export): filed by lea and approved by olga and piet, all through the
    airlock; the controller made it Approved."""
    name = file_as(airlock.as_("lea"), export_body(ready))
    for checker in ("olga", "piet"):
        airlock.add_review(ready, name, review(checker), checker)
    world.reconcile(ready)
    assert phase(world, ready, name) == "Approved"
    return ready, name


# --- acting as a person ------------------------------------------------------------------------


def test_as_a_member_the_airlock_files_an_export_the_policy_judges_the_member(
    world: World, ready: str, airlock: Airlock
) -> None:
    lea = airlock.as_("lea")
    name = file_as(lea, export_body(ready))
    filed = read(world, ready, name)
    assert filed.spec.author == "lea"
    refused(
        lambda: lea.create(export_body(ready, author="ravi"), dry_run=True),
        "spec.author: must be the caller lea (got ravi)",
    )
    refused(
        lambda: airlock.as_("mallory").create(export_body(ready, author="mallory"), dry_run=True),
        'User "mallory" cannot create resource "exportrequests"',
    )
    # In its own name it files nothing: it is not a member of anything.
    refused(
        lambda: airlock.itself.create(export_body(ready), dry_run=True),
        'User "system:serviceaccount:tre-airlock:tre-airlock" cannot create resource '
        '"exportrequests"',
    )
    # As an output checker it appends a review; as the author it may not.
    airlock.add_review(ready, name, review("olga"), "olga")
    refused(
        lambda: airlock.add_review(ready, name, review("lea"), "lea"),
        "lea is the author or has been a member, lead or owner of project",
    )
    world.reconcile(ready)
    mine = [e for e in world.audit.read_all() if e.subject.endswith(f"/{name}")]
    assert [(e.action, e.actor) for e in mine if e.action != "export.phase"] == [
        ("export.submit", "lea"),
        ("export.review", "olga"),
    ]


def test_as_a_member_it_does_nothing_but_exports(
    world: World, ready: str, airlock: Airlock
) -> None:
    lea = airlock.as_("lea")
    namespace = namespace_name(ready)
    name = file_as(lea, export_body(ready))
    refused(
        lambda: lea.create(notebook_pod(namespace, "lea"), dry_run=True),
        'cannot impersonate-on:user-info:create resource "pods"',
    )
    refused(
        lambda: lea.get(SECRETS, "anything", namespace),
        'cannot impersonate-on:user-info:get resource "secrets"',
    )
    refused(lambda: lea.list(NAMESPACES), "cannot impersonate-on:user-info:list resource")
    refused(
        lambda: lea.get(EXPORT_REQUESTS, name, namespace),
        'cannot impersonate-on:user-info:get resource "exportrequests"',
    )
    refused(
        lambda: lea.delete(EXPORT_REQUESTS, name, namespace),
        'cannot impersonate-on:user-info:delete resource "exportrequests"',
    )
    # The status subresource is not the resource: no writing status as a person either.
    refused(
        lambda: lea.patch_status(EXPORT_REQUESTS, name, {"phase": "Approved"}, namespace),
        'cannot impersonate-on:user-info:patch resource "exportrequests/status"',
    )
    # Its own identity reads exports, but no Secret and no namespace list.
    assert airlock.itself.get(EXPORT_REQUESTS, name, namespace) is not None
    refused(lambda: airlock.itself.get(SECRETS, "anything", namespace), "cannot get resource")
    refused(lambda: airlock.itself.list(NAMESPACES), 'cannot list resource "namespaces"')


def test_it_impersonates_no_service_account_node_or_other_group(
    world: World, ready: str, airlock: Airlock, airlock_config: Path
) -> None:
    body = export_body(ready)
    controller, node = world.settings.controller_user, "system:node:tre-node"
    refused(
        lambda: airlock.as_(controller, marked=False).create(body, dry_run=True),
        "cannot impersonate-on:serviceaccount:create",
    )
    refused(
        lambda: airlock.as_(node, marked=False).create(body, dry_run=True),
        "cannot impersonate-on:arbitrary-node:create",
    )
    # With its mark, the API server finds no constrained mode for them (a ServiceAccount or
    # a node carries no extra there) and the legacy mode, which it does not hold, refuses.
    refused(
        lambda: airlock.as_(controller).create(body, dry_run=True),
        'cannot impersonate resource "serviceaccounts"',
    )
    refused(lambda: airlock.as_(node).create(body, dry_run=True), "cannot impersonate")
    refused(
        lambda: airlock.as_("lea", "system:masters").create(body, dry_run=True),
        "impersonating the system:masters group is not allowed",
    )
    for group in ("tre:approvers", "tre:stewards", "system:authenticated"):
        refused(
            lambda group=group: airlock.as_("lea", group).create(body, dry_run=True),
            'cannot impersonate:user-info resource "groups" in API group '
            '"authentication.k8s.io" at the cluster scope',
        )
    # Extra fields (scopes, a forged token's claims) are not granted either.
    extra = api_client(airlock_config, as_user="lea")
    extra.set_default_header("Impersonate-Extra-Scopes", "admin")
    refused(
        lambda: Kube(extra).create(body, dry_run=True),
        'cannot impersonate:user-info resource "userextras"',
    )
    # Its own mark, only with its own value.
    marked = api_client(airlock_config, as_user="lea", as_extra={AIRLOCK_VIA_EXTRA: "admin"})
    refused(
        lambda: Kube(marked).create(body, dry_run=True),
        'cannot impersonate:user-info resource "userextras/tre.ucloud.org/via"',
    )


def test_for_a_notebooks_token_the_api_server_keeps_to_its_project(
    world: World, ready: str, airlock: Airlock
) -> None:
    """Whatever the airlock decided, a call it makes for a notebook's token (the workspace
    extra) files, changes and withdraws only that project's exports, and appends no review."""
    other = ready_project_of(world)
    refused(
        lambda: airlock.as_("lea", notebook=other).create(export_body(ready), dry_run=True),
        f"spec.project: {ready} is not the project of the notebook {other} whose token made "
        "this call",
    )
    name = file_as(airlock.as_("lea", notebook=ready), export_body(ready))
    obj = airlock.itself.get(EXPORT_REQUESTS, name, namespace_name(ready))
    assert obj is not None
    refused(
        lambda: airlock.as_("lea", notebook=other).replace(dict(obj, spec={**obj["spec"],
                                                                           "withdrawn": True})),
        f"is not the project of the notebook {other}",
    )  # fmt: skip
    reviewed = dict(obj, spec={**obj["spec"], "reviews": [review("olga")]})
    refused(
        lambda: airlock.as_("olga", CHECKERS, notebook=ready).replace(reviewed),
        "a review comes from a checker signed in in their browser, never from a notebook",
    )
    airlock.as_("olga", CHECKERS).replace(reviewed)  # signed in: admitted
    obj = airlock.itself.get(EXPORT_REQUESTS, name, namespace_name(ready))
    assert obj is not None
    obj["spec"]["withdrawn"] = True
    airlock.as_("lea", notebook=ready).replace(obj)


def ready_project_of(world: World) -> str:
    _, project, _ = world.approved_project()
    world.reconcile(project)
    return project


# --- the airlock's status records ---------------------------------------------------------------


def test_the_airlock_releases_an_approved_export_and_the_record_is_written_once(
    world: World, approved: tuple[str, str], airlock: Airlock
) -> None:
    project, name = approved
    refused(
        lambda: airlock.write_status(project, name, {"phase": "Released"}),
        "status.release: set exactly when an Approved export becomes Released, and then "
        "required (got Approved -> Released)",
    )
    refused(
        lambda: airlock.write_status(
            project, name, {"phase": "Released", "release": release_record(files=2)}
        ),
        "status.release.files: 2 released, but the export has 1 output files",
    )
    record = release_record()
    airlock.write_status(project, name, {"phase": "Released", "release": record})
    released = read(world, project, name)
    assert released.status.phase is ExportPhase.RELEASED
    assert released.status.release is not None
    assert released.status.release.to_wire() == record
    assert released.status.reviewers == ["olga", "piet"]  # the controller's, untouched
    refused(
        lambda: airlock.write_status(
            project, name, {"release": {**record, "manifestSha256": "e" * 64}}
        ),
        "status.release: written once, when the export is released; it cannot be changed",
    )
    refused(
        lambda: airlock.write_status(project, name, {"release": None}),
        "status.release: written once",
    )
    refused(
        lambda: airlock.write_status(project, name, {"phase": "Approved"}),
        "status.phase: the airlock moves an export only from Approved to Released and from "
        "Released to Revoked (got Released -> Approved)",
    )
    refused(
        lambda: airlock.write_status(project, name, {"reviewers": ["olga"]}),
        "status.reviewers: the controller",
    )
    revocation = {"by": "olga", "at": stamp(), "reason": "a cell holds 3 patients"}
    refused(
        lambda: airlock.write_status(project, name, {"revocation": revocation}),
        "status.revocation: set exactly when a Released export becomes Revoked",
    )
    airlock.write_status(project, name, {"phase": "Revoked", "revocation": revocation})
    revoked = read(world, project, name)
    assert revoked.status.phase is ExportPhase.REVOKED
    assert revoked.status.revocation is not None
    assert revoked.status.revocation.to_wire() == revocation
    refused(
        lambda: airlock.write_status(
            project, name, {"revocation": {**revocation, "reason": "another reason here"}}
        ),
        "status.revocation: written once, when a release is revoked; it cannot be changed",
    )


def test_a_submitted_export_is_never_released(world: World, ready: str, airlock: Airlock) -> None:
    name = file_as(airlock.as_("lea"), export_body(ready))
    airlock.add_review(ready, name, review("olga"), "olga")
    world.reconcile(ready)
    assert phase(world, ready, name) == "Submitted"
    refused(
        lambda: airlock.write_status(
            ready, name, {"phase": "Released", "release": release_record()}
        ),
        "status.phase: the airlock moves an export only from Approved to Released and from "
        "Released to Revoked (got Submitted -> Released)",
    )
    assert read(world, ready, name).status.release is None


def test_access_records_are_appended_never_edited_or_removed(
    world: World, ready: str, airlock: Airlock
) -> None:
    name = file_as(airlock.as_("lea"), export_body(ready))
    first = access("olga")
    airlock.write_status(ready, name, {"access": [first]})
    # Several at once, of either file.
    batch = [first, access("piet"), access("piet", "src/model.py")]
    airlock.write_status(ready, name, {"access": batch})
    assert [a.to_wire() for a in read(world, ready, name).status.access] == batch
    # A JSON Patch `add` at the end appends to the list as stored, whatever another replica
    # appended meanwhile: no read, no lost record. (A merge patch from a stale read is refused
    # instead, as an edit, and is retried after reading again.)
    later = access("olga", "src/model.py")
    airlock.itself.request(
        "PATCH",
        EXPORT_REQUESTS.path(namespace_name(ready), name) + "/status",
        body=[{"op": "add", "path": "/status/access/-", "value": later}],
        content_type="application/json-patch+json",
    )
    batch = [*batch, later]
    assert [a.to_wire() for a in read(world, ready, name).status.access] == batch
    refused(
        lambda: airlock.write_status(ready, name, {"access": [*batch[:2], access("piet")]}),
        "status.access: earlier access records cannot be changed or removed",
    )
    refused(
        lambda: airlock.write_status(
            ready, name, {"access": [{**first, "by": "nobody"}, *batch[1:]]}
        ),
        "status.access: earlier access records cannot be changed or removed; append new ones",
    )
    refused(
        lambda: airlock.write_status(ready, name, {"access": batch[1:]}),
        "status.access: earlier access records cannot be changed or removed",
    )
    refused(
        lambda: airlock.write_status(
            ready, name, {"access": [*batch, access("olga", "etc/passwd")]}
        ),
        "status.access: etc/passwd is not a file of this export",
    )
    # Withdrawn: nothing of it is looked at again.
    obj = airlock.itself.get(EXPORT_REQUESTS, name, namespace_name(ready))
    assert obj is not None
    obj["spec"]["withdrawn"] = True
    airlock.as_("lea").replace(obj)
    world.reconcile(ready)
    refused(
        lambda: airlock.write_status(ready, name, {"access": [*batch, access("olga")]}),
        "status.access: this export is Withdrawn; none of its files is viewed or downloaded",
    )


def test_views_are_budgeted_so_the_leads_downloads_always_fit(
    world: World, ready: str, airlock: Airlock
) -> None:
    """One checker's views cannot use up the export's records, nor can all checkers' views
    together use up the room kept for the lead's downloads; a full list (512) is judged
    within the API server's CEL budget and a 513th record is refused by the schema."""
    name = file_as(airlock.as_("lea"), export_body(ready))
    records: list[dict[str, Any]] = []

    def append(*more: dict[str, Any]) -> None:
        airlock.write_status(ready, name, {"access": [*records, *more]})
        records.extend(more)

    olga = [access("olga") for _ in range(MAX_VIEWS_PER_PERSON)]
    append(*olga)
    refused(
        lambda: append(access("olga", "src/model.py")),
        f"olga has viewed the files of this export {MAX_VIEWS_PER_PERSON} times, the most "
        "one person may",
    )
    # One write, one person's records (so the count per person is one pass).
    refused(
        lambda: append(access("piet"), access("quinn")),
        "append one person's access records per write",
    )
    checkers = ["piet", "quinn", "rosa"]
    for checker in checkers:
        left = MAX_VIEW_RECORDS - len(records)
        append(*[access(checker) for _ in range(min(MAX_VIEWS_PER_PERSON, left))])
    assert len(records) == MAX_VIEW_RECORDS
    refused(
        lambda: append(access("sven")),
        f"status.access: this export has had {MAX_VIEW_RECORDS} views, the most it takes",
    )
    # The room left is the lead's: every download still fits.
    downloads = MAX_ACCESS_RECORDS - MAX_VIEW_RECORDS
    append(*[access("lea", action="download") for _ in range(downloads)])
    assert len(read(world, ready, name).status.access) == MAX_ACCESS_RECORDS
    refused(
        lambda: append(access("lea", action="download")),
        f"must have at most {MAX_ACCESS_RECORDS} items",
    )


def test_nobody_else_writes_the_airlocks_records(
    world: World, approved: tuple[str, str], airlock: Airlock
) -> None:
    project, name = approved
    namespace = namespace_name(project)
    release = {"phase": "Released", "release": release_record()}
    # A member and a checker have no verb on the status subresource (RBAC); the admin has
    # every verb, and the policy refuses it.
    for kube, refusal in (
        (
            Kube(api_client(world.kubeconfig, as_user="lea")),
            'User "lea" cannot patch resource "exportrequests/status"',
        ),
        (
            Kube(api_client(world.kubeconfig, as_user="olga", as_groups=(CHECKERS,))),
            'User "olga" cannot patch resource "exportrequests/status"',
        ),
        (world.admin, "tre-admin may not write the status of exports"),
    ):
        for status in (release, {"access": [access("lea")]}):
            refused(
                lambda kube=kube, status=status: kube.patch_status(
                    EXPORT_REQUESTS, name, status, namespace
                ),
                refusal,
            )
    # The controller neither writes the records nor makes an export Released itself.
    refused(
        lambda: world.controller.patch_status(EXPORT_REQUESTS, name, release, namespace),
        "status.release: only the airlock (system:serviceaccount:tre-airlock:tre-airlock) "
        "writes it",
    )
    refused(
        lambda: world.controller.patch_status(
            EXPORT_REQUESTS, name, {"access": [access("lea")]}, namespace
        ),
        "status.access: only the airlock",
    )
    refused(
        lambda: world.controller.patch_status(
            EXPORT_REQUESTS, name, {"phase": "Released"}, namespace
        ),
        "status.phase: Approved -> Released: only the airlock",
    )
    airlock.write_status(project, name, release)
    refused(
        lambda: world.controller.patch_status(
            EXPORT_REQUESTS, name, {"phase": "Approved"}, namespace
        ),
        "status.phase: Released -> Approved: only the airlock",
    )
    refused(
        lambda: world.controller.patch_status(EXPORT_REQUESTS, name, {"release": None}, namespace),
        "status.release: only the airlock",
    )


def test_the_controller_keeps_and_audits_each_record_once(
    world: World, approved: tuple[str, str], airlock: Airlock
) -> None:
    project, name = approved
    views = [access("olga"), access("piet", "src/model.py")]
    airlock.write_status(project, name, {"access": views[:1]})  # one person's per write
    airlock.write_status(project, name, {"access": views})
    airlock.write_status(project, name, {"phase": "Released", "release": release_record()})
    records = [*views, access("lea", action="download")]
    airlock.write_status(project, name, {"access": records})
    before = read(world, project, name)
    # The controller's pass writes the status (its Decided condition now says Released)
    # and the airlock's records are still there, untouched.
    result = world.reconcile(project)
    assert result.status_writes >= 1
    after = read(world, project, name)
    decided = next(c for c in after.status.conditions if c.type == "Decided")
    assert decided.reason == "Released"
    assert (after.status.release, after.status.access) == (
        before.status.release,
        before.status.access,
    )
    revocation = {"by": "olga", "at": stamp(1), "reason": "a cell holds 3 patients"}
    airlock.write_status(project, name, {"phase": "Revoked", "revocation": revocation})
    world.reconcile(project)
    again = world.reconcile(project)
    assert read(world, project, name).status.revocation is not None
    uid = after.uid
    entries = [e for e in world.audit.read_all() if e.subject.endswith(f"/{name}")]
    airlock_entries = [
        (e.key, e.actor, e.action)
        for e in entries
        if e.action in ("export.view", "export.download", "export.release", "export.revoke")
    ]
    assert sorted(airlock_entries) == sorted(
        [
            (f"export/{uid}/access/0", "olga", "export.view"),
            (f"export/{uid}/access/1", "piet", "export.view"),
            (f"export/{uid}/access/2", "lea", "export.download"),
            (f"export/{uid}/released", "lea", "export.release"),
            (f"export/{uid}/revoked", "olga", "export.revoke"),
        ]
    )
    release_entry = next(e for e in entries if e.action == "export.release")
    assert release_entry.details["manifestSha256"] == "d" * 64
    assert release_entry.details["files"] == 1
    revoke_entry = next(e for e in entries if e.action == "export.revoke")
    assert revoke_entry.details["reason"] == "a cell holds 3 patients"
    download = next(e for e in entries if e.action == "export.download")
    assert download.details["path"] == "out/table.csv"
    assert again.audited == 0
    assert world.audit.verify() == []


def test_every_field_round_trips_through_the_api_server(
    world: World, approved: tuple[str, str], airlock: Airlock
) -> None:
    """The CRD and the models agree on the airlock's records (they are generated from them)."""
    project, name = approved
    status = {
        "phase": "Released",
        "release": release_record(),
        "access": [access("olga"), access("lea", action="download")],
    }
    airlock.write_status(project, name, {"access": status["access"][:1]})  # one person a write
    airlock.write_status(project, name, status)
    got = read(world, project, name)
    assert got.status.to_wire()["release"] == status["release"]
    assert got.status.to_wire()["access"] == status["access"]
