"""`tre install`: the platform's cluster-wide objects (CRDs, admission policies, RBAC)."""

from __future__ import annotations

from typing import Annotated

import typer

from provisioner.cli import common
from provisioner.cli.context import cli_context
from provisioner.cli.output import emit
from provisioner.controller.install import install_platform, plan_platform


def install(
    ctx: typer.Context,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Server-side dry run: validate, change nothing.")
    ] = False,
) -> None:
    """Install or update CRDs, admission policies, RBAC, the tre-system namespace and the
    controller's ServiceAccount.

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
    install_platform(
        kube, settings, lambda message: typer.echo(f"tre install: {message}", err=True)
    )
    typer.echo("installed")
