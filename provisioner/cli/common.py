"""What every command needs: settings, an API client for the caller, S3, the audit log."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import typer

from provisioner.audit.anchor import AnchoredAuditLog
from provisioner.audit.log import AuditLog, open_audit_log
from provisioner.audit.signing import SETTING as SIGNING_KEY_SETTING
from provisioner.audit.signing import AuditSigner
from provisioner.cli.context import cli_context
from provisioner.errors import InvalidInputError
from provisioner.kube.api import Kube
from provisioner.kube.client import api_client
from provisioner.models.settings import Settings
from provisioner.storage.s3 import s3_client

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


def settings() -> Settings:
    # Built per call (cheap): tests and the demo change the environment between commands.
    return Settings()


def kube(ctx: typer.Context) -> Kube:
    """The API as the caller: the kubeconfig user, or `--as` (impersonation)."""
    c = cli_context(ctx)
    return Kube(api_client(settings().kubeconfig, as_user=c.as_user, as_groups=c.as_groups))


def admin_kube() -> Kube:
    """The API as the kubeconfig identity itself (for the controller and installers)."""
    return Kube(api_client(settings().kubeconfig))


def whoami(k: Kube) -> str:
    """The username the API server sees for this client (after impersonation)."""
    review = k.request(
        "POST",
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        body={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
        what="ask the API server who you are",
    )
    return str(review["status"]["userInfo"]["username"])


def s3() -> S3Client:
    return s3_client(settings())


def s3_configured(config: Settings) -> bool:
    """Whether S3 is set up for this process: an endpoint or keys in the settings (without
    either, boto3 would fall back to whatever AWS credentials the machine happens to have)."""
    return config.s3_endpoint_url is not None or config.s3_access_key_id is not None


def audit_signer(config: Settings) -> AuditSigner | None:
    """The controller's audit signing key, when this process holds it."""
    path = config.audit_signing_key_file
    return AuditSigner.from_file(path) if path is not None else None


def audit_reader() -> AuditLog:
    """The audit log, read-only: `tre audit verify|export` and anyone else but the controller."""
    config = settings()
    return open_audit_log(config, s3_client(config))


def controller_audit_log(kube: Kube) -> AnchoredAuditLog:
    """The audit log opened for writing with the controller's key; every append also publishes
    the chain head (as `kube`, which must be the controller's identity).

    InvalidInputError naming TRE_AUDIT_SIGNING_KEY_FILE when this process has no key; the
    lock check of `open_audit_log` applies.
    """
    config = settings()
    signer = audit_signer(config)
    if signer is None:
        raise InvalidInputError(
            f"{SIGNING_KEY_SETTING}: not set; the controller signs every audit entry, so it "
            "needs its key file (in a cluster: the mounted Secret; locally: "
            "'<state dir>/audit-signing.key', which 'tre dev up' creates)"
        )
    return AnchoredAuditLog(open_audit_log(config, s3_client(config), signer=signer), kube, signer)


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)
