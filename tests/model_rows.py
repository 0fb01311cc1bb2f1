"""The query commands' rows as the models give them: what `tre request list|show`, `tre
workspace list|show` and `tre dataset list|show` printed before they read the wire form directly
(`provisioner.cli.views`). The unit tests compare the views with these on objects with and
without every optional field, the integration tests on live objects, so a default or a field
order the views get wrong fails a test.
"""

from __future__ import annotations

from typing import Any

from provisioner.models.resources import (
    AccessRequest,
    Dataset,
    DatasetSource,
    Workspace,
    WorkspacePhase,
)


def model_source_uri(source: DatasetSource) -> str:
    """The URI from the model's fields (the model normalised the S3 prefix)."""
    if source.s3 is not None:
        return f"s3://{source.s3.bucket}/{source.s3.prefix}"
    assert source.nfs is not None
    return f"nfs://{source.nfs.server}{source.nfs.path}"


def request_row(obj: dict[str, Any]) -> dict[str, Any]:
    request = AccessRequest.from_object(obj)
    return {
        "name": request.name,
        "project": request.spec.project,
        "phase": request.status.phase.value,
        "requester": request.spec.requester,
        "lead": request.spec.lead,
        "members": request.spec.members,
        "datasets": request.spec.datasets,
        "end": (request.status.effective_end_date or request.spec.end_date).isoformat(),
        "approvers": request.status.approvers,
        "decisions": [d.to_wire() for d in request.spec.decisions],
    }


def workspace_row(obj: dict[str, Any]) -> dict[str, Any]:
    ws = Workspace.from_object(obj)
    return {
        "project": ws.name,
        "namespace": ws.spec.namespace,
        "owner": ws.spec.owner,
        "phase": ws.status.phase.value,
        "members": ws.spec.members,
        "datasets": [d.name for d in ws.spec.datasets],
        "expires": ws.spec.expires_at.isoformat() if ws.spec.expires_at else None,
        "requests": ws.spec.requests,
        "conditions": obj.get("status", {}).get("conditions", []),
    }


def request_detail(request_obj: dict[str, Any], workspace_obj: dict[str, Any] | None) -> Any:
    """`tre request show`: the row, the purpose and conditions, and the resulting project."""
    request = AccessRequest.from_object(request_obj)
    workspace = Workspace.from_object(workspace_obj) if workspace_obj is not None else None
    live = workspace is not None and workspace.status.phase is not WorkspacePhase.TORN_DOWN
    current_members = set(workspace.spec.members) if workspace and live else set()
    current_datasets = {d.name for d in workspace.spec.datasets} if workspace and live else set()
    return {
        **request_row(request_obj),
        "purpose": request.spec.purpose,
        "conditions": request_obj.get("status", {}).get("conditions", []),
        "projectOwner": workspace.spec.owner if workspace and live else None,
        "resultingMembers": sorted(current_members | {request.spec.lead, *request.spec.members}),
        "resultingDatasets": sorted(current_datasets | set(request.spec.datasets)),
    }


def dataset_row(obj: dict[str, Any]) -> dict[str, Any]:
    ds = Dataset.from_object(obj)
    m = ds.status.manifest
    return {
        "name": ds.name,
        "title": ds.spec.title,
        "steward": ds.spec.steward,
        "classification": ds.spec.classification.value,
        "source": model_source_uri(ds.spec.source),
        "objects": m.object_count if m else None,
        "bytes": m.bytes if m else None,
        "sha256": m.sha256[:12] if m else None,
    }


def dataset_detail(obj: dict[str, Any]) -> dict[str, Any]:
    ds = Dataset.from_object(obj)
    return {
        **dataset_row(obj),
        "region": ds.spec.source.s3.region if ds.spec.source.s3 else None,
        "description": ds.spec.description,
        "manifest": ds.status.manifest.to_wire() if ds.status.manifest else None,
        "verified": next(
            (f"{c.status}: {c.message}" for c in ds.status.conditions if c.type == "Verified"),
            "pending: the controller has not verified it yet",
        ),
    }
