"""What the query commands print (`tre request list|show`, `tre workspace list|show`,
`tre dataset list|show`, `tre whoami`), read from the objects as the API server returns them.

No pydantic here, on purpose: importing it and building the models costs a query more time
than kubectl takes for the whole command (docs/performance.md). Reading the wire form is
safe because the API server stores only what the models accept (the CRD schemas are
generated from them). What the models would add is written out here: a missing status is
Pending (requests) or Provisioning (workspaces), a decision or a manifest is printed in the
models' field order with their defaults and UTC written as 'Z', an S3 prefix ends with '/'.
`tests/unit/test_cli_views.py` checks every row against the one the models give, so the two
cannot drift apart.

Both ways into these commands, typer (`provisioner.cli.app`) and the fast path of
`provisioner.cli.main`, call these functions, so they print the same bytes.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from provisioner import API_GROUP
from provisioner.errors import ForbiddenError, NotFoundError, RefusedError
from provisioner.kube.api import Kube, Manifest
from provisioner.kube.resources import ACCESS_REQUESTS, DATASETS, WORKSPACES, Resource
from provisioner.models.rules import RequestPhase, WorkspacePhase, source_uri
from provisioner.planning.names import SYSTEM_NAMESPACE

REQUEST_COLUMNS = ["name", "project", "phase", "requester", "lead", "datasets", "end", "approvers"]
WORKSPACE_COLUMNS = ["project", "namespace", "phase", "members", "datasets", "expires"]
DATASET_COLUMNS = ["name", "title", "classification", "source", "objects", "bytes", "sha256"]

# DatasetManifest's fields on the wire, in the model's order (all required).
MANIFEST_FIELDS = ("objectCount", "bytes", "sha256", "computedAt")
# Decision's fields on the wire, in the model's order, with the defaults of those a stored
# decision may leave out (`Decision.to_wire()` prints them all; endDate only when set).
DECISION_FIELDS: tuple[tuple[str, Any], ...] = (
    ("action", None),
    ("by", None),
    ("at", None),
    ("comment", ""),
    ("endDate", None),
    ("manifestHashes", {}),
    ("classifications", {}),
)


def _wire_datetime(value: str) -> str:
    """A stored date-time as the models print it: ISO 8601, microseconds only when there are
    any, UTC as 'Z'."""
    text = dt.datetime.fromisoformat(value).isoformat()
    return text.removesuffix("+00:00") + "Z" if text.endswith("+00:00") else text


def manifest_view(manifest: Manifest) -> dict[str, Any]:
    view = {name: manifest[name] for name in MANIFEST_FIELDS}
    view["computedAt"] = _wire_datetime(view["computedAt"])
    return view


def decision_view(decision: Manifest) -> dict[str, Any]:
    view: dict[str, Any] = {}
    for name, default in DECISION_FIELDS:
        value = decision.get(name, default)
        if value is None:
            continue
        view[name] = _wire_datetime(value) if name == "at" else value
    return view


def request_row(obj: Manifest) -> dict[str, Any]:
    spec = obj["spec"]
    status = obj.get("status") or {}
    return {
        "name": obj["metadata"]["name"],
        "project": spec["project"],
        "phase": status.get("phase", RequestPhase.PENDING.value),
        "requester": spec["requester"],
        "lead": spec["lead"],
        "members": spec["members"],
        "datasets": spec["datasets"],
        "end": status.get("effectiveEndDate") or spec["endDate"],
        "approvers": status.get("approvers", []),
        "decisions": [decision_view(d) for d in spec.get("decisions", [])],
    }


def workspace_row(obj: Manifest) -> dict[str, Any]:
    spec = obj["spec"]
    status = obj.get("status") or {}
    return {
        "project": obj["metadata"]["name"],
        "namespace": spec["namespace"],
        "owner": spec.get("owner"),
        "phase": status.get("phase", WorkspacePhase.PROVISIONING.value),
        "members": spec.get("members", []),
        "datasets": [d["name"] for d in spec.get("datasets", [])],
        "expires": spec.get("expiresAt"),
        "requests": spec.get("requests", []),
        "conditions": status.get("conditions", []),
    }


def dataset_row(obj: Manifest) -> dict[str, Any]:
    spec = obj["spec"]
    manifest = (obj.get("status") or {}).get("manifest")
    return {
        "name": obj["metadata"]["name"],
        "title": spec["title"],
        "steward": spec["steward"],
        "classification": spec["classification"],
        "source": source_uri(spec["source"]),
        "objects": manifest["objectCount"] if manifest else None,
        "bytes": manifest["bytes"] if manifest else None,
        "sha256": manifest["sha256"][:12] if manifest else None,
    }


def dataset_detail(obj: Manifest) -> dict[str, Any]:
    """One dataset with its manifest and whether the controller has verified it."""
    status = obj.get("status") or {}
    manifest = status.get("manifest")
    verified = (
        f"{c['status']}: {c.get('message', '')}"
        for c in status.get("conditions", [])
        if c["type"] == "Verified"
    )
    s3 = obj["spec"]["source"].get("s3")
    return {
        **dataset_row(obj),
        # What the manifest hash covers besides the place: an approver sees it all. None: the
        # platform's region (an NFS export has none).
        "region": s3.get("region") if s3 else None,
        "description": obj["spec"].get("description", ""),
        "manifest": manifest_view(manifest) if manifest else None,
        "verified": next(verified, "pending: the controller has not verified it yet"),
    }


def list_datasets(k: Kube) -> list[dict[str, Any]]:
    return sorted((dataset_row(o) for o in k.list(DATASETS)), key=lambda r: r["name"])


def show_dataset(k: Kube, name: str) -> dict[str, Any]:
    return dataset_detail(existing(k, DATASETS, name, f"dataset {name!r}", "tre dataset list"))


def list_requests(k: Kube, project: str | None, phase: str | None) -> list[dict[str, Any]]:
    rows = sorted((request_row(o) for o in readable(k, ACCESS_REQUESTS)), key=lambda r: r["name"])
    return [
        r
        for r in rows
        if (project is None or r["project"] == project) and (phase is None or r["phase"] == phase)
    ]


def request_detail(obj: Manifest, workspace: Manifest | None) -> dict[str, Any]:
    """One request with the workspace it would produce (`workspace`: its project's, if
    any): approvers judge the whole project, not only this request."""
    spec = obj["spec"]
    ws = workspace_row(workspace) if workspace is not None else None
    live = ws is not None and ws["phase"] != WorkspacePhase.TORN_DOWN
    current_members = set(ws["members"]) if ws and live else set()
    current_datasets = set(ws["datasets"]) if ws and live else set()
    return {
        **request_row(obj),
        "purpose": spec["purpose"],
        "conditions": (obj.get("status") or {}).get("conditions", []),
        "projectOwner": ws["owner"] if ws and live else None,
        "resultingMembers": sorted(current_members | {spec["lead"], *spec["members"]}),
        "resultingDatasets": sorted(current_datasets | set(spec["datasets"])),
    }


def show_request(k: Kube, name: str) -> dict[str, Any]:
    obj = existing(k, ACCESS_REQUESTS, name, f"access request {name!r}", "tre request list")
    try:
        workspace = k.get(WORKSPACES, obj["spec"]["project"])
    except ForbiddenError:
        workspace = None  # a project not (yet) theirs: the request alone
    return request_detail(obj, workspace)


def list_workspaces(k: Kube) -> list[dict[str, Any]]:
    return sorted((workspace_row(o) for o in readable(k, WORKSPACES)), key=lambda r: r["project"])


def show_workspace(k: Kube, project: str) -> dict[str, Any]:
    return workspace_row(
        existing(k, WORKSPACES, project, f"workspace {project!r}", "tre workspace list")
    )


def existing(k: Kube, resource: Resource, name: str, what: str, listing: str) -> Manifest:
    try:
        obj = k.get(resource, name)
    except ForbiddenError:
        if resource not in _BY_NAME:
            raise
        raise RefusedError(
            f"{what}: you may not read it, or it does not exist (the API server answers both "
            f"alike); {_BY_NAME[resource]}. See '{listing}' for those you may read"
        ) from None
    if obj is None:
        raise NotFoundError(f"{what} does not exist; see '{listing}'")
    return obj


# What people read of each kind by name only (planning/read_grants.py), in their words.
_BY_NAME: dict[Resource, str] = {
    ACCESS_REQUESTS: "people read the access requests that name them and those of their "
    "projects, approvers read all; one you just filed becomes readable once the controller "
    "has seen it (within its next pass; 'tre request submit' printed it)",
    WORKSPACES: "people read the workspaces they are members or owner of, approvers read all",
}


def readable(k: Kube, resource: Resource) -> list[Manifest]:
    """Every object of `resource` this caller may read: the whole list when they may list
    it (approvers, admins), otherwise those their grants name (planning/read_grants.py), each
    read by name. Such an object deleted since, or a grant gone meanwhile, is left out."""
    try:
        return k.list(resource)
    except ForbiddenError:
        if resource not in _BY_NAME:
            raise
    found = []
    for name in readable_names(k, resource):
        try:
            obj = k.get(resource, name)
        except ForbiddenError:
            continue
        if obj is not None:
            found.append(obj)
    return found


def readable_names(k: Kube, resource: Resource) -> list[str]:
    """The names of `resource` (one of ours) that this caller may get, from what the API
    server says their rights are (a SelfSubjectRulesReview; cluster-wide grants apply in any
    namespace, so the platform's own is asked about)."""
    review = k.request(
        "POST",
        "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews",
        body={
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectRulesReview",
            "spec": {"namespace": SYSTEM_NAMESPACE},
        },
        what="ask the API server what you may read",
    )
    found: set[str] = set()
    for rule in (review.get("status") or {}).get("resourceRules") or []:
        if (
            set(rule.get("apiGroups") or []) & {API_GROUP, "*"}
            and set(rule.get("resources") or []) & {resource.plural, "*"}
            and set(rule.get("verbs") or []) & {"get", "*"}
        ):
            found.update(rule.get("resourceNames") or [])
    return sorted(found)


def user_info(k: Kube) -> dict[str, Any]:
    """Who the API server sees for this client, after impersonation (a SelfSubjectReview)."""
    review = k.request(
        "POST",
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        body={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
        what="ask the API server who you are",
    )
    info: dict[str, Any] = review.get("status", {}).get("userInfo", {})
    return info


def whoami(k: Kube) -> dict[str, Any]:
    info = user_info(k)
    return {"username": info.get("username"), "groups": info.get("groups", [])}
