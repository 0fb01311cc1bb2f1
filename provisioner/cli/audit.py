"""`tre audit`: check and export the hash-chained audit log."""

from __future__ import annotations

import typer

from provisioner.cli import common
from provisioner.cli.context import cli_context
from provisioner.cli.output import OutputFormat, emit
from provisioner.errors import AuditChainError

app = typer.Typer(no_args_is_help=True, context_settings={"help_option_names": ["-h", "--help"]})


@app.command()
def verify(ctx: typer.Context) -> None:
    """Check every entry's hash and link; name each edited, dropped or reordered entry."""
    log = common.audit_log()
    problems = log.verify()  # first: it reports unreadable entries that read_all() raises on
    entries = [] if problems else log.read_all()
    fmt = cli_context(ctx).output
    if fmt is not OutputFormat.TABLE:
        emit(
            {"entries": len(entries), "ok": not problems, "problems": [str(p) for p in problems]},
            fmt,
        )
    if problems:
        raise AuditChainError(
            f"audit log s3://{log.bucket} failed verification:\n"
            + "\n".join(f"  {p}" for p in problems)
        )
    if fmt is OutputFormat.TABLE:
        typer.echo(f"ok: {len(entries)} entries, chain intact (s3://{log.bucket})")


@app.command()
def export(ctx: typer.Context) -> None:
    """Print the whole log as JSON lines."""
    typer.echo(common.audit_log().export_jsonl(), nl=False)
