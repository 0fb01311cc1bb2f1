"""Domain rules, declared once: what a project slug, dataset name, username, bucket name, S3
prefix, S3 region, NFS server, NFS path or object name may be; the classification and compute
tiers; the phases of requests and workspaces.

Plain Python (no pydantic), so a command that only checks an argument and reads the API
server (`tre workspace show PROJECT`) does not pay for pydantic at start-up.
`provisioner.models.types` turns each rule into the annotated type the models use.

Each rule (a `DomainRule`) raises ``ValueError`` with a message that says what is wrong and
how to fix it, so the CLI and the API reject the same input in the same words. The same rule
object gives the CRD schemas their ``pattern``, ``maxLength`` and CEL rules
(`DomainRule.crd_schema`), so what the API server stores and what the models accept cannot
drift apart; `DATE_PATTERN` and `DATETIME_PATTERN` do the same for dates and times.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from enum import StrEnum
from typing import Any, Final, NamedTuple

# A project slug becomes the namespace `tre-<slug>`, label values and object names.
# 3..32 characters keeps every derived name inside the 63-character DNS-1123 label limit.
PROJECT_SLUG_PATTERN = r"^[a-z][a-z0-9-]{1,30}[a-z0-9]$"
# A dataset name becomes PV/PVC/volume names and the mount path /data/<name>.
DATASET_NAME_PATTERN = r"^[a-z][a-z0-9-]{1,38}[a-z0-9]$"
# Usernames as the API server sees them (client certificate CN, OIDC claim, JupyterHub name).
# Lower case only: JupyterHub normalises names to lower case and RBAC compares exactly.
USERNAME_PATTERN = r"^[a-z0-9][a-z0-9._@-]{0,62}$"
BUCKET_NAME_PATTERN = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"


# A NamedTuple, not a dataclass: `dataclasses` imports `inspect`, about 5 ms of every
# `tre` query (docs/performance.md), and this sits on the query path.
class Refusal(NamedTuple):
    """A value in which `regex` is found (`re.search`; CEL `matches`) is refused with `message`.

    The regex is written in the common subset of Python `re` and RE2 (the API server's CEL
    regex engine): no look-around, no back-references.
    """

    regex: str
    message: str
    # False when the type's pattern already refuses every such value: the CEL rule would only
    # repeat it, and on list items it costs CEL budget (an unbounded list of usernames makes
    # the API server refuse the CRD). The shared test table proves the CRD still refuses them.
    in_crd: bool = True


class DomainRule(NamedTuple):  # a NamedTuple for the reason Refusal is one
    """What a domain type allows, stated once.

    The rule is the validator (pydantic calls it), and `crd_schema()` is how the CRD schemas
    say the same thing to the API server (`provisioner.planning.crds`): `pattern`, `maxLength`
    and one CEL rule per refusal. So an object the API server stores is one the models accept:
    a value the server let through but the model refused would stop every controller pass.
    """

    what: str
    max_length: int
    # (regex, what it means) for values that must match it as a whole; None: no pattern.
    pattern: tuple[str, str] | None = None
    refusals: tuple[Refusal, ...] = ()
    # A non-empty S3 prefix gains a trailing '/' (the server stores it as written).
    trailing_slash: bool = False
    # The CRD also states the pattern as a CEL rule carrying the pattern's message, so the API
    # server's refusal says what to write, not only the regex. For the values that reach the
    # node software (dataset sources); on long lists it would cost CEL budget.
    pattern_in_words: bool = False

    def __call__(self, value: str) -> str:
        # Refusals first: their messages say more than the pattern's.
        for refusal in self.refusals:
            if re.search(refusal.regex, value):
                raise ValueError(f"{self.what} {value!r} is invalid: {refusal.message}")
        # The pattern's message names the length where there is one: it goes first.
        if self.pattern is not None and not re.fullmatch(self.pattern[0], value):
            raise ValueError(f"{self.what} {value!r} is invalid: {self.pattern[1]}")
        if len(value) > self.max_length:
            raise ValueError(
                f"{self.what} {value!r} is invalid: use at most {self.max_length} characters"
            )
        if self.trailing_slash and value and not value.endswith("/"):
            value += "/"
        return value

    def crd_schema(self) -> dict[str, Any]:
        """`pattern`, `maxLength` and `x-kubernetes-validations` for an OpenAPI string."""
        schema: dict[str, Any] = {}
        if self.pattern is not None:
            schema["pattern"] = self.pattern[0]
        schema["maxLength"] = self.max_length
        rules = [
            # A JSON string literal is a valid CEL string literal with the same value.
            {"rule": f"!self.matches({json.dumps(r.regex)})", "message": r.message}
            for r in self.refusals
            if r.in_crd
        ]
        if self.pattern is not None and self.pattern_in_words:
            rules.append(
                {"rule": f"self.matches({json.dumps(self.pattern[0])})", "message": self.pattern[1]}
            )
        if rules:
            schema["x-kubernetes-validations"] = rules
        return schema

    def cel_check(self, expression: str) -> str:
        """A CEL condition that holds when the string `expression` is a value this rule
        accepts as it stands (no normalisation): for admission policies that judge objects
        built from these values (a dataset PV's mount options)."""
        checks = [f"size({expression}) <= {self.max_length}"]
        if self.pattern is not None:
            checks.append(f"{expression}.matches({json.dumps(self.pattern[0])})")
        checks += [f"!{expression}.matches({json.dumps(r.regex)})" for r in self.refusals]
        return "(" + " && ".join(checks) + ")"


# What a dataset source may hold. Bucket, prefix, region, NFS server and path reach software
# that runs as root on the nodes: the CSI node plugin's command line (rclone, mount-s3), its
# mount options and the kernel's NFS mount (security invariant 11). So each is a closed
# alphabet with no separator of any of them (no space, newline, ',' or '='), no leading '-'
# (no value can read as a flag), and one spelling per location: the overlap rule between
# datasets compares locations as text, so a second spelling of one place (an empty '//'
# segment, a trailing '.' on a host name) would let a dataset reach data registered at a
# higher tier (docs/architecture.md, "Dataset sources").
#
# One path segment of a prefix or NFS path: letters, digits, '_', '.', '-', not starting
# with '-'. '.' and '..' match it, and are refused by _DOT_SEGMENT.
_SEGMENT = r"[A-Za-z0-9_.][A-Za-z0-9_.-]*"
# A '.' or '..' path segment: it would let a prefix or path name another place than it seems
# to (and defeat the overlap check between datasets, which compares paths as text).
_DOT_SEGMENT = Refusal(r"(^|/)\.\.?(/|$)", "'.' and '..' segments are not allowed")
# An empty segment: 'a//b' is 'a/b' to the mounter (rclone and NFS clean paths), another
# spelling of one place.
_EMPTY_SEGMENT = Refusal("//", "empty segments ('//') are not allowed; write one '/'")
_PATH_CHARACTERS = (
    "segments of letters, digits, '_', '.' and '-' separated by single '/', each "
    "starting with a letter, digit, '_' or '.' (no spaces, ',', '=' or other characters)"
)
# A DNS label: what a host name is made of (RFC 1123), lower case only.
_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"

validate_project_slug: Final = DomainRule(
    "project slug",
    max_length=32,
    pattern=(
        PROJECT_SLUG_PATTERN,
        "use 3-32 characters a-z, 0-9 and '-', starting with a letter and not ending "
        "with '-' (for example 'diabetes-2026')",
    ),
)
validate_dataset_name: Final = DomainRule(
    "dataset name",
    max_length=40,
    pattern=(
        DATASET_NAME_PATTERN,
        "use 3-40 characters a-z, 0-9 and '-', starting with a letter and not ending "
        "with '-' (for example 'hospital-admissions')",
    ),
)
validate_username: Final = DomainRule(
    "username",
    max_length=63,
    pattern=(
        USERNAME_PATTERN,
        "use 1-63 lower-case characters a-z, 0-9, '.', '_', '@' and '-', starting with a "
        "letter or digit (for example 'alice' or 'a.jansen@umc.nl')",
    ),
    refusals=(
        Refusal(
            "^system:",
            "'system:' names are Kubernetes service identities, not people; name the "
            "person instead",
            in_crd=False,  # the pattern has no ':'
        ),
    ),
)
validate_bucket_name: Final = DomainRule(
    "bucket name",
    max_length=63,
    pattern=(
        BUCKET_NAME_PATTERN,
        "use 3-63 characters a-z, 0-9, '.' and '-', starting and ending with a letter or digit",
    ),
    refusals=(
        Refusal(r"\.\.", "it must not contain '..'"),
        # S3's rule: not formatted as an IP address (192.168.5.4), whatever the numbers.
        Refusal(r"^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$", "it must not look like an IP address"),
    ),
    pattern_in_words=True,
)
validate_s3_prefix: Final = DomainRule(
    "S3 prefix",
    # An S3 key is at most 1024 bytes.
    max_length=1024,
    pattern=(f"^({_SEGMENT}/)*({_SEGMENT})?$", "use " + _PATH_CHARACTERS),
    refusals=(Refusal("^/", "remove the leading '/'"), _EMPTY_SEGMENT, _DOT_SEGMENT),
    trailing_slash=True,
    pattern_in_words=True,
)
"""A key prefix inside a bucket: no leading '/', no empty, '.' or '..' segments, a closed
alphabet; '' means the whole bucket. A non-empty prefix is normalised to end with '/', so
'cohort' cannot also match 'cohort-2' (the Mountpoint `prefix` option and our manifest
listing both rely on it), and 'cohort' and 'cohort/' are one location everywhere."""
validate_nfs_path: Final = DomainRule(
    "NFS path",
    max_length=1024,
    pattern=(
        f"^/({_SEGMENT}(/{_SEGMENT})*)?$",
        "use an absolute path without a trailing '/' (for example '/exports/reg'), of "
        + _PATH_CHARACTERS,
    ),
    refusals=(
        _EMPTY_SEGMENT,
        _DOT_SEGMENT,
        Refusal("^/.*/$", "remove the trailing '/'", in_crd=False),  # the pattern refuses it
    ),
    pattern_in_words=True,
)
"""An absolute export path, one spelling per place: no empty, '.' or '..' segments, no
trailing '/' (only '/' itself ends in one), a closed alphabet."""
validate_nfs_server: Final = DomainRule(
    "NFS server",
    max_length=253,
    pattern=(
        f"^{_LABEL}(\\.{_LABEL})+$",
        "use the server's fully qualified DNS name in lower case, labels of a-z, 0-9 and "
        "'-' separated by '.' (for example 'nfs.hospital.example')",
    ),
    refusals=(
        Refusal(r"\.$", "remove the trailing '.'"),
        Refusal("[A-Z]", "write it in lower case", in_crd=False),  # the pattern refuses it
        Refusal(
            r"^[0-9.]+$",
            "name the server by its DNS name, not by an address (an address is a second "
            "spelling of the same server)",
        ),
    ),
    pattern_in_words=True,
)
"""One spelling per server: lower case, fully qualified (a short name would resolve through
each node's search domains), no trailing '.', no IP address."""
# An S3 endpoint URL (a platform setting): it becomes a mount option of the S3 CSI driver.
S3_ENDPOINT_PATTERN = r"^https?://[A-Za-z0-9.:\[\]_/%-]+$"
validate_s3_region: Final = DomainRule(
    "S3 region",
    max_length=32,
    pattern=(
        "^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$",
        "use 1-32 characters a-z, 0-9 and '-', starting and ending with a letter or digit "
        "(for example 'eu-west-1')",
    ),
    pattern_in_words=True,
)
"""A region name: it becomes a mount option and a flag value of the S3 mounter."""
# A request's name is metadata.name, which the API server itself checks (an RFC 1123
# subdomain); the same rule, said here so a bad name is refused before the request is sent.
# Not a domain type: no model field or CRD property carries it.
validate_object_name: Final = DomainRule(
    "object name",
    max_length=253,
    pattern=(
        r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$",
        "use lower-case a-z, 0-9, '-' and '.', starting and ending with a letter or digit "
        "(for example 'heart-study-3f2a1c')",
    ),
)


def source_uri(source: Mapping[str, Any]) -> str:
    """`s3://<bucket>/<prefix>` or `nfs://<server><path>` of a dataset source in its wire form
    (`{"s3": {"bucket": ..., "prefix": ...}}` or `{"nfs": {"server": ..., "path": ...}}`): the
    manifest's first line and what `tre dataset` prints. The prefix is normalised as the
    models normalise it (a non-empty one ends with '/'), so a source stored by another client
    reads the same."""
    if source.get("s3") is not None:
        s3 = source["s3"]
        return f"s3://{s3['bucket']}/{validate_s3_prefix(s3.get('prefix', ''))}"
    if source.get("nfs") is not None:
        return f"nfs://{source['nfs']['server']}{source['nfs']['path']}"
    raise ValueError("source: set exactly one of 's3' and 'nfs'")


# Dates and times as the CRD schemas accept them. The API server's `date`/`date-time`
# formats accept more than Python does (year 0000, a time without offset, a space instead of
# 'T', second 60, offset +24:00): these patterns narrow them to what pydantic parses, so the
# server never stores a date the models refuse.
DATE_PATTERN = (
    r"^(000[1-9]|00[1-9][0-9]|0[1-9][0-9]{2}|[1-9][0-9]{3})-(0[1-9]|1[0-2])-"
    r"(0[1-9]|[12][0-9]|3[01])$"
)
DATETIME_PATTERN = (
    DATE_PATTERN.removesuffix("$")
    + r"T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,6})?"
    + r"(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
)


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


class RequestPhase(StrEnum):
    PENDING = "Pending"
    APPROVED = "Approved"
    REJECTED = "Rejected"
    EXPIRED = "Expired"
    REVOKED = "Revoked"


class WorkspacePhase(StrEnum):
    PROVISIONING = "Provisioning"
    READY = "Ready"
    FROZEN = "Frozen"
    TORN_DOWN = "TornDown"
