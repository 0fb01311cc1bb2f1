"""`tre audit`: check and export the hash-chained audit log.

Both commands only read: they need S3 read access and no signing key. `verify` checks the
bucket against the head and public key the controller published in the cluster
(ConfigMap tre-system/tre-audit-head), read as the caller.
"""

from __future__ import annotations

import typer

from provisioner.audit.anchor import WHERE, read_published_head, verify_against_published
from provisioner.cli import common
from provisioner.cli.context import cli_context, new_app
from provisioner.cli.output import OutputFormat, emit
from provisioner.errors import AuditChainError

app = new_app()


@app.command()
def verify(ctx: typer.Context) -> None:
    """Check every entry's hash, link and signature against the head the controller published;
    name each edited, dropped, reordered, forged or truncated entry."""
    log = common.audit_reader()
    published = read_published_head(common.kube(ctx))
    # first: it reports unreadable entries that read_all() raises on
    problems = verify_against_published(log, published)
    entries = [] if problems else log.read_all()
    fmt = cli_context(ctx).output
    anchor = (
        {"bucket": published.bucket, "seq": published.anchor.seq, "hash": published.anchor.hash}
        if published is not None
        else None
    )
    if fmt is not OutputFormat.TABLE:
        emit(
            {
                "entries": len(entries),
                "ok": not problems,
                "problems": [str(p) for p in problems],
                "publishedHead": anchor,
            },
            fmt,
        )
    if problems:
        raise AuditChainError(
            f"audit log s3://{log.bucket} failed verification:\n"
            + "\n".join(f"  {p}" for p in problems)
        )
    if fmt is OutputFormat.TABLE:
        if published is None:
            typer.echo(
                f"ok: the log s3://{log.bucket} is empty and no head is published in {WHERE} "
                "yet (the controller publishes it after its first entry)"
            )
        else:
            typer.echo(
                f"ok: {len(entries)} entries, chain intact and signed by the controller, "
                f"reaches the published head (entry {published.anchor.seq}) (s3://{log.bucket})"
            )


@app.command()
def export(ctx: typer.Context) -> None:
    """Print the whole log as JSON lines (as stored; run `verify` to check it)."""
    typer.echo(common.audit_reader().export_jsonl(), nl=False)
