"""The CRDs generated from the models are structural and say what the models say.

Behaviours under test:
- every schema node is structural: it has a type, and no $ref, anyOf/oneOf/allOf/not, const,
  title, default or `additionalProperties: false` is left; objects have properties or
  additionalProperties, never both; arrays have items;
- each CRD passes the Kubernetes 1.36 JSON schema of CustomResourceDefinition (strict);
- names, scope, the one served+storage version, the status subresource, short names and
  printer columns are as documented;
- required properties are exactly the model fields without a default, by their wire names;
- domain types carry their validator's pattern and a maxLength; dates and times their format;
- list semantics: request members and datasets are sets, decisions atomic, workspace datasets
  a map keyed by name, conditions a map keyed by type;
- CEL rules: dates in order, identity fields immutable, exactly one storage source (wherever a
  source appears), an `extend` decision has its date;
- every domain type (and dates and times): the values of one shared table
  (tests/domain_values.py) that the validator accepts, the CRD's pattern, maxLength and CEL
  regexes accept, and the values it refuses they refuse; values the server's formats take but
  the models would misread are refused by the CRD;
- a dataset's source is immutable and its classification only goes up (transition rules);
- the converter refuses what a structural schema cannot express (unions, free-form objects) and
  converts Optional, Literal, dict[str, str] and exclusive bounds;
- the plan is deterministic.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Iterator
from typing import Any, Literal

import kubernetes_validate  # type: ignore[import-untyped]  # ships no type hints
import pytest
from pydantic import BaseModel, Field, TypeAdapter

from provisioner import API_GROUP, API_VERSION
from provisioner.models import types
from provisioner.models.resources import (
    AccessRequestSpec,
    AccessRequestStatus,
    DatasetSpec,
    DatasetStatus,
    KubeModel,
    WorkspaceSpec,
    WorkspaceStatus,
)
from provisioner.planning.crds import crd_name, plan_crds, structural_schema
from tests.domain_values import DOMAIN_VALUES

Schema = dict[str, Any]
FORBIDDEN_KEYWORDS = {"$ref", "$defs", "anyOf", "oneOf", "allOf", "not", "const", "title",
                      "default"}  # fmt: skip


@pytest.fixture(scope="module")
def crds() -> dict[str, Schema]:
    return {crd["spec"]["names"]["kind"]: crd for crd in plan_crds()}


def root(crd: Schema) -> Schema:
    schema: Schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def at(schema: Schema, path: str) -> Schema:
    """`spec.decisions[]` -> the items schema of spec.decisions."""
    node = schema
    for part in path.split("."):
        name, items = part.removesuffix("[]"), part.endswith("[]")
        node = node["properties"][name]
        if items:
            node = node["items"]
    return node


def without_rules(schema: Schema) -> Schema:
    return {k: v for k, v in schema.items() if k != "x-kubernetes-validations"}


def nodes(schema: Schema, path: str = "") -> Iterator[tuple[str, Schema]]:
    yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from nodes(sub, f"{path}.{name}")
    if "items" in schema:
        yield from nodes(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from nodes(schema["additionalProperties"], f"{path}{{}}")


# --- structure -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["Dataset", "AccessRequest", "Workspace"])
def test_every_node_is_structural(crds: dict[str, Schema], kind: str) -> None:
    for path, node in nodes(root(crds[kind])):
        assert "type" in node, f"{kind}{path}: no type"
        assert not FORBIDDEN_KEYWORDS & node.keys(), f"{kind}{path}: {node.keys()}"
        assert node.get("additionalProperties") is not False, f"{kind}{path}"
        assert not ("properties" in node and "additionalProperties" in node), f"{kind}{path}"
        if node["type"] == "array":
            assert "items" in node, f"{kind}{path}: array without items"
        if "exclusiveMinimum" in node:
            assert node["exclusiveMinimum"] is True, f"{kind}{path}: JSON Schema 2020 bound"


@pytest.mark.parametrize("kind", ["Dataset", "AccessRequest", "Workspace"])
def test_crd_passes_the_kubernetes_schema(crds: dict[str, Schema], kind: str) -> None:
    kubernetes_validate.validate(crds[kind], "1.36", strict=True)


@pytest.mark.parametrize(
    ("kind", "plural", "short", "columns"),
    [
        ("Dataset", "datasets", ["dset"], ["Classification", "Objects", "Bytes", "Steward",
                                           "Age"]),
        ("AccessRequest", "accessrequests", ["ar"], ["Project", "Phase", "Lead", "End",
                                                     "Requester", "Age"]),
        ("Workspace", "workspaces", ["ws"], ["Namespace", "Phase", "Expires", "Age"]),
    ],
)  # fmt: skip
def test_names_versions_and_columns(
    crds: dict[str, Schema], kind: str, plural: str, short: list[str], columns: list[str]
) -> None:
    crd = crds[kind]
    assert crd["metadata"]["name"] == crd_name(plural) == f"{plural}.{API_GROUP}"
    spec = crd["spec"]
    assert spec["group"] == API_GROUP
    assert spec["scope"] == "Cluster"
    assert spec["names"] == {
        "kind": kind,
        "listKind": f"{kind}List",
        "plural": plural,
        "singular": plural.removesuffix("s"),
        "shortNames": short,
        "categories": ["tre"],
    }
    [version] = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == (API_VERSION, True, True)
    assert version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"]] == columns
    assert root(crd)["required"] == ["spec"]


def test_printer_columns_point_at_existing_fields(crds: dict[str, Schema]) -> None:
    for kind, crd in crds.items():
        for column in crd["spec"]["versions"][0]["additionalPrinterColumns"]:
            path = column["jsonPath"].removeprefix(".")
            if path.startswith("metadata."):
                continue
            node = at(root(crd), path)
            expected = {"integer": "integer", "string": "string"}[column["type"]]
            assert node["type"] == expected, f"{kind} column {column['name']}"


@pytest.mark.parametrize(
    ("kind", "part", "model"),
    [
        ("Dataset", "spec", DatasetSpec), ("Dataset", "status", DatasetStatus),
        ("AccessRequest", "spec", AccessRequestSpec),
        ("AccessRequest", "status", AccessRequestStatus),
        ("Workspace", "spec", WorkspaceSpec), ("Workspace", "status", WorkspaceStatus),
    ],
)  # fmt: skip
def test_required_fields_are_the_model_fields_without_default(
    crds: dict[str, Schema], kind: str, part: str, model: type[KubeModel]
) -> None:
    required = [f.alias or name for name, f in model.model_fields.items() if f.is_required()]
    schema = at(root(crds[kind]), part)
    assert schema.get("required", []) == required
    assert list(schema["properties"]) == [f.alias or n for n, f in model.model_fields.items()]


# --- field by field ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "path", "pattern", "max_length"),
    [
        ("AccessRequest", "spec.project", types.PROJECT_SLUG_PATTERN, 32),
        ("AccessRequest", "spec.requester", types.USERNAME_PATTERN, 63),
        ("AccessRequest", "spec.members[]", types.USERNAME_PATTERN, 63),
        ("AccessRequest", "spec.datasets[]", types.DATASET_NAME_PATTERN, 40),
        ("AccessRequest", "spec.decisions[].by", types.USERNAME_PATTERN, 63),
        ("Dataset", "metadata.name", types.DATASET_NAME_PATTERN, 40),
        ("Dataset", "spec.steward", types.USERNAME_PATTERN, 63),
        ("Dataset", "spec.source.s3.bucket", types.BUCKET_NAME_PATTERN, 63),
        ("Workspace", "metadata.name", types.PROJECT_SLUG_PATTERN, 32),
        ("Workspace", "spec.datasets[].name", types.DATASET_NAME_PATTERN, 40),
    ],
)
def test_domain_types_carry_pattern_and_length(
    crds: dict[str, Schema], kind: str, path: str, pattern: str, max_length: int
) -> None:
    node = without_rules(at(root(crds[kind]), path))
    assert node == {"type": "string", "pattern": pattern, "maxLength": max_length}


@pytest.mark.parametrize(
    ("kind", "path", "fmt"),
    [
        ("AccessRequest", "spec.startDate", "date"),
        ("AccessRequest", "spec.endDate", "date"),
        ("AccessRequest", "spec.decisions[].endDate", "date"),
        ("AccessRequest", "spec.decisions[].at", "date-time"),
        ("AccessRequest", "status.effectiveEndDate", "date"),
        ("Dataset", "status.manifest.computedAt", "date-time"),
        ("Workspace", "spec.expiresAt", "date"),
        ("Workspace", "status.conditions[].lastTransitionTime", "date-time"),
    ],
)
def test_dates_and_times_have_their_format(
    crds: dict[str, Schema], kind: str, path: str, fmt: str
) -> None:
    pattern = types.DATE_PATTERN if fmt == "date" else types.DATETIME_PATTERN
    assert without_rules(at(root(crds[kind]), path)) == {
        "type": "string",
        "format": fmt,
        "pattern": pattern,
    }


def test_optional_fields_are_plain_and_not_required(crds: dict[str, Schema]) -> None:
    decision = at(root(crds["AccessRequest"]), "spec.decisions[]")
    assert decision["required"] == ["action", "by", "at"]
    assert decision["properties"]["manifestHashes"] == {
        "type": "object",
        "additionalProperties": {"type": "string"},
    }
    assert at(root(crds["Dataset"]), "spec.source.s3.region") == {
        "type": "string", **types.validate_s3_region.crd_schema()}  # fmt: skip


def test_enums(crds: dict[str, Schema]) -> None:
    request = root(crds["AccessRequest"])
    assert at(request, "spec.decisions[].action")["enum"] == [
        "approve", "reject", "revoke", "extend"]  # fmt: skip
    assert at(request, "status.phase")["enum"] == [
        "Pending", "Approved", "Rejected", "Expired", "Revoked"]  # fmt: skip
    assert at(request, "status.conditions[].status")["enum"] == ["True", "False", "Unknown"]
    assert at(root(crds["Dataset"]), "spec.classification")["enum"] == [
        "public", "internal", "confidential", "sensitive"]  # fmt: skip


@pytest.mark.parametrize(
    ("kind", "path", "extension"),
    [
        ("AccessRequest", "spec.members", {"x-kubernetes-list-type": "set"}),
        ("AccessRequest", "spec.datasets", {"x-kubernetes-list-type": "set"}),
        ("AccessRequest", "spec.decisions", {"x-kubernetes-list-type": "atomic"}),
        ("Workspace", "spec.members", {"x-kubernetes-list-type": "set"}),
        ("Workspace", "spec.requests", {"x-kubernetes-list-type": "set"}),
        ("Workspace", "spec.datasets", {"x-kubernetes-list-type": "map",
                                        "x-kubernetes-list-map-keys": ["name"]}),
        ("Dataset", "status.conditions", {"x-kubernetes-list-type": "map",
                                          "x-kubernetes-list-map-keys": ["type"]}),
    ],
)  # fmt: skip
def test_list_semantics(
    crds: dict[str, Schema], kind: str, path: str, extension: dict[str, Any]
) -> None:
    node = at(root(crds[kind]), path)
    assert {k: v for k, v in node.items() if k.startswith("x-kubernetes-list")} == extension


def test_request_lists_are_bounded(crds: dict[str, Schema]) -> None:
    spec = at(root(crds["AccessRequest"]), "spec")
    bounds = {name: (spec["properties"][name].get("minItems"), spec["properties"][name]["maxItems"])
              for name in ("members", "datasets", "decisions")}  # fmt: skip
    assert bounds == {"members": (1, 100), "datasets": (1, 20), "decisions": (None, 64)}


def test_request_dates_must_be_in_order(crds: dict[str, Schema]) -> None:
    [rule] = at(root(crds["AccessRequest"]), "spec")["x-kubernetes-validations"]
    assert rule["rule"] == "self.endDate > self.startDate"
    assert rule["fieldPath"] == ".endDate"
    assert rule["message"] == "must be after startDate"


@pytest.mark.parametrize("field", ["project", "requester", "lead", "startDate"])
def test_identity_fields_are_immutable(crds: dict[str, Schema], field: str) -> None:
    node = at(root(crds["AccessRequest"]), f"spec.{field}")
    assert node["x-kubernetes-validations"] == [
        {"rule": "self == oldSelf",
         "message": f"{field} is immutable; file a new access request instead"}
    ]  # fmt: skip


@pytest.mark.parametrize(("kind", "path"), [("Dataset", "spec.source"),
                                            ("Workspace", "spec.datasets[].source")])  # fmt: skip
def test_source_has_exactly_one_backend(crds: dict[str, Schema], kind: str, path: str) -> None:
    rule = at(root(crds[kind]), path)["x-kubernetes-validations"][0]
    assert rule == {"rule": "has(self.s3) != has(self.nfs)",
                    "message": "set exactly one of 's3' and 'nfs'"}  # fmt: skip


def test_extend_decision_has_its_date(crds: dict[str, Schema]) -> None:
    [rule] = at(root(crds["AccessRequest"]), "spec.decisions[]")["x-kubernetes-validations"]
    assert rule["rule"] == "self.action == 'extend' ? has(self.endDate) : !has(self.endDate)"
    assert rule["fieldPath"] == ".endDate"


def test_only_the_documented_rules_exist(crds: dict[str, Schema]) -> None:
    rules = sorted(
        f"{kind}{path}"
        for kind, crd in crds.items()
        for path, node in nodes(root(crd))
        if "x-kubernetes-validations" in node
    )
    assert rules == [
        "AccessRequest.spec",
        "AccessRequest.spec.decisions[]",
        "AccessRequest.spec.lead",
        "AccessRequest.spec.project",
        "AccessRequest.spec.requester",
        "AccessRequest.spec.startDate",
        "BrowserActivity.spec",
        "Dataset.spec.classification",
        "Dataset.spec.source",
        "Dataset.spec.source.nfs.path",
        "Dataset.spec.source.nfs.server",
        "Dataset.spec.source.s3.bucket",
        "Dataset.spec.source.s3.prefix",
        "Dataset.spec.source.s3.region",
        "Workspace.spec.datasets[].source",
        "Workspace.spec.datasets[].source.nfs.path",
        "Workspace.spec.datasets[].source.nfs.server",
        "Workspace.spec.datasets[].source.s3.bucket",
        "Workspace.spec.datasets[].source.s3.prefix",
        "Workspace.spec.datasets[].source.s3.region",
    ]


def test_dataset_source_is_immutable(crds: dict[str, Schema]) -> None:
    rules = at(root(crds["Dataset"]), "spec.source")["x-kubernetes-validations"]
    assert rules[1:] == [
        {"rule": "self == oldSelf",
         "message": "source is immutable: approvals were given for the data at this source; "
                    "register a new dataset for other data"}
    ]  # fmt: skip


def test_dataset_classification_only_goes_up(crds: dict[str, Schema]) -> None:
    [rule] = at(root(crds["Dataset"]), "spec.classification")["x-kubernetes-validations"]
    rank = "{'public': 0, 'internal': 1, 'confidential': 2, 'sensitive': 3}"
    assert rule["rule"] == f"{rank}[self] >= {rank}[oldSelf]"
    assert "never lowered; register a new dataset" in rule["message"]


# --- each domain type: the validator and the CRD refuse the same values ----------------------


def _crd_accepts(schema: Schema, value: str) -> bool:
    """What the CRD's pattern, maxLength and CEL regex rules say of `value` (run with `re`)."""
    if "pattern" in schema and not re.fullmatch(schema["pattern"], value):
        return False
    if len(value) > schema.get("maxLength", len(value)):
        return False
    if schema.get("format") in {"date", "date-time"}:
        try:  # the server's format check: a real calendar day
            dt.date.fromisoformat(value[:10])
        except ValueError:
            return False
    for rule in schema.get("x-kubernetes-validations", []):
        if rule["rule"].startswith("!self.matches("):
            regex = json.loads(rule["rule"].removeprefix("!self.matches(").removesuffix(")"))
            if re.search(regex, value):
                return False
        elif rule["rule"].startswith("self.matches("):
            regex = json.loads(rule["rule"].removeprefix("self.matches(").removesuffix(")"))
            if not re.search(regex, value):
                return False
    return True


def _validator(name: str) -> Callable[[str], Any]:
    if name == "date":
        return TypeAdapter(dt.date).validate_python
    if name == "date_time":
        return TypeAdapter(dt.datetime).validate_python
    rule: Callable[[str], Any] = getattr(types, f"validate_{name}")
    return rule


# Where each domain type sits in a CRD (any one place: they all share one schema).
CRD_PLACE = {
    "project_slug": ("AccessRequest", "spec.project"),
    "dataset_name": ("AccessRequest", "spec.datasets[]"),
    "username": ("Dataset", "spec.steward"),
    "bucket_name": ("Dataset", "spec.source.s3.bucket"),
    "s3_prefix": ("Dataset", "spec.source.s3.prefix"),
    "nfs_path": ("Dataset", "spec.source.nfs.path"),
    "nfs_server": ("Dataset", "spec.source.nfs.server"),
    "s3_region": ("Dataset", "spec.source.s3.region"),
    "date": ("AccessRequest", "spec.startDate"),
    "date_time": ("AccessRequest", "spec.decisions[].at"),
}


def _cases(which: str) -> list[Any]:
    return [
        pytest.param(case.name, value, id=f"{case.name}-{value[:20]!r}")
        for case in DOMAIN_VALUES
        for value in getattr(case, which)
    ]


def test_every_domain_type_has_a_table_and_a_place() -> None:
    rules = {n.removeprefix("validate_") for n, v in vars(types).items()
             if isinstance(v, types.DomainRule)}  # fmt: skip
    assert {c.name for c in DOMAIN_VALUES} == rules | {"date", "date_time"} == set(CRD_PLACE)


@pytest.mark.parametrize(("name", "value"), _cases("good"))
def test_good_values_pass_the_validator_and_the_crd(
    crds: dict[str, Schema], name: str, value: str
) -> None:
    _validator(name)(value)
    kind, path = CRD_PLACE[name]
    assert _crd_accepts(at(root(crds[kind]), path), value)


@pytest.mark.parametrize(("name", "value"), _cases("bad"))
def test_bad_values_fail_the_validator_and_the_crd(
    crds: dict[str, Schema], name: str, value: str
) -> None:
    with pytest.raises(ValueError):
        _validator(name)(value)
    kind, path = CRD_PLACE[name]
    assert not _crd_accepts(at(root(crds[kind]), path), value)


@pytest.mark.parametrize(("name", "value"), _cases("crd_only"))
def test_values_the_models_would_misread_fail_the_crd(
    crds: dict[str, Schema], name: str, value: str
) -> None:
    kind, path = CRD_PLACE[name]
    assert not _crd_accepts(at(root(crds[kind]), path), value)


def test_s3_prefix_is_normalised_to_end_with_a_slash() -> None:
    assert types.validate_s3_prefix("cohort") == "cohort/"
    assert types.validate_s3_prefix("") == ""


# --- the converter on its own --------------------------------------------------------------------


class _Inner(KubeModel):
    size: int = Field(gt=0, lt=10)


class _Everything(KubeModel):
    mode: Literal["ro"] = "ro"
    labels: dict[str, str] = Field(default_factory=dict)
    inner: _Inner | None = None
    names: list[types.DatasetName] = Field(default_factory=list, max_length=3)


def test_converter_handles_optional_literal_dict_and_exclusive_bounds() -> None:
    assert structural_schema(_Everything) == {
        "type": "object",
        "properties": {
            "mode": {"type": "string", "enum": ["ro"]},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "inner": {
                "type": "object",
                "properties": {
                    "size": {
                        "type": "integer",
                        "minimum": 0,
                        "exclusiveMinimum": True,
                        "maximum": 10,
                        "exclusiveMaximum": True,
                    }
                },
                "required": ["size"],
            },
            "names": {
                "type": "array",
                "items": {
                    "type": "string",
                    "pattern": types.DATASET_NAME_PATTERN,
                    "maxLength": 40,
                },
                "maxItems": 3,
            },
        },
    }


class _Union(BaseModel):
    value: int | str


class _FreeForm(BaseModel):
    value: dict[str, Any]


@pytest.mark.parametrize(
    ("model", "complaint"),
    [(_Union, "_Union.value: a union of 2 types has no structural schema"),
     (_FreeForm, "_FreeForm.value: free-form objects are not allowed; give a value type")],
)  # fmt: skip
def test_converter_refuses_what_a_structural_schema_cannot_say(
    model: type[BaseModel], complaint: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(complaint)):
        structural_schema(model)


def test_plan_is_deterministic() -> None:
    assert plan_crds() == plan_crds()
