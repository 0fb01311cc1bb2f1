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

from provisioner.models import rules
from provisioner.models.resources import Dataset, DatasetSource


def source_uri(source: DatasetSource) -> str:
    """`s3://<bucket>/<prefix>` or `nfs://<server><path>`, as stored (the manifest's first
    line): `rules.source_uri` of the source's wire form, which `tre dataset` prints."""
    return rules.source_uri(source.to_wire())


def source_location(source: DatasetSource) -> str:
    """`source_uri` ending in '/', the server name in lower case: one location contains another
    exactly when it is a prefix of it as text ('s3://b/' holds the whole bucket, 'nfs://h/' the
    whole server; 'cohort/' does not hold 'cohort-2/'). Mirrors the admission policy's CEL."""
    uri = source_uri(source)
    if source.nfs is not None:
        uri = f"nfs://{source.nfs.server.lower()}{source.nfs.path}"
    return uri if uri.endswith("/") else uri + "/"


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
