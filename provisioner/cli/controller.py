"""`tre controller run`: the workspace controller."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Annotated

import typer

from provisioner.cli import common
from provisioner.cli.context import cli_context, new_app
from provisioner.cli.output import emit
from provisioner.controller.loop import PassReport, run_controller, run_pass
from provisioner.planning.names import SYSTEM_NAMESPACE

app = new_app()


@app.command()
def run(
    ctx: typer.Context,
    once: Annotated[bool, typer.Option(help="One pass over every project, then exit.")] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log every request and decision.")
    ] = False,
) -> None:
    """Reconcile every project continuously (watches + periodic resync, leader-elected).

    Run it as the controller's identity: in a cluster its ServiceAccount; locally
    `tre --as system:serviceaccount:tre-system:tre-controller controller run`. Its Lease
    lives in the platform namespace tre-system, the only namespace where it may hold one. It
    needs the audit signing key (TRE_AUDIT_SIGNING_KEY_FILE): it signs every audit entry and
    publishes the chain head in ConfigMap tre-system/tre-audit-head.
    """
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    k = common.kube(ctx, official_client=True)
    settings = common.settings()
    audit = common.controller_audit_log(k)
    # The controller lists the datasets itself, with its own S3 credentials.
    s3 = common.s3()
    if once:
        report = run_pass(k, settings, dt.datetime.now(dt.UTC), audit, s3=s3)
        _print(ctx, report)
        if report.errors:
            raise typer.Exit(1)
        return
    run_controller(k, settings, lease_namespace=SYSTEM_NAMESPACE, audit=audit, s3=s3)


def _print(ctx: typer.Context, report: PassReport) -> None:
    rows = [
        {
            "project": r.project,
            "phase": r.phase.value if r.phase else None,
            "applied": len(r.applied),
            "pruned": len(r.pruned),
            "stopped": len(r.stopped),
            "error": r.conflict,
        }
        for r in report.results
    ]
    rows += [
        {"project": p, "phase": None, "applied": 0, "pruned": 0, "stopped": 0, "error": e}
        for p, e in {**report.errors, **report.unparsable}.items()
    ]
    emit(
        rows,
        cli_context(ctx).output,
        ["project", "phase", "applied", "pruned", "stopped", "error"],
    )
