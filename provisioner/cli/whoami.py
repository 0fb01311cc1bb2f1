"""`tre whoami`: who the API server sees (like `kubectl auth whoami`)."""

from __future__ import annotations

import typer

from provisioner.cli import common
from provisioner.cli.context import cli_context, new_app
from provisioner.cli.output import emit

app = new_app()


@app.command("whoami")
def whoami(ctx: typer.Context) -> None:
    """Show the username and groups the API server sees for you, after --as/--as-group."""
    review = common.kube(ctx).request(
        "POST",
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        body={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
        what="ask the API server who you are",
    )
    info = review.get("status", {}).get("userInfo", {})
    emit(
        {"username": info.get("username"), "groups": info.get("groups", [])},
        cli_context(ctx).output,
    )
