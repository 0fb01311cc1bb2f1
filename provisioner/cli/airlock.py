"""`tre airlock serve`: the airlock service (provisioner/airlock/service.py)."""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path
from typing import Annotated

import typer

from provisioner.cli import common
from provisioner.cli.context import new_app
from provisioner.errors import InvalidInputError

app = new_app()


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[
        int | None, typer.Option(help="TCP port. Default: TRE_AIRLOCK_PORT (8080).")
    ] = None,
    cookie_secret_file: Annotated[
        Path | None,
        typer.Option(
            help="File with the secret that signs the sign-in cookie (mode 0600). Default: "
            "a new secret per start (people sign in again after a restart)."
        ),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log every request.")] = False,
) -> None:
    """Serve the airlock: submit, review, release, download and revoke exports.

    Runs as a JupyterHub service: the hub gives it JUPYTERHUB_API_URL, JUPYTERHUB_API_TOKEN,
    JUPYTERHUB_CLIENT_ID, JUPYTERHUB_SERVICE_PREFIX and JUPYTERHUB_OAUTH_CALLBACK_URL (see
    docs/airlock.md). It acts with its own Kubernetes identity (TRE_KUBECONFIG or in-cluster:
    settings.airlock_user) and impersonates the person for every change of an export, and
    reads and writes the quarantine and egress buckets with its own S3 credentials.
    """
    from provisioner.airlock.desk import Desk
    from provisioner.airlock.hub_sign_in import HubConfig
    from provisioner.airlock.service import serve as run
    from provisioner.kube.api import Kube
    from provisioner.kube.client import cli_client
    from provisioner.kube.http import HttpClient

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    HubConfig.from_environment(os.environ)  # refused here, before anything else, if incomplete
    settings = common.settings()
    api = cli_client(settings.kubeconfig)
    if not isinstance(api, HttpClient):
        raise InvalidInputError(
            "TRE_KUBECONFIG: the airlock needs a token or certificate kubeconfig (it "
            "impersonates people per request); exec plugins are not supported"
        )
    if cookie_secret_file is not None:
        from provisioner.secret_files import read_secret_file

        cookie_secret = read_secret_file(
            cookie_secret_file,
            setting="--cookie-secret-file",
            owner="the airlock",
            what="the secret that signs its sign-in cookie",
            where="a file of 32 random bytes, or a Secret mounted with defaultMode 0400",
        )
    else:
        cookie_secret = secrets.token_bytes(32)
    desk = Desk(Kube(api, field_manager="tre-airlock"), common.s3(), settings)
    run(desk, settings, host=host, port=port or settings.airlock_port, cookie_secret=cookie_secret)
