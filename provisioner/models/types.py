"""Domain types, declared once and reused by the models, the CLI and the admission policies.

Each type is an ``Annotated[str, AfterValidator(rule)]`` whose rule is a `DomainRule` of
`provisioner.models.rules` (plain Python, re-exported here): the message says what is wrong
and how to fix it, and the same rule gives the CRD schemas their pattern, length and CEL
rules.
"""

from __future__ import annotations

from typing import Annotated

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
    validate_project_slug,
    validate_s3_prefix,
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
    "DatasetName",
    "DomainRule",
    "NfsPath",
    "ProjectSlug",
    "Refusal",
    "S3Prefix",
    "Username",
    "validate_bucket_name",
    "validate_dataset_name",
    "validate_nfs_path",
    "validate_project_slug",
    "validate_s3_prefix",
    "validate_username",
]

ProjectSlug = Annotated[str, AfterValidator(validate_project_slug)]
DatasetName = Annotated[str, AfterValidator(validate_dataset_name)]
Username = Annotated[str, AfterValidator(validate_username)]
BucketName = Annotated[str, AfterValidator(validate_bucket_name)]
S3Prefix = Annotated[str, AfterValidator(validate_s3_prefix)]
NfsPath = Annotated[str, AfterValidator(validate_nfs_path)]
