"""Domain types, declared once and reused by the models, the CLI and the admission policies.

Each type is an ``Annotated[str, AfterValidator(...)]`` whose validator raises ``ValueError``
with a message that says what is wrong and how to fix it, so the CLI and the API reject the
same input in the same words. The regular expressions are exported because the CRD schemas
(OpenAPI ``pattern``) use the very same ones.
"""

from __future__ import annotations

import ipaddress
import re
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator

# A project slug becomes the namespace `tre-<slug>`, label values and object names.
# 3..32 characters keeps every derived name inside the 63-character DNS-1123 label limit.
PROJECT_SLUG_PATTERN = r"^[a-z][a-z0-9-]{1,30}[a-z0-9]$"
# A dataset name becomes PV/PVC/volume names and the mount path /data/<name>.
DATASET_NAME_PATTERN = r"^[a-z][a-z0-9-]{1,38}[a-z0-9]$"
# Usernames as the API server sees them (client certificate CN, OIDC claim, JupyterHub name).
# Lower case only: JupyterHub normalises names to lower case and RBAC compares exactly.
USERNAME_PATTERN = r"^[a-z0-9][a-z0-9._@-]{0,62}$"
BUCKET_NAME_PATTERN = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"


def _check_pattern(value: str, pattern: str, what: str, rule: str) -> str:
    if not re.fullmatch(pattern, value):
        raise ValueError(f"{what} {value!r} is invalid: {rule}")
    return value


def validate_project_slug(value: str) -> str:
    return _check_pattern(
        value,
        PROJECT_SLUG_PATTERN,
        "project slug",
        "use 3-32 characters a-z, 0-9 and '-', starting with a letter and not ending "
        "with '-' (for example 'diabetes-2026')",
    )


def validate_dataset_name(value: str) -> str:
    return _check_pattern(
        value,
        DATASET_NAME_PATTERN,
        "dataset name",
        "use 3-40 characters a-z, 0-9 and '-', starting with a letter and not ending "
        "with '-' (for example 'hospital-admissions')",
    )


def validate_username(value: str) -> str:
    if value.startswith("system:"):
        raise ValueError(
            f"username {value!r} is invalid: 'system:' names are Kubernetes service "
            "identities, not people; name the person instead"
        )
    return _check_pattern(
        value,
        USERNAME_PATTERN,
        "username",
        "use 1-63 lower-case characters a-z, 0-9, '.', '_', '@' and '-', starting with a "
        "letter or digit (for example 'alice' or 'a.jansen@umc.nl')",
    )


def validate_bucket_name(value: str) -> str:
    _check_pattern(
        value,
        BUCKET_NAME_PATTERN,
        "bucket name",
        "use 3-63 characters a-z, 0-9, '.' and '-', starting and ending with a letter or digit",
    )
    if ".." in value:
        raise ValueError(f"bucket name {value!r} is invalid: it must not contain '..'")
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return value
    raise ValueError(f"bucket name {value!r} is invalid: it must not look like an IP address")


def validate_s3_prefix(value: str) -> str:
    """A key prefix inside a bucket: no leading '/', no '..' segments; '' means the whole bucket.

    A non-empty prefix is normalised to end with '/', so 'cohort' cannot also match
    'cohort-2' (the Mountpoint `prefix` option and our manifest listing both rely on it).
    """
    if value.startswith("/"):
        raise ValueError(f"S3 prefix {value!r} is invalid: remove the leading '/'")
    if any(part in {".", ".."} for part in value.split("/")):
        raise ValueError(f"S3 prefix {value!r} is invalid: '.' and '..' segments are not allowed")
    if value and not value.endswith("/"):
        value += "/"
    return value


ProjectSlug = Annotated[str, AfterValidator(validate_project_slug)]
DatasetName = Annotated[str, AfterValidator(validate_dataset_name)]
Username = Annotated[str, AfterValidator(validate_username)]
BucketName = Annotated[str, AfterValidator(validate_bucket_name)]
S3Prefix = Annotated[str, AfterValidator(validate_s3_prefix)]


class ClassificationTier(StrEnum):
    """How sensitive a dataset is; ordered from least to most sensitive."""

    PUBLIC = "public"
    INTERNAL = "internal"
    CONFIDENTIAL = "confidential"
    SENSITIVE = "sensitive"  # e.g. pseudonymised patient data (GDPR special category)

    @property
    def rank(self) -> int:
        return list(ClassificationTier).index(self)


class ComputeTier(StrEnum):
    """Size of a workspace: sets its ResourceQuota and LimitRange."""

    SMALL = "small"
    MEDIUM = "medium"
    LARGE = "large"
