"""`tre workspace`: inspect workspaces, preview and run a reconcile of one project."""

from __future__ import annotations

from typing import Annotated

import typer

from provisioner.cli import common, views
from provisioner.cli.context import cli_context, new_app
from provisioner.cli.output import emit
from provisioner.cli.params import ProjectArg
from provisioner.kube.api import Kube

app = new_app()


@app.command("list")
def list_(ctx: typer.Context) -> None:
    """List the workspaces you may read: those you are a member or owner of (approvers and
    admins: all). JSON: project, namespace, phase, members, datasets, ..."""
    emit(views.list_workspaces(common.kube(ctx)), cli_context(ctx).output, views.WORKSPACE_COLUMNS)


@app.command()
def show(ctx: typer.Context, project: ProjectArg) -> None:
    """Show one workspace with its conditions."""
    emit(views.show_workspace(common.kube(ctx), project), cli_context(ctx).output)


@app.command()
def plan(ctx: typer.Context, project: ProjectArg) -> None:
    """Show what a reconcile would change for PROJECT, object by object, and why."""
    # the planner and the controller: only the commands that plan import them
    from provisioner.controller.reconcile import read_snapshot
    from provisioner.planning.project import describe, plan_project

    kube = common.kube(ctx)
    audit = common.audit_reader()
    planned = plan_project(
        common.settings(), project, read_snapshot(kube), common.utc_now(), frozenset(audit.keys())
    )
    emit(describe(planned), cli_context(ctx).output, ["change", "object", "why"])


@app.command()
def reconcile(
    ctx: typer.Context,
    project: ProjectArg,
    audit: Annotated[
        bool,
        typer.Option(
            help="Record transitions in the audit log (needs the controller's signing key, "
            "TRE_AUDIT_SIGNING_KEY_FILE)."
        ),
    ] = True,
) -> None:
    """Reconcile PROJECT once, now (what the controller does on every pass)."""
    from provisioner.controller.reconcile import read_snapshot, reconcile_project

    k: Kube = common.kube(ctx)
    result = reconcile_project(
        k,
        common.settings(),
        project,
        read_snapshot(k),
        common.utc_now(),
        common.controller_audit_log(k) if audit else None,
    )
    emit(
        {
            "project": project,
            "phase": result.phase.value if result.phase else None,
            "applied": result.applied,
            "pruned": result.pruned,
            "stopped": result.stopped,
            "statusWrites": result.status_writes,
            "auditEntries": result.audited,
            "conflict": result.conflict,
        },
        cli_context(ctx).output,
    )
