"""Bounded, streaming dataset verification: the pure parts (review 3, S11).

Behaviours under test:
- the manifest hash taken one object at a time (`ManifestDigest`) equals the documented hash
  of the sorted lines, for keys whose UTF-8 order is not their order as typed (non-ASCII,
  '/', '-'), so manifests recorded before and the approvals pinning them stay valid; a key
  given twice or out of order is an error naming both keys, never another hash;
- `SortedRows` gives rows back in UTF-8 key order whatever order they came in (the order
  SeaweedFS lists, a directory before its siblings that sort before '/'; shuffled), across
  spilled runs and the rows still held, and removes its files when left;
- `compute_manifest` over a paginated listing: the same hash as the sorted lines, from a
  listing in another order too; past `max_objects` or `max_seconds` it stops after that page
  with BudgetExceededError naming the budget and the setting to raise, and reads no further
  page; when told to stop (`keep_going`) it stops after the page with a TemporaryError; its
  memory does not grow with the number of objects (20,000 objects peak no higher than 2,000
  do, within 200 KiB, with runs of 1,000 rows; holding every row would cost 3 MB more);
- the budget check passes at the limit and fails one past it, for objects and for time;
- retry times: a failed listing after 10 s, 20 s, 40 s ... at most the interval; a dataset
  over budget after the whole interval;
- due: a dataset waiting for its retry time is not due until then; the next wake-up is the
  earliest of the manifests' due times and the retry times;
- the budget settings' defaults (1,000,000 objects, 900 s) and their documentation.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import random
import tracemalloc
from collections.abc import Iterator
from typing import Any, cast

import pytest

from provisioner.errors import BudgetExceededError, PermanentError, TemporaryError
from provisioner.models.resources import (
    Dataset,
    DatasetManifest,
    DatasetSource,
    DatasetSpec,
    DatasetStatus,
    S3Source,
)
from provisioner.models.settings import Settings
from provisioner.models.types import ClassificationTier
from provisioner.planning.datasets import (
    VerificationBudget,
    datasets_due_for_verification,
    manifest_origin,
    next_verification_at,
    verification_retry_at,
)
from provisioner.storage import s3
from provisioner.storage.s3 import (
    ManifestDigest,
    SortedRows,
    compute_manifest,
    manifest_line,
    manifest_sha256,
)

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)
SETTINGS = Settings(s3_region="us-east-1")
WIDE = VerificationBudget(max_objects=10**9, max_seconds=10**9)


def dataset(name: str = "cohort", computed_at: dt.datetime | None = None) -> Dataset:
    manifest = (
        DatasetManifest(object_count=1, bytes=1, sha256="0" * 64, computed_at=computed_at)
        if computed_at
        else None
    )
    source = DatasetSource(s3=S3Source(bucket="tre-data", prefix="cohort/"))
    spec = DatasetSpec(
        title="T", steward="sam", classification=ClassificationTier.INTERNAL, source=source
    )
    return Dataset(name=name, uid="u1", spec=spec, status=DatasetStatus(manifest=manifest))


class Listing:
    """A stand-in for boto3's ListObjectsV2 paginator: `pages` pages of `per_page` keys,
    made lazily (as the real one fetches them), counting the pages handed out."""

    def __init__(self, keys: Iterator[str], per_page: int = 1000) -> None:
        self.keys, self.per_page, self.pages_read = keys, per_page, 0

    def get_paginator(self, name: str) -> Listing:
        assert name == "list_objects_v2"
        return self

    def paginate(self, **kwargs: Any) -> Iterator[dict[str, Any]]:
        assert kwargs == {"Bucket": "tre-data", "Prefix": "cohort/"}
        page: list[dict[str, Any]] = []
        for key in self.keys:
            page.append({"Key": f"cohort/{key}", "Size": 1, "ETag": '"e"'})
            if len(page) == self.per_page:
                self.pages_read += 1
                yield {"Contents": page}
                page = []
        if page:
            self.pages_read += 1
            yield {"Contents": page}


def numbered(n: int) -> Iterator[str]:
    return (f"{i:09d}.csv" for i in range(n))


def manifest(listing: Listing, budget: VerificationBudget = WIDE, **kwargs: Any) -> Any:
    return compute_manifest(cast("Any", listing), dataset(), SETTINGS, now=NOW, budget=budget,
                            **kwargs)  # fmt: skip


# --- the streaming hash ---------------------------------------------------------------------


# UTF-8 byte order: '-' < '/' < '0' < 'a' < 'é' < '中'; Python sorts str the same way
# (code points), which is why the order S3 lists in is the order the hash was defined on.
KEYS = ["a-b", "a/b", "a0", "ab", "é.csv", "中.csv"]


def test_the_streamed_hash_is_the_hash_of_the_sorted_lines() -> None:
    origin = manifest_origin(dataset(), SETTINGS)
    digest = ManifestDigest(origin, "s3://tre-data/cohort/")
    for i, key in enumerate(sorted(KEYS, key=lambda k: k.encode())):
        digest.add(key, i, f"etag{i}")
    lines = [manifest_line(k, i, f"etag{i}") for i, k in enumerate(sorted(KEYS))]
    assert digest.hexdigest() == manifest_sha256(origin, lines)
    assert (digest.object_count, digest.bytes) == (len(KEYS), sum(range(len(KEYS))))
    text = f"source {origin}\n" + "".join(line + "\n" for line in lines)
    assert digest.hexdigest() == hashlib.sha256(text.encode()).hexdigest()


@pytest.mark.parametrize(("first", "second"), [("b", "a"), ("a/b", "a-b"), ("é", "é")])
def test_a_key_out_of_order_or_given_twice_is_an_error(first: str, second: str) -> None:
    digest = ManifestDigest("o", "s3://tre-data/cohort/")
    digest.add(first, 1, "e")
    with pytest.raises(PermanentError, match=f"'{second}' came after '{first}'"):
        digest.add(second, 1, "e")


# SeaweedFS, measured: a "directory" comes before its siblings that sort before '/'.
SEAWEEDFS_ORDER = ["a/b", "a b", "a!", "part1/x.csv", "part1/z/w", "part1+", "part1-b/y",
                   "part1.csv", "zz", "é", "中"]  # fmt: skip


@pytest.mark.parametrize("run_rows", [1, 3, 100])
def test_sorted_rows_come_back_in_key_order_whatever_order_they_came_in(run_rows: int) -> None:
    shuffled = [f"k{i:03d}\n{chr(0x4E00 + i % 7)}" for i in range(50)]
    random.Random(7).shuffle(shuffled)
    for keys in (SEAWEEDFS_ORDER, shuffled):
        with SortedRows(run_rows) as rows:
            for i, key in enumerate(keys):
                rows.add(key, i, f"e{i}")
            got = list(rows)
            files = len(os.listdir(f"/proc/{os.getpid()}/fd"))
        assert [k for k, _, _ in got] == sorted(keys, key=lambda k: k.encode())
        assert sorted(got) == sorted((k, i, f"e{i}") for i, k in enumerate(keys))
        assert len(os.listdir(f"/proc/{os.getpid()}/fd")) <= files  # the runs are closed


def test_compute_manifest_hashes_a_paged_listing_as_the_sorted_lines() -> None:
    keys = sorted(f"k{i}" for i in range(2500))  # text order, as S3 lists them
    done = manifest(Listing(iter(keys)))
    origin = manifest_origin(dataset(), SETTINGS)
    assert done.sha256 == manifest_sha256(origin, [manifest_line(k, 1, "e") for k in keys])
    assert (done.object_count, done.bytes) == (2500, 2500)
    # the same objects listed in SeaweedFS's order hash alike
    other = manifest(Listing(iter(SEAWEEDFS_ORDER)))
    lines = [manifest_line(k, 1, "e") for k in sorted(SEAWEEDFS_ORDER)]
    assert other.sha256 == manifest_sha256(origin, lines)


# --- the budget -----------------------------------------------------------------------------


def test_too_many_objects_stop_the_listing_after_that_page() -> None:
    listing = Listing(numbered(5000))
    with pytest.raises(BudgetExceededError) as over:
        manifest(listing, VerificationBudget(max_objects=1500, max_seconds=60))
    assert listing.pages_read == 2
    assert str(over.value) == (
        "s3://tre-data/cohort/ holds more than 1500 objects "
        "(TRE_DATASET_VERIFY_MAX_OBJECTS=1500); the controller stopped listing after 2000. "
        "Raise the setting, or register smaller prefixes as separate datasets"
    )


def test_a_listing_past_its_time_stops_after_that_page() -> None:
    ticks = iter(range(0, 10**6, 10))  # each look at the clock: 10 s later
    listing = Listing(numbered(5000))
    with pytest.raises(BudgetExceededError, match=r"took longer than 25 s "
                       r"\(TRE_DATASET_VERIFY_MAX_SECONDS=25\); the controller stopped after "
                       "3000 objects. Raise the setting"):  # fmt: skip
        manifest(listing, VerificationBudget(max_objects=10**6, max_seconds=25),
                 clock=lambda: float(next(ticks)))  # fmt: skip
    assert listing.pages_read == 3


def test_a_listing_told_to_stop_stops_after_the_page() -> None:
    listing = Listing(numbered(5000))
    with pytest.raises(TemporaryError, match="stopped after 1000 objects"):
        manifest(listing, keep_going=lambda: False)
    assert listing.pages_read == 1


@pytest.mark.parametrize(
    ("objects", "seconds", "over"),
    [(10, 5.0, None), (11, 5.0, "MAX_OBJECTS=10"), (10, 5.5, "MAX_SECONDS=5")],
)
def test_the_budget_holds_at_its_limit_and_not_past_it(
    objects: int, seconds: float, over: str | None
) -> None:
    budget = VerificationBudget(max_objects=10, max_seconds=5)
    if over is None:
        budget.check("s3://b/p/", objects, seconds)
    else:
        with pytest.raises(BudgetExceededError, match=f"TRE_DATASET_VERIFY_{over}"):
            budget.check("s3://b/p/", objects, seconds)


def peak_bytes(objects: int) -> int:
    tracemalloc.start()
    try:
        manifest(Listing(numbered(objects)))
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_with_the_objects(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(s3, "SORT_RUN_ROWS", 1000)  # the default's 20,000, ten times smaller
    small, large = peak_bytes(2_000), peak_bytes(20_000)
    # Both hold one run of rows at most (with a page); a row per object would cost 3 MB more.
    assert large - small < 200 * 1024, (small, large)


def test_the_budget_comes_from_the_settings() -> None:
    assert VerificationBudget.of(Settings()) == VerificationBudget(1_000_000, 900.0)
    for name in ("dataset_verify_max_objects", "dataset_verify_max_seconds"):
        field = Settings.model_fields[name]
        assert field.description is not None and "withheld from workspaces" in field.description


# --- when to try again ----------------------------------------------------------------------


def test_a_failed_listing_is_retried_with_back_off_up_to_the_interval() -> None:
    delays = [(verification_retry_at(NOW, n, False, HOUR) - NOW).total_seconds()
              for n in range(1, 11)]  # fmt: skip
    assert delays == [10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600]


def test_a_dataset_over_budget_is_tried_again_after_the_interval() -> None:
    assert verification_retry_at(NOW, 1, True, HOUR) == NOW + HOUR


def test_a_dataset_waiting_for_its_retry_is_not_due_until_then() -> None:
    waiting = {"failed": NOW + dt.timedelta(seconds=30)}
    datasets = [dataset("failed"), dataset("new"), dataset("fresh", computed_at=NOW)]
    assert datasets_due_for_verification(datasets, NOW, HOUR, waiting) == ["new"]
    later = NOW + dt.timedelta(seconds=30)
    assert datasets_due_for_verification(datasets, later, HOUR, waiting) == ["failed", "new"]
    assert next_verification_at(datasets, HOUR, waiting) == NOW + dt.timedelta(seconds=30)
    assert next_verification_at(datasets, HOUR, {}) == NOW + HOUR
