"""Pure rules about datasets: where the data is, when and how far to verify it, which sources
may overlap.

The controller verifies datasets itself (`provisioner.controller.datasets`): it decides here
which ones are due, lists the data with its own S3 credentials and writes `status.manifest`.
The overlap rule is enforced by the API server (`tre-dataset-no-overlap`,
`provisioner.planning.admission`); `overlap_refusal` is the same rule in Python, so the CLI
can say no before it asks, in the same words.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from provisioner.errors import BudgetExceededError
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
        "log, the airlock's unreviewed and released files of every project and the datasets' "
        "fingerprints, which no dataset may show; register data from a bucket of its own"
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
    datasets: Iterable[Dataset],
    now: dt.datetime,
    interval: dt.timedelta,
    not_before: Mapping[str, dt.datetime] | None = None,
) -> list[str]:
    """Names (sorted) of the datasets whose manifest the controller should recompute now.

    Due: no manifest yet (a new dataset, or the last attempt failed: a failed attempt removes
    the manifest, `controller.datasets`), or one computed `interval` or longer ago
    (`settings.dataset_verify_seconds`). `not_before` holds, by name, when a dataset whose
    last attempt failed may be tried again (`verification_retry_at`); until then it is not due.
    """
    waiting = not_before or {}
    due = []
    for dataset in datasets:
        if dataset.name in waiting and now < waiting[dataset.name]:
            continue
        manifest = dataset.status.manifest
        if manifest is None or now - manifest.computed_at >= interval:
            due.append(dataset.name)
    return sorted(due)


def next_verification_at(
    datasets: Iterable[Dataset],
    interval: dt.timedelta,
    not_before: Mapping[str, dt.datetime] | None = None,
) -> dt.datetime | None:
    """When the next dataset falls due (for a wake-up): the earliest recorded manifest's time
    plus `interval`, or a retry time from `not_before`; None when neither exists (datasets
    without a manifest and no retry time are due at once: `datasets_due_for_verification`)."""
    waiting = not_before or {}
    times = [d.status.manifest.computed_at + interval for d in datasets
             if d.status.manifest is not None and d.name not in waiting]  # fmt: skip
    times += waiting.values()
    return min(times) if times else None


# A failed listing is tried again after 10 s, then 20 s, 40 s ... at most the interval.
FIRST_RETRY_SECONDS = 10.0


def verification_retry_at(
    failed_at: dt.datetime, attempts: int, over_budget: bool, interval: dt.timedelta
) -> dt.datetime:
    """When to try again a dataset whose verification failed `attempts` times in a row.

    Over budget: after the full interval. Each attempt costs a whole budget of S3 requests
    and controller time, and only data that shrank or a raised budget can change the answer
    (raising a setting restarts the controller, which forgets this and tries at once).
    Any other failure (S3 unreachable, no objects yet, access refused) is retried with
    exponential back-off, so data uploaded after registering is picked up soon.
    """
    if over_budget:
        return failed_at + interval
    delay = FIRST_RETRY_SECONDS * 2.0 ** max(0, attempts - 1)
    return failed_at + min(interval, dt.timedelta(seconds=delay))


@dataclass(frozen=True)
class VerificationBudget:
    """How far the controller goes to verify one dataset: its listing stops, and the dataset
    is withheld, past `max_objects` objects or `max_seconds` of listing. No object's content
    is read (the manifest holds sizes and ETags, not hashes of bytes), so there is no byte
    budget: the bytes a listing moves grow with the objects, at most 1 KiB of key each."""

    max_objects: int
    max_seconds: float

    @classmethod
    def of(cls, settings: Settings) -> VerificationBudget:
        return cls(settings.dataset_verify_max_objects, settings.dataset_verify_max_seconds)

    def check(self, where: str, objects: int, seconds: float) -> None:
        """Raise BudgetExceededError, naming the budget and the setting to raise, when a
        listing of `where` that found `objects` objects in `seconds` went past the budget."""
        if objects > self.max_objects:
            setting = f"TRE_DATASET_VERIFY_MAX_OBJECTS={self.max_objects}"
            raise BudgetExceededError(
                f"{where} holds more than {self.max_objects} objects ({setting}); the "
                f"controller stopped listing after {objects}. Raise the setting, or register "
                "smaller prefixes as separate datasets"
            )
        if seconds > self.max_seconds:
            setting = f"TRE_DATASET_VERIFY_MAX_SECONDS={self.max_seconds:g}"
            raise BudgetExceededError(
                f"listing {where} took longer than {self.max_seconds:g} s ({setting}); the "
                f"controller stopped after {objects} objects. Raise the setting, or register "
                "smaller prefixes as separate datasets"
            )
