"""What the root command's global options hand to every subcommand, and the one way the
command groups are made."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

from provisioner.cli.output import OutputFormat

if TYPE_CHECKING:
    # typer is imported where a command group is made, not by the fast path of the queries
    # (provisioner.cli.main), which needs only CliContext
    import typer


# A NamedTuple, not a dataclass: `dataclasses` imports `inspect`, about 5 ms of every
# `tre` query (docs/performance.md), and this sits on the query path.
class CliContext(NamedTuple):
    output: OutputFormat = OutputFormat.TABLE
    # Kubernetes impersonation (like `kubectl --as`): the API server sees this user, so
    # admission policies judge the person, not the admin credential that carries the call.
    as_user: str | None = None
    as_groups: tuple[str, ...] = ()


def cli_context(ctx: typer.Context) -> CliContext:
    obj = ctx.find_root().obj
    return obj if isinstance(obj, CliContext) else CliContext()


def new_app(*, add_completion: bool = False, **kwargs: Any) -> typer.Typer:
    """A command group: `-h` as well as `--help`, plain help text (no rich: it costs start-up
    time and changes nothing a terminal needs), no traceback decoration; shell completion is
    installed from the root command only (`tre --install-completion`)."""
    import typer

    return typer.Typer(
        no_args_is_help=True,
        add_completion=add_completion,
        rich_markup_mode=None,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
        **kwargs,
    )
