"""`tre controller run`: the workspace controller."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Annotated

import typer

from provisioner.cli import common
from provisioner.cli.context import cli_context
from provisioner.cli.output import emit
from provisioner.controller.loop import PassReport, run_controller, run_pass

app = typer.Typer(no_args_is_help=True, context_settings={"help_option_names": ["-h", "--help"]})


@app.command()
def run(
    ctx: typer.Context,
    once: Annotated[bool, typer.Option(help="One pass over every project, then exit.")] = False,
    lease_namespace: Annotated[
        str, typer.Option(help="Namespace of the leader-election Lease.")
    ] = "tre-system",
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Reconcile every project continuously (watches + periodic resync, leader-elected).

    Run it as the controller's identity: in a cluster its ServiceAccount; locally
    `tre --as system:serviceaccount:tre-system:tre-controller controller run`. It needs the
    audit signing key (TRE_AUDIT_SIGNING_KEY_FILE): it signs every audit entry and publishes
    the chain head in ConfigMap tre-system/tre-audit-head.
    """
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    k = common.kube(ctx)
    audit = common.controller_audit_log(k)
    if once:
        report = run_pass(k, common.settings(), dt.datetime.now(dt.UTC), audit)
        _print(ctx, report)
        if report.errors:
            raise typer.Exit(1)
        return
    run_controller(k, common.settings(), lease_namespace=lease_namespace, audit=audit)


def _print(ctx: typer.Context, report: PassReport) -> None:
    rows = [
        {
            "project": r.project,
            "phase": r.phase.value if r.phase else None,
            "applied": len(r.applied),
            "pruned": len(r.pruned),
            "error": None,
        }
        for r in report.results
    ]
    rows += [
        {"project": p, "phase": None, "applied": 0, "pruned": 0, "error": e}
        for p, e in report.errors.items()
    ]
    emit(rows, cli_context(ctx).output, ["project", "phase", "applied", "pruned", "error"])
