"""The controller verifies datasets: it lists the data itself and records the manifest.

The manifest hash is what approvals pin and what decides whether a workspace may mount a
dataset, so it must come from a party the stewards do not control: the controller, with its
own S3 client, writing `status` through the subresource that only it may write (RBAC). A
steward who changes the data, or who could change where a dataset points (the CRD forbids
that), cannot make the recorded hash match.

`verify_datasets` handles the datasets that are due (`planning.datasets`): no manifest yet,
or one older than `settings.dataset_verify_seconds`. Each gets a status write: the new
manifest and `Verified=True`, or `Verified=False` with the manifest removed, so no approval
matches and no workspace mounts it (fail closed): reason `ListingFailed` naming the error
when its data cannot be listed, `OverBudget` naming the setting to raise when the listing
went past `TRE_DATASET_VERIFY_MAX_OBJECTS` or `TRE_DATASET_VERIFY_MAX_SECONDS`.
A dataset on one of the platform's own buckets (stored before the admission policy refused
them) is never listed: `Verified=False` (`PlatformBucket`) and its manifest removed.
One dataset's failure never stops the others and is never raised.

`DatasetVerifier` runs that in a thread of its own beside the reconcile loop
(`controller.loop.run_controller`), one dataset at a time, while the loop holds the Lease:
a listing of millions of objects never delays a revoke, an expiry or an export decision,
which the loop makes from the statuses recorded so far.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from provisioner.controller.reconcile import Auditor, parse_each
from provisioner.errors import BudgetExceededError, TreError
from provisioner.kube.api import Kube
from provisioner.kube.resources import DATASETS
from provisioner.models.resources import Condition, Dataset, DatasetManifest
from provisioner.models.settings import Settings
from provisioner.planning.datasets import (
    datasets_due_for_verification,
    next_verification_at,
    platform_bucket_refusal,
    source_uri,
    verification_retry_at,
)
from provisioner.planning.project import Unparsable, dataset_manifest_event
from provisioner.storage.fingerprints import FingerprintIndex
from provisioner.storage.s3 import compute_manifest

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger("tre.controller.datasets")
VERIFIED: Literal["Verified"] = "Verified"


@dataclass(frozen=True)
class DatasetVerification:
    """What one verification found and recorded."""

    name: str
    # the manifest now recorded in status: None once verification failed (removed), the
    # previous one when nothing could be written
    sha256: str | None
    # the recorded hash differs from the one before (a new dataset counts as changed)
    changed: bool
    # why it failed (listing, budget, status write or audit), None when it succeeded
    error: str | None = None
    # the listing went past the budget (retried only after the full interval)
    over_budget: bool = False
    # recorded, but the airlock's fingerprints of it were not stored (`_store`)
    warning: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def verify_datasets(
    kube: Kube,
    s3: S3Client,
    datasets: Iterable[Dataset],
    now: dt.datetime,
    settings: Settings,
    *,
    audit: Auditor | None = None,
) -> list[DatasetVerification]:
    """Verify each due dataset of `datasets` (the pass's snapshot), in name order.

    `kube` and `s3` act as the controller. With `audit`, a manifest that changed (or is new) is
    an audit entry `dataset.verified`. Never raises a TreError: each dataset's outcome is in
    its result and in its `Verified` condition.
    """
    by_name = {d.name: d for d in datasets}
    interval = dt.timedelta(seconds=settings.dataset_verify_seconds)
    return [
        verify_dataset(kube, s3, by_name[name], now, settings, audit=audit)
        for name in datasets_due_for_verification(by_name.values(), now, interval)
    ]


def verify_dataset(
    kube: Kube,
    s3: S3Client,
    dataset: Dataset,
    now: dt.datetime,
    settings: Settings,
    *,
    audit: Auditor | None = None,
    keep_going: Callable[[], bool] = lambda: True,
) -> DatasetVerification:
    """List `dataset` and record what was found (module docstring); never raises a TreError.

    When `keep_going()` turns false during the listing, nothing is written: the verifier is
    stopping or lost the lease, and whoever leads next verifies the dataset again."""
    before = dataset.status.manifest.sha256 if dataset.status.manifest else None
    manifest: DatasetManifest | None = None
    error: str | None = None
    fingerprints: str | None = None  # why the airlock's fingerprints were not stored
    over_budget = False
    status: dict[str, Any]
    refused = platform_bucket_refusal(dataset.spec.source, settings)
    if refused is not None:
        # Only a dataset stored before the admission policy existed gets here. Never listed,
        # and its manifest is removed: no approval matches it, so no workspace mounts it.
        error = refused
        condition = _condition(
            dataset, "False", "PlatformBucket", f"{refused}; it is never verified", now
        )
        status = {"manifest": None, "conditions": [condition.to_wire()]}
    else:
        try:
            with FingerprintIndex() as index:
                manifest = compute_manifest(
                    s3, dataset, settings, now=now, keep_going=keep_going, on_object=index.add
                )
                if dataset.spec.source.s3 is not None:
                    fingerprints = _store(index, s3, settings, manifest.sha256)
        except TreError as exc:
            if not keep_going():
                return DatasetVerification(dataset.name, before, False, f"not finished: {exc}")
            # Fail closed: the manifest is removed, so what was approved before is withheld
            # until a listing succeeds again and shows the same content.
            over_budget = isinstance(exc, BudgetExceededError)
            if over_budget:
                error = f"not verified: {exc}"
                reason, retry = "OverBudget", "tried again after TRE_DATASET_VERIFY_SECONDS"
            else:
                error = f"cannot list {source_uri(dataset.spec.source)}: {exc}"
                reason, retry = "ListingFailed", "retried with back-off"
            message = f"{error}; withheld from workspaces until verified; {retry}"
            condition = _condition(dataset, "False", reason, message, now)
            status = {"manifest": None, "conditions": [condition.to_wire()]}
        else:
            described = _describe(dataset, manifest)
            if fingerprints is not None:
                described += f"; {fingerprints}"
            condition = _condition(dataset, "True", "ManifestComputed", described, now)
            status = {"manifest": manifest.to_wire(), "conditions": [condition.to_wire()]}
    if not keep_going():
        return DatasetVerification(dataset.name, before, False, "not finished: no longer leads")
    try:
        kube.patch_status(DATASETS, dataset.name, status, uid=dataset.uid or None)
    except TreError as exc:
        return DatasetVerification(
            dataset.name,
            before,
            False,
            f"{error + '; ' if error else ''}write status: {exc}",
            over_budget,
        )
    if manifest is None:  # removed: refused, listing failed or over budget
        return DatasetVerification(dataset.name, None, before is not None, error, over_budget)
    changed = manifest.sha256 != before
    if changed and audit is not None:
        try:
            event = dataset_manifest_event(dataset.name, dataset.uid, dataset.spec, manifest)
            audit.append(event.actor, event.action, event.subject, event.details, key=event.key)
        except TreError as exc:
            return DatasetVerification(
                dataset.name, manifest.sha256, True, f"audit: {exc}", warning=fingerprints
            )
    return DatasetVerification(dataset.name, manifest.sha256, changed, warning=fingerprints)


def _store(index: FingerprintIndex, s3: S3Client, settings: Settings, sha256: str) -> str | None:
    """Store the listing's fingerprints for the airlock; None, or why they were not.

    Their failure does not withhold the dataset (the manifest is what mounts depend on): the
    airlock names the dataset as not compared in its raw-copy finding, and the next
    verification stores them (they are written once per manifest).
    """
    try:
        index.store(s3, settings.dataset_fingerprint_bucket, sha256)
    except TreError as exc:
        return f"fingerprints for the airlock not stored: {exc}"
    return None


def _describe(dataset: Dataset, manifest: DatasetManifest) -> str:
    if dataset.spec.source.nfs is not None:
        return (
            "source only: the controller cannot list an NFS export, so this manifest pins "
            "where the data is, not its content (the steward answers for the content)"
        )
    return f"{manifest.object_count} objects, {manifest.bytes} bytes, sha256 {manifest.sha256}"


def _condition(
    dataset: Dataset,
    status: Literal["True", "False", "Unknown"],
    reason: str,
    message: str,
    now: dt.datetime,
) -> Condition:
    """The Verified condition; its transition time moves only when its status does."""
    previous = next((c for c in dataset.status.conditions if c.type == VERIFIED), None)
    since = (
        previous.last_transition_time
        if previous is not None and previous.status == status and previous.last_transition_time
        else now
    )
    return Condition(
        type=VERIFIED, status=status, reason=reason, message=message, last_transition_time=since
    )


@dataclass
class _Retry:
    uid: str  # a dataset deleted and registered again under its name starts afresh
    attempts: int
    at: dt.datetime


class DatasetVerifier:
    """Verifies the due datasets in a thread of its own while the controller leads.

    The reconcile loop calls `lead` after each Lease round and `wake` after each full pass
    (a Dataset changed, or the resync). The thread reads the Datasets, verifies those due one
    at a time (`verify_dataset`), then sleeps until the next falls due or it is woken. Each
    listing stops at its budget, when the controller stops or when it no longer leads
    (checked after each page); an unfinished verification writes nothing, so a replica that
    lost the Lease never overwrites the new leader's record. A failed dataset is retried
    (`verification_retry_at`); those times live in memory only: a restarted controller
    tries every unverified dataset once at once, which the budget bounds.
    """

    # Wait after an error reading the Datasets (API server away) before trying again.
    ERROR_WAIT_SECONDS = 5.0

    def __init__(
        self,
        kube: Kube,
        s3: S3Client | None,
        settings: Settings,
        *,
        audit: Auditor | None = None,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._kube, self._s3, self._settings, self._audit = kube, s3, settings, audit
        self._clock = clock
        self._interval = dt.timedelta(seconds=settings.dataset_verify_seconds)
        self._retries: dict[str, _Retry] = {}
        self._leading = threading.Event()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="verify datasets")

    def start(self) -> None:
        """Start the thread; without an S3 client (a controller that verifies no dataset,
        as some tests run it) there is none, and `lead`, `wake` and `close` do nothing."""
        if self._s3 is not None:
            self._thread.start()

    def lead(self, leading: bool) -> None:
        """Whether the controller holds the Lease; verification runs only while it does."""
        if leading != self._leading.is_set():
            if leading:
                self._leading.set()
            else:
                self._leading.clear()
            self._wake.set()

    def wake(self) -> None:
        """Look at the Datasets again now (one may be new)."""
        self._wake.set()

    def close(self, timeout: float = 60.0) -> None:
        """Stop: the listing under way ends after its current page, unwritten."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _keep_going(self) -> bool:
        return self._leading.is_set() and not self._stop.is_set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            wait: float | None = None  # not leading: until woken
            if self._keep_going():
                try:
                    wait = self.run_once()
                except Exception:
                    # A bug must not end verification for good: the thread carries on, and
                    # the datasets stay due (unverified ones are withheld meanwhile).
                    log.exception("dataset verification failed")
                    wait = self.ERROR_WAIT_SECONDS
            self._wake.wait(wait)

    def run_once(self) -> float | None:
        """Verify every dataset due now; the seconds until the next one falls due (None:
        none will until something changes)."""
        assert self._s3 is not None, "start() runs no thread without an S3 client"
        s3 = self._s3
        try:
            unparsable: list[Unparsable] = []
            datasets = parse_each(self._kube.list(DATASETS), Dataset, unparsable)
        except TreError as exc:
            log.warning("cannot read the Datasets, retrying: %s", exc)
            return self.ERROR_WAIT_SECONDS
        present = {d.name: d.uid for d in datasets}
        self._retries = {name: r for name, r in self._retries.items() if present.get(name) == r.uid}
        due = datasets_due_for_verification(datasets, self._clock(), self._interval,
                                            self._not_before())  # fmt: skip
        by_name = {d.name: d for d in datasets}
        for i, name in enumerate(due):
            if not self._keep_going():
                return None
            if i and self._wake.is_set():
                return 0.0  # something changed (a new dataset?): read the Datasets again
            self._record(
                by_name[name],
                verify_dataset(self._kube, s3, by_name[name], self._clock(),
                               self._settings, audit=self._audit,
                               keep_going=self._keep_going),
            )  # fmt: skip
        if due:
            return 0.0  # their statuses changed: read again (nothing is due twice)
        at = next_verification_at(datasets, self._interval, self._not_before())
        return None if at is None else max(0.0, (at - self._clock()).total_seconds())

    def _not_before(self) -> dict[str, dt.datetime]:
        return {name: r.at for name, r in self._retries.items()}

    def _record(self, dataset: Dataset, done: DatasetVerification) -> None:
        if done.ok:
            self._retries.pop(dataset.name, None)
            log.info("dataset %s verified: sha256 %s", dataset.name, done.sha256)
            return
        if not self._keep_going():
            return  # unfinished: whoever leads verifies it again
        previous = self._retries.get(dataset.name)
        attempts = previous.attempts + 1 if previous else 1
        now = self._clock()
        at = verification_retry_at(now, attempts, done.over_budget, self._interval)
        self._retries[dataset.name] = _Retry(dataset.uid, attempts, at)
        log.warning("dataset %s not verified (retry at %s): %s", dataset.name, at, done.error)
