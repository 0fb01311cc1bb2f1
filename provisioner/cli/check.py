"""`tre check`: prove, from the live cluster, that every workspace is isolated as designed.

Read-only. Run it as an admin (it lists every namespace's objects and asks
SubjectAccessReviews for the researcher, hub and controller identities). Each finding names
the SATRE v2 statement it evidences; any failed finding makes the exit code 1.
"""

from __future__ import annotations

from typing import Annotated

import typer

from provisioner.cli import common
from provisioner.cli.context import cli_context, new_app
from provisioner.cli.output import OutputFormat, emit

app = new_app()


@app.command("check")
def check(
    ctx: typer.Context,
    project: Annotated[
        list[str] | None,
        typer.Option(
            "--project",
            "-p",
            help="Check only this workspace (repeat for several).",
            metavar="PROJECT",
        ),
    ] = None,
) -> None:
    """Isolation and compliance report: network (proven by network-config-analyzer), Pod
    Security, foreign objects, RBAC, read-only datasets, the audit chain. Exit 1 on a failure.

    The first run installs network-config-analyzer into its own venv under
    $TRE_CACHE_DIR/nca-<version>/ (about a minute).
    """
    from provisioner.compliance.report import check_cluster

    settings = common.settings()
    c = cli_context(ctx)
    report = check_cluster(
        lambda: common.kube_for(c),
        settings,
        _audit_verifier(ctx) if common.s3_configured(settings) else None,
        projects=frozenset(project or ()),
    )
    rows = [f.to_dict() for f in report.findings]
    if c.output is OutputFormat.TABLE:
        emit(
            [{**r, "passed": "PASS" if r["passed"] else "FAIL"} for r in rows],
            c.output,
            ["id", "scope", "passed", "satre", "detail"],
        )
    else:
        emit({"passed": report.passed, "workspaces": report.workspaces, "checks": rows}, c.output)
    failed = [f for f in report.findings if not f.passed]
    if failed:
        typer.echo(
            f"error: {len(failed)} of {len(rows)} checks failed: "
            + ", ".join(sorted({f"{f.check} ({f.scope})" for f in failed})[:20]),
            err=True,
        )
        raise typer.Exit(1)


def _audit_verifier(ctx: typer.Context):  # type: ignore[no-untyped-def]
    def verify() -> tuple[list[str], int]:
        from provisioner.audit.anchor import read_published_head, verify_against_published

        log = common.audit_reader()
        problems = verify_against_published(log, read_published_head(common.kube(ctx)))
        entries = 0 if problems else len(log.read_all())
        return [str(p) for p in problems], entries

    return verify
