"""The `tre` command: the only place where errors become exit codes."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from pydantic import ValidationError
from typer._click import core as click  # typer 0.29 vendors click
from typer.core import TyperGroup

from provisioner import __version__
from provisioner.cli import audit, controller, dataset, dev, request, workspace
from provisioner.cli.context import CliContext
from provisioner.cli.install import install
from provisioner.cli.output import OutputFormat, format_validation_error
from provisioner.errors import TreError


class TreGroup(TyperGroup):
    """Turns our errors into a message on stderr and an exit code, once, for every command."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except TreError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(exc.exit_code) from exc
        except ValidationError as exc:
            typer.echo("error: invalid input\n" + format_validation_error(exc), err=True)
            raise typer.Exit(2) from exc


app = typer.Typer(
    name="tre",
    cls=TreGroup,
    help="U-Cloud TRE: turn approved data-access requests into isolated research workspaces.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.command("install")(install)
app.add_typer(dataset.app, name="dataset", help="Register and verify datasets.")
app.add_typer(request.app, name="request", help="File, decide and inspect data-access requests.")
app.add_typer(workspace.app, name="workspace", help="Inspect, plan and reconcile workspaces.")
app.add_typer(audit.app, name="audit", help="Verify and export the audit log.")
app.add_typer(controller.app, name="controller", help="Run the workspace controller.")
app.add_typer(dev.app, name="dev", help="Run the local development platform (control plane + S3).")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tre {__version__}")
        raise typer.Exit


@app.callback()
def root(
    ctx: typer.Context,
    output: Annotated[
        OutputFormat, typer.Option("--output", "-o", help="Output format.")
    ] = OutputFormat.TABLE,
    as_user: Annotated[
        str | None,
        typer.Option(
            "--as", help="Act as this user (Kubernetes impersonation, like kubectl --as)."
        ),
    ] = None,
    as_group: Annotated[
        list[str] | None,
        typer.Option("--as-group", help="Group for --as; repeat for several."),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    ctx.obj = CliContext(output=output, as_user=as_user, as_groups=tuple(as_group or ()))


def main() -> None:
    app()
