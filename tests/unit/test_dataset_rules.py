"""Pure rules about datasets and the canonical manifest.

Behaviours under test:
- the manifest hash covers the source line: the same object lines under another prefix,
  bucket or NFS path, in another region (the dataset's or the platform's default), behind
  another endpoint, or of another Dataset object (uid: registered again) give another hash;
  the hash is sha256 of the documented text; a region named as the platform's default hashes
  as the default; an NFS manifest is the source line alone (0 objects, 0 bytes) and needs no
  S3 client;
- due for verification: no manifest, or one at least the interval old; sorted names; the
  next one falls due when the oldest manifest reaches the interval;
- source locations end in '/', so 'cohort/' does not contain 'cohort-2/';
- one spelling per location: every other spelling of a sensitive S3 prefix or NFS export
  ('//', './', '..', a leading or trailing '/', a trailing '.', upper case, a short name or an
  address for the server) is refused by the model; the spellings left overlap as the location
  they name;
- overlap: a container at a lower tier than what it contains is refused either way round,
  naming both datasets, both tiers and the fix; equal or higher container tiers, disjoint
  sources, other buckets and the dataset itself are fine;
- every source field is a domain type (a DomainRule), so a field added later cannot reach
  the node plugin unchecked; the platform's buckets are every `*_bucket` setting, each refused
  as a source naming the field and the fix;
- RBAC: stewards cannot write datasets/status, the controller can;
- the verification interval setting defaults to an hour.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any, cast, get_args

import pytest
from pydantic import AfterValidator, ValidationError

from provisioner.models.resources import (
    Dataset,
    DatasetManifest,
    DatasetSource,
    DatasetSpec,
    DatasetStatus,
    NfsSource,
    S3Source,
)
from provisioner.models.rules import DomainRule
from provisioner.models.settings import Settings
from provisioner.models.types import ClassificationTier
from provisioner.planning.datasets import (
    datasets_due_for_verification,
    manifest_origin,
    next_verification_at,
    overlap_refusal,
    platform_bucket_refusal,
    source_location,
    source_uri,
)
from provisioner.planning.rbac import plan_platform_rbac
from provisioner.storage.s3 import compute_manifest, manifest_line, manifest_sha256

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
LINES = [manifest_line("a.csv", 3, "900150983cd24fb0d6963f7d28e17f72")]


def s3(bucket: str = "tre-data", prefix: str = "", region: str | None = None) -> DatasetSource:
    return DatasetSource(s3=S3Source(bucket=bucket, prefix=prefix, region=region))


def nfs(server: str = "nfs.example.org", path: str = "/exports") -> DatasetSource:
    return DatasetSource(nfs=NfsSource(server=server, path=path))


def dataset(
    name: str,
    source: DatasetSource,
    tier: str = "internal",
    computed_at: dt.datetime | None = None,
    uid: str = "",
) -> Dataset:
    manifest = (
        DatasetManifest(object_count=1, bytes=1, sha256="0" * 64, computed_at=computed_at)
        if computed_at
        else None
    )
    return Dataset(
        name=name,
        uid=uid,
        spec=DatasetSpec(
            title="T", steward="sam", classification=ClassificationTier(tier), source=source
        ),
        status=DatasetStatus(manifest=manifest),
    )


# --- the canonical manifest ---------------------------------------------------------------------


SETTINGS = Settings(s3_region="us-east-1")


def origin(source: DatasetSource, uid: str = "u1", settings: Settings = SETTINGS) -> str:
    return manifest_origin(dataset("cohort", source, uid=uid), settings)


def test_manifest_hash_is_the_documented_text() -> None:
    text = (
        "source s3://tre-data/cohort/ region=us-east-1 endpoint=aws dataset=u1\n"
        '["a.csv",3,"900150983cd24fb0d6963f7d28e17f72"]\n'
    )
    assert origin(s3(prefix="cohort/")) == (
        "s3://tre-data/cohort/ region=us-east-1 endpoint=aws dataset=u1"
    )
    assert manifest_sha256(origin(s3(prefix="cohort/")), LINES) == (
        hashlib.sha256(text.encode()).hexdigest()
    )


@pytest.mark.parametrize(
    "other",
    [
        # another place
        origin(s3(prefix="cohort-2/")),
        origin(s3(prefix="")),
        origin(s3(bucket="tre-data2", prefix="cohort/")),
        origin(nfs(path="/cohort")),
        # the same place read from another server: the dataset's region, the platform's
        # default region, the platform's endpoint
        origin(s3(prefix="cohort/", region="eu-west-1")),
        origin(s3(prefix="cohort/"), settings=Settings(s3_region="eu-west-1")),
        origin(s3(prefix="cohort/"), settings=Settings(s3_endpoint_url="http://127.0.0.1:9")),
        # the same place and server, registered again (another Dataset object)
        origin(s3(prefix="cohort/"), uid="u2"),
    ],
)
def test_the_same_objects_elsewhere_or_registered_again_hash_differently(other: str) -> None:
    assert manifest_sha256(origin(s3(prefix="cohort/")), LINES) != manifest_sha256(other, LINES)


def test_the_default_region_and_the_same_region_named_hash_alike() -> None:
    # what the PV mounts decides, not how the dataset spells it
    assert origin(s3(prefix="c/", region="us-east-1")) == origin(s3(prefix="c/"))


def test_nfs_manifest_is_the_source_line_alone() -> None:
    no_client = cast("Any", None)  # an NFS export is never listed
    manifest = compute_manifest(
        no_client, dataset("cohort", nfs(path="/exports/reg"), uid="u1"), SETTINGS, now=NOW
    )
    assert (manifest.object_count, manifest.bytes, manifest.computed_at) == (0, 0, NOW)
    expected = hashlib.sha256(b"source nfs://nfs.example.org/exports/reg dataset=u1\n")
    assert manifest.sha256 == expected.hexdigest()


# --- due for verification -----------------------------------------------------------------------


def test_due_when_never_verified_or_at_least_the_interval_old() -> None:
    hour = dt.timedelta(hours=1)
    datasets = [
        dataset("zeta", s3(prefix="z/")),
        dataset("fresh", s3(prefix="f/"), computed_at=NOW - hour + dt.timedelta(seconds=1)),
        dataset("exactly", s3(prefix="e/"), computed_at=NOW - hour),
        dataset("alpha", s3(prefix="a/"), computed_at=NOW - 2 * hour),
    ]
    assert datasets_due_for_verification(datasets, NOW, hour) == ["alpha", "exactly", "zeta"]
    assert datasets_due_for_verification([], NOW, hour) == []


def test_next_verification_is_when_the_oldest_manifest_falls_due() -> None:
    hour = dt.timedelta(hours=1)
    datasets = [
        dataset("new-one", s3(prefix="n/")),
        dataset("older", s3(prefix="o/"), computed_at=NOW - 2 * hour),
        dataset("newer", s3(prefix="w/"), computed_at=NOW),
    ]
    assert next_verification_at(datasets, hour) == NOW - hour
    assert next_verification_at(datasets[:1], hour) is None


def test_verification_interval_defaults_to_an_hour() -> None:
    assert Settings().dataset_verify_seconds == 3600
    field = Settings.model_fields["dataset_verify_seconds"]
    assert field.description is not None and field.description.startswith("Seconds.")


# --- sources and overlap ------------------------------------------------------------------------


def test_source_uri_and_location() -> None:
    assert source_uri(s3(prefix="cohort")) == "s3://tre-data/cohort/"
    assert source_location(s3()) == "s3://tre-data/"
    assert source_uri(nfs(path="/exports/reg")) == "nfs://nfs.example.org/exports/reg"
    assert source_location(nfs(path="/exports/reg")) == "nfs://nfs.example.org/exports/reg/"
    assert source_location(nfs(path="/")) == "nfs://nfs.example.org/"


def test_public_whole_bucket_over_a_sensitive_prefix_is_refused() -> None:
    secret = dataset("secret", s3(prefix="patients/"), "sensitive")
    wide = dataset("wide", s3(), "public")
    assert overlap_refusal(wide, [secret]) == (
        "spec.source: s3://tre-data/ contains s3://tre-data/patients/ of dataset secret "
        "(sensitive), whose data would then be readable at the lower tier public through "
        "dataset wide; classify wide as sensitive or higher, or register a source that does "
        "not overlap"
    )
    assert overlap_refusal(secret, [wide]) == (
        "spec.source: s3://tre-data/patients/ lies within s3://tre-data/ of dataset wide "
        "(public), so the data of dataset secret (sensitive) would be readable at the lower "
        "tier public; raise dataset wide to sensitive first, or register a source that does "
        "not overlap"
    )


@pytest.mark.parametrize(
    ("new", "existing"),
    [
        # a container at least as sensitive as what it contains
        (dataset("wide", s3(), "sensitive"), dataset("part", s3(prefix="p/"), "public")),
        (dataset("part", s3(prefix="p/"), "internal"), dataset("wide", s3(), "internal")),
        # disjoint: 'cohort/' is not inside 'cohort-2/', other buckets, other servers
        (dataset("aaa", s3(prefix="cohort/"), "public"),
         dataset("bbb", s3(prefix="cohort-2/"), "sensitive")),
        (dataset("aaa", s3(bucket="other"), "public"), dataset("bbb", s3(), "sensitive")),
        (dataset("aaa", nfs(path="/exports"), "public"),
         dataset("bbb", nfs(server="nfs2.example.org", path="/exports/x"), "sensitive")),
        (dataset("aaa", nfs(path="/exports/ab"), "public"),
         dataset("bbb", nfs(path="/exports/a"), "sensitive")),
        # the same dataset (an update) is not compared with itself
        (dataset("aaa", s3(), "public"), dataset("aaa", s3(prefix="x/"), "sensitive")),
    ],
)  # fmt: skip
def test_allowed_overlaps_and_disjoint_sources(new: Dataset, existing: Dataset) -> None:
    assert overlap_refusal(new, [existing]) is None


def test_nfs_paths_overlap_at_slash_boundaries() -> None:
    export = dataset("export", nfs(path="/exports"), "internal")
    inside = dataset("inside", nfs(path="/exports/reg"), "sensitive")
    refusal = overlap_refusal(inside, [export])
    assert refusal is not None
    assert refusal.startswith(
        "spec.source: nfs://nfs.example.org/exports/reg/ lies within "
        "nfs://nfs.example.org/exports/ of dataset export (internal)"
    )


# Every other spelling of a location registered sensitive (security review 3, S5): the
# overlap rule compares text, so each must be refused before it is compared. The CRD refuses
# the same values (tests/domain_values.py runs them against the API server;
# tests/integration/test_dataset_trust.py registers these very spellings).
SENSITIVE_S3 = {"bucket": "tre-data", "prefix": "cohort/"}
SENSITIVE_NFS = {"server": "nfs.hospital.example", "path": "/exports/registry"}
S3_ALIASES = ("cohort//", "cohort///", "./cohort/", "cohort/./", "x/../cohort/", "/cohort/",
              "cohort//sub/")  # fmt: skip
NFS_ALIASES = (
    {"server": "nfs.hospital.example."},
    {"server": "NFS.hospital.example"},
    {"server": "nfs"},
    {"server": "10.0.0.7"},
    {"server": "fd00::7"},
    {"path": "/exports//registry"},
    {"path": "//exports/registry"},
    {"path": "/exports/registry/"},
    {"path": "/exports/./registry"},
    {"path": "/exports/x/../registry"},
)


@pytest.mark.parametrize("prefix", S3_ALIASES)
def test_every_other_spelling_of_an_s3_location_is_refused(prefix: str) -> None:
    with pytest.raises(ValidationError, match="S3 prefix"):
        S3Source(bucket=SENSITIVE_S3["bucket"], prefix=prefix)


@pytest.mark.parametrize("alias", NFS_ALIASES, ids=lambda a: repr(next(iter(a.values()))))
def test_every_other_spelling_of_an_nfs_location_is_refused(alias: dict[str, str]) -> None:
    with pytest.raises(ValidationError, match=r"NFS (server|path)"):
        NfsSource(**{**SENSITIVE_NFS, **alias})


@pytest.mark.parametrize(
    ("sensitive", "public"),
    [
        (s3(**SENSITIVE_S3), s3(**SENSITIVE_S3)),
        (s3(**SENSITIVE_S3), s3(prefix="cohort")),  # the trailing '/' is added, not a spelling
        (s3(**SENSITIVE_S3), s3()),
        (nfs(**SENSITIVE_NFS), nfs(**SENSITIVE_NFS)),
        (nfs(**SENSITIVE_NFS), nfs(SENSITIVE_NFS["server"], "/exports")),
        (nfs(**SENSITIVE_NFS), nfs(SENSITIVE_NFS["server"], "/")),
    ],
)  # fmt: skip
def test_each_spelling_left_overlaps_as_the_location_it_names(
    sensitive: DatasetSource, public: DatasetSource
) -> None:
    refusal = overlap_refusal(
        dataset("open", public, "public"), [dataset("registry", sensitive, "sensitive")]
    )
    assert refusal is not None and "of dataset registry (sensitive)" in refusal


# --- RBAC ---------------------------------------------------------------------------------------


def _rules(role: str) -> list[dict[str, Any]]:
    [found] = [
        r for r in plan_platform_rbac(Settings()) if r["kind"] == "ClusterRole"
        and r["metadata"]["name"] == role
    ]  # fmt: skip
    rules: list[dict[str, Any]] = found["rules"]
    return rules


def test_only_the_controller_writes_dataset_status() -> None:
    steward = [res for rule in _rules("tre-steward") for res in rule["resources"]]
    assert "datasets/status" not in steward
    [rule] = [r for r in _rules("tre-controller") if "datasets/status" in r["resources"]]
    assert rule["verbs"] == ["get", "patch", "update"]


# --- every source field is a domain type (security invariant 11) -------------------------------


@pytest.mark.parametrize("model", [S3Source, NfsSource])
def test_every_source_field_is_a_domain_type(model: type[S3Source] | type[NfsSource]) -> None:
    """Each field of a source reaches a PV and the software that mounts it as root: a field
    added later without a DomainRule (and so without its CRD pattern and CEL rules) fails
    here rather than reaching the node plugin's command line."""
    for name, field in model.model_fields.items():
        # `X` puts the Annotated metadata on the field, `X | None` keeps it in the union
        metadata = [*field.metadata]
        for arg in get_args(field.annotation):
            metadata += getattr(arg, "__metadata__", ())
        rules = [m.func for m in metadata if isinstance(m, AfterValidator)]
        assert any(isinstance(rule, DomainRule) for rule in rules), f"{model.__name__}.{name}"


def test_the_platforms_buckets_are_every_bucket_setting() -> None:
    settings = Settings(
        audit_bucket="a-audit",
        airlock_quarantine_bucket="q-in",
        airlock_egress_bucket="e-out",
        dataset_fingerprint_bucket="f-ix",
    )
    bucket_settings = {n for n in Settings.model_fields if n.endswith("_bucket")}
    assert bucket_settings == {
        "audit_bucket",
        "airlock_quarantine_bucket",
        "airlock_egress_bucket",
        "dataset_fingerprint_bucket",
    }
    assert settings.platform_buckets == ["a-audit", "e-out", "f-ix", "q-in"]
    for bucket in settings.platform_buckets:
        refusal = platform_bucket_refusal(s3(bucket=bucket, prefix="exports/"), settings)
        assert refusal == (
            f"spec.source.s3.bucket: {bucket} is one of the platform's own buckets (a-audit, "
            "e-out, f-ix, q-in): they hold the audit log, the airlock's unreviewed and released "
            "files of every project and the datasets' fingerprints, which no dataset may show; "
            "register data from a bucket of its own"
        )
    assert platform_bucket_refusal(s3(bucket="tre-data"), settings) is None
    assert platform_bucket_refusal(nfs(), settings) is None
