"""`tre install`: the platform's cluster-wide objects (CRDs, admission policies, RBAC)."""

from __future__ import annotations

from typing import Annotated

import typer

from provisioner.audit.log import ensure_audit_bucket
from provisioner.cli import common
from provisioner.cli.context import cli_context, new_app
from provisioner.cli.output import emit
from provisioner.controller.install import install_platform, plan_platform


def install(
    ctx: typer.Context,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Server-side dry run: validate, change nothing.")
    ] = False,
) -> None:
    """Install or update CRDs, admission policies, RBAC, the tre-system namespace, the
    controller's ServiceAccount, and the audit bucket (with object lock) when S3 is configured.

    Idempotent (server-side apply). Needs cluster-admin rights; run it as yourself, not --as.
    """
    kube = common.kube(ctx)
    settings = common.settings()
    if dry_run:
        rows = []
        for obj in plan_platform(settings):
            kube.apply(obj, dry_run=True)
            rows.append({"kind": obj["kind"], "name": obj["metadata"]["name"], "dryRun": "ok"})
        emit(rows, cli_context(ctx).output, ["kind", "name", "dryRun"])
        return

    def progress(message: str) -> None:
        typer.echo(f"tre install: {message}", err=True)

    install_platform(kube, settings, progress)
    if common.s3_configured(settings):
        # Only here (and in `tre dev up`): opening the log never creates the bucket.
        locked = ensure_audit_bucket(
            common.s3(),
            settings.audit_bucket,
            retention_days=settings.audit_retention_days,
            owner=settings.audit_bucket_owner,
        )
        progress(
            f"audit bucket {settings.audit_bucket!r} ready "
            f"({'object lock on' if locked else 'no object lock: TRE_AUDIT_RETENTION_DAYS=0'})"
        )
        from provisioner.airlock.release import ensure_airlock_buckets

        ensure_airlock_buckets(common.s3(), settings)
        progress(
            f"airlock buckets {settings.airlock_quarantine_bucket!r} (quarantine) and "
            f"{settings.airlock_egress_bucket!r} (egress, versioned) ready"
        )
    else:
        progress(
            "S3 not configured (TRE_S3_ENDPOINT_URL / TRE_S3_ACCESS_KEY_ID unset): audit "
            f"bucket {settings.audit_bucket!r} and airlock buckets not created; create the "
            "audit bucket with object lock, or set them and run 'tre install' again"
        )
    typer.echo("installed")


app = new_app()
app.command("install")(install)
