"""Pure rules about datasets: where the data is, when to verify it, which sources may overlap.

The controller verifies datasets itself (`provisioner.controller.datasets`): it decides here
which ones are due, lists the data with its own S3 credentials and writes `status.manifest`.
The overlap rule is enforced by the API server (`tre-dataset-no-overlap`,
`provisioner.planning.admission`); `overlap_refusal` is the same rule in Python, so the CLI
can say no before it asks, in the same words.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Final

from provisioner.models import rules
from provisioner.models.resources import Dataset, DatasetSource, S3Source
from provisioner.models.settings import Settings


def source_uri(source: DatasetSource) -> str:
    """`s3://<bucket>/<prefix>` or `nfs://<server><path>`, as stored: `rules.source_uri` of
    the source's wire form, which `tre dataset` prints."""
    return rules.source_uri(source.to_wire())


def s3_region(source: S3Source, settings: Settings) -> str:
    """The region an S3 dataset is mounted and hashed with: its own, or the platform's."""
    return source.region or settings.s3_region


def manifest_origin(dataset: Dataset, settings: Settings) -> str:
    """Everything besides the objects that decides what a pod mounting `dataset` sees: the
    manifest's source line (`provisioner.storage.s3`), so an approval pins it too.

    `<uri> region=<r> endpoint=<url|aws> dataset=<uid>` for S3 (the endpoint is the
    platform's `s3_endpoint_url`, 'aws' for the AWS default of the region), `<uri>
    dataset=<uid>` for NFS. The region and the endpoint choose the server the mount reads, so
    the same bucket and prefix elsewhere hash differently. The uid is the Dataset object's
    own: a Dataset deleted and registered again under the same name and source is a new
    object, and approvals pinned to the old one never match it. No field holds a space
    (domain types; the endpoint setting's pattern), so the line reads one way only.
    """
    parts = [source_uri(dataset.spec.source)]
    if dataset.spec.source.s3 is not None:
        parts += [
            f"region={s3_region(dataset.spec.source.s3, settings)}",
            f"endpoint={settings.s3_endpoint_url or 'aws'}",
        ]
    return " ".join([*parts, f"dataset={dataset.uid}"])


def source_location(source: DatasetSource) -> str:
    """`source_uri` ending in '/': one location contains another exactly when it is a prefix
    of it as text ('s3://b/' holds the whole bucket, 'nfs://h/' the whole server; 'cohort/'
    does not hold 'cohort-2/'). Sound because each location has one spelling: the domain
    types refuse empty, '.' and '..' segments, a trailing '/' on an NFS path, upper case, a
    trailing '.' or an address for an NFS server (`provisioner.models.rules`). Mirrors the
    admission policy's CEL."""
    uri = source_uri(source)
    return uri if uri.endswith("/") else uri + "/"


# How every refusal of a platform bucket as a dataset source reads, after the bucket's name
# (`tre check` tells this refusal from any other by it).
PLATFORM_BUCKET_REFUSAL: Final = " is one of the platform's own buckets"


def platform_bucket_reason(buckets: Iterable[str]) -> str:
    """Why a dataset may not read one of `buckets` (the platform's own), after its name."""
    return (
        f"{PLATFORM_BUCKET_REFUSAL} ({', '.join(buckets)}): they hold the audit "
        "log and the airlock's unreviewed and released files of every project, which no "
        "dataset may show; register data from a bucket of its own"
    )


def platform_bucket_refusal(source: DatasetSource, settings: Settings) -> str | None:
    """Why `source` may not be a dataset's, or None: the admission policy
    `tre-dataset-not-platform-bucket` in Python, in the same words."""
    buckets = settings.platform_buckets
    if source.s3 is None or source.s3.bucket not in buckets:
        return None
    return f"spec.source.s3.bucket: {source.s3.bucket}" + platform_bucket_reason(buckets)


def overlap_refusal(new: Dataset, existing: Iterable[Dataset]) -> str | None:
    """Why `new` may not be registered beside `existing`, or None.

    Two sources overlap when one location contains the other. That is allowed only when the
    containing dataset's tier is at least the contained one's: otherwise data registered at a
    high tier is readable through a dataset at a lower one. Same words as the policy.
    """
    mine = source_location(new.spec.source)
    my_tier = new.spec.classification
    for other in sorted(existing, key=lambda d: d.name):
        if other.name == new.name:
            continue
        theirs = source_location(other.spec.source)
        their_tier = other.spec.classification
        if mine.startswith(theirs) and their_tier.rank < my_tier.rank:
            return (
                f"spec.source: {mine} lies within {theirs} of dataset {other.name} "
                f"({their_tier.value}), so the data of dataset {new.name} ({my_tier.value}) "
                f"would be readable at the lower tier {their_tier.value}; raise dataset "
                f"{other.name} to {my_tier.value} first, or register a source that does not "
                "overlap"
            )
        if theirs.startswith(mine) and my_tier.rank < their_tier.rank:
            return (
                f"spec.source: {mine} contains {theirs} of dataset {other.name} "
                f"({their_tier.value}), whose data would then be readable at the lower tier "
                f"{my_tier.value} through dataset {new.name}; classify {new.name} as "
                f"{their_tier.value} or higher, or register a source that does not overlap"
            )
    return None


def datasets_due_for_verification(
    datasets: Iterable[Dataset], now: dt.datetime, interval: dt.timedelta
) -> list[str]:
    """Names (sorted) of the datasets whose manifest the controller should recompute now.

    Due: no manifest yet (a new dataset, or every attempt so far failed), or one computed
    `interval` or longer ago (`settings.dataset_verify_seconds`). A failed attempt leaves the
    old manifest and its time, so the dataset stays due and is retried on the next pass.
    """
    due = []
    for dataset in datasets:
        manifest = dataset.status.manifest
        if manifest is None or now - manifest.computed_at >= interval:
            due.append(dataset.name)
    return sorted(due)


def next_verification_at(datasets: Iterable[Dataset], interval: dt.timedelta) -> dt.datetime | None:
    """When the earliest recorded manifest falls due (for the loop's next wake-up), or None
    when no dataset has one (those without are due at once: `datasets_due_for_verification`)."""
    times = [d.status.manifest.computed_at for d in datasets if d.status.manifest is not None]
    return min(times) + interval if times else None
