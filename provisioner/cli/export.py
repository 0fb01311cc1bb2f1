"""`tre export`: take results out through the airlock.

`submit` runs in a notebook, with the notebook's hub token, which the airlock accepts for that
notebook's project only (submit, upload, withdraw). The other commands need a token of the
person's own, from the hub's token page, used outside any workspace (docs/airlock.md)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from provisioner.cli import common
from provisioner.cli.context import cli_context, new_app
from provisioner.cli.output import emit
from provisioner.errors import InvalidInputError

if TYPE_CHECKING:
    from provisioner.airlock.client import Airlock

app = new_app()

TOKEN_ENV = "JUPYTERHUB_API_TOKEN"  # noqa: S105 - the variable's name, not a token
URL_ENV = "TRE_AIRLOCK_URL"
PROJECT_ENV = "TRE_PROJECT"


def _airlock(url: str | None) -> Airlock:
    from provisioner.airlock.client import Airlock
    from provisioner.planning.names import airlock_url

    token = os.environ.get(TOKEN_ENV)
    if not token:
        raise InvalidInputError(
            f"{TOKEN_ENV}: not set; run `tre export submit` in your notebook's terminal (the "
            "hub gives every notebook a token), and the other commands with a token from the "
            "hub's token page"
        )
    return Airlock(url or os.environ.get(URL_ENV) or airlock_url(common.settings()), token)


@app.command()
def submit(
    ctx: typer.Context,
    files: Annotated[list[str], typer.Argument(help="Output files, relative to --root.")],
    description: Annotated[
        str, typer.Option("--description", "-d", help="What the files are (each file's).")
    ],
    context: Annotated[
        str,
        typer.Option(
            "--context",
            "-c",
            help="For the reviewers: the population, the method, the smallest cell counts.",
        ),
    ],
    supporting: Annotated[
        list[str] | None,
        typer.Option(
            "--supporting", "-s", help="A file shown to reviewers but never released (code, logs)."
        ),
    ] = None,
    project: Annotated[
        str | None, typer.Option(help=f"The project. Default: ${PROJECT_ENV} (set in notebooks).")
    ] = None,
    root: Annotated[Path, typer.Option(help="Project storage; paths are confined to it.")] = Path(
        "/project"
    ),
    airlock_url: Annotated[
        str | None,
        typer.Option("--airlock-url", help=f"The airlock's API. Default: ${URL_ENV}."),
    ] = None,
) -> None:
    """Submit files for export: declare them (size, sha256), file the request in your name,
    and stream each file into quarantine. Two output checkers review it; the project lead
    releases it. Paths outside --root, or symbolic links out of it, are refused.
    """
    from provisioner.airlock.client import declare
    from provisioner.airlock.client import submit as send

    name = project or os.environ.get(PROJECT_ENV)
    if not name:
        raise InvalidInputError(f"--project: which project? (or set ${PROJECT_ENV})")
    settings = common.settings()
    airlock = _airlock(airlock_url)
    declared = declare(
        root, files, supporting or [], description, max_bytes=settings.airlock_max_file_bytes
    )

    def progress(message: str) -> None:
        typer.echo(f"tre export: {message}", err=True)

    created = send(
        airlock,
        root,
        name,
        context,
        declared,
        max_bytes=settings.airlock_max_file_bytes,
        progress=progress,
    )
    emit(
        {**created, "files": [f.path for f in declared], "phase": "Submitted"},
        cli_context(ctx).output,
    )


NameArg = Annotated[str, typer.Argument(help="The export request: NAMESPACE/NAME.")]
UrlOption = Annotated[
    str | None,
    typer.Option("--airlock-url", help=f"The airlock's API. Default: ${URL_ENV}."),
]


def _split(name: str) -> tuple[str, str]:
    namespace, _, request = name.partition("/")
    if not namespace or not request or "/" in request:
        raise InvalidInputError(
            f"NAME: {name!r} is not NAMESPACE/NAME; `tre export list` shows both"
        )
    return namespace, request


def _call(url: str | None, method: str, path: str, body: object = None) -> dict[str, object]:
    return _airlock(url).call(method, path, body)


@app.command()
def show(ctx: typer.Context, name: NameArg, airlock_url: UrlOption = None) -> None:
    """One export: files, phase, the reviews you may see, the automated checks (checkers)."""
    namespace, request = _split(name)
    emit(_call(airlock_url, "GET", f"api/exports/{namespace}/{request}"), cli_context(ctx).output)


@app.command()
def review(
    ctx: typer.Context,
    name: NameArg,
    vote: Annotated[
        list[str],
        typer.Option(
            "--vote",
            help="PATH=approve|changes|reject, once per file of the export "
            "(or '*=approve' for every file).",
        ),
    ],
    comment: Annotated[str, typer.Option("--comment", "-m", help="Said with every vote.")] = "",
    airlock_url: UrlOption = None,
) -> None:
    """Review an export as an output checker: one vote per file, once, never your own
    project's. Your review stays hidden from the other checker until both are in."""
    namespace, request = _split(name)
    path = f"api/exports/{namespace}/{request}"
    votes: dict[str, dict[str, str]] = {}
    for given in vote:
        file, sep, choice = given.partition("=")
        if not sep or not choice:
            raise InvalidInputError(f"--vote: {given!r} is not PATH=approve|changes|reject")
        votes[file] = {"vote": choice, "comment": comment}
    if "*" in votes:
        files = _call(airlock_url, "GET", path)["files"]
        assert isinstance(files, list)
        everyone = votes.pop("*")
        votes = {str(f["path"]): votes.get(str(f["path"]), everyone) for f in files}
    emit(_call(airlock_url, "POST", f"{path}/reviews", {"votes": votes}), cli_context(ctx).output)


@app.command()
def release(ctx: typer.Context, name: NameArg, airlock_url: UrlOption = None) -> None:
    """Release an Approved export (the project's lead): its output files are copied out of
    quarantine, verified, and recorded with a release manifest."""
    namespace, request = _split(name)
    path = f"api/exports/{namespace}/{request}/release"
    emit(_call(airlock_url, "POST", path), cli_context(ctx).output)


@app.command()
def download(
    ctx: typer.Context,
    name: NameArg,
    file: Annotated[str, typer.Argument(help="A released file's path.")],
    out: Annotated[
        Path | None, typer.Option("--out", help="Save it here (default: print the link).")
    ] = None,
    airlock_url: UrlOption = None,
) -> None:
    """A released file (the project's lead): a link that expires, or the file itself with
    --out. Every download is recorded."""
    import urllib.parse
    import urllib.request

    namespace, request = _split(name)
    quoted = urllib.parse.quote(file)
    answer = _call(airlock_url, "POST", f"api/exports/{namespace}/{request}/download/{quoted}")
    if out is None:
        emit(answer, cli_context(ctx).output)
        return
    link = str(answer["url"])
    with urllib.request.urlopen(link, timeout=300) as response, out.open("wb") as target:  # noqa: S310 - the airlock's presigned link
        while chunk := response.read(1 << 20):
            target.write(chunk)
    emit({"file": file, "savedTo": str(out), "bytes": out.stat().st_size}, cli_context(ctx).output)


@app.command()
def revoke(
    ctx: typer.Context,
    name: NameArg,
    reason: Annotated[str, typer.Option("--reason", help="Why (kept in the record).")],
    airlock_url: UrlOption = None,
) -> None:
    """Revoke a release (an output checker or the lead): the released copies are deleted,
    links stop working, the reason is kept."""
    namespace, request = _split(name)
    path = f"api/exports/{namespace}/{request}/revoke"
    emit(_call(airlock_url, "POST", path, {"reason": reason}), cli_context(ctx).output)


@app.command("list")
def list_exports(
    ctx: typer.Context,
    airlock_url: Annotated[
        str | None,
        typer.Option("--airlock-url", help=f"The airlock's API. Default: ${URL_ENV}."),
    ] = None,
) -> None:
    """The exports you may see (yours and your projects'; all, for output checkers). With
    your own hub token: a notebook's token lists nothing."""
    rows = _call(airlock_url, "GET", "api/exports")["items"]
    columns = ["namespace", "name", "project", "author", "phase", "files"]
    emit(rows, cli_context(ctx).output, columns)
