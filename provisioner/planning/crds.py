"""The CustomResourceDefinitions of our kinds (Dataset, AccessRequest, Workspace, ExportRequest,
BrowserActivity), generated from the models.

The pydantic models in `provisioner.models.resources` are the single source of the schemas:
`plan_crds()` takes their JSON Schema and turns it into the *structural* OpenAPI v3 schema that
`apiextensions.k8s.io/v1` demands, so the API server and our code refuse the same objects:

- `$defs`/`$ref` are inlined (structural schemas have no references);
- `Optional[X]` (`anyOf: [X, null]`) becomes plain `X`: we never send nulls, `to_wire()`
  leaves `None` out;
- `Literal`/`const` becomes `enum`, `dict[str, str]` becomes `additionalProperties`;
- `title` and `default` are dropped (defaults stay in the models, so an object written by an
  older client is not silently changed by the server); JSON Schema 2020 `exclusiveMinimum: n`
  becomes OpenAPI's `minimum: n` + `exclusiveMinimum: true`;
- domain types (`ProjectSlug`, `Username`, ...) carry their validation in a `DomainRule`
  (`provisioner.models.types`), which JSON Schema cannot see; the rule itself supplies the
  `pattern`, the `maxLength` (which CEL cost estimation needs anyway) and one CEL rule per
  refusal (a bucket with '..', a prefix with a '..' segment, a 'system:' username), so the
  schema and the validator are one declaration; dates and times get `types.DATE_PATTERN` and
  `types.DATETIME_PATTERN`, because the server's own formats accept values Python refuses.

What JSON Schema cannot say is added here, next to the model it belongs to: list semantics
(`x-kubernetes-list-type: set` makes the API server itself refuse a member or dataset listed
twice) and CEL rules for cross-field checks (dates in order, exactly one storage source, an
`extend` decision carries its date, identity fields immutable, a dataset's source immutable
and its classification only raised). Anything in a model schema that
has no structural equivalent raises `ValueError` rather than being dropped silently.

Who may write what (requester is the caller, four eyes, append-only decisions) needs
`request.userInfo` and is not a CRD concern: see `provisioner.planning.admission`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from provisioner import API_GROUP, API_VERSION
from provisioner.models import types
from provisioner.models.resources import (
    AccessRequest,
    AccessRequestSpec,
    AccessRequestStatus,
    BrowserActivity,
    BrowserActivitySpec,
    BrowserActivityStatus,
    Dataset,
    DatasetSource,
    DatasetSpec,
    DatasetStatus,
    Decision,
    ExportRequest,
    ExportRequestSpec,
    ExportRequestStatus,
    Workspace,
    WorkspaceSpec,
    WorkspaceStatus,
)
from provisioner.models.types import ClassificationTier

CRD_API_VERSION: Final = "apiextensions.k8s.io/v1"
PART_OF_LABEL: Final = {"app.kubernetes.io/part-of": "ucloud-tre"}
# `kubectl get tre` lists every kind of ours.
CATEGORY: Final = "tre"
WORKSPACE_MAX_DATASETS: Final = 100

# JSON Schema keywords that mean the same in a structural OpenAPI v3 schema.
_KEPT_KEYWORDS: Final = frozenset(
    {
        "type",
        "description",
        "enum",
        "format",
        "pattern",
        "minLength",
        "maxLength",
        "minItems",
        "maxItems",
        "minProperties",
        "maxProperties",
        "minimum",
        "maximum",
        "multipleOf",
        "required",
    }
)
_DROPPED_KEYWORDS: Final = frozenset({"title", "default", "$defs", "examples"})


def _rule(rule: str, message: str, **extra: str) -> dict[str, str]:
    return {"rule": rule, "message": message, **extra}


_IMMUTABLE_REQUEST_FIELDS: Final = ("project", "requester", "lead", "startDate")

# Tier ranks as a CEL map literal, from the enum's order (public < ... < sensitive).
_TIER_RANK: Final = "{" + ", ".join(f"'{t.value}': {t.rank}" for t in ClassificationTier) + "}"
_TIER_ORDER: Final = " < ".join(t.value for t in ClassificationTier)

# CEL rules per model: they travel with the model wherever its schema is inlined.
_MODEL_VALIDATIONS: Final[Mapping[type[BaseModel], list[dict[str, str]]]] = {
    DatasetSource: [
        _rule(
            "has(self.s3) != has(self.nfs)",
            "set exactly one of 's3' and 'nfs'",
        )
    ],
    Decision: [
        _rule(
            "self.action == 'extend' ? has(self.endDate) : !has(self.endDate)",
            "required for action 'extend' (the new end date) and only for it",
            fieldPath=".endDate",
        )
    ],
    AccessRequestSpec: [
        _rule(
            "self.endDate > self.startDate",
            # The server prefixes the path (spec.endDate). A static message: a
            # messageExpression with string(date) makes the CRD's estimated CEL cost
            # unbounded, and the server refuses the CRD.
            "must be after startDate",
            fieldPath=".endDate",
            reason="FieldValueInvalid",
        )
    ],
}


@dataclass(frozen=True)
class _Kind:
    model: type[BaseModel]
    description: str
    spec: type[BaseModel]
    status: type[BaseModel]
    plural: str
    singular: str
    short_names: tuple[str, ...]
    columns: tuple[dict[str, Any], ...]
    # JSON path (property names from the spec/status root) -> extensions to merge in.
    extensions: Mapping[tuple[str, ...], Mapping[str, Any]] = field(default_factory=dict)
    # Fields a LIST may select on (`fieldSelector`), so the controller reads one project's
    # requests without listing every request.
    selectable: tuple[str, ...] = ()
    scope: str = "Cluster"


def _column(name: str, json_path: str, kind: str = "string", **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": kind, "jsonPath": json_path, **extra}


_AGE: Final = _column("Age", ".metadata.creationTimestamp", "date")
_SET: Final = {"x-kubernetes-list-type": "set"}
_CONDITIONS: Final = {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]}

_KINDS: Final = (
    _Kind(
        model=Dataset,
        description="A dataset that access requests can name: its steward, sensitivity tier, "
        "storage source and (in status) the verified content manifest that approvals pin.",
        spec=DatasetSpec,
        status=DatasetStatus,
        plural="datasets",
        singular="dataset",
        # Not "ds": kubectl resolves that to DaemonSets.
        short_names=("dset",),
        columns=(
            _column("Classification", ".spec.classification"),
            _column("Objects", ".status.manifest.objectCount", "integer"),
            _column("Bytes", ".status.manifest.bytes", "integer"),
            _column("Steward", ".spec.steward", priority=1),
            _AGE,
        ),
        extensions={
            # Approvals pin the data at this source: changing it would swap the data under
            # every approval whose hash the controller then recomputes over the new place.
            ("spec", "source"): {
                "x-kubernetes-validations": [
                    _rule(
                        "self == oldSelf",
                        "source is immutable: approvals were given for the data at this "
                        "source; register a new dataset for other data",
                    )
                ]
            },
            # Lowering a tier would let a workspace with fewer approvers see the data.
            ("spec", "classification"): {
                "x-kubernetes-validations": [
                    _rule(
                        f"{_TIER_RANK}[self] >= {_TIER_RANK}[oldSelf]",
                        f"classification may only be raised ({_TIER_ORDER}), never "
                        "lowered; register a new dataset for a less sensitive release",
                    )
                ]
            },
            ("status", "conditions"): _CONDITIONS,
        },
    ),
    _Kind(
        model=AccessRequest,
        description="A project's request for access to datasets, with its append-only list of "
        "decisions. Admission policies check who may write what (see `tre` docs).",
        spec=AccessRequestSpec,
        status=AccessRequestStatus,
        selectable=(".spec.project",),
        plural="accessrequests",
        singular="accessrequest",
        short_names=("ar",),
        columns=(
            _column("Project", ".spec.project"),
            _column("Phase", ".status.phase"),
            _column("Lead", ".spec.lead"),
            _column("End", ".spec.endDate"),
            _column("Requester", ".spec.requester", priority=1),
            _AGE,
        ),
        extensions={
            ("spec", "members"): _SET,
            ("spec", "datasets"): _SET,
            # Decisions are replaced as a whole; the admission policy checks that the old list
            # is a prefix of the new one.
            ("spec", "decisions"): {"x-kubernetes-list-type": "atomic"},
            **{
                ("spec", name): {
                    "x-kubernetes-validations": [
                        _rule(
                            "self == oldSelf",
                            f"{name} is immutable; file a new access request instead",
                        )
                    ]
                }
                for name in _IMMUTABLE_REQUEST_FIELDS
            },
            ("status", "conditions"): _CONDITIONS,
        },
    ),
    _Kind(
        model=Workspace,
        description="The effective state of one project, written only by the controller: the "
        "union of its approved, unexpired, unrevoked access requests.",
        spec=WorkspaceSpec,
        status=WorkspaceStatus,
        plural="workspaces",
        singular="workspace",
        short_names=("ws",),
        columns=(
            _column("Namespace", ".spec.namespace"),
            _column("Phase", ".status.phase"),
            _column("Expires", ".spec.expiresAt"),
            _AGE,
        ),
        extensions={
            ("spec", "members"): _SET,
            ("spec", "people"): _SET,
            ("spec", "requests"): _SET,
            ("spec", "datasets"): {
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["name"],
                # The sources' CEL rules (bucket, prefix, path) are costed per item: without
                # a bound the API server refuses the CRD. Only the controller writes this, as
                # the union of a project's active requests (each at most 20 datasets); a
                # project beyond the bound gets a refused write, reported on that project.
                "maxItems": WORKSPACE_MAX_DATASETS,
            },
            ("status", "conditions"): _CONDITIONS,
        },
    ),
)


_EXPORTS: Final = _Kind(
    model=ExportRequest,
    description="A project member's request to take files out of the workspace, with the "
    "output checkers' append-only reviews. Lives in the project's namespace; admission "
    "policies check who may write what.",
    spec=ExportRequestSpec,
    status=ExportRequestStatus,
    plural="exportrequests",
    singular="exportrequest",
    short_names=("xr",),
    scope="Namespaced",
    columns=(
        _column("Phase", ".status.phase"),
        _column("Author", ".spec.author"),
        _AGE,
    ),
    extensions={
        # Replaced as a whole; the admission policy checks the old list is a prefix.
        ("spec", "reviews"): {"x-kubernetes-list-type": "atomic"},
        ("status", "conditions"): _CONDITIONS,
        # The airlock appends; the admission policy checks the old list is a prefix.
        ("status", "access"): {"x-kubernetes-list-type": "atomic"},
    },
)
_BROWSER: Final = _Kind(
    model=BrowserActivity,
    description="One batch of a browser gate's records (files served, uploads, refusals, "
    "budget crossings), created by the airlock for the gate that sent it; the controller "
    "audits each record and then deletes the batch. Never changed.",
    spec=BrowserActivitySpec,
    status=BrowserActivityStatus,
    plural="browseractivities",
    singular="browseractivity",
    short_names=("bra",),
    scope="Namespaced",
    columns=(
        _column("User", ".spec.user"),
        _column("Pod", ".spec.pod", priority=1),
        _AGE,
    ),
    extensions={
        ("spec",): {
            "x-kubernetes-validations": [
                _rule("self == oldSelf", "a browser activity record is never changed")
            ]
        },
    },
)
_ALL_KINDS: Final = (*_KINDS, _EXPORTS, _BROWSER)


def plan_crds() -> list[dict[str, Any]]:
    """The CustomResourceDefinitions, ready for server-side apply."""
    return [_crd(kind) for kind in _ALL_KINDS]


def crd_name(plural: str) -> str:
    """`datasets` -> `datasets.tre.ucloud.org`."""
    return f"{plural}.{API_GROUP}"


def structural_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of `model` (camelCase, as on the wire)."""
    generated = model.model_json_schema(by_alias=True, schema_generator=_WireSchemaGenerator)
    defs: dict[str, Any] = generated.get("$defs", {})
    schema = _structural(generated, defs, model.__name__, ())
    if schema.get("properties") == {}:
        # A model without fields (BrowserActivity's status): the API server stores no empty
        # `properties`, and an apply that sends one conflicts with the stored CRD (helm's).
        del schema["properties"]
    return schema


# --- internals ---------------------------------------------------------------------------------


def _crd(kind: _Kind) -> dict[str, Any]:
    spec = structural_schema(kind.spec)
    status = structural_schema(kind.status)
    for path, extension in kind.extensions.items():
        root = {"spec": spec, "status": status}[path[0]]
        node = _at(root, path[1:], kind.spec.__name__)
        for key, value in extension.items():
            if key == "x-kubernetes-validations":
                # Added to the model's own rules (a source's "exactly one"), not replacing them.
                node[key] = [*node.get(key, []), *value]
            else:
                node[key] = value
    name_schema = _structural(
        kind.model.model_json_schema(by_alias=True, schema_generator=_WireSchemaGenerator)[
            "properties"
        ]["name"],
        {},
        kind.model.__name__,
        ("name",),
    )
    schema = {
        "type": "object",
        "description": kind.description,
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            # Structural schemas may constrain metadata.name only: it is the model's `name`.
            "metadata": {"type": "object", "properties": {"name": name_schema}},
            "spec": spec,
            "status": status,
        },
    }
    return {
        "apiVersion": CRD_API_VERSION,
        "kind": "CustomResourceDefinition",
        "metadata": {"name": crd_name(kind.plural), "labels": dict(PART_OF_LABEL)},
        "spec": {
            "group": API_GROUP,
            "scope": kind.scope,
            "names": {
                "kind": kind.model.__name__,
                "listKind": f"{kind.model.__name__}List",
                "plural": kind.plural,
                "singular": kind.singular,
                "shortNames": list(kind.short_names),
                "categories": [CATEGORY],
            },
            "versions": [
                {
                    "name": API_VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": schema},
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": list(kind.columns),
                    **(
                        {"selectableFields": [{"jsonPath": p} for p in kind.selectable]}
                        if kind.selectable
                        else {}
                    ),
                }
            ],
        },
    }


def _at(schema: dict[str, Any], path: tuple[str, ...], where: str) -> dict[str, Any]:
    node = schema
    for name in path:
        try:
            node = node["properties"][name]
        except KeyError:
            raise ValueError(f"{where}: no property {'.'.join(path)!r} to extend") from None
    return node


class _WireSchemaGenerator(GenerateJsonSchema):
    """Adds each domain type's rule, date and time patterns, and models' CEL rules."""

    def function_after_schema(
        self, schema: core_schema.AfterValidatorFunctionSchema
    ) -> JsonSchemaValue:
        json_schema = super().function_after_schema(schema)
        function = schema["function"]["function"]
        if isinstance(function, types.DomainRule):
            return {**json_schema, **function.crd_schema()}
        if getattr(function, "__module__", None) == types.__name__:
            raise ValueError(
                f"domain type validator {function.__name__} is not a DomainRule; declare it "
                "as one so the CRD checks what the validator checks"
            )
        return json_schema

    def date_schema(self, schema: core_schema.DateSchema) -> JsonSchemaValue:
        return {**super().date_schema(schema), "pattern": types.DATE_PATTERN}

    def datetime_schema(self, schema: core_schema.DatetimeSchema) -> JsonSchemaValue:
        return {**super().datetime_schema(schema), "pattern": types.DATETIME_PATTERN}

    def model_schema(self, schema: core_schema.ModelSchema) -> JsonSchemaValue:
        json_schema = super().model_schema(schema)
        rules = _MODEL_VALIDATIONS.get(schema["cls"])
        if rules:
            json_schema["x-kubernetes-validations"] = [dict(rule) for rule in rules]
        return json_schema


def _structural(
    node: Mapping[str, Any],
    defs: Mapping[str, Any],
    where: str,
    path: tuple[str, ...],
    expanding: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    at = f"{where}.{'.'.join(path)}" if path else where
    if "$ref" in node:
        name = node["$ref"].removeprefix("#/$defs/")
        if name not in defs:
            raise ValueError(f"{at}: unresolvable reference {node['$ref']!r}")
        if name in expanding:
            raise ValueError(f"{at}: recursive model {name!r} cannot be a structural schema")
        merged = {**defs[name], **{k: v for k, v in node.items() if k != "$ref"}}
        return _structural(merged, defs, where, path, expanding | {name})
    if "anyOf" in node:
        variants = [v for v in node["anyOf"] if v != {"type": "null"}]
        if len(variants) != 1:
            raise ValueError(
                f"{at}: a union of {len(variants)} types has no structural schema; use one "
                "type (Optional[X] is fine)"
            )
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        return _structural({**variants[0], **rest}, defs, where, path, expanding)

    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED_KEYWORDS:
            continue
        if key in _KEPT_KEYWORDS:
            out[key] = list(value) if isinstance(value, list) else value
        elif key == "const":
            out["enum"] = [value]
        elif key == "properties":
            out["properties"] = {
                name: _structural(sub, defs, where, (*path, name), expanding)
                for name, sub in value.items()
            }
        elif key == "items":
            out["items"] = _structural(value, defs, where, (*path, "[]"), expanding)
        elif key == "additionalProperties":
            if isinstance(value, Mapping):
                out["additionalProperties"] = _structural(
                    value, defs, where, (*path, "{}"), expanding
                )
            elif value is not False:
                raise ValueError(f"{at}: free-form objects are not allowed; give a value type")
            # `false`: a structural schema already prunes (or, with fieldValidation=Strict,
            # refuses) unknown fields; apiextensions/v1 forbids spelling it out.
        elif key in {"exclusiveMinimum", "exclusiveMaximum"}:
            bound = "minimum" if key == "exclusiveMinimum" else "maximum"
            out[bound] = value
            out[key] = True
        elif key == "x-kubernetes-validations":
            out[key] = [dict(rule) for rule in value]
        else:
            raise ValueError(f"{at}: JSON Schema keyword {key!r} has no structural equivalent")
    if "type" not in out:
        raise ValueError(f"{at}: no type (structural schemas need one on every node)")
    return out
