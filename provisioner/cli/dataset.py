"""`tre dataset`: register datasets and check that their content is what was recorded.

Stewards register; the controller lists the data and records the manifest (approvals pin its
hash). `verify` is a read-only check with the caller's own S3 credentials. Nothing here writes
the audit log: the controller does.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from provisioner.cli import common, views
from provisioner.cli.context import cli_context, new_app
from provisioner.cli.output import emit
from provisioner.cli.params import (
    DatasetArg,
    bucket_option,
    nfs_path_option,
    nfs_server_option,
    s3_prefix_option,
    s3_region_option,
    username_option,
)
from provisioner.errors import DataChangedError, InvalidInputError, NotFoundError, RefusedError
from provisioner.kube.api import Kube
from provisioner.kube.resources import DATASETS
from provisioner.models.resources import (
    Dataset,
    DatasetSource,
    DatasetSpec,
    NfsSource,
    S3Source,
)
from provisioner.models.types import ClassificationTier
from provisioner.planning.datasets import overlap_refusal, platform_bucket_refusal, source_uri

app = new_app()


def _row(ds: Dataset) -> dict[str, Any]:
    return views.dataset_row(ds.to_object(with_status=True))


@app.command()
def register(
    ctx: typer.Context,
    name: DatasetArg,
    title: Annotated[str, typer.Option(help="Human-readable title.")],
    steward: Annotated[str, username_option("--steward", "Username of the data steward.")],
    classification: Annotated[ClassificationTier, typer.Option(help="Sensitivity tier.")],
    bucket: Annotated[str | None, bucket_option("S3 bucket holding the data.")] = None,
    prefix: Annotated[str, s3_prefix_option("Key prefix inside the bucket.")] = "",
    region: Annotated[
        str | None, s3_region_option("The bucket's region (default: the platform's).")
    ] = None,
    nfs_server: Annotated[
        str | None, nfs_server_option("NFS server's DNS name (instead of S3).")
    ] = None,
    nfs_path: Annotated[str | None, nfs_path_option("NFS export path.")] = None,
    description: Annotated[str, typer.Option(help="Longer description.")] = "",
) -> None:
    """Register a dataset; the controller then lists its data and records its manifest.

    The source cannot change afterwards and the classification can only be raised. The
    platform's own buckets (audit log, airlock) are refused.
    """
    if (bucket is None) == (nfs_server is None):
        raise InvalidInputError("give either --bucket (S3) or --nfs-server and --nfs-path")
    source = DatasetSource(
        s3=S3Source(bucket=bucket, prefix=prefix, region=region) if bucket else None,
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
    # Friendly early answers; the API server's own policies (tre-dataset-not-platform-bucket,
    # tre-dataset-no-overlap) decide.
    refusal = platform_bucket_refusal(source, common.settings())
    if refusal is not None:
        raise InvalidInputError(f"dataset {name}: {refusal}")
    k = common.kube(ctx)
    refusal = overlap_refusal(ds, (Dataset.from_object(o) for o in k.list(DATASETS)))
    if refusal is not None:
        raise RefusedError(f"dataset {name}: {refusal}")
    k.create(ds.to_object())
    emit(
        {
            **_row(ds),
            "verified": "pending: the controller lists the data and records its manifest",
        },
        cli_context(ctx).output,
    )


def _load(k: Kube, name: str) -> Dataset:
    obj = k.get(DATASETS, name)
    if obj is None:
        raise NotFoundError(f"dataset {name!r} does not exist; see 'tre dataset list'")
    return Dataset.from_object(obj)


@app.command()
def verify(ctx: typer.Context, name: DatasetArg) -> None:
    """Check, with your own S3 credentials, that the data still matches its recorded manifest.

    Read-only: only the controller records manifests. Exits 7 when the data changed. The S3
    endpoint and default region are part of the hash: use the platform's TRE_S3_ENDPOINT_URL
    and TRE_S3_REGION.
    """
    ds = _load(common.kube(ctx), name)
    recorded = ds.status.manifest
    if recorded is None:
        raise NotFoundError(
            f"dataset {name!r} has no manifest yet: the controller records it on its next "
            "pass (see the Verified condition with 'tre dataset show')"
        )
    from provisioner.storage.s3 import compute_manifest  # boto3: only this command

    now = compute_manifest(common.s3(), ds, common.settings())
    if now.sha256 != recorded.sha256:
        raise DataChangedError(
            f"dataset {name!r}: the data at {source_uri(ds.spec.source)} no longer matches "
            f"the manifest recorded at {recorded.computed_at.isoformat()} "
            f"({recorded.object_count} objects, {recorded.bytes} bytes, sha256 "
            f"{recorded.sha256[:12]}; now {now.object_count} objects, {now.bytes} bytes, "
            f"sha256 {now.sha256[:12]}); workspaces withhold it once the controller "
            "re-verifies it, and approvers must approve it again"
        )
    emit(
        {**_row(ds), "matches": True},
        cli_context(ctx).output,
    )


@app.command("list")
def list_(ctx: typer.Context) -> None:
    """List datasets."""
    emit(views.list_datasets(common.kube(ctx)), cli_context(ctx).output, views.DATASET_COLUMNS)


@app.command()
def show(ctx: typer.Context, name: DatasetArg) -> None:
    """Show one dataset."""
    emit(views.show_dataset(common.kube(ctx), name), cli_context(ctx).output)
