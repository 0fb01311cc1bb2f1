"""What every command needs: settings, an API client for the caller, S3, the audit log.

S3 (boto3) and the audit log are imported inside the functions that open them: most
commands talk only to the API server and should not pay for them at start-up.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from provisioner.cli.context import CliContext, cli_context
from provisioner.cli.views import user_info
from provisioner.errors import InvalidInputError
from provisioner.kube.api import Kube
from provisioner.kube.client import api_client, cli_client

if TYPE_CHECKING:
    import typer
    from mypy_boto3_s3 import S3Client

    from provisioner.audit.anchor import AnchoredAuditLog
    from provisioner.audit.log import AuditLog
    from provisioner.audit.signing import AuditSigner
    from provisioner.models.settings import Settings


def settings() -> Settings:
    # Built per call: tests and the demo change the environment between commands. Imported
    # here, not at the top: pydantic-settings costs 40 ms, and a query needs one setting only
    # (`kubeconfig_setting`).
    from provisioner.models.settings import Settings

    return Settings()


# `Settings.kubeconfig` as an environment variable (env_prefix "TRE_").
KUBECONFIG_SETTING = "TRE_KUBECONFIG"


def kubeconfig_setting(environ: Mapping[str, str] = os.environ) -> Path | None:
    """`Settings().kubeconfig`, read without building the Settings: the one setting a command
    that only talks to the API server needs. Names are case-insensitive, as pydantic-settings
    reads them (the last of several spellings wins, as there); a test holds the two equal."""
    found = None
    for name, value in environ.items():
        if name.upper() == KUBECONFIG_SETTING:
            found = Path(value)
    return found


def kube_for(c: CliContext, *, official_client: bool = False) -> Kube:
    """The API as the caller: the kubeconfig user, or `--as` (impersonation).

    Through the light `HttpClient` (fast start-up), unless `official_client`: the
    controller's watches stream with the official library's client.
    """
    make = api_client if official_client else cli_client
    return Kube(make(kubeconfig_setting(), as_user=c.as_user, as_groups=c.as_groups))


def kube(ctx: typer.Context, *, official_client: bool = False) -> Kube:
    return kube_for(cli_context(ctx), official_client=official_client)


def admin_kube() -> Kube:
    """The API as the kubeconfig identity itself (for the controller and installers)."""
    return Kube(api_client(settings().kubeconfig))


def whoami(k: Kube) -> str:
    """The username the API server sees for this client (after impersonation)."""
    return str(user_info(k)["username"])


def s3() -> S3Client:
    from provisioner.storage.s3 import s3_client  # boto3: about 0.2 s

    return s3_client(settings())


def s3_configured(config: Settings) -> bool:
    """Whether S3 is set up for this process: an endpoint or keys in the settings (without
    either, boto3 would fall back to whatever AWS credentials the machine happens to have)."""
    return config.s3_endpoint_url is not None or config.s3_access_key_id is not None


def audit_signer(config: Settings) -> AuditSigner | None:
    """The controller's audit signing key, when this process holds it."""
    from provisioner.audit.signing import AuditSigner

    path = config.audit_signing_key_file
    return AuditSigner.from_file(path) if path is not None else None


def audit_reader() -> AuditLog:
    """The audit log, read-only: `tre audit verify|export` and anyone else but the controller."""
    from provisioner.audit.log import open_audit_log

    config = settings()
    return open_audit_log(config, s3())


def controller_audit_log(kube: Kube) -> AnchoredAuditLog:
    """The audit log opened for writing with the controller's key; every append also publishes
    the chain head (as `kube`, which must be the controller's identity).

    InvalidInputError naming TRE_AUDIT_SIGNING_KEY_FILE when this process has no key; the
    lock check of `open_audit_log` applies.
    """
    from provisioner.audit.anchor import AnchoredAuditLog
    from provisioner.audit.log import open_audit_log
    from provisioner.audit.signing import SETTING as SIGNING_KEY_SETTING

    config = settings()
    signer = audit_signer(config)
    if signer is None:
        raise InvalidInputError(
            f"{SIGNING_KEY_SETTING}: not set; the controller signs every audit entry, so it "
            "needs its key file (in a cluster: the mounted Secret; locally: "
            "'<state dir>/audit-signing.key', which 'tre dev up' creates)"
        )
    return AnchoredAuditLog(open_audit_log(config, s3(), signer=signer), kube, signer)


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)
