"""`tre dataset`: register datasets and verify that their content is what was approved."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from provisioner.cli import common
from provisioner.cli.context import cli_context
from provisioner.cli.output import emit
from provisioner.errors import InvalidInputError, NotFoundError
from provisioner.kube.api import Kube
from provisioner.kube.resources import DATASETS
from provisioner.models.resources import (
    Condition,
    Dataset,
    DatasetSource,
    DatasetSpec,
    DatasetStatus,
    NfsSource,
    S3Source,
)
from provisioner.models.types import ClassificationTier
from provisioner.storage.s3 import compute_manifest

app = typer.Typer(no_args_is_help=True, context_settings={"help_option_names": ["-h", "--help"]})
COLUMNS = ["name", "title", "classification", "source", "objects", "bytes", "sha256"]


def _row(ds: Dataset) -> dict[str, Any]:
    src = ds.spec.source
    m = ds.status.manifest
    return {
        "name": ds.name,
        "title": ds.spec.title,
        "steward": ds.spec.steward,
        "classification": ds.spec.classification.value,
        "source": f"s3://{src.s3.bucket}/{src.s3.prefix}"
        if src.s3
        else f"nfs://{src.nfs.server}{src.nfs.path}"
        if src.nfs
        else "-",
        "objects": m.object_count if m else None,
        "bytes": m.bytes if m else None,
        "sha256": m.sha256[:12] if m else None,
    }


def _verified_status(ds: Dataset) -> DatasetStatus:
    """Recompute the manifest of an S3 dataset (NFS content is attested by its steward)."""
    now = common.utc_now()
    if ds.spec.source.s3 is None:
        return DatasetStatus(
            conditions=[
                Condition(
                    type="Verified",
                    status="Unknown",
                    reason="NotS3",
                    message="NFS content is not listed by the platform",
                    last_transition_time=now,
                )
            ]
        )
    manifest = compute_manifest(common.s3(), ds.spec.source.s3, now=now)
    return DatasetStatus(
        manifest=manifest,
        conditions=[
            Condition(
                type="Verified",
                status="True",
                reason="ManifestComputed",
                message=f"{manifest.object_count} objects, {manifest.bytes} bytes",
                last_transition_time=now,
            )
        ],
    )


@app.command()
def register(
    ctx: typer.Context,
    name: str,
    title: Annotated[str, typer.Option(help="Human-readable title.")],
    steward: Annotated[str, typer.Option(help="Username of the data steward.")],
    classification: Annotated[ClassificationTier, typer.Option(help="Sensitivity tier.")],
    bucket: Annotated[str | None, typer.Option(help="S3 bucket holding the data.")] = None,
    prefix: Annotated[str, typer.Option(help="Key prefix inside the bucket.")] = "",
    nfs_server: Annotated[str | None, typer.Option(help="NFS server (instead of S3).")] = None,
    nfs_path: Annotated[str | None, typer.Option(help="NFS export path.")] = None,
    description: Annotated[str, typer.Option(help="Longer description.")] = "",
) -> None:
    """Register a dataset: checks the data exists and records its content manifest."""
    if (bucket is None) == (nfs_server is None):
        raise InvalidInputError("give either --bucket (S3) or --nfs-server and --nfs-path")
    source = DatasetSource(
        s3=S3Source(bucket=bucket, prefix=prefix) if bucket else None,
        nfs=NfsSource(server=nfs_server, path=nfs_path or "") if nfs_server else None,
    )
    ds = Dataset(
        name=name,
        spec=DatasetSpec(
            title=title,
            steward=steward,
            classification=classification,
            source=source,
            description=description,
        ),
    )
    status = _verified_status(ds)  # fails before anything is created if the data is missing
    k = common.kube(ctx)
    k.create(ds.to_object())
    k.patch_status(DATASETS, name, status.to_wire())
    registered = ds.model_copy(update={"status": status})
    common.audit_log().append(
        common.whoami(k),
        "dataset.register",
        f"dataset/{name}",
        {"classification": classification.value, **_row(registered)},
    )
    emit(_row(registered), cli_context(ctx).output)


def _load(k: Kube, name: str) -> Dataset:
    obj = k.get(DATASETS, name)
    if obj is None:
        raise NotFoundError(f"dataset {name!r} does not exist; see 'tre dataset list'")
    return Dataset.from_object(obj)


@app.command()
def verify(ctx: typer.Context, name: str) -> None:
    """Recompute the manifest; a change shows as DatasetChanged on workspaces that use it."""
    k = common.kube(ctx)
    ds = _load(k, name)
    status = _verified_status(ds)
    before = ds.status.manifest.sha256 if ds.status.manifest else None
    after = status.manifest.sha256 if status.manifest else None
    k.patch_status(DATASETS, name, status.to_wire())
    if before != after:
        common.audit_log().append(
            common.whoami(k), "dataset.changed", f"dataset/{name}", {"from": before, "to": after}
        )
    emit(
        {**_row(ds.model_copy(update={"status": status})), "changed": before != after},
        cli_context(ctx).output,
    )


@app.command("list")
def list_(ctx: typer.Context) -> None:
    """List datasets."""
    rows = [_row(Dataset.from_object(o)) for o in common.kube(ctx).list(DATASETS)]
    emit(sorted(rows, key=lambda r: r["name"]), cli_context(ctx).output, COLUMNS)


@app.command()
def show(ctx: typer.Context, name: str) -> None:
    """Show one dataset."""
    ds = _load(common.kube(ctx), name)
    emit(
        {
            **_row(ds),
            "description": ds.spec.description,
            "manifest": ds.status.manifest.to_wire() if ds.status.manifest else None,
        },
        cli_context(ctx).output,
    )
