"""What every command needs: settings, an API client for the caller, S3, the audit log."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import typer

from provisioner.audit.log import AuditLog, ensure_audit_bucket
from provisioner.cli.context import cli_context
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


def audit_log() -> AuditLog:
    config = settings()
    client = s3()
    locked = ensure_audit_bucket(client, config.audit_bucket)
    days = config.audit_retention_days
    return AuditLog(
        client,
        config.audit_bucket,
        retention=dt.timedelta(days=days) if locked and days else None,
    )


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)
