"""`tre whoami`: who the API server sees (like `kubectl auth whoami`)."""

from __future__ import annotations

import typer

from provisioner.cli import common, views
from provisioner.cli.context import cli_context, new_app
from provisioner.cli.output import emit

app = new_app()


@app.command("whoami")
def whoami(ctx: typer.Context) -> None:
    """Show the username and groups the API server sees for you, after --as/--as-group."""
    emit(views.whoami(common.kube(ctx)), cli_context(ctx).output)
