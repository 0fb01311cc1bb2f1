"""The trust model against an attacker who uses the rights the platform hands out.

Each test plays one attack with `kubectl`-level access (the raw API, impersonated users) or
through `tre`, against the real API server, S3 and controller code, and shows it refused or
undone, with the message, and that nothing was created or leaked:

1. Nobody approves their own access: a member of the request, or a current member of the
   project, cannot approve or extend it; an extension needs as many approvers as the tier.
2. A project is owned: someone else's request for an existing project is refused where it is
   filed; a rival request filed before the project had an owner stays Pending
   (NotProjectOwner) and is never merged; an amendment is judged over the whole workspace it
   would produce; platform namespaces cannot be requested.
3. Data is exactly what was approved: an approval must pin the current manifest and tier; a
   two-approver dataset whose content changed is mounted only once two approvals pin the new
   content.
4. Losing access takes effect at once: a revoked member's notebook is stopped in the same pass
   while the workspace stays Ready; pods come only from the hub, for members, with the
   project's claims, while Ready; nobody execs into a notebook; a full decision list still
   takes a revoke. People keep only the powers they still have (review 3): a former member
   never reviews the project's exports, nobody reviews while it is Frozen and the reviewer
   floor its data asked holds (S8); an owner whose own access was revoked releases,
   downloads, revokes as lead and amends nothing, at the airlock and the API server (S9);
   an approval by someone who joined the project later stops counting (S19).
5. Project namespaces belong to the controller: nobody else creates, relabels or writes into
   them; a squatter's namespace is never adopted; a NetworkPolicy that predates the policies is
   removed and audited; the controller's own credential cannot write outside them.
6. Decisions made with the raw API are audited by the controller.
8. `tre workspace plan` shows exactly the writes of the next pass.
9. No pod anywhere mounts an NFS export directly (datasets only through approved volumes).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from provisioner.airlock.desk import Desk, Person
from provisioner.airlock.release import ensure_airlock_buckets
from provisioner.controller.reconcile import read_project_snapshot, read_snapshot
from provisioner.devcluster.airlock import airlock_kubeconfig
from provisioner.devcluster.cluster import DevCluster
from provisioner.errors import ConflictError, RefusedError
from provisioner.kube.api import Kube
from provisioner.kube.client import api_client
from provisioner.kube.resources import (
    CLUSTER_ROLE_BINDINGS,
    CONFIG_MAPS,
    EXPORT_REQUESTS,
    NAMESPACES,
    NETWORK_POLICIES,
    PODS,
    RESOURCES,
    ROLE_BINDINGS,
)
from provisioner.models.resources import ExportRequest, FileVote, Vote, WorkspacePhase
from provisioner.models.settings import Settings
from provisioner.models.types import ClassificationTier
from provisioner.planning.admission import PROJECT_NAMESPACE_POLICY, PROJECT_OBJECTS_POLICY
from provisioner.planning.names import (
    LABEL_PROJECT,
    POLICY_DEFAULT_DENY,
    WORKSPACE_ACCESS_NAME,
    dataset_pvc_name,
    namespace_name,
    project_pvc_name,
)
from provisioner.planning.project import describe, plan_project
from tests.integration.test_airlock_trust import (
    CHECKERS,
    Airlock,
    access,
    file_as,
    release_record,
    stamp,
)
from tests.integration.test_exports import export_body, review
from tests.integration.test_exports import phase as export_phase
from tests.integration.workspace_world import (
    APPROVERS,
    World,
    create_pod_when_admitted,
    notebook_pod,
    unique,
)

pytestmark = pytest.mark.integration

BINDINGS = RESOURCES[("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicyBinding")]
LEASES = RESOURCES[("coordination.k8s.io/v1", "Lease")]
PVS = RESOURCES[("v1", "PersistentVolume")]
CLAIMS = RESOURCES[("v1", "PersistentVolumeClaim")]
SERVICE_ACCOUNTS = RESOURCES[("v1", "ServiceAccount")]


@pytest.fixture
def world(installed_platform: Settings, dev_platform: DevCluster, tmp_path: Path) -> World:
    return World(installed_platform, dev_platform.kubeconfig, tmp_path)


def as_(world: World, user: str, group: str | None = None) -> Kube:
    return Kube(api_client(world.kubeconfig, as_user=user, as_groups=(group,) if group else ()))


def refused(call: Callable[[], Any], *fragments: str) -> str:
    """`call` is refused by the API server; returns the message, which holds `fragments`."""
    with pytest.raises(RefusedError) as caught:
        call()
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message, message
    return message


def append_decision(world: World, user: str, name: str, entry: dict[str, Any]) -> None:
    """`user` (an approver) appends `entry` with the raw API, as `kubectl edit` would."""
    obj = world.request_object(name)
    obj["spec"]["decisions"] = [*obj["spec"].get("decisions", []), entry]
    as_(world, user, APPROVERS).replace(obj)


def honest_approval(world: World, by: str, name: str) -> dict[str, Any]:
    """An approval that pins each dataset's current manifest and tier, as `tre` writes it."""
    hashes, tiers = {}, {}
    for dataset in world.request_object(name)["spec"]["datasets"]:
        obj = world.admin.get(RESOURCES[("tre.ucloud.org/v1alpha1", "Dataset")], dataset)
        assert obj is not None
        hashes[dataset] = obj["status"]["manifest"]["sha256"]
        tiers[dataset] = obj["spec"]["classification"]
    return {
        "action": "approve",
        "by": by,
        "at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "manifestHashes": hashes,
        "classifications": tiers,
    }


def phase(world: World, name: str) -> tuple[str, str]:
    status = world.request_object(name).get("status") or {}
    reason = (status.get("conditions") or [{}])[0].get("reason", "")
    return status.get("phase", ""), reason


# --- 1. nobody approves their own access ----------------------------------------------------------


def test_a_member_of_the_request_cannot_approve_it(world: World) -> None:
    dataset = world.dataset()
    name, _ = world.submit(datasets=[dataset], members=["lea", "ann"])
    result = world.tre("request", "approve", name, user="ann", group=APPROVERS)
    assert result.exit_code == 4
    assert "you (ann) are a member of request" in result.output
    refused(
        lambda: append_decision(world, "ann", name, honest_approval(world, "ann", name)),
        "tre-accessrequest-decisions",
        "ann is the a member of this request and may not approve it",
    )
    assert world.request_object(name)["spec"].get("decisions", []) == []


def test_a_current_project_member_cannot_approve_an_amendment(world: World) -> None:
    dataset, other = world.dataset(), world.dataset()
    first, project = world.submit(datasets=[dataset], members=["lea", "ann"])
    world.approve(first, "bob")
    assert world.reconcile(project).phase is not None
    # lea amends her project with another dataset; ann, a member, may not approve it
    amendment, _ = world.submit(project=project, datasets=[other], members=["lea"])
    refused(
        lambda: append_decision(world, "ann", amendment, honest_approval(world, "ann", amendment)),
        "tre-accessrequest-approver-not-member",
        f"ann is a member of project {project} and may not approve access to it",
    )
    result = world.tre("request", "approve", amendment, user="ann", group=APPROVERS)
    assert result.exit_code == 4
    assert f"are a member of project {project}" in result.output


def test_an_extension_needs_as_many_approvers_as_the_tier(world: World) -> None:
    request, project, _ = world.approved_project("sensitive")
    world.reconcile(project)
    end = world.request_object(request)["status"]["effectiveEndDate"]
    later = (dt.date.fromisoformat(end) + dt.timedelta(days=30)).isoformat()
    world.tre("request", "extend", request, "--until", later, user="ann", group=APPROVERS)
    world.reconcile(project)
    assert world.request_object(request)["status"]["effectiveEndDate"] == end  # one is not enough
    ok = world.tre("request", "extend", request, "--until", later, user="bob", group=APPROVERS)
    assert ok.exit_code == 0, ok.output
    world.reconcile(project)
    assert world.request_object(request)["status"]["effectiveEndDate"] == later
    # a member may not extend their own access
    refused(
        lambda: append_decision(
            world,
            "ravi",
            request,
            {
                "action": "extend",
                "by": "ravi",
                "at": "2026-01-01T00:00:00Z",
                "endDate": "2027-06-01",
            },
        ),
        "ravi is ",
        "may not extend",
    )


# --- 2. a project is owned ----------------------------------------------------------------------


def test_someone_elses_request_for_an_owned_project_is_refused_where_filed(world: World) -> None:
    _, project, _ = world.approved_project()
    world.reconcile(project)
    ws = world.workspace(project)
    assert ws is not None and ws["spec"]["owner"] == "lea"
    public = world.dataset("public")
    path = world.request_file(
        project=project, lead="mallory", members=["mallory"], datasets=[public]
    )
    before = world.access_request_names()
    result = world.tre("request", "submit", "-f", str(path), user="mallory")
    assert result.exit_code == 4
    # the API server's words: tre cannot read a workspace that is not mallory's (F20)
    assert f"project {project} belongs to lea" in result.output
    # kubectl does no better
    body = {
        "apiVersion": "tre.ucloud.org/v1alpha1",
        "kind": "AccessRequest",
        "metadata": {"name": unique("sneak")},
        "spec": {
            "project": project,
            "requester": "mallory",
            "lead": "mallory",
            "members": ["mallory"],
            "datasets": [public],
            "purpose": "joining someone else's project",
            "startDate": dt.date.today().isoformat(),
            "endDate": (dt.date.today() + dt.timedelta(days=30)).isoformat(),
        },
    }
    refused(
        lambda: as_(world, "mallory").create(body),
        "tre-accessrequest-project-owner",
        f"project {project} belongs to lea, and only its owner may file further requests",
    )
    assert world.access_request_names() == before


def test_a_rival_request_filed_before_the_owner_existed_is_never_merged(world: World) -> None:
    dataset, public = world.dataset(), world.dataset("public")
    lenas, project = world.submit(datasets=[dataset])
    rival, _ = world.submit(
        by="mallory", project=project, lead="mallory", members=["mallory"], datasets=[public]
    )
    world.approve(lenas, "ann")
    world.approve(rival, "bob")  # approved second
    world.reconcile(project)
    assert phase(world, lenas) == ("Approved", "Approved")
    assert phase(world, rival) == ("Pending", "NotProjectOwner")
    ws = world.workspace(project)
    assert ws is not None
    assert ws["spec"]["owner"] == "lea"
    assert "mallory" not in ws["spec"]["members"]
    assert [d["name"] for d in ws["spec"]["datasets"]] == [dataset]


def test_an_amendment_is_judged_over_the_whole_workspace(world: World) -> None:
    sensitive, public = world.dataset("sensitive"), world.dataset("public")
    first, project = world.submit(datasets=[sensitive])
    world.approve(first, "ann", "bob")
    world.reconcile(project)
    amendment, _ = world.submit(project=project, datasets=[public], members=["lea", "nina"])
    shown = world.tre_json("request", "show", amendment, user="carl", group=APPROVERS)
    assert shown["resultingMembers"] == ["lea", "nina", "ravi"]
    assert shown["resultingDatasets"] == sorted([public, sensitive])
    world.approve(amendment, "carl")
    world.reconcile(project)
    # a public dataset, but the project holds sensitive data: two approvers
    assert phase(world, amendment) == ("Pending", "AwaitingApproval")
    assert "nina" not in (world.workspace(project) or {})["spec"]["members"]
    world.approve(amendment, "dave")
    world.reconcile(project)
    assert phase(world, amendment)[0] == "Approved"
    assert "nina" in (world.workspace(project) or {})["spec"]["members"]


@pytest.mark.parametrize("slug", ["system", "hub", "airlock"])
def test_platform_namespaces_cannot_be_requested(world: World, slug: str) -> None:
    dataset = world.dataset()
    path = world.request_file(project=slug, datasets=[dataset])
    result = world.tre("request", "submit", "-f", str(path), user="lea")
    assert result.exit_code == 4
    assert f"would use the platform namespace tre-{slug}" in result.output


# --- 3. data is exactly what was approved ---------------------------------------------------------


def test_an_approval_must_pin_the_current_content(world: World) -> None:
    dataset = world.dataset()
    name, _ = world.submit(datasets=[dataset])
    stale = honest_approval(world, "ann", name)
    stale["manifestHashes"] = {dataset: "0" * 64}
    refused(
        lambda: append_decision(world, "ann", name, stale),
        "tre-accessrequest-approval-pins",
        f"the approval must pin the current manifest of dataset {dataset}",
    )
    lowered = honest_approval(world, "ann", name)
    lowered["classifications"] = {dataset: "public"}
    refused(
        lambda: append_decision(world, "ann", name, lowered),
        f"the approval must record the current tier of dataset {dataset}",
    )


def test_changed_two_approver_data_needs_two_approvals_of_the_new_content(world: World) -> None:
    request, project, dataset = world.approved_project("sensitive")
    world.reconcile(project)
    world.s3.put_object(Bucket=world.bucket, Key=f"{dataset}/part-0.csv", Body=b"a,b\n6,6\n")
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=world.settings.dataset_verify_seconds)
    world.verify_datasets(later)
    world.reconcile(project)
    assert (world.workspace(project) or {})["spec"].get("datasets", []) == []
    world.approve(request, "ann")  # ann re-approves the new content: one of two
    world.reconcile(project)
    assert (world.workspace(project) or {})["spec"].get("datasets", []) == []
    world.approve(request, "bob")
    world.reconcile(project)
    mounted = (world.workspace(project) or {})["spec"]["datasets"]
    assert [d["name"] for d in mounted] == [dataset]


# --- 4. losing access takes effect at once -------------------------------------------------------


def test_a_revoked_member_loses_their_running_notebook_in_the_same_pass(world: World) -> None:
    dataset, extra = world.dataset(), world.dataset()
    first, project = world.submit(datasets=[dataset])
    world.approve(first, "ann")
    world.reconcile(project)
    second, _ = world.submit(project=project, datasets=[extra], members=["nina"])
    world.approve(second, "bob")
    world.reconcile(project)
    ns = namespace_name(project)
    stays = notebook_pod(ns, "lea", [dataset_pvc_name(dataset), project_pvc_name()])
    goes = notebook_pod(ns, "nina", [dataset_pvc_name(extra), project_pvc_name()])
    create_pod_when_admitted(world.hub, stays)
    create_pod_when_admitted(world.hub, goes)
    ok = world.tre("request", "revoke", second, "-m", "left the team", user="carl", group=APPROVERS)
    assert ok.exit_code == 0, ok.output
    result = world.reconcile(project)
    assert result.phase is not None and result.phase.value == "Ready"
    assert result.stopped == ["jupyter-nina: nina is no longer a member"]
    assert world.admin.get(PODS, "jupyter-lea", ns) is not None
    gone = world.admin.get(PODS, "jupyter-nina", ns)
    assert gone is None or gone["metadata"].get("deletionTimestamp")


def test_pods_only_from_the_hub_for_members_with_the_projects_claims(world: World) -> None:
    _, project, dataset = world.approved_project()
    world.reconcile(project)
    ns = namespace_name(project)
    claims = [dataset_pvc_name(dataset), project_pvc_name()]
    create_pod_when_admitted(world.hub, notebook_pod(ns, "lea", claims), dry_run=True)
    refused(
        lambda: world.admin.create(notebook_pod(ns, "lea", claims), dry_run=True),
        "tre-admin may not start pods in project namespace",
    )
    refused(
        lambda: world.hub.create(notebook_pod(ns, "mallory", claims), dry_run=True),
        "the pod must belong to a member of the workspace",
    )
    refused(
        lambda: world.hub.create(notebook_pod(ns, "lea", ["someone-elses-claim"]), dry_run=True),
        "spec.volumes: only the workspace claims",
    )
    refused(
        lambda: world.hub.create(notebook_pod(ns, "lea", claims, read_only=False), dry_run=True),
        "dataset claims read-only",
    )


def test_no_pod_starts_in_a_frozen_workspace_whatever_rbac_says(world: World) -> None:
    request, project, _ = world.approved_project()
    world.reconcile(project)
    world.tre("request", "revoke", request, "-m", "stop", user="carl", group=APPROVERS)
    world.reconcile(project)
    ns = namespace_name(project)
    access = world.admin.get(CONFIG_MAPS, WORKSPACE_ACCESS_NAME, ns)
    assert access is not None and access["data"]["phase"] == "Frozen"
    hub_as_admin = world.admin  # RBAC no object to it; admission still refuses
    deadline = time.monotonic() + 10
    while True:
        try:
            message = refused(lambda: hub_as_admin.create(notebook_pod(ns, "lea"), dry_run=True))
        except AssertionError:
            raise
        if "is Frozen" in message or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert "project namespace " + ns in message


def test_nobody_execs_into_a_notebook(world: World) -> None:
    _, project, _ = world.approved_project()
    world.reconcile(project)
    ns = namespace_name(project)
    create_pod_when_admitted(world.hub, notebook_pod(ns, "lea"))
    refused(
        lambda: world.admin.request(
            "POST",
            PODS.path(ns, "jupyter-lea") + "/exec",
            query=[("command", "cat"), ("stdout", "true")],
        ),
        "tre-pod-no-exec",
    )


def test_a_full_decision_list_still_takes_a_revoke(world: World) -> None:
    request, project, _ = world.approved_project()
    world.reconcile(project)
    end = dt.date.fromisoformat(world.request_object(request)["spec"]["endDate"])
    filled = len(world.request_object(request)["spec"]["decisions"])
    for i in range(filled, 60):
        append_decision(
            world,
            "ann",
            request,
            {
                "action": "extend",
                "by": "ann",
                "at": "2026-01-01T00:00:00Z",
                "endDate": (end + dt.timedelta(days=1 + i % 5)).isoformat(),
            },
        )
    refused(
        lambda: append_decision(
            world,
            "bob",
            request,
            {
                "action": "extend",
                "by": "bob",
                "at": "2026-01-01T00:00:00Z",
                "endDate": str(end + dt.timedelta(days=9)),
            },
        ),
        "at most 60 decisions other than a revoke",
    )
    ok = world.tre("request", "revoke", request, "-m", "flooded", user="carl", group=APPROVERS)
    assert ok.exit_code == 0, ok.output
    assert world.reconcile(project).phase is not None
    assert phase(world, request)[0] == "Revoked"


# --- 4b. people keep only the powers they still have (review 3, S8, S9, S19) ---------------------


@pytest.fixture
def airlock(installed_platform: Settings, dev_platform: DevCluster) -> Airlock:
    return Airlock(airlock_kubeconfig(dev_platform, installed_platform))


def desk_of(world: World, airlock: Airlock) -> Desk:
    """The airlock's own rules, with its own credential and buckets, as the service runs
    them."""
    ensure_airlock_buckets(world.s3, world.settings)
    return Desk(airlock.itself, world.s3, world.settings)


def export_of(world: World, project: str, name: str) -> ExportRequest:
    obj = world.admin.get(EXPORT_REQUESTS, name, namespace_name(project))
    assert obj is not None
    return ExportRequest.from_object(obj)


def access_data(world: World, project: str) -> dict[str, str]:
    obj = world.admin.get(CONFIG_MAPS, WORKSPACE_ACCESS_NAME, namespace_name(project))
    assert obj is not None
    return dict(obj["data"])


def admission_sees(refusal: Callable[[], Any], what: str) -> None:
    """Wait until the API server's parameter cache holds the access objects the controller
    just wrote: `refusal` (a dry run that only the new objects refuse) is refused once it
    does."""
    _until(lambda: not _allowed(refusal), what)


def dry_review(airlock: Airlock, project: str, name: str, checker: str) -> None:
    """`checker`'s review through the airlock, as a dry run (nothing is stored)."""
    namespace = namespace_name(project)
    obj = airlock.itself.get(EXPORT_REQUESTS, name, namespace)
    assert obj is not None
    obj["spec"]["reviews"] = [*obj["spec"].get("reviews", []), review(checker)]
    airlock.as_(checker, CHECKERS).request(
        "PUT", EXPORT_REQUESTS.path(namespace, name), query=[("dryRun", "All")], body=obj
    )


def dry_status(airlock: Airlock, project: str, name: str, status: dict[str, Any]) -> None:
    """The airlock's merge patch of an export's status, as a dry run."""
    airlock.itself.request(
        "PATCH",
        EXPORT_REQUESTS.path(namespace_name(project), name) + "/status",
        query=[("dryRun", "All")],
        body={"status": status},
        content_type="application/merge-patch+json",
    )


def test_a_former_member_never_reviews_the_projects_exports(world: World, airlock: Airlock) -> None:
    """S8: olga, an output checker, leaves the project; then it is frozen. She never reviews
    its exports, nobody reviews while it is Frozen, and the floor its data asked (3) holds."""
    strict = world.settings.model_copy(
        update={
            "export_reviewers_by_tier": {
                **world.settings.export_reviewers_by_tier,
                ClassificationTier.SENSITIVE: 3,
            }
        }
    )
    sensitive = world.dataset("sensitive")
    first, project = world.submit(datasets=[sensitive])
    world.approve(first, "ann", "bob")
    joins, _ = world.submit(project=project, datasets=[sensitive], members=["lea", "olga"])
    world.approve(joins, "carl", "dave")
    world.reconcile(project, settings=strict)
    assert "olga" in (world.workspace(project) or {})["spec"]["members"]
    name = file_as(airlock.as_("ravi"), export_body(project, author="ravi"))
    # olga leaves; the workspace stays Ready for lea and ravi
    ok = world.tre("request", "revoke", joins, "-m", "left", user="carl", group=APPROVERS)
    assert ok.exit_code == 0, ok.output
    world.reconcile(project, settings=strict)
    ws = world.workspace(project) or {}
    assert ws["spec"]["members"] == ["lea", "ravi"]
    assert ws["spec"]["people"] == ["lea", "olga", "ravi"]
    refused(
        lambda: airlock.add_review(project, name, review("olga"), "olga"),
        "tre-exportrequest-reviews",
        "olga is the author or has been a member, lead or owner of project",
    )
    olga = Person("olga", frozenset({world.settings.output_checker_group}))
    votes = [
        FileVote(path=f.path, vote=Vote.APPROVE) for f in export_of(world, project, name).spec.files
    ]
    refused(
        lambda: desk_of(world, airlock).review(olga, export_of(world, project, name), votes),
        "olga may not review export request",
    )
    assert not desk_of(world, airlock).readable(olga, namespace_name(project), name).may_view_files
    refused(
        lambda: airlock.write_status(project, name, {"access": [access("olga")]}),
        f"status.access: olga has been a member, lead or owner of project {project} and may "
        "not view its quarantined files",
    )
    # two independent checkers are not enough for sensitive data here
    for checker in ("piet", "quinn"):
        airlock.add_review(project, name, review(checker), checker)
    world.reconcile(project, settings=strict)
    assert export_phase(world, project, name) == "Submitted"
    # the project is frozen: its people and its floor stay
    ok = world.tre("request", "revoke", first, "-m", "study over", user="carl", group=APPROVERS)
    assert ok.exit_code == 0, ok.output
    assert world.reconcile(project, settings=strict).phase is WorkspacePhase.FROZEN
    data = access_data(world, project)
    assert (data["phase"], data["members"], data["people"], data["exportReviewers"]) == (
        "Frozen",
        "",
        "lea,olga,ravi",
        "3",
    )
    admission_sees(lambda: dry_review(airlock, project, name, "rolf"), "the freeze")
    refused(
        lambda: airlock.add_review(project, name, review("olga"), "olga"),
        "olga is the author or has been a member, lead or owner of project",
    )
    refused(
        lambda: airlock.add_review(project, name, review("rolf"), "rolf"),
        f"the workspace of project {project} is Frozen; its exports are reviewed only while "
        "it is Ready",
    )
    world.reconcile(project, settings=strict)
    assert export_phase(world, project, name) == "Submitted"  # not 2 of 2
    refused(
        lambda: world.controller.patch_status(
            EXPORT_REQUESTS, name, {"phase": "Approved"}, namespace_name(project)
        ),
        "status.phase: Approved needs 3 independent output checkers",
    )


def test_a_revoked_lead_cannot_release_or_download(world: World, airlock: Airlock) -> None:
    """S9: lea founded the project and her own access is revoked; ravi's goes on through her
    amendment. She keeps the project's name, none of the lead's powers."""
    dataset = world.dataset()
    first, project = world.submit(datasets=[dataset])
    world.approve(first, "ann")
    world.reconcile(project)
    goes_on, _ = world.submit(project=project, datasets=[dataset], lead="ravi", members=["ravi"])
    world.approve(goes_on, "bob")
    waiting, _ = world.submit(
        project=project, datasets=[dataset], lead="ravi", members=["ravi", "nina"]
    )
    world.reconcile(project)
    released = file_as(airlock.as_("ravi"), export_body(project, author="ravi"))
    approved = file_as(airlock.as_("ravi"), export_body(project, author="ravi"))
    for name in (released, approved):
        for checker in ("olga", "piet"):
            airlock.add_review(project, name, review(checker), checker)
    world.reconcile(project)
    assert export_phase(world, project, approved) == "Approved"
    # while lea leads, the API server takes her release and her download
    airlock.write_status(project, released, {"phase": "Released", "release": release_record()})
    downloaded = [access("lea", action="download")]
    airlock.write_status(project, released, {"access": downloaded})
    assert access_data(world, project)["lead"] == "lea"
    ok = world.tre("request", "revoke", first, "-m", "misconduct", user="carl", group=APPROVERS)
    assert ok.exit_code == 0, ok.output
    assert world.reconcile(project).phase is WorkspacePhase.READY
    ws = world.workspace(project) or {}
    assert (ws["spec"]["owner"], ws["spec"]["members"]) == ("lea", ["ravi"])
    assert access_data(world, project)["lead"] == ""
    admission_sees(
        lambda: dry_status(
            airlock, project, approved, {"phase": "Released", "release": release_record()}
        ),
        "lea's revocation",
    )
    # the airlock refuses her
    desk, lea = desk_of(world, airlock), Person("lea")
    refused(
        lambda: desk.release(lea, export_of(world, project, approved)),
        "lea may not release export request",
        "while a member of its Ready workspace",
    )
    refused(
        lambda: desk.download(lea, export_of(world, project, released), "out/table.csv"),
        "lea may not download from export request",
    )
    refused(
        lambda: desk.revoke(lea, export_of(world, project, released), "I changed my mind"),
        "lea may not revoke export request",
    )
    view = desk.readable(lea, namespace_name(project), released)
    assert not (view.may_download or view.may_revoke)
    # and so does the API server, whatever the airlock wrote
    refused(
        lambda: airlock.write_status(
            project, approved, {"phase": "Released", "release": release_record()}
        ),
        "status.release.by: only the lead of the project releases",
    )
    refused(
        lambda: airlock.write_status(
            project, released, {"access": [*downloaded, access("lea", action="download")]}
        ),
        "status.access: only the lead of the project downloads",
    )
    refused(
        lambda: airlock.write_status(
            project,
            released,
            {
                "phase": "Revoked",
                "revocation": {"by": "lea", "at": stamp(), "reason": "my own results"},
            },
        ),
        "status.revocation.by: lea has been a member, lead or owner of project",
    )
    # an output checker from outside the project still revokes
    revocation = {"by": "olga", "at": stamp(), "reason": "a cell holds 3 patients"}
    airlock.write_status(project, released, {"phase": "Revoked", "revocation": revocation})
    # no amendment: neither filed by her, nor her earlier one approved
    path = world.request_file(project=project, datasets=[dataset], members=["lea", "ravi"])
    result = world.tre("request", "submit", "-f", str(path), user="lea")
    assert result.exit_code == 4
    assert f"you own project {project!r} but are not a current member" in result.output
    sneak = {
        "apiVersion": "tre.ucloud.org/v1alpha1",
        "kind": "AccessRequest",
        "metadata": {"name": unique("again")},
        "spec": {
            "project": project,
            "requester": "lea",
            "lead": "lea",
            "members": ["lea"],
            "datasets": [dataset],
            "purpose": "carrying on without access",
            "startDate": dt.date.today().isoformat(),
            "endDate": (dt.date.today() + dt.timedelta(days=30)).isoformat(),
        },
    }
    admission_sees(lambda: as_(world, "lea").create(sneak, dry_run=True), "lea's workspace")
    refused(
        lambda: as_(world, "lea").create(sneak, dry_run=True),
        "tre-accessrequest-project-owner",
        f"lea owns project {project} but is not a current member of its workspace",
    )
    refused(
        lambda: append_decision(world, "dave", waiting, honest_approval(world, "dave", waiting)),
        "tre-accessrequest-amendment-owner-acts",
        f"amends project {project}, whose owner lea is not a current member of its workspace",
    )


def test_a_later_members_earlier_approval_stops_counting(world: World) -> None:
    """S19: ann approved lea's sensitive data, then joined the project through an amendment
    that others approved: her approval no longer counts, and the data is withheld until
    another independent approver approves."""
    sensitive, public = world.dataset("sensitive"), world.dataset("public")
    first, project = world.submit(datasets=[sensitive])
    world.approve(first, "ann", "bob")
    world.reconcile(project)
    joins, _ = world.submit(project=project, datasets=[public], members=["lea", "ann"])
    world.approve(joins, "carl", "dave")
    world.reconcile(project)
    assert phase(world, first) == ("Pending", "AwaitingApproval")
    assert world.request_object(first)["status"]["approvers"] == ["bob"]
    ws = world.workspace(project) or {}
    assert "ann" in ws["spec"]["members"]
    assert [d["name"] for d in ws["spec"]["datasets"]] == [public]
    # ann may not approve it again (she did, and she is a member now); another approver may
    refused(
        lambda: append_decision(world, "ann", first, honest_approval(world, "ann", first)),
        "spec.decisions: ann ",
    )
    world.approve(first, "erin")
    world.reconcile(project)
    assert phase(world, first) == ("Approved", "Approved")
    mounted = (world.workspace(project) or {})["spec"]["datasets"]
    assert sorted(d["name"] for d in mounted) == sorted([public, sensitive])
    plan = plan_project(
        world.settings, project, read_snapshot(world.controller), dt.datetime.now(dt.UTC)
    )
    assert plan.request_statuses == [] and plan.workspace_apply is None  # a second pass: nothing


# --- 5. project namespaces belong to the controller ----------------------------------------------


@contextmanager
def suspended(world: World, policy: str, probe: Callable[[], Any]) -> Iterator[None]:
    """Lift one policy binding for a moment, to create what predates the policies (a cluster
    that had objects before the platform was installed). Only for policies without a
    built-in parameter kind (kubernetes#130887)."""
    binding = world.admin.get(BINDINGS, policy)
    assert binding is not None
    world.admin.delete(BINDINGS, policy)
    try:
        _until(lambda: _allowed(probe), f"{policy} lifted")
        yield
    finally:
        restored = {k: v for k, v in binding.items() if k != "status"}
        restored["metadata"] = {"name": policy, "labels": binding["metadata"].get("labels", {})}
        world.admin.create(restored)
        _until(lambda: not _allowed(probe), f"{policy} enforced again")


def _allowed(call: Callable[[], Any]) -> bool:
    try:
        call()
    except RefusedError:
        return False
    except ConflictError:
        return True  # admission let it through; the object merely exists already
    return True


def _until(check: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"not {what} within {timeout:.0f}s")
        time.sleep(0.2)


def _namespace(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, **({"labels": labels} if labels else {})},
    }


def _allow_all_egress(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "allow-all-egress", "namespace": namespace},
        "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]},
    }


def test_nobody_but_the_controller_makes_or_relabels_project_namespaces(world: World) -> None:
    slug = unique("squat")
    refused(
        lambda: world.admin.create(_namespace(namespace_name(slug)), dry_run=True),
        "tre-project-namespaces",
        "project namespaces (label tre.ucloud.org/project or prefix tre-) are created, "
        "changed and deleted by the controller only",
    )
    refused(
        lambda: world.admin.create(_namespace(f"team-{slug}", {LABEL_PROJECT: slug}), dry_run=True),
        "tre-project-namespaces",
    )
    _, project, _ = world.approved_project()
    world.reconcile(project)
    live = world.admin.get(NAMESPACES, namespace_name(project))
    assert live is not None
    del live["metadata"]["labels"][LABEL_PROJECT]  # out from under the project policies
    refused(lambda: world.admin.replace(live), "tre-project-namespaces")


def test_a_squatters_namespace_is_never_adopted(world: World) -> None:
    dataset = world.dataset()
    name, project = world.submit(datasets=[dataset])
    ns = namespace_name(project)
    probe = lambda: world.admin.create(_namespace(unique("tre-probe")), dry_run=True)  # noqa: E731
    with suspended(world, PROJECT_NAMESPACE_POLICY, probe):
        world.admin.create(_namespace(ns))
        world.admin.create(_allow_all_egress(ns))
    world.approve(name, "ann")
    result = world.reconcile(project)
    assert result.conflict is not None and "already existed" in result.conflict
    ws = world.workspace(project)
    assert ws is not None and ws["status"]["phase"] == "Provisioning"
    ready = next(c for c in ws["status"]["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "NamespaceConflict")
    # nothing written there: no deny-all, no claims, no hub access; the squatter's policy stays
    assert (
        world.admin.list(CONFIG_MAPS, namespace=ns, selector="app.kubernetes.io/managed-by") == []
    )
    assert world.admin.list(ROLE_BINDINGS, namespace=ns) == []
    assert [p["metadata"]["name"] for p in world.admin.list(NETWORK_POLICIES, namespace=ns)] == [
        "allow-all-egress"
    ]


def test_a_networkpolicy_that_predates_the_policies_is_removed_and_audited(world: World) -> None:
    _, project, _ = world.approved_project()
    world.reconcile(project)
    ns = namespace_name(project)
    refused(
        lambda: world.admin.create(_allow_all_egress(ns), dry_run=True),
        "tre-project-objects-controller-only",
        f"tre-admin may not create networkpolicies in project namespace {ns}",
    )
    probe = lambda: world.admin.create(_allow_all_egress(ns), dry_run=True)  # noqa: E731
    with suspended(world, PROJECT_OBJECTS_POLICY, probe):
        world.admin.create(_allow_all_egress(ns))
    result = world.reconcile(project)
    assert "NetworkPolicy/allow-all-egress" in result.pruned
    assert world.admin.get(NETWORK_POLICIES, "allow-all-egress", ns) is None
    removed = [
        e
        for e in world.audit.read_all()
        if e.action == "workspace.foreign-object-removed" and e.subject == f"workspace/{project}"
    ]
    assert [e.details["name"] for e in removed] == ["allow-all-egress"]


def test_only_the_clusters_own_controllers_write_there_and_only_what_they_need(
    world: World,
) -> None:
    """The review's reproduction: the garbage collector, whose ClusterRole may patch anything,
    may not open the deny-all policy; an add-on's kube-system ServiceAccount, even bound to
    cluster-admin, writes no NetworkPolicy or RoleBinding there. The cluster's own writes still
    land: the default ServiceAccount, the root CA ConfigMap, the dataset claim's binding."""
    _, project, dataset = world.approved_project()
    world.reconcile(project)
    ns = namespace_name(project)
    collector = as_(world, "system:serviceaccount:kube-system:generic-garbage-collector")
    deny_all = world.admin.get(NETWORK_POLICIES, POLICY_DEFAULT_DENY, ns)
    assert deny_all is not None
    opened = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": POLICY_DEFAULT_DENY, "namespace": ns},
        "spec": {**deny_all["spec"], "egress": [{}]},
    }
    refused(
        lambda: collector.apply(opened, dry_run=True),
        "tre-project-objects-controller-only",
        f"generic-garbage-collector may not update networkpolicies in project namespace {ns}",
    )
    addon = "system:serviceaccount:kube-system:tre-test-addon"
    grant = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "tre-test-addon"},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "cluster-admin",
        },
        "subjects": [
            {"kind": "ServiceAccount", "name": "tre-test-addon", "namespace": "kube-system"}
        ],
    }
    world.admin.apply(grant)
    try:
        as_addon = as_(world, addon)
        refused(
            lambda: as_addon.create(_allow_all_egress(ns), dry_run=True),
            f"tre-test-addon may not create networkpolicies in project namespace {ns}",
        )
        binding = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "addon-admin", "namespace": ns},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "admin",
            },
            "subjects": [
                {"kind": "User", "name": "mallory", "apiGroup": "rbac.authorization.k8s.io"}
            ],
        }
        refused(
            lambda: as_addon.create(binding, dry_run=True),
            f"tre-test-addon may not create rolebindings in project namespace {ns}",
        )
        refused(
            lambda: as_addon.delete(NETWORK_POLICIES, POLICY_DEFAULT_DENY, ns),
            f"tre-test-addon may not delete networkpolicies in project namespace {ns}",
        )
    finally:
        world.admin.delete(CLUSTER_ROLE_BINDINGS, "tre-test-addon")
    _until(
        lambda: (
            world.admin.get(SERVICE_ACCOUNTS, "default", ns) is not None
            and world.admin.get(CONFIG_MAPS, "kube-root-ca.crt", ns) is not None
        ),
        "the default ServiceAccount and kube-root-ca.crt",
    )
    _until(
        lambda: (
            (world.admin.get(CLAIMS, dataset_pvc_name(dataset), ns) or {})
            .get("status", {})
            .get("phase")
            == "Bound"
        ),
        "the dataset claim bound by the persistent-volume-binder",
    )


def _platform_pod(namespace: str, labels: dict[str, str], account: str) -> dict[str, Any]:
    """A pod that passes Pod Security restricted, as the platform namespaces enforce."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": unique("peer"), "namespace": namespace, "labels": labels},
        "spec": {
            "serviceAccountName": account,
            "automountServiceAccountToken": False,
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [
                {
                    "name": "c",
                    "image": "registry.invalid/none:1",
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
        },
    }


def test_only_the_platforms_accounts_wear_the_labels_the_project_policies_trust(
    world: World,
) -> None:
    """F18: the project NetworkPolicies admit the hub, proxy, airlock and resolver by pod
    labels in their namespaces; a pod there wearing one of them with another account is
    refused, whoever creates it (the admin too); the platform's own account is admitted."""
    settings = world.settings
    hub_ns = settings.hub_namespace
    impostor = _platform_pod(hub_ns, {"component": "hub"}, "default")
    _until(
        lambda: not _allowed(lambda: world.admin.create(impostor, dry_run=True)),
        "tre-platform-peer-pods active",
    )
    refused(
        lambda: world.admin.create(impostor, dry_run=True),
        "tre-platform-peer-pods",
        f"label component=hub in namespace {hub_ns} makes a pod the hub in the NetworkPolicies "
        f"of every project: only a pod run by ServiceAccount {settings.hub_service_account} "
        "may wear it, not default",
    )
    airlock_ns, airlock_account = settings.airlock_namespace, "tre-airlock"
    for namespace, labels, wrong, right in (
        (hub_ns, {"component": "proxy"}, settings.hub_service_account, "tre-proxy"),
        (airlock_ns, {"app.kubernetes.io/name": "tre-airlock"}, "default", airlock_account),
        (settings.dns_namespace, {"app.kubernetes.io/name": "tre-dns"}, "default", "tre-dns"),
    ):
        pretender = _platform_pod(namespace, labels, wrong)
        refused(
            partial(world.admin.create, pretender, dry_run=True),
            "tre-platform-peer-pods",
            f"not {wrong}",
        )
        world.admin.create(_platform_pod(namespace, labels, right), dry_run=True)
    world.admin.create(
        _platform_pod(hub_ns, {"component": "hub"}, settings.hub_service_account), dry_run=True
    )
    # without a peer label any account may run there (the policy judges the labels only)
    world.admin.create(_platform_pod(hub_ns, {"app": "other"}, "default"), dry_run=True)


def test_the_controllers_credential_cannot_write_outside_project_namespaces(world: World) -> None:
    controller = world.controller
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "escalate", "namespace": "kube-system"},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "tre-hub-spawner",
        },
        "subjects": [{"kind": "User", "name": "mallory", "apiGroup": "rbac.authorization.k8s.io"}],
    }
    refused(
        lambda: controller.create(binding, dry_run=True),
        "the controller may not create rolebindings in namespace kube-system",
    )
    refused(
        lambda: controller.create(_allow_all_egress("default"), dry_run=True),
        "it writes only in project namespaces",
    )
    refused(
        lambda: controller.create(_namespace("anything-else"), dry_run=True),
        "the controller may not create namespace anything-else",
    )
    stray_pv = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": "grab-a-bucket"},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadOnlyMany"],
            "csi": {"driver": "s3.csi.aws.com", "volumeHandle": "x"},
        },
    }
    refused(lambda: controller.create(stray_pv, dry_run=True), "PersistentVolume grab-a-bucket")
    # A dataset PV in every other respect, but naming a Secret: k8s-csi-s3 would mount with the
    # keys in it, so the controller may name none but the platform's endpoint Secret.
    driver = world.settings.dataset_csi_driver.value
    for ref in ("nodePublishSecretRef", "nodeStageSecretRef"):
        borrowed_keys = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": "tre-someproject--borrowed-keys"},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadOnlyMany"],
                "claimRef": {"namespace": "tre-someproject", "name": "ds-x"},
                "csi": {
                    "driver": driver,
                    "volumeHandle": "bucket",
                    ref: {"name": "aws-admin", "namespace": "kube-system"},
                },
            },
        }
        refused(
            partial(controller.create, borrowed_keys, dry_run=True),
            "CSI driver (naming no Secret but tre-system/tre-dataset-s3)",
        )
    lease = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "kube-scheduler", "namespace": "kube-system"},
        "spec": {},
    }
    with pytest.raises(RefusedError):  # RBAC: its Lease lives in its own namespace only
        controller.create(lease, dry_run=True)


# --- 6. every decision is audited, whatever client made it ----------------------------------------


def test_a_decision_made_with_the_raw_api_is_audited_by_the_controller(world: World) -> None:
    dataset = world.dataset()
    name, project = world.submit(datasets=[dataset])
    append_decision(world, "ann", name, honest_approval(world, "ann", name))
    world.reconcile(project)
    uid = world.request_object(name)["metadata"]["uid"]
    entries = [e for e in world.audit.read_all() if e.key == f"decision/{uid}/0"]
    assert [(e.actor, e.action) for e in entries] == [("ann", "request.approve")]
    world.reconcile(project)  # written once
    assert len([e for e in world.audit.read_all() if e.key == f"decision/{uid}/0"]) == 1


def test_every_notebook_start_and_stop_reaches_the_audit_log(world: World) -> None:
    """Whoever's client made or removed the pod, the controller logs the start (user,
    datasets mounted with the manifests they pin) and the stop, once each."""
    _, project, dataset = world.approved_project()
    world.reconcile(project)
    ns = namespace_name(project)
    pod = create_pod_when_admitted(
        world.hub, notebook_pod(ns, "lea", [dataset_pvc_name(dataset), project_pvc_name()])
    )
    uid = pod["metadata"]["uid"]
    world.reconcile(project)
    pinned = {d["name"]: d["manifestSha256"] for d in world.workspace(project)["spec"]["datasets"]}
    started = [e for e in world.audit.read_all() if e.key == f"notebook/{project}/{uid}/started"]
    assert [(e.action, e.details["user"], e.details["datasets"]) for e in started] == [
        ("notebook.started", "lea", {dataset: pinned[dataset]})
    ]
    assert world.workspace(project)["status"]["notebooks"] == [
        {"pod": "jupyter-lea", "uid": uid, "user": "lea"}
    ]
    world.hub.delete(PODS, "jupyter-lea", ns)  # the hub stops the server
    world.reconcile(project)
    world.reconcile(project)
    entries = [e for e in world.audit.read_all() if e.key.startswith(f"notebook/{project}/")]
    assert [(e.action, e.details["user"]) for e in entries] == [
        ("notebook.started", "lea"),
        ("notebook.stopped", "lea"),
    ]
    assert world.workspace(project)["status"]["notebooks"] == []


# --- 8. one plan, executed ----------------------------------------------------------------------


def test_the_plan_is_exactly_what_the_next_pass_writes(world: World) -> None:
    dataset = world.dataset()
    name, project = world.submit(datasets=[dataset])
    world.approve(name, "ann")
    snapshot = read_snapshot(world.controller)
    planned = plan_project(
        world.settings, project, snapshot, dt.datetime.now(dt.UTC), world.keyed_audit.known()
    )
    rows = describe(planned)
    shown = world.tre_json("workspace", "plan", project)
    assert [(r["change"], r["object"]) for r in shown] == [(r["change"], r["object"]) for r in rows]
    result = world.reconcile(project)
    written = [r["object"] for r in rows if r["change"] in ("create", "update", "replace")]
    assert result.applied == written
    assert result.status_writes == sum(1 for r in rows if r["change"] == "status")
    assert result.audited == sum(1 for r in rows if r["change"] == "audit") + 1  # + new grants
    again = plan_project(
        world.settings,
        project,
        read_snapshot(world.controller),
        dt.datetime.now(dt.UTC),
        world.keyed_audit.known(),
    )
    assert describe(again) == []


def test_no_pod_anywhere_mounts_an_nfs_export_directly(world: World, namespace: str) -> None:
    """A team namespace with a looser Pod Security level cannot mount a dataset's export by
    its server and path, bypassing the approvals (the project namespaces are `restricted`)."""
    pod = notebook_pod(namespace, "mallory")
    pod["spec"]["volumes"] = [
        {"name": "cohort", "nfs": {"server": "nfs.hospital.example", "path": "/exports/cohort"}}
    ]
    refused(
        lambda: world.admin.create(pod, dry_run=True),
        "tre-no-inline-nfs",
        "spec.volumes: pods may not mount NFS exports directly (cohort)",
    )


def test_a_projects_own_snapshot_plans_like_the_whole_world(world: World) -> None:
    """The watch-driven path reads one project with a dozen requests; it must decide exactly
    what a full pass decides, foreign objects and pods included."""
    dataset, extra = world.dataset(), world.dataset()
    first, project = world.submit(datasets=[dataset])
    world.approve(first, "ann")
    world.reconcile(project)
    second, _ = world.submit(project=project, datasets=[extra], members=["nina"])
    world.approve(second, "bob")
    ns = namespace_name(project)
    create_pod_when_admitted(world.hub, notebook_pod(ns, "lea", [project_pvc_name()]))
    now = dt.datetime.now(dt.UTC)
    known = world.keyed_audit.known()
    whole = plan_project(world.settings, project, read_snapshot(world.controller), now, known)
    own = plan_project(
        world.settings, project, read_project_snapshot(world.controller, project), now, known
    )
    assert describe(own) == describe(whole)
    assert any(r["object"] == f"AccessRequest/{second}" for r in describe(own))
