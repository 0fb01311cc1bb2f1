"""`tre check`: prove, from the live cluster, that every workspace is isolated as designed.

Read-only. Run it as an admin (it lists every namespace's objects and asks
SubjectAccessReviews for the researcher, hub and controller identities). Each finding names
the SATRE v2 statement it evidences; any failed finding makes the exit code 1.

`--probe-from-pods` (opt-in) adds real connection attempts from short-lived pods in every
Ready workspace (provisioner/planning/runtime_probes.py): the only run of `tre check` that
changes the cluster, and the only one that sends packets, to the API server, the nodes'
kubelets, the hub, the resolver, the other workspaces' probe pods and the `--outside`
addresses the operator names. There is no default outside address: nobody's address is
probed unless someone chose it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from provisioner.cli import common
from provisioner.cli.context import CliContext, cli_context, new_app
from provisioner.cli.output import OutputFormat, emit
from provisioner.errors import InvalidInputError

if TYPE_CHECKING:
    from provisioner.compliance.runtime import RuntimeProbes
    from provisioner.models.settings import Settings
    from provisioner.planning.runtime_probes import Address

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
    probe_from_pods: Annotated[
        bool,
        typer.Option(
            "--probe-from-pods",
            help="Also run a listener and a prober pod in every Ready workspace (a notebook "
            "to its policies, created as the hub), which must reach the hub API and DNS and "
            "fail to reach the API server, the kubelets, the other workspaces' pods and every "
            "--outside address. Needs a Ready node and --outside; the pods are deleted after.",
        ),
    ] = False,
    outside: Annotated[
        list[str] | None,
        typer.Option(
            "--outside",
            help="With --probe-from-pods: an address outside the cluster the pods must fail "
            "to reach, e.g. the cloud metadata service 169.254.169.254:80 (repeat for "
            "several). No default: only addresses you name are probed.",
            metavar="ADDR:PORT",
        ),
    ] = None,
    probe_timeout: Annotated[
        float,
        typer.Option(
            "--probe-timeout",
            help="With --probe-from-pods: seconds the probe pods may take to be scheduled "
            "and report; after that the runtime checks fail.",
            min=10,
            max=900,
            metavar="SECONDS",
        ),
    ] = 120,
) -> None:
    """Isolation and compliance report: network (proven by network-config-analyzer), Pod
    Security, foreign objects, RBAC, read-only datasets, the audit chain; with
    --probe-from-pods, connection attempts from pods as well. Exit 1 on a failure.

    The first run installs network-config-analyzer into its own venv under
    $TRE_CACHE_DIR/nca-<version>/ (about a minute).
    """
    from provisioner.compliance.report import check_cluster

    targets = _outside_targets(probe_from_pods, outside or [])
    settings = common.settings()
    c = cli_context(ctx)
    runtime = _runtime_probes(c, settings, targets, probe_timeout) if probe_from_pods else None
    report = check_cluster(
        lambda: common.kube_for(c),
        settings,
        _audit_verifier(ctx) if common.s3_configured(settings) else None,
        projects=frozenset(project or ()),
        runtime=runtime,
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


def _outside_targets(probe_from_pods: bool, outside: list[str]) -> list[Address]:
    """The `--outside` targets, checked before anything is read from the cluster."""
    from provisioner.planning.runtime_probes import parse_outside

    if outside and not probe_from_pods:
        raise InvalidInputError("--outside: only used with --probe-from-pods; add it")
    if probe_from_pods and not outside:
        raise InvalidInputError(
            "--probe-from-pods: needs at least one --outside ADDR:PORT, an address outside "
            "the cluster the probe pods must fail to reach (e.g. --outside "
            "169.254.169.254:80); there is no default, so that no address is probed that "
            "nobody chose"
        )
    try:
        return [parse_outside(text) for text in outside]
    except ValueError as exc:
        raise InvalidInputError(str(exc)) from None


def _runtime_probes(
    c: CliContext, settings: Settings, targets: list[Address], bound: float
) -> RuntimeProbes:
    from provisioner.compliance.runtime import RuntimeProbes
    from provisioner.kube.api import Kube
    from provisioner.kube.client import cli_client
    from provisioner.planning.names import hub_user

    if c.as_user:
        raise InvalidInputError(
            "--probe-from-pods: cannot be combined with --as; the probe pods are created by "
            "impersonating the hub's ServiceAccount, and impersonation does not chain: run "
            "it with the admin credential itself"
        )
    kubeconfig = common.kubeconfig_setting()
    return RuntimeProbes(
        outside=targets,
        bound_seconds=bound,
        operator=common.whoami(common.kube_for(c)),
        as_hub=lambda: Kube(cli_client(kubeconfig, as_user=hub_user(settings))),
    )


def _audit_verifier(ctx: typer.Context):  # type: ignore[no-untyped-def]
    def verify() -> tuple[list[str], int]:
        from provisioner.audit.anchor import read_published_head, verify_against_published

        log = common.audit_reader()
        problems = verify_against_published(log, read_published_head(common.kube(ctx)))
        entries = 0 if problems else len(log.read_all())
        return [str(p) for p in problems], entries

    return verify
