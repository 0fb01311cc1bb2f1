"""Domain types, declared once and reused by the models, the CLI and the admission policies.

Each type is an ``Annotated[str, AfterValidator(rule)]`` whose rule is a `DomainRule` of
`provisioner.models.rules` (plain Python, re-exported here): the message says what is wrong
and how to fix it, and the same rule gives the CRD schemas their pattern, length and CEL
rules.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Final

from pydantic import AfterValidator

from provisioner.models.rules import (
    BUCKET_NAME_PATTERN,
    DATASET_NAME_PATTERN,
    DATE_PATTERN,
    DATETIME_PATTERN,
    PROJECT_SLUG_PATTERN,
    USERNAME_PATTERN,
    ClassificationTier,
    ComputeTier,
    DomainRule,
    Refusal,
    validate_bucket_name,
    validate_dataset_name,
    validate_nfs_path,
    validate_nfs_server,
    validate_project_slug,
    validate_s3_prefix,
    validate_s3_region,
    validate_username,
)

__all__ = [
    "BUCKET_NAME_PATTERN",
    "DATASET_NAME_PATTERN",
    "DATETIME_PATTERN",
    "DATE_PATTERN",
    "PROJECT_SLUG_PATTERN",
    "USERNAME_PATTERN",
    "BucketName",
    "ClassificationTier",
    "ComputeTier",
    "DatasetCsiDriver",
    "DatasetName",
    "DomainRule",
    "NfsPath",
    "NfsServer",
    "ProjectSlug",
    "Refusal",
    "S3Prefix",
    "S3Region",
    "Username",
    "validate_bucket_name",
    "validate_dataset_name",
    "validate_nfs_path",
    "validate_nfs_server",
    "validate_project_slug",
    "validate_s3_prefix",
    "validate_s3_region",
    "validate_username",
]

# File types the airlock knows how to check by extension and content
# (`provisioner.airlock.checks.FILE_TYPES`); TRE_AIRLOCK_ALLOWED_TYPES picks from these.
EXPORT_FILE_TYPES: Final = (
    "csv",
    "tsv",
    "txt",
    "md",
    "log",
    "py",
    "r",
    "sql",
    "json",
    "ipynb",
    "png",
    "pdf",
)

ProjectSlug = Annotated[str, AfterValidator(validate_project_slug)]
DatasetName = Annotated[str, AfterValidator(validate_dataset_name)]
Username = Annotated[str, AfterValidator(validate_username)]
BucketName = Annotated[str, AfterValidator(validate_bucket_name)]
S3Prefix = Annotated[str, AfterValidator(validate_s3_prefix)]
NfsPath = Annotated[str, AfterValidator(validate_nfs_path)]
NfsServer = Annotated[str, AfterValidator(validate_nfs_server)]
S3Region = Annotated[str, AfterValidator(validate_s3_region)]


class DatasetCsiDriver(StrEnum):
    """The CSI driver that mounts S3 datasets on the nodes; the value is its CSI name.

    Each needs something different in the PV (`provisioner.planning.storage`); see
    docs/architecture.md, "Datasets reach the pod", for why each exists and how it gets its
    credentials and the S3 endpoint.
    """

    # awslabs/mountpoint-s3-csi-driver: the Rust `mount-s3` started through systemd (v1) or in
    # a Mountpoint pod (v2). The common choice on a managed cluster.
    MOUNTPOINT_S3 = "s3.csi.aws.com"
    # yandex-cloud/k8s-csi-s3 with its rclone mounter: plain processes, no systemd needed;
    # what the local dev node runs (the driver builds from its Go module).
    K8S_CSI_S3 = "ru.yandex.s3.csi"
