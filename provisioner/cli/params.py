"""Command arguments typed by the domain: a project, dataset, user or bucket given on the
command line is checked by the same rule as the models (`provisioner.models.types`), so `tre`
and the API server refuse it in the same words, and before any call to the server.

A bad value is an InvalidInputError (exit code 2) that names the argument, e.g.
``error: PROJECT: project slug 'Heart' is invalid: use 3-32 characters ...``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer

from provisioner.errors import InvalidInputError
from provisioner.models.rules import (
    DomainRule,
    validate_bucket_name,
    validate_dataset_name,
    validate_nfs_path,
    validate_nfs_server,
    validate_object_name,
    validate_project_slug,
    validate_s3_prefix,
    validate_s3_region,
    validate_username,
)


def checked(rule: DomainRule, label: str) -> Callable[[str | None], str | None]:
    """A typer callback that applies `rule` and names `label` when it refuses."""

    def check(value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return rule(value)
        except ValueError as exc:
            raise InvalidInputError(f"{label}: {exc}") from None

    return check


ProjectArg = Annotated[
    str, typer.Argument(metavar="PROJECT", callback=checked(validate_project_slug, "PROJECT"))
]
DatasetArg = Annotated[
    str, typer.Argument(metavar="NAME", callback=checked(validate_dataset_name, "NAME"))
]
RequestArg = Annotated[
    str,
    typer.Argument(
        metavar="NAME",
        help="The request's name (see 'tre request list').",
        callback=checked(validate_object_name, "NAME"),
    ),
]


# typer.Option is typed as returning Any: these build options, for `Annotated[...]`.
def project_option(help_text: str) -> Any:
    return typer.Option(help=help_text, callback=checked(validate_project_slug, "--project"))


def username_option(flag: str, help_text: str) -> Any:
    return typer.Option(flag, help=help_text, callback=checked(validate_username, flag))


def bucket_option(help_text: str) -> Any:
    return typer.Option(help=help_text, callback=checked(validate_bucket_name, "--bucket"))


def s3_prefix_option(help_text: str) -> Any:
    return typer.Option(help=help_text, callback=checked(validate_s3_prefix, "--prefix"))


def nfs_path_option(help_text: str) -> Any:
    return typer.Option(help=help_text, callback=checked(validate_nfs_path, "--nfs-path"))


def nfs_server_option(help_text: str) -> Any:
    return typer.Option(help=help_text, callback=checked(validate_nfs_server, "--nfs-server"))


def s3_region_option(help_text: str) -> Any:
    return typer.Option(help=help_text, callback=checked(validate_s3_region, "--region"))


def object_name_option(help_text: str) -> Any:
    return typer.Option(help=help_text, callback=checked(validate_object_name, "--name"))
