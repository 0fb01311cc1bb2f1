"""The typer app of the `tre` command: every command, its help and shell completion.

`provisioner.cli.main` runs the read-only queries without it when it can (typer alone costs
more than kubectl's whole query) and hands everything else here.

Start-up is kept short (an admin runs dozens of these a day): this module imports only typer
and the command table; each command group is imported when it is run (`LAZY_COMMANDS`), and
the groups import the Kubernetes client, boto3 and the planner only inside the commands that
use them. `tests/unit/test_cli_startup.py` fails when `tre --help` imports a heavy module.

The global options (`-o/--output`, `--as`, `--as-group`) are accepted before or after the
subcommand, as in kubectl: `TreGroup.parse_args` moves them in front (`hoist_global_options`).
"""

from __future__ import annotations

import importlib
from typing import Annotated, Any

import typer
from typer._click import core as click  # typer 0.29 vendors click
from typer._click import exceptions as click_exceptions
from typer._click.formatting import HelpFormatter
from typer.core import TyperGroup

from provisioner import __version__
from provisioner.cli.context import CliContext, new_app
from provisioner.cli.main import hoist_global_options, report
from provisioner.cli.output import OutputFormat
from provisioner.errors import InvalidInputError, TreError

# name: (module, help). The module's `app` is a typer.Typer; it is imported only when the
# command runs (or when completion or the reference needs it).
LAZY_COMMANDS: dict[str, tuple[str, str]] = {
    "install": (
        "provisioner.cli.install",
        "Install or update CRDs, admission policies, RBAC and the audit bucket.",
    ),
    "dataset": ("provisioner.cli.dataset", "Register and verify datasets."),
    "request": ("provisioner.cli.request", "File, decide and inspect data-access requests."),
    "workspace": ("provisioner.cli.workspace", "Inspect, plan and reconcile workspaces."),
    "audit": ("provisioner.cli.audit", "Verify and export the audit log."),
    "controller": ("provisioner.cli.controller", "Run the workspace controller."),
    "dev": ("provisioner.cli.dev", "Run the local development platform (control plane + S3)."),
    "export": (
        "provisioner.cli.export",
        "Submit results for export through the airlock (from a notebook).",
    ),
    "airlock": ("provisioner.cli.airlock", "Run the airlock service (exports, reviews, release)."),
    "whoami": ("provisioner.cli.whoami", "Show the username and groups the API server sees."),
    "check": (
        "provisioner.cli.check",
        "Prove from the live cluster that every workspace is isolated (SATRE-mapped report).",
    ),
}

# Commands that are one command, not a group of them (`tre install`, not `tre install x`).
_SINGLE_COMMANDS = frozenset({"install", "whoami", "check"})


def _load(name: str) -> click.Command:
    module_name, help_text = LAZY_COMMANDS[name]
    module = importlib.import_module(module_name)
    if name in _SINGLE_COMMANDS:
        return typer.main.get_command(module.app)
    # a group even when it holds one command (`tre controller run`)
    group = typer.main.get_group(module.app)
    group.name = name
    group.help = help_text
    return group


class TreGroup(TyperGroup):
    """The root command: loads command groups on first use, accepts the global options
    anywhere, and turns our errors into a message on stderr and an exit code, once, for
    every command."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            hoisted = hoist_global_options(args)
        except ValueError as exc:
            raise click_exceptions.BadOptionUsage(
                str(exc), f"Option '{exc}' requires an argument.", ctx=ctx
            ) from None
        return super().parse_args(ctx, hoisted)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*super().list_commands(ctx), *(n for n in LAZY_COMMANDS if n not in self.commands)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and cmd_name in LAZY_COMMANDS:
            command = self.commands[cmd_name] = _load(cmd_name)
        return command

    def format_commands(self, ctx: click.Context, formatter: HelpFormatter) -> None:
        # From the table, without importing every group just to print its help line.
        with formatter.section("Commands"):
            formatter.write_dl(
                [(name, help_text) for name, (_, help_text) in LAZY_COMMANDS.items()]
            )

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except TreError as exc:
            raise typer.Exit(report(exc)) from exc
        except Exception as exc:
            # pydantic is imported only by the commands that need it
            from pydantic import ValidationError

            if not isinstance(exc, ValidationError):
                raise
            from provisioner.cli.output import format_validation_error

            typer.echo("error: invalid input\n" + format_validation_error(exc), err=True)
            raise typer.Exit(2) from exc


app = new_app(
    name="tre",
    cls=TreGroup,
    add_completion=True,
    help="U-Cloud TRE: turn approved data-access requests into isolated research workspaces.",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tre {__version__}")
        raise typer.Exit


@app.callback()
def root(
    ctx: typer.Context,
    output: Annotated[
        OutputFormat,
        typer.Option("--output", "-o", help="Output format (before or after the subcommand)."),
    ] = OutputFormat.TABLE,
    as_user: Annotated[
        str | None,
        typer.Option(
            "--as",
            help="Act as this user (Kubernetes impersonation, like kubectl --as).",
            metavar="USER",
        ),
    ] = None,
    as_group: Annotated[
        list[str] | None,
        typer.Option("--as-group", help="Group for --as; repeat for several.", metavar="GROUP"),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    groups = tuple(as_group or ())
    if groups and not as_user:
        raise InvalidInputError("--as-group: needs --as USER as well")
    ctx.obj = CliContext(output=output, as_user=as_user, as_groups=groups)
