"""The API server itself enforces who may write what (security invariant 5), via our policies.

Setup: the CRDs and `plan_admission_policies(SETTINGS)` on the real kube-apiserver. RBAC is
deliberately broad here (every authenticated user may create, read and update access requests
and write workspaces), so each refusal below comes from an admission policy, not from RBAC.
Users are impersonated: alice files requests and bob leads them; carol, dave and erin are in
the approver group; mallory is not. Every test asserts the status code and the message.

Behaviours under test:
- create: a request filed in someone else's name, one with decisions already in it, and one
  longer than max_request_days are refused; an honest one of exactly the maximum is accepted.
- decisions: a non-approver, the requester and the lead (even when they are approvers) cannot
  decide; `by` must be the caller; earlier decisions cannot be rewritten, removed or
  reordered; one decision per update; nobody approves twice; nothing is approved or extended
  after a reject or revoke; no second revoke; an extension must end after the current end
  date and within
  max_request_days of startDate; other spec fields cannot change.
- status phase Approved (written through the status subresource, even by the admin): refused
  without an approval and after a reject; for a dataset at or above two_approver_tier refused
  with one approver and accepted with two distinct ones; one approver suffices below it;
  decisions smuggled into the body of a status write do not count.
- a Dataset whose classification label differs from spec.classification is refused.
- only the controller identity writes Workspaces; the admin is refused.
- every policy type-checks cleanly against the CRD schemas.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from provisioner import API_GROUP, API_VERSION
from provisioner.kube.api import Kube
from provisioner.models.resources import Decision, DecisionAction
from provisioner.models.settings import Settings
from provisioner.models.types import ClassificationTier, DatasetCsiDriver
from provisioner.planning.admission import (
    APPROVED_PHASE_POLICY,
    CLASSIFICATION_LABEL,
    CONTROLLER_SCOPE_POLICY,
    CREATE_REQUEST_POLICY,
    DATASET_LABEL_POLICY,
    DECISIONS_POLICY,
    FOUR_EYES_POLICY,
    WORKSPACE_POLICY,
    guards_custom_resources,
    plan_admission_policies,
)

pytestmark = pytest.mark.integration

APPROVERS = "tre:approvers"
CONTROLLER = "system:serviceaccount:tre-system:tre-controller"
SETTINGS = Settings(
    approver_group=APPROVERS,
    two_approver_tier=ClassificationTier.CONFIDENTIAL,
    max_request_days=365,
    controller_user=CONTROLLER,
)
FIELD_MANAGER = "tre-tests"
RBAC_NAME = "tre-test-admission"

Api = client.CustomObjectsApi
REQUESTS = (API_GROUP, API_VERSION, "accessrequests")
WORKSPACES = (API_GROUP, API_VERSION, "workspaces")
AsUser = Callable[..., client.ApiClient]


# --- helpers ---------------------------------------------------------------------------------


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def denied_by(policy: str) -> str:
    return f"ValidatingAdmissionPolicy '{policy}' with binding '{policy}' denied request: "


def assert_refused(call: Callable[[], Any], status: int, policy: str, message: str) -> None:
    """`call` fails with HTTP `status`, and the server's message ends with `policy`'s `message`."""
    with pytest.raises(ApiException) as refused:
        call()
    assert refused.value.status == status
    assert json.loads(refused.value.body)["message"].endswith(denied_by(policy) + message)


def request_body(
    name: str,
    *,
    requester: str = "alice",
    lead: str = "bob",
    datasets: list[str] | None = None,
    start: str = "2026-03-01",
    end: str = "2026-12-31",
    **spec: Any,
) -> dict[str, Any]:
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": "AccessRequest",
        "metadata": {"name": name},
        "spec": {
            "project": "diabetes-2026",
            "requester": requester,
            "lead": lead,
            "members": [requester, lead],
            "datasets": datasets or ["admissions"],
            "purpose": "Risk factors of type 2 diabetes",
            "startDate": start,
            "endDate": end,
            **spec,
        },
    }


def decision(action: str, by: str, **fields: Any) -> dict[str, Any]:
    return Decision(
        action=DecisionAction(action), by=by, at=dt.datetime.now(dt.UTC), **fields
    ).to_wire()


class World:
    """Per-test access to the cluster as various people; deletes what it created."""

    def __init__(self, admin_api: client.ApiClient, as_user: AsUser) -> None:
        self._admin_api = admin_api
        self._as_user = as_user
        self.admin = Api(admin_api)
        self.created: list[tuple[str, str]] = []

    def api(self, user: str, group: str | None = None) -> Api:
        return Api(self._as_user(user, group))

    def approver(self, user: str) -> Api:
        return self.api(user, APPROVERS)

    def file(self, **kwargs: Any) -> str:
        """alice (or `requester`) files a request; returns its name."""
        name = unique("req")
        body = request_body(name, **kwargs)
        self.api(body["spec"]["requester"]).create_cluster_custom_object(
            API_GROUP, API_VERSION, "accessrequests", body
        )
        self.created.append(("accessrequests", name))
        return name

    def dataset(self, tier: ClassificationTier, label: str | None = None) -> str:
        name = unique("ds")
        body: dict[str, Any] = {
            "apiVersion": f"{API_GROUP}/{API_VERSION}",
            "kind": "Dataset",
            "metadata": {"name": name},
            "spec": {
                "title": "Admissions",
                "steward": "dora",
                "classification": tier.value,
                "source": {"s3": {"bucket": "tre-data", "prefix": f"{name}/"}},
            },
        }
        if label is not None:
            body["metadata"]["labels"] = {CLASSIFICATION_LABEL: label}
        created = self.admin.create_cluster_custom_object(API_GROUP, API_VERSION, "datasets", body)
        self.created.append(("datasets", name))
        # What the controller records after listing the data (approvals must pin it).
        created["status"] = {
            "manifest": {
                "objectCount": 1,
                "bytes": 1,
                "sha256": hashlib.sha256(name.encode()).hexdigest(),
                "computedAt": "2026-01-01T00:00:00Z",
            }
        }
        self.admin.replace_cluster_custom_object_status(
            API_GROUP, API_VERSION, "datasets", name, created
        )
        return name

    def pins(self, name: str) -> dict[str, Any]:
        """What an honest approval of request `name` records: each dataset's current manifest
        hash and tier."""
        hashes, tiers = {}, {}
        for dataset in self.get(name)["spec"]["datasets"]:
            try:
                obj = self.admin.get_cluster_custom_object(
                    API_GROUP, API_VERSION, "datasets", dataset
                )
            except ApiException as exc:
                if exc.status == 404:
                    continue  # not registered: nothing to pin
                raise
            manifest = (obj.get("status") or {}).get("manifest")
            if manifest:
                hashes[dataset] = manifest["sha256"]
            tiers[dataset] = obj["spec"]["classification"]
        return {"manifest_hashes": hashes, "classifications": tiers}

    def get(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self.admin.get_cluster_custom_object(
            API_GROUP, API_VERSION, "accessrequests", name
        )
        return result

    def update_decisions(
        self,
        api: Api,
        name: str,
        change: Callable[[list[dict[str, Any]]], list[dict[str, Any]]],
        **kwargs: Any,
    ) -> Any:
        obj = self.get(name)
        obj["spec"]["decisions"] = change(list(obj["spec"].get("decisions", [])))
        return api.replace_cluster_custom_object(
            API_GROUP, API_VERSION, "accessrequests", name, obj, **kwargs
        )

    def decide(
        self,
        user: str,
        name: str,
        action: str,
        *,
        group: str | None = APPROVERS,
        by: str | None = None,
        **fields: Any,
    ) -> Any:
        """`user` appends one decision (recorded as `by`, default: themselves); an approval
        pins the current manifests and tiers unless `fields` say otherwise."""
        if action == "approve" and "manifest_hashes" not in fields:
            fields = {**self.pins(name), **fields}
        entry = decision(action, by or user, **fields)
        return self.update_decisions(self.api(user, group), name, lambda ds: [*ds, entry])

    def set_phase(self, name: str, phase: str, **kwargs: Any) -> Any:
        """The admin writes status.phase through the status subresource."""
        obj = self.get(name)
        obj["status"] = {"phase": phase}
        return self.admin.replace_cluster_custom_object_status(
            API_GROUP, API_VERSION, "accessrequests", name, obj, **kwargs
        )

    def cleanup(self) -> None:
        for plural, name in reversed(self.created):
            try:
                self.admin.delete_cluster_custom_object(API_GROUP, API_VERSION, plural, name)
            except ApiException as exc:
                if exc.status != 404:
                    raise


def wait_until(check: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not so after {timeout:.0f}s")
        time.sleep(0.25)


def assert_refused_by_one_of(call: Callable[[], Any], status: int, policies: list[str]) -> str:
    """`call` fails with HTTP `status`, refused by one of `policies`; returns the message."""
    with pytest.raises(ApiException) as refused:
        call()
    assert refused.value.status == status
    message: str = json.loads(refused.value.body)["message"]
    assert any(denied_by(p) in message for p in policies), message
    return message


def refused_by(call: Callable[[], Any], policy: str) -> bool:
    """Whether `call` is refused by `policy` right now (policies take effect asynchronously)."""
    try:
        call()
    except ApiException as exc:
        if denied_by(policy) in json.loads(exc.body)["message"]:
            return True
        raise
    return False


# --- fixtures ---------------------------------------------------------------------------------


def _rbac(admin_api: client.ApiClient) -> tuple[dict[str, Any], dict[str, Any]]:
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": RBAC_NAME},
        "rules": [
            {
                "apiGroups": [API_GROUP],
                "resources": ["accessrequests", "workspaces", "datasets"],
                "verbs": ["create", "get", "list", "update", "patch", "delete"],
            }
        ],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": RBAC_NAME},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": RBAC_NAME,
        },
        "subjects": [
            {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Group",
                "name": "system:authenticated",
            }
        ],
    }
    return role, binding


@pytest.fixture(scope="module")
def policies(admin_api: client.ApiClient, as_user: AsUser, crds: None) -> Iterator[None]:
    """Policies, bindings and RBAC installed, and proven active by a probe per policy."""
    rbac = client.RbacAuthorizationV1Api(admin_api)
    reg = client.AdmissionregistrationV1Api(admin_api)
    role, role_binding = _rbac(admin_api)
    rbac.create_cluster_role(role)
    rbac.create_cluster_role_binding(role_binding)
    planned = plan_admission_policies(SETTINGS)
    apply = Kube(admin_api, FIELD_MANAGER).apply
    for manifest in planned:
        apply(manifest)
    world = World(admin_api, as_user)
    probes = _probes(world)
    try:
        for policy, probe in probes.items():
            wait_until(
                lambda probe=probe, policy=policy: refused_by(probe, policy),
                f"policy {policy} enforced",
            )
        yield
    finally:
        for manifest in reversed(planned):
            name = manifest["metadata"]["name"]
            if not guards_custom_resources(name):
                continue  # stays (guards_custom_resources says why)
            if manifest["kind"] == "ValidatingAdmissionPolicy":
                reg.delete_validating_admission_policy(name)
            else:
                reg.delete_validating_admission_policy_binding(name)
        # Later test modules write as the admin: wait until no policy is enforced any more.
        for policy, probe in probes.items():
            wait_until(
                lambda probe=probe, policy=policy: not refused_by(probe, policy),
                f"policy {policy} gone",
            )
        world.cleanup()
        rbac.delete_cluster_role_binding(RBAC_NAME)
        rbac.delete_cluster_role(RBAC_NAME)


def _probes(world: World) -> dict[str, Callable[[], Any]]:
    """One dry-run request per policy (except four-eyes) that the policy refuses."""
    probe_request = world.file()  # honest: valid with or without the policies
    forged = request_body(unique("probe"), requester="alice")
    workspace = {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": "Workspace",
        "metadata": {"name": unique("probe")},
        "spec": {"project": "probe-project", "namespace": "tre-probe-project"},
    }
    lying = {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": "Dataset",
        "metadata": {"name": unique("probe"), "labels": {CLASSIFICATION_LABEL: "public"}},
        "spec": {
            "title": "Probe",
            "steward": "dora",
            "classification": "sensitive",
            "source": {"nfs": {"server": "nfs.example.org", "path": "/probe"}},
        },
    }
    return {
        CREATE_REQUEST_POLICY: lambda: world.api("mallory").create_cluster_custom_object(
            API_GROUP, API_VERSION, "accessrequests", forged, dry_run="All"
        ),
        DECISIONS_POLICY: lambda: world.update_decisions(
            world.api("mallory"),
            probe_request,
            lambda ds: [*ds, decision("approve", "mallory")],
            dry_run="All",
        ),
        APPROVED_PHASE_POLICY: lambda: world.set_phase(probe_request, "Approved", dry_run="All"),
        DATASET_LABEL_POLICY: lambda: world.admin.create_cluster_custom_object(
            API_GROUP, API_VERSION, "datasets", lying, dry_run="All"
        ),
        WORKSPACE_POLICY: lambda: world.admin.create_cluster_custom_object(
            API_GROUP, API_VERSION, "workspaces", workspace, dry_run="All"
        ),
    }


@pytest.fixture
def world(policies: None, admin_api: client.ApiClient, as_user: AsUser) -> Iterator[World]:
    w = World(admin_api, as_user)
    yield w
    w.cleanup()


# --- create -----------------------------------------------------------------------------------


def test_request_filed_in_someone_elses_name_is_refused(world: World) -> None:
    body = request_body(unique("req"), requester="alice")
    assert_refused(
        lambda: world.api("mallory").create_cluster_custom_object(*REQUESTS, body),
        403,
        CREATE_REQUEST_POLICY,
        "spec.requester: must be the caller mallory (got alice); file the request under your "
        "own name",
    )


def test_request_filed_with_decisions_is_refused(world: World) -> None:
    body = request_body(unique("req"), decisions=[decision("approve", "carol")])
    assert_refused(
        lambda: world.api("alice").create_cluster_custom_object(*REQUESTS, body),
        422,
        CREATE_REQUEST_POLICY,
        "spec.decisions: must be empty when a request is filed; approvers append their "
        "decisions afterwards",
    )


def test_request_longer_than_the_maximum_is_refused(world: World) -> None:
    body = request_body(unique("req"), start="2026-03-01", end="2027-03-02")
    assert_refused(
        lambda: world.api("alice").create_cluster_custom_object(*REQUESTS, body),
        422,
        CREATE_REQUEST_POLICY,
        "spec.endDate: must be within 365 days of spec.startDate 2026-03-01 (got 2027-03-02, "
        "366 days); ask for an extension instead",
    )


def test_honest_request_of_the_maximum_length_is_accepted(world: World) -> None:
    name = world.file(start="2026-03-01", end="2027-03-01")
    assert world.get(name)["spec"]["requester"] == "alice"


# --- decisions --------------------------------------------------------------------------------


def test_non_approver_cannot_decide(world: World) -> None:
    name = world.file()
    assert_refused(
        lambda: world.decide("mallory", name, "approve", group=None),
        403,
        DECISIONS_POLICY,
        "spec.decisions: mallory is not in group tre:approvers, so may not decide on access "
        "requests; ask a member of the data-access committee",
    )


@pytest.mark.parametrize(("user", "role"), [("alice", "requester"), ("bob", "lead")])
def test_requester_and_lead_cannot_decide_on_their_own_request(
    world: World, user: str, role: str
) -> None:
    """Even when they are approvers themselves."""
    name = world.file()
    assert_refused(
        lambda: world.decide(user, name, "approve"),
        403,
        DECISIONS_POLICY,
        f"spec.decisions: {user} is the {role} of this request and may not approve it: nobody "
        "approves their own access (four eyes); another approver must decide",
    )


def test_decision_in_someone_elses_name_is_refused(world: World) -> None:
    name = world.file()
    assert_refused(
        lambda: world.decide("carol", name, "approve", by="dave"),
        403,
        DECISIONS_POLICY,
        "spec.decisions[0].by: must be the caller carol (got dave); record decisions under "
        "your own name",
    )


@pytest.mark.parametrize("tamper", ["rewrite", "remove", "reorder"])
def test_earlier_decisions_cannot_be_changed(world: World, tamper: str) -> None:
    name = world.file()
    world.decide("carol", name, "approve")
    world.decide("dave", name, "reject", comment="not enough detail")
    mine = decision("approve", "erin")

    def change(ds: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if tamper == "rewrite":
            return [ds[0], {**ds[1], "action": "approve"}, mine]
        if tamper == "remove":
            return [ds[0], mine]
        return [ds[1], ds[0], mine]

    assert_refused(
        lambda: world.update_decisions(world.approver("erin"), name, change),
        403,
        DECISIONS_POLICY,
        "spec.decisions: earlier decisions cannot be changed or removed; append a new "
        "decision instead",
    )


def test_one_decision_per_update(world: World) -> None:
    name = world.file()
    two = [decision("approve", "carol"), decision("approve", "carol", comment="again")]
    assert_refused(
        lambda: world.update_decisions(world.approver("carol"), name, lambda ds: [*ds, *two]),
        422,
        DECISIONS_POLICY,
        "spec.decisions: append one decision per update (got 2 new)",
    )


def test_nobody_approves_twice(world: World) -> None:
    name = world.file()
    world.decide("carol", name, "approve")
    assert_refused(
        lambda: world.decide("carol", name, "approve"),
        403,
        DECISIONS_POLICY,
        "spec.decisions: carol has already approved this request as it is; a further approval "
        "must come from another approver",
    )


@pytest.mark.parametrize(
    ("final", "action", "verb"),
    [("revoke", "approve", "approved"), ("reject", "approve", "approved"),
     ("revoke", "extend", "extended")],
)  # fmt: skip
def test_nothing_is_approved_or_extended_after_reject_or_revoke(
    world: World, final: str, action: str, verb: str
) -> None:
    name = world.file()
    world.decide("carol", name, "approve")
    world.decide("dave", name, final)
    extra = {"end_date": dt.date(2027, 1, 31)} if action == "extend" else {}
    assert_refused(
        lambda: world.decide("erin", name, action, **extra),
        403,
        DECISIONS_POLICY,
        f"spec.decisions: this request was {final}d by dave and cannot be {verb}; file a new "
        "access request instead",
    )


def test_no_second_revoke(world: World) -> None:
    name = world.file()
    world.decide("carol", name, "approve")
    world.decide("dave", name, "revoke")
    assert_refused(
        lambda: world.decide("erin", name, "revoke"),
        403,
        DECISIONS_POLICY,
        "spec.decisions: this request is already revoked; nothing to do",
    )


def test_extension_within_the_maximum_is_accepted(world: World) -> None:
    name = world.file(start="2026-03-01", end="2026-12-31")
    world.decide("carol", name, "extend", end_date=dt.date(2027, 3, 1))
    assert world.get(name)["spec"]["decisions"][0]["endDate"] == "2027-03-01"


def test_extension_beyond_the_maximum_is_refused(world: World) -> None:
    name = world.file(start="2026-03-01", end="2026-12-31")
    assert_refused(
        lambda: world.decide("carol", name, "extend", end_date=dt.date(2027, 3, 2)),
        422,
        DECISIONS_POLICY,
        "spec.decisions[0].endDate: must be within 365 days of spec.startDate 2026-03-01 "
        "(got 2027-03-02, 366 days); file a new access request for the rest of the project",
    )


def test_extension_must_end_after_the_end_date(world: World) -> None:
    name = world.file(start="2026-03-01", end="2026-12-31")
    assert_refused(
        lambda: world.decide("carol", name, "extend", end_date=dt.date(2026, 12, 31)),
        422,
        DECISIONS_POLICY,
        "spec.decisions[0].endDate: an extension must end after the current end date "
        "2026-12-31 (got 2026-12-31)",
    )


@pytest.mark.parametrize(("user", "group"), [("alice", None), ("carol", APPROVERS)])
def test_other_spec_fields_cannot_change(world: World, user: str, group: str | None) -> None:
    name = world.file()
    obj = world.get(name)
    obj["spec"]["members"] = ["alice", "bob", "mallory"]
    obj["spec"]["purpose"] = "Something else entirely"
    assert_refused(
        lambda: world.api(user, group).replace_cluster_custom_object(*REQUESTS, name, obj),
        403,
        DECISIONS_POLICY,
        "spec.members, spec.purpose: cannot change once the request is filed (only "
        "spec.decisions grows); file a new access request instead",
    )


def test_approvals_by_two_approvers_are_accepted(world: World) -> None:
    name = world.file()
    world.decide("carol", name, "approve")
    world.decide("dave", name, "approve", manifest_hashes={"admissions": "0" * 64})
    assert [d["by"] for d in world.get(name)["spec"]["decisions"]] == ["carol", "dave"]


# --- status: phase Approved -------------------------------------------------------------------


def test_approved_without_any_approval_is_refused(world: World) -> None:
    name = world.file()
    assert_refused(
        lambda: world.set_phase(name, "Approved"),
        403,
        APPROVED_PHASE_POLICY,
        "status.phase: Approved needs an approve decision in spec.decisions by someone other "
        "than the requester, the lead and the members",
    )


def test_approved_after_a_reject_is_refused(world: World) -> None:
    name = world.file()
    world.decide("carol", name, "approve")
    world.decide("dave", name, "reject")
    assert_refused(
        lambda: world.set_phase(name, "Approved"),
        403,
        APPROVED_PHASE_POLICY,
        "status.phase: a rejected or revoked request cannot be Approved",
    )


def test_one_approver_suffices_below_the_two_approver_tier(world: World) -> None:
    dataset = world.dataset(ClassificationTier.INTERNAL)
    name = world.file(datasets=[dataset])
    world.decide("carol", name, "approve")
    assert world.set_phase(name, "Approved")["status"]["phase"] == "Approved"


@pytest.mark.parametrize("tier", [ClassificationTier.CONFIDENTIAL, ClassificationTier.SENSITIVE])
def test_high_tier_dataset_needs_two_distinct_approvers(
    world: World, tier: ClassificationTier
) -> None:
    low = world.dataset(ClassificationTier.PUBLIC)
    high = world.dataset(tier)
    name = world.file(datasets=[low, high])
    world.decide("carol", name, "approve")
    # Two policies refuse it: four-eyes (the dataset's current tier) and the approved-phase
    # policy (the tier carol's approval recorded); the API server names the first it runs.
    message = assert_refused_by_one_of(
        lambda: world.set_phase(name, "Approved"), 403, [FOUR_EYES_POLICY, APPROVED_PHASE_POLICY]
    )
    assert "status.phase: Approved needs approvals by two different people, because" in message
    assert "approved so far by: carol" in message

    world.decide("dave", name, "approve")
    assert world.set_phase(name, "Approved")["status"]["phase"] == "Approved"


def test_a_tier_raised_after_the_approval_needs_a_second_approver(world: World) -> None:
    """carol's approval recorded `internal`; the steward raises the dataset to `sensitive`:
    four eyes follow the current tier too (the highest recorded or current)."""
    dataset = world.dataset(ClassificationTier.INTERNAL)
    name = world.file(datasets=[dataset])
    world.decide("carol", name, "approve")
    raised = world.admin.get_cluster_custom_object(API_GROUP, API_VERSION, "datasets", dataset)
    raised["spec"]["classification"] = "sensitive"
    world.api("dora").replace_cluster_custom_object(
        API_GROUP, API_VERSION, "datasets", dataset, raised
    )
    wait_until(
        lambda: refused_by(
            lambda: world.set_phase(name, "Approved", dry_run="All"), FOUR_EYES_POLICY
        ),
        f"dataset {dataset} seen as sensitive by the policy",
    )
    assert_refused(
        lambda: world.set_phase(name, "Approved"),
        403,
        FOUR_EYES_POLICY,
        f"status.phase: Approved needs approvals by two different people, because dataset "
        f"{dataset} is sensitive (tier confidential or above); approved so far by: carol; a "
        "second approver must approve first",
    )


def test_decisions_smuggled_into_a_status_write_do_not_count(world: World) -> None:
    """The status subresource resets spec before admission: the policy sees stored decisions."""
    high = world.dataset(ClassificationTier.SENSITIVE)
    name = world.file(datasets=[high])
    world.decide("carol", name, "approve")
    obj = world.get(name)
    obj["spec"]["decisions"].append(decision("approve", "dave"))
    obj["status"] = {"phase": "Approved"}
    message = assert_refused_by_one_of(
        lambda: world.admin.replace_cluster_custom_object_status(*REQUESTS, name, obj),
        403,
        [FOUR_EYES_POLICY, APPROVED_PHASE_POLICY],
    )
    assert "approved so far by: carol" in message  # dave's smuggled approval did not count


# --- Dataset and Workspace --------------------------------------------------------------------


def test_dataset_whose_label_lies_is_refused(world: World) -> None:
    assert_refused(
        lambda: world.dataset(ClassificationTier.SENSITIVE, label="public"),
        422,
        DATASET_LABEL_POLICY,
        f"metadata.labels['{CLASSIFICATION_LABEL}']: must equal spec.classification "
        "'sensitive' (got 'public'); correct the label or remove it",
    )


def test_dataset_with_honest_label_is_accepted(world: World) -> None:
    name = world.dataset(ClassificationTier.SENSITIVE, label="sensitive")
    stored = world.admin.get_cluster_custom_object(API_GROUP, API_VERSION, "datasets", name)
    assert stored["metadata"]["labels"] == {CLASSIFICATION_LABEL: "sensitive"}


def workspace_body(name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": "Workspace",
        "metadata": {"name": name},
        "spec": {"project": name, "namespace": f"tre-{name}", "members": ["alice"]},
    }


def test_only_the_controller_writes_workspaces(world: World) -> None:
    name = unique("proj")
    assert_refused(
        lambda: world.admin.create_cluster_custom_object(*WORKSPACES, workspace_body(name)),
        403,
        WORKSPACE_POLICY,
        f"tre-admin may not write workspaces: only the controller ({CONTROLLER}) does, from "
        "the approved access requests; change the access requests instead",
    )
    controller = world.api(CONTROLLER)
    controller.create_cluster_custom_object(*WORKSPACES, workspace_body(name))
    try:
        assert_refused(
            lambda: world.api("alice").delete_cluster_custom_object(*WORKSPACES, name),
            403,
            WORKSPACE_POLICY,
            f"alice may not write workspaces: only the controller ({CONTROLLER}) does, from "
            "the approved access requests; change the access requests instead",
        )
    finally:
        controller.delete_cluster_custom_object(*WORKSPACES, name)


# --- the policies themselves ------------------------------------------------------------------


def test_every_policy_type_checks_cleanly(admin_api: client.ApiClient, policies: None) -> None:
    """The API server type-checks each policy against the CRD schemas, asynchronously."""
    reg = client.AdmissionregistrationV1Api(admin_api)
    planned = plan_admission_policies(SETTINGS)
    names = [m["metadata"]["name"] for m in planned if m["kind"] == "ValidatingAdmissionPolicy"]
    for name in names:
        wait_until(
            lambda name=name: (
                reg.read_validating_admission_policy(name).status.type_checking is not None
            ),
            f"policy {name} type-checked",
        )
        checked = reg.read_validating_admission_policy(name).status.type_checking
        assert not checked.expression_warnings, f"{name}: {checked.expression_warnings}"


@pytest.mark.parametrize("driver", list(DatasetCsiDriver))
def test_the_controller_scope_type_checks_for_each_dataset_driver(
    admin_api: client.ApiClient, policies: None, driver: DatasetCsiDriver
) -> None:
    """Its PV rules differ per driver (mount options or rclone's options): each variant,
    applied under a name of its own and bound to nothing, type-checks cleanly."""
    reg = client.AdmissionregistrationV1Api(admin_api)
    settings = SETTINGS.model_copy(
        update={"dataset_csi_driver": driver, "s3_endpoint_url": "http://127.0.0.1:9"}
    )
    [policy] = [m for m in plan_admission_policies(settings)
                if m["kind"] == "ValidatingAdmissionPolicy"
                and m["metadata"]["name"] == CONTROLLER_SCOPE_POLICY]  # fmt: skip
    name = f"tre-test-scope-{driver.name.lower().replace('_', '-')}"
    policy["metadata"]["name"] = name
    Kube(admin_api, FIELD_MANAGER).apply(policy)
    try:
        wait_until(
            lambda: reg.read_validating_admission_policy(name).status.type_checking is not None,
            f"policy {name} type-checked",
        )
        checked = reg.read_validating_admission_policy(name).status.type_checking
        assert not checked.expression_warnings, f"{name}: {checked.expression_warnings}"
    finally:
        reg.delete_validating_admission_policy(name)
