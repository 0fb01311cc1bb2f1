"""The generated CRDs and the pydantic models agree, proven against the real kube-apiserver.

Our admission policies are removed for this module if another one installed them: the schema
alone is under test here (tests/integration/test_admission.py tests the policies).

Behaviours under test:
- the three CRDs from `plan_crds()` are accepted (structural, CEL within its cost budget) and
  become Established;
- round trip: a Dataset (S3 and NFS), an AccessRequest and a Workspace built in Python with every
  field set are created from `to_wire()`, get their status through the status subresource,
  and read back into a model equal to the original;
- the API server itself refuses: a member listed twice, an endDate not after startDate, a
  source with both s3 and nfs, an `extend` decision without its date, an unknown field (with
  fieldValidation=Strict), a name outside the domain pattern, a changed requester;
- status written through the main resource is ignored (the status subresource is on);
- every domain type and every date and time (the table in tests/domain_values.py that the unit
  tests run against the pydantic validators): good values are stored and read back by the
  models, bad ones (a bucket 'a..b' or '10.0.0.1', a prefix with a '..' segment, a 'system:'
  username, year 0000, a time without offset...) are refused by the API server, naming the
  field; a dataset's source cannot change and its classification cannot go down;
- `kubectl get` columns: the Table view of an AccessRequest shows Project, Phase, Lead, End.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from provisioner import API_GROUP, API_VERSION
from provisioner.models.resources import (
    AccessRequest,
    AccessRequestSpec,
    AccessRequestStatus,
    Condition,
    CustomResource,
    Dataset,
    DatasetManifest,
    DatasetSource,
    DatasetSpec,
    DatasetStatus,
    Decision,
    DecisionAction,
    NfsSource,
    RequestPhase,
    S3Source,
    Workspace,
    WorkspaceDataset,
    WorkspacePhase,
    WorkspaceSpec,
    WorkspaceStatus,
)
from provisioner.models.types import ClassificationTier, ComputeTier
from provisioner.planning.admission import guards_custom_resources
from tests.domain_values import DOMAIN_VALUES

pytestmark = pytest.mark.integration

AT = dt.datetime(2026, 5, 4, 10, 30, 15, 123000, tzinfo=dt.UTC)
SHA = "0123456789abcdef" * 4
PLURALS = {"Dataset": "datasets", "AccessRequest": "accessrequests", "Workspace": "workspaces"}


@pytest.fixture(scope="module")
def without_admission_policies(admin_api: client.ApiClient, crds: None) -> None:
    """The schema alone decides here: remove our admission policies if a module installed them.

    Round trips write what only approvers and the controller may write (decisions at create,
    Workspaces as the admin). Modules that need the policies install them again themselves.
    """
    reg = client.AdmissionregistrationV1Api(admin_api)
    ours = "app.kubernetes.io/part-of=ucloud-tre"
    # Policies guarding namespaces and pods stay (guards_custom_resources says why).
    for binding in reg.list_validating_admission_policy_binding(label_selector=ours).items:
        if guards_custom_resources(binding.metadata.name):
            reg.delete_validating_admission_policy_binding(binding.metadata.name)
    for policy in reg.list_validating_admission_policy(label_selector=ours).items:
        if guards_custom_resources(policy.metadata.name):
            reg.delete_validating_admission_policy(policy.metadata.name)
    api = client.CustomObjectsApi(admin_api)
    deadline = time.monotonic() + 30
    while True:  # removal takes effect asynchronously, like installation
        try:
            api.create_cluster_custom_object(
                API_GROUP, API_VERSION, "workspaces", workspace().to_object(), dry_run="All"
            )
            api.create_cluster_custom_object(
                API_GROUP,
                API_VERSION,
                "accessrequests",
                access_request().to_object(),
                dry_run="All",
            )
            return
        except ApiException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.25)


@pytest.fixture
def custom(
    admin_api: client.ApiClient, without_admission_policies: None
) -> Iterator[client.CustomObjectsApi]:
    """CustomObjectsApi as admin; every object the test created is deleted afterwards."""
    api = client.CustomObjectsApi(admin_api)
    created: list[tuple[str, str]] = []
    real_create = api.create_cluster_custom_object

    def create(group: str, version: str, plural: str, body: dict[str, Any], **kwargs: Any) -> Any:
        result = real_create(group, version, plural, body, **kwargs)
        if not kwargs.get("dry_run"):
            created.append((plural, body["metadata"]["name"]))
        return result

    api.create_cluster_custom_object = create  # type: ignore[method-assign]
    yield api
    for plural, name in created:
        try:
            api.delete_cluster_custom_object(API_GROUP, API_VERSION, plural, name)
        except ApiException as exc:
            if exc.status != 404:
                raise


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# --- model instances with every field set ------------------------------------------------------


def condition(kind: str) -> Condition:
    return Condition(
        type=kind, status="True", reason="AllGood", message="checked", last_transition_time=AT
    )


def s3_dataset() -> Dataset:
    return Dataset(
        name=unique("admissions"),
        spec=DatasetSpec(
            title="Hospital admissions 2020-2025",
            steward="dora",
            classification=ClassificationTier.SENSITIVE,
            source=DatasetSource(
                s3=S3Source(bucket="tre-data", prefix="admissions/v2", region="eu-west-1")
            ),
            description="Pseudonymised admissions",
        ),
        status=DatasetStatus(
            manifest=DatasetManifest(object_count=3, bytes=123_456_789, sha256=SHA, computed_at=AT),
            conditions=[condition("Verified")],
        ),
    )


def nfs_dataset() -> Dataset:
    return Dataset(
        name=unique("registry"),
        spec=DatasetSpec(
            title="Cancer registry",
            steward="erik",
            classification=ClassificationTier.INTERNAL,
            source=DatasetSource(nfs=NfsSource(server="nfs.example.org", path="/exports/reg")),
        ),
    )


def access_request(**changes: Any) -> AccessRequest:
    spec = AccessRequestSpec(
        project="diabetes-2026",
        requester="alice",
        lead="bob",
        members=["alice", "bob", "c.jansen@umc.nl"],
        datasets=["admissions", "registry"],
        purpose="Risk factors of type 2 diabetes",
        start_date=dt.date(2026, 3, 1),
        end_date=dt.date(2026, 12, 31),
        compute_tier=ComputeTier.MEDIUM,
        decisions=[
            Decision(
                action=DecisionAction.APPROVE,
                by="carol",
                at=AT,
                comment="ok",
                manifest_hashes={"admissions": SHA},
            ),
            Decision(action=DecisionAction.EXTEND, by="dave", at=AT, end_date=dt.date(2027, 2, 28)),
        ],
    )
    return AccessRequest(
        name=unique("diabetes-2026"),
        spec=spec.model_copy(update=changes),
        status=AccessRequestStatus(
            phase=RequestPhase.APPROVED,
            approvers=["carol"],
            effective_end_date=dt.date(2027, 2, 28),
            observed_generation=1,
            conditions=[condition("Approved")],
        ),
    )


def workspace() -> Workspace:
    project = unique("diabetes")
    return Workspace(
        name=project,
        spec=WorkspaceSpec(
            project=project,
            namespace=f"tre-{project}",
            members=["alice", "bob"],
            datasets=[
                WorkspaceDataset(
                    name="admissions",
                    manifest_sha256=SHA,
                    classification=ClassificationTier.SENSITIVE,
                    source=DatasetSource(s3=S3Source(bucket="tre-data", prefix="admissions/")),
                )
            ],
            compute_tier=ComputeTier.LARGE,
            expires_at=dt.date(2027, 2, 28),
            requests=["diabetes-2026-a", "diabetes-2026-b"],
        ),
        status=WorkspaceStatus(
            phase=WorkspacePhase.FROZEN,
            frozen_at=AT,
            torn_down_at=AT,
            observed_generation=3,
            conditions=[condition("Ready")],
        ),
    )


# --- helpers -------------------------------------------------------------------------------------


def create(custom: client.CustomObjectsApi, resource: CustomResource, **kwargs: Any) -> Any:
    return custom.create_cluster_custom_object(
        API_GROUP, API_VERSION, PLURALS[resource.kind], resource.to_object(), **kwargs
    )


def refusal(call: Callable[[], Any]) -> tuple[int, str]:
    with pytest.raises(ApiException) as refused:
        call()
    return refused.value.status, json.loads(refused.value.body)["message"]


def with_spec(resource: CustomResource, **fields: Any) -> dict[str, Any]:
    """The wire object of `resource` with spec fields replaced (bypassing model validation)."""
    obj = resource.to_object()
    obj["spec"].update(fields)
    return obj


# --- tests ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "build",
    [s3_dataset, nfs_dataset, access_request, workspace],
    ids=["dataset-s3", "dataset-nfs", "accessrequest", "workspace"],
)
def test_round_trip_through_the_api_server_is_lossless(
    custom: client.CustomObjectsApi, build: Callable[[], CustomResource]
) -> None:
    original = build()
    plural = PLURALS[original.kind]
    created = create(custom, original, field_validation="Strict")
    created["status"] = original.status.to_wire()
    custom.replace_cluster_custom_object_status(
        API_GROUP, API_VERSION, plural, original.name, created, field_validation="Strict"
    )

    stored = custom.get_cluster_custom_object(API_GROUP, API_VERSION, plural, original.name)

    parsed = type(original).from_object(stored)
    assert parsed.uid == stored["metadata"]["uid"]
    assert parsed.created_at is not None
    assert parsed.model_copy(update={"uid": "", "created_at": None}) == original
    assert stored["spec"] == original.spec.to_wire()
    assert stored["status"] == original.status.to_wire()


def test_status_sent_to_the_main_resource_is_ignored(custom: client.CustomObjectsApi) -> None:
    """Only the status subresource (the controller's) sets status; create and update drop it."""
    request = access_request()
    body = request.to_object(with_status=True)
    created = custom.create_cluster_custom_object(API_GROUP, API_VERSION, "accessrequests", body)
    assert "status" not in created
    updated = custom.replace_cluster_custom_object(
        API_GROUP,
        API_VERSION,
        "accessrequests",
        request.name,
        {**body, "metadata": created["metadata"]},
    )
    assert "status" not in updated


def test_duplicate_member_is_refused(custom: client.CustomObjectsApi) -> None:
    obj = with_spec(access_request(), members=["alice", "bob", "alice"])
    status, message = refusal(
        lambda: custom.create_cluster_custom_object(API_GROUP, API_VERSION, "accessrequests", obj)
    )
    assert status == 422
    assert 'spec.members[2]: Duplicate value: "alice"' in message


def test_duplicate_dataset_is_refused(custom: client.CustomObjectsApi) -> None:
    obj = with_spec(access_request(), datasets=["admissions", "admissions"])
    status, message = refusal(
        lambda: custom.create_cluster_custom_object(API_GROUP, API_VERSION, "accessrequests", obj)
    )
    assert status == 422
    assert 'spec.datasets[1]: Duplicate value: "admissions"' in message


@pytest.mark.parametrize("end", ["2026-03-01", "2026-02-01"], ids=["same-day", "before"])
def test_end_date_not_after_start_date_is_refused(
    custom: client.CustomObjectsApi, end: str
) -> None:
    obj = with_spec(access_request(), startDate="2026-03-01", endDate=end)
    status, message = refusal(
        lambda: custom.create_cluster_custom_object(API_GROUP, API_VERSION, "accessrequests", obj)
    )
    assert status == 422
    assert "spec.endDate: Invalid value" in message
    assert "must be after startDate" in message


def test_source_with_both_s3_and_nfs_is_refused(custom: client.CustomObjectsApi) -> None:
    dataset = s3_dataset()
    obj = dataset.to_object()
    obj["spec"]["source"]["nfs"] = {"server": "nfs.example.org", "path": "/exports/x"}
    status, message = refusal(
        lambda: custom.create_cluster_custom_object(API_GROUP, API_VERSION, "datasets", obj)
    )
    assert status == 422
    assert "spec.source: Invalid value" in message
    assert "set exactly one of 's3' and 'nfs'" in message


def test_source_with_neither_is_refused(custom: client.CustomObjectsApi) -> None:
    obj = with_spec(s3_dataset(), source={})
    status, message = refusal(
        lambda: custom.create_cluster_custom_object(API_GROUP, API_VERSION, "datasets", obj)
    )
    assert status == 422
    assert "set exactly one of 's3' and 'nfs'" in message


def test_extend_decision_without_end_date_is_refused(custom: client.CustomObjectsApi) -> None:
    decision = {"action": "extend", "by": "carol", "at": "2026-05-04T10:30:15Z"}
    obj = with_spec(access_request(), decisions=[decision])
    status, message = refusal(
        lambda: custom.create_cluster_custom_object(API_GROUP, API_VERSION, "accessrequests", obj)
    )
    assert status == 422
    assert "spec.decisions[0].endDate: Invalid value" in message
    assert "required for action 'extend'" in message


def test_unknown_field_is_refused_in_strict_mode(custom: client.CustomObjectsApi) -> None:
    obj = with_spec(access_request(), approvedBy="mallory")
    status, message = refusal(
        lambda: custom.create_cluster_custom_object(
            API_GROUP, API_VERSION, "accessrequests", obj, field_validation="Strict"
        )
    )
    assert status == 400
    assert 'unknown field "spec.approvedBy"' in message


def test_name_outside_the_domain_pattern_is_refused(custom: client.CustomObjectsApi) -> None:
    obj = s3_dataset().to_object()
    obj["metadata"]["name"] = "x" + uuid.uuid4().hex[:4] + "-"
    status, message = refusal(
        lambda: custom.create_cluster_custom_object(API_GROUP, API_VERSION, "datasets", obj)
    )
    assert status == 422
    assert "metadata.name: Invalid value" in message


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("requester", "mallory"),
        ("lead", "mallory"),
        ("project", "other-project"),
        ("startDate", "2026-01-01"),
    ],
)
def test_identity_fields_are_immutable(
    custom: client.CustomObjectsApi, field: str, value: str
) -> None:
    request = access_request()
    created = create(custom, request)
    created["spec"][field] = value
    status, message = refusal(
        lambda: custom.replace_cluster_custom_object(
            API_GROUP, API_VERSION, "accessrequests", request.name, created
        )
    )
    assert status == 422
    assert f"spec.{field}: Invalid value" in message
    assert f"{field} is immutable; file a new access request instead" in message


def test_table_view_shows_the_printer_columns(
    admin_api: client.ApiClient, custom: client.CustomObjectsApi
) -> None:
    request = access_request()
    create(custom, request)
    response = admin_api.call_api(
        f"/apis/{API_GROUP}/{API_VERSION}/accessrequests/{request.name}",
        "GET",
        header_params={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"},
        auth_settings=["BearerToken"],
        _preload_content=False,
        _return_http_data_only=True,
    )
    table = json.loads(response.data)
    columns = [c["name"] for c in table["columnDefinitions"]]
    assert columns == ["Name", "Project", "Phase", "Lead", "End", "Requester", "Age"]
    cells = dict(zip(columns, table["rows"][0]["cells"], strict=True))
    assert cells["Project"] == "diabetes-2026"
    assert cells["Lead"] == "bob"
    assert cells["End"] == "2026-12-31"


# --- every domain type: the API server refuses what the models refuse ---------------------------


def _object_with(name: str, value: str) -> tuple[str, dict[str, Any], type[CustomResource], str]:
    """(plural, object, model, field path) with `value` in the place of domain type `name`."""
    if name in {"project_slug", "dataset_name", "date", "date_time"}:
        obj = access_request().to_object()
        spec = obj["spec"]
        if name == "project_slug":
            spec["project"], path = value, "spec.project"
        elif name == "dataset_name":
            spec["datasets"], path = [value], "spec.datasets[0]"
        elif name == "date":
            spec["startDate"], spec["endDate"], path = value, "9999-12-31", "spec.startDate"
        else:
            spec["decisions"][0]["at"], path = value, "spec.decisions[0].at"
        return "accessrequests", obj, AccessRequest, path
    if name in {"nfs_path", "nfs_server"}:
        obj = nfs_dataset().to_object()
        field = name.removeprefix("nfs_")
        obj["spec"]["source"]["nfs"][field] = value
        return "datasets", obj, Dataset, f"spec.source.nfs.{field}"
    obj = s3_dataset().to_object()
    if name == "username":
        obj["spec"]["steward"] = value
        return "datasets", obj, Dataset, "spec.steward"
    field = {"bucket_name": "bucket", "s3_prefix": "prefix", "s3_region": "region"}[name]
    obj["spec"]["source"]["s3"][field] = value
    return "datasets", obj, Dataset, f"spec.source.s3.{field}"


def _values(which: str) -> list[Any]:
    return [
        pytest.param(case.name, value, id=f"{case.name}-{value[:20]!r}")
        for case in DOMAIN_VALUES
        for value in getattr(case, which)
    ]


@pytest.mark.parametrize(("name", "value"), _values("good"))
def test_good_domain_values_are_stored_and_read_back_by_the_models(
    custom: client.CustomObjectsApi, name: str, value: str
) -> None:
    plural, obj, model, _ = _object_with(name, value)
    stored = custom.create_cluster_custom_object(API_GROUP, API_VERSION, plural, obj, dry_run="All")
    model.from_object(stored)  # the controller can read what the server stored


@pytest.mark.parametrize(("name", "value"), _values("bad") + _values("crd_only"))
def test_bad_domain_values_are_refused_by_the_api_server(
    custom: client.CustomObjectsApi, name: str, value: str
) -> None:
    """Each value the models refuse (tests/domain_values.py, also the unit tests' table), or
    would misread, is refused by the API server itself, naming the field."""
    plural, obj, _, path = _object_with(name, value)
    status, message = refusal(
        lambda: custom.create_cluster_custom_object(
            API_GROUP, API_VERSION, plural, obj, dry_run="All"
        )
    )
    assert status == 422, message
    assert f"{path}: " in message, message
