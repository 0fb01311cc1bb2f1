"""What the root command's global options hand to every subcommand."""

from __future__ import annotations

from dataclasses import dataclass, field

import typer

from provisioner.cli.output import OutputFormat


@dataclass(frozen=True)
class CliContext:
    output: OutputFormat = OutputFormat.TABLE
    # Kubernetes impersonation (like `kubectl --as`): the API server sees this user, so
    # admission policies judge the person, not the admin credential that carries the call.
    as_user: str | None = None
    as_groups: tuple[str, ...] = field(default_factory=tuple)


def cli_context(ctx: typer.Context) -> CliContext:
    obj = ctx.find_root().obj
    return obj if isinstance(obj, CliContext) else CliContext()
