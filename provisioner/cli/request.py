"""`tre request`: file, decide and inspect data-access requests.

Every decision is written with the caller's own identity (`--as` impersonates), and the API
server's admission policies are the guarantee; the checks here (the pure rules of
`planning.approvals`) only give a friendlier message first. The controller, not this client,
writes every filing and decision to the audit log, whichever client made it.
"""

from __future__ import annotations

import datetime as dt
import secrets
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from provisioner.cli import common, views
from provisioner.cli.context import cli_context, new_app
from provisioner.cli.inputs import load_mapping
from provisioner.cli.output import emit, format_validation_error
from provisioner.cli.params import RequestArg, object_name_option, project_option
from provisioner.errors import (
    ConflictError,
    ForbiddenError,
    InvalidInputError,
    RefusedError,
)
from provisioner.kube.api import Kube
from provisioner.kube.resources import ACCESS_REQUESTS, DATASETS, WORKSPACES
from provisioner.models.resources import (
    AccessRequest,
    AccessRequestSpec,
    Dataset,
    Decision,
    DecisionAction,
    RequestPhase,
    Workspace,
    WorkspacePhase,
)
from provisioner.planning import names
from provisioner.planning.approvals import decision_refusal, owner_refusal, reserved_slug_refusal

app = new_app()

# What a request file may hold (camelCase, as in the API; the requester and the decisions are
# not the filer's to write).
REQUEST_FILE_FIELDS = frozenset(
    {
        "project",
        "lead",
        "members",
        "datasets",
        "purpose",
        "startDate",
        "endDate",
        "computeTier",
    }
)


def _load(k: Kube, name: str) -> tuple[AccessRequest, dict[str, Any]]:
    obj = views.existing(k, ACCESS_REQUESTS, name, f"access request {name!r}", "tre request list")
    return AccessRequest.from_object(obj), obj


def check_request_rules(spec: AccessRequestSpec, k: Kube, today: dt.date) -> None:
    """The friendly pre-check of what the admission policies enforce, plus existence."""
    max_days = common.settings().max_request_days
    if spec.end_date < today:
        raise InvalidInputError(
            f"request.endDate: must not be in the past (got {spec.end_date}, today is {today})"
        )
    if (spec.end_date - spec.start_date).days > max_days:
        raise InvalidInputError(
            f"request.endDate: must be within {max_days} days of startDate (got "
            f"{spec.end_date}); ask for an extension later instead"
        )
    missing = [d for d in spec.datasets if k.get(DATASETS, d) is None]
    if missing:
        raise InvalidInputError(
            f"request.datasets: unknown dataset(s) {', '.join(missing)}; see 'tre dataset list'"
        )
    refusal = reserved_slug_refusal(
        spec.project, names.reserved_project_slugs(common.settings())
    ) or _owner_refusal(k, spec.project, spec.requester)
    if refusal:
        raise RefusedError(refusal)


def _workspace(k: Kube, project: str) -> Workspace | None:
    obj = k.get(WORKSPACES, project)
    return Workspace.from_object(obj) if obj is not None else None


def _owner_refusal(k: Kube, project: str, me: str) -> str | None:
    try:
        workspace = _workspace(k, project)
    except ForbiddenError:
        # Not the caller's project: whether it has an owner is not theirs to read here, and
        # policy tre-accessrequest-project-owner judges the filing anyway.
        return None
    if workspace is None or workspace.status.phase is WorkspacePhase.TORN_DOWN:
        return owner_refusal(project, None, None, me)
    return owner_refusal(project, workspace.spec, workspace.status.phase, me)


@app.command()
def submit(
    ctx: typer.Context,
    file: Annotated[
        Path,
        typer.Option(
            "--file",
            "-f",
            help="YAML file with the request (project, lead, members, datasets, purpose, "
            "startDate, endDate, computeTier); '-' reads standard input.",
            exists=False,
        ),
    ],
    name: Annotated[
        str | None, object_name_option("Object name [default: <project>-<random>].")
    ] = None,
) -> None:
    """File a data-access request as yourself (or as --as USER)."""
    raw = load_mapping(file, "request fields")
    given_by_tre = sorted(set(raw) & {"requester", "decisions"})
    if given_by_tre:
        raise InvalidInputError(
            f"--file: {file}: remove {', '.join(given_by_tre)}: tre sets the requester (who "
            "you are) and only approvers add decisions"
        )
    unknown = sorted(set(raw) - REQUEST_FILE_FIELDS)
    if unknown:
        raise InvalidInputError(
            f"--file: {file}: unknown field(s) {', '.join(unknown)}; a request has "
            + ", ".join(sorted(REQUEST_FILE_FIELDS))
        )
    k = common.kube(ctx)
    raw = {**raw, "requester": common.whoami(k), "decisions": []}
    raw.setdefault("startDate", dt.date.today().isoformat())
    try:
        spec = AccessRequestSpec.model_validate(raw)
    except ValidationError as exc:
        raise InvalidInputError(_validation_lines(exc)) from exc
    check_request_rules(spec, k, dt.date.today())
    request = AccessRequest(name=name or f"{spec.project}-{secrets.token_hex(3)}", spec=spec)
    # The request as the API server stored it, from the create's own answer: the filer reads
    # it back here at once (their read grant follows on the controller's next pass).
    emit(views.request_row(k.create(request.to_object())), cli_context(ctx).output)


def _validation_lines(exc: ValidationError) -> str:
    return "request is invalid:\n" + format_validation_error(exc).replace("\n", "\n  ")


def _decide(
    ctx: typer.Context,
    name: str,
    action: DecisionAction,
    comment: str,
    end_date: dt.date | None = None,
) -> None:
    k = common.kube(ctx)
    me = common.whoami(k)
    for _ in range(5):  # optimistic concurrency: re-read and retry if someone wrote first
        request, obj = _load(k, name)
        workspace = _workspace(k, request.spec.project)
        members = frozenset(workspace.spec.members) if workspace else frozenset()
        refusal = decision_refusal(request, me, action, project_members=members)
        if refusal:
            raise RefusedError(refusal)
        seen: dict[str, Dataset] = {}
        if action is DecisionAction.APPROVE:
            seen = _current_datasets(k, request.spec.datasets)
        decision = Decision(
            action=action,
            by=me,
            # to the microsecond: the first approval completed founds a project
            at=dt.datetime.now(dt.UTC),
            comment=comment,
            end_date=end_date,
            manifest_hashes={
                n: d.status.manifest.sha256 for n, d in seen.items() if d.status.manifest
            },
            classifications={n: d.spec.classification for n, d in seen.items()},
        )
        obj["spec"]["decisions"] = [*obj["spec"].get("decisions", []), decision.to_wire()]
        try:
            k.replace(obj)
        except ConflictError:
            continue
        emit({"name": name, "decision": action.value, "by": me}, cli_context(ctx).output)
        return
    raise ConflictError(f"access request {name!r} kept changing; try again")


def _current_datasets(k: Kube, datasets: list[str]) -> dict[str, Dataset]:
    """Each dataset as the approver sees it now: the approval pins its manifest and tier."""
    found = {}
    for name in datasets:
        obj = k.get(DATASETS, name)
        if obj is None:
            raise InvalidInputError(f"dataset {name!r} does not exist; it cannot be approved")
        dataset = Dataset.from_object(obj)
        if dataset.status.manifest is None:
            raise InvalidInputError(
                f"dataset {name!r} has no verified manifest yet; the controller verifies "
                "every registered dataset, try again shortly"
            )
        found[name] = dataset
    return found


Comment = Annotated[str, typer.Option("--comment", "-m", help="Why; goes to the audit log.")]


@app.command()
def approve(ctx: typer.Context, name: RequestArg, comment: Comment = "") -> None:
    """Approve a request (pins each dataset's current manifest)."""
    _decide(ctx, name, DecisionAction.APPROVE, comment)


@app.command()
def reject(ctx: typer.Context, name: RequestArg, comment: Comment) -> None:
    """Reject a request (final)."""
    _decide(ctx, name, DecisionAction.REJECT, comment)


@app.command()
def revoke(ctx: typer.Context, name: RequestArg, comment: Comment) -> None:
    """Revoke a request: its members and datasets leave the workspace at the next reconcile."""
    _decide(ctx, name, DecisionAction.REVOKE, comment)


@app.command()
def extend(
    ctx: typer.Context,
    name: RequestArg,
    until: Annotated[dt.datetime, typer.Option(formats=["%Y-%m-%d"], help="New end date.")],
    comment: Comment = "",
) -> None:
    """Extend a request's end date (within the maximum duration from its start)."""
    request, _ = _load(common.kube(ctx), name)
    new_end = until.date()
    max_days = common.settings().max_request_days
    current = request.status.effective_end_date or request.spec.end_date
    if new_end <= current:
        raise InvalidInputError(
            f"--until: must be after the current end date {current} (got {new_end})"
        )
    if (new_end - request.spec.start_date).days > max_days:
        raise InvalidInputError(
            f"--until: must be within {max_days} days of startDate {request.spec.start_date} "
            f"(got {new_end}); file a new request instead"
        )
    _decide(ctx, name, DecisionAction.EXTEND, comment, new_end)


@app.command("list")
def list_(
    ctx: typer.Context,
    project: Annotated[str | None, project_option("Only this project.")] = None,
    phase: Annotated[RequestPhase | None, typer.Option(help="Only this phase.")] = None,
) -> None:
    """List the access requests you may read: those naming you and your projects' (approvers
    and admins: all)."""
    rows = views.list_requests(common.kube(ctx), project, phase.value if phase else None)
    emit(rows, cli_context(ctx).output, views.REQUEST_COLUMNS)


@app.command()
def show(ctx: typer.Context, name: RequestArg) -> None:
    """Show one request with its decisions, and the workspace it would produce: approvers
    judge the whole project, not only this request."""
    emit(views.show_request(common.kube(ctx), name), cli_context(ctx).output)
