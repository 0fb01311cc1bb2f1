"""The controller verifies datasets: it lists the data itself and records the manifest.

The manifest hash is what approvals pin and what decides whether a workspace may mount a
dataset, so it must come from a party the stewards do not control: the controller, with its
own S3 client, writing `status` through the subresource that only it may write (RBAC). A
steward who changes the data, or who could change where a dataset points (the CRD forbids
that), cannot make the recorded hash match.

`verify_datasets` handles the datasets that are due (`planning.datasets`): no manifest yet,
or one older than `settings.dataset_verify_seconds`. Each gets a status write: the new
manifest and `Verified=True`, or, when its data cannot be listed, `Verified=False` naming the
error (the previous manifest is kept and the dataset stays due, so the next pass retries).
A dataset on one of the platform's own buckets (stored before the admission policy refused
them) is never listed: `Verified=False` and its manifest removed, so nothing mounts it.
One dataset's failure never stops the others and is never raised.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from provisioner.controller.reconcile import Auditor
from provisioner.errors import TreError
from provisioner.kube.api import Kube
from provisioner.kube.resources import DATASETS
from provisioner.models.resources import Condition, Dataset, DatasetManifest
from provisioner.models.settings import Settings
from provisioner.planning.datasets import (
    datasets_due_for_verification,
    platform_bucket_refusal,
    source_uri,
)
from provisioner.planning.project import dataset_manifest_event
from provisioner.storage.fingerprints import FingerprintIndex
from provisioner.storage.s3 import compute_manifest

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

VERIFIED: Literal["Verified"] = "Verified"


@dataclass(frozen=True)
class DatasetVerification:
    """What one verification found and recorded."""

    name: str
    # the manifest now recorded in status (the previous one when verification failed)
    sha256: str | None
    # the recorded hash differs from the one before (a new dataset counts as changed)
    changed: bool
    # why it failed (listing, status write or audit), None when it succeeded
    error: str | None = None
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
        _verify(kube, s3, by_name[name], now, settings, audit)
        for name in datasets_due_for_verification(by_name.values(), now, interval)
    ]


def _verify(
    kube: Kube,
    s3: S3Client,
    dataset: Dataset,
    now: dt.datetime,
    settings: Settings,
    audit: Auditor | None,
) -> DatasetVerification:
    before = dataset.status.manifest.sha256 if dataset.status.manifest else None
    manifest: DatasetManifest | None = None
    error: str | None = None
    fingerprints: str | None = None  # why the airlock's fingerprints were not stored
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
                manifest = compute_manifest(s3, dataset, settings, now=now, on_object=index.add)
                if dataset.spec.source.s3 is not None:
                    fingerprints = _store(index, s3, settings, manifest.sha256)
        except TreError as exc:
            error = f"cannot list {source_uri(dataset.spec.source)}: {exc}"
            condition = _condition(
                dataset, "False", "ListingFailed", f"{error}; retried on the next pass", now
            )
            status = {"conditions": [condition.to_wire()]}
        else:
            described = _describe(dataset, manifest)
            if fingerprints is not None:
                described += f"; {fingerprints}"
            condition = _condition(dataset, "True", "ManifestComputed", described, now)
            status = {"manifest": manifest.to_wire(), "conditions": [condition.to_wire()]}
    try:
        kube.patch_status(DATASETS, dataset.name, status)
    except TreError as exc:
        return DatasetVerification(
            dataset.name, before, False, f"{error + '; ' if error else ''}write status: {exc}"
        )
    if refused is not None:
        return DatasetVerification(dataset.name, None, before is not None, error)
    if manifest is None:
        return DatasetVerification(dataset.name, before, False, error)
    changed = manifest.sha256 != before
    if changed and audit is not None:
        try:
            event = dataset_manifest_event(dataset.name, dataset.uid, dataset.spec, manifest)
            audit.append(event.actor, event.action, event.subject, event.details, key=event.key)
        except TreError as exc:
            return DatasetVerification(
                dataset.name, manifest.sha256, True, f"audit: {exc}", fingerprints
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
