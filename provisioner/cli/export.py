"""`tre export`: take results out through the airlock (from a notebook, with its hub token)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from provisioner.cli import common
from provisioner.cli.context import cli_context, new_app
from provisioner.cli.output import emit
from provisioner.errors import InvalidInputError

app = new_app()

TOKEN_ENV = "JUPYTERHUB_API_TOKEN"  # noqa: S105 - the variable's name, not a token
URL_ENV = "TRE_AIRLOCK_URL"
PROJECT_ENV = "TRE_PROJECT"


def _airlock(url: str | None) -> object:
    from provisioner.airlock.client import Airlock
    from provisioner.planning.names import airlock_url

    token = os.environ.get(TOKEN_ENV)
    if not token:
        raise InvalidInputError(
            f"{TOKEN_ENV}: not set; run this in your notebook's terminal (the hub gives every "
            "notebook a token), or export a token from the hub's token page"
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
    from provisioner.airlock.client import Airlock, declare
    from provisioner.airlock.client import submit as send

    name = project or os.environ.get(PROJECT_ENV)
    if not name:
        raise InvalidInputError(f"--project: which project? (or set ${PROJECT_ENV})")
    settings = common.settings()
    airlock = _airlock(airlock_url)
    assert isinstance(airlock, Airlock)
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


@app.command("list")
def list_exports(
    ctx: typer.Context,
    airlock_url: Annotated[
        str | None,
        typer.Option("--airlock-url", help=f"The airlock's API. Default: ${URL_ENV}."),
    ] = None,
) -> None:
    """The exports you may see (yours and your projects'; all, for output checkers)."""
    from provisioner.airlock.client import Airlock

    airlock = _airlock(airlock_url)
    assert isinstance(airlock, Airlock)
    rows = airlock.call("GET", "api/exports")["items"]
    columns = ["namespace", "name", "project", "author", "phase", "files"]
    emit(rows, cli_context(ctx).output, columns)
