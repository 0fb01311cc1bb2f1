"""What the raw-copy check compares against: the size and ETag of the workspace's dataset objects.

The airlock reads no dataset: its S3 credential reaches only the quarantine and egress
buckets and, read-only, the fingerprint index (docs/architecture.md, "The airlock's
credential and its reach"). The controller, which lists every dataset when it verifies it,
keeps each object's size and ETag in that index under the manifest hash the workspace's
approval pins (`storage.fingerprints`), so the objects compared are exactly those of the
listing the workspace mounts. Only objects whose **size** equals that of a file being
exported can be byte-identical copies; `checks.check_raw_copy` compares their ETags with the
file's (`checks.EtagDigest`).

NFS datasets cannot be listed by the controller and are named as not compared; so is a
dataset whose index cannot be read (not stored yet, or S3 refused): the finding says why,
nothing is hidden.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import TYPE_CHECKING

from provisioner.airlock.checks import DatasetComparison, DatasetObject
from provisioner.errors import NotFoundError, TreError
from provisioner.models.resources import WorkspaceDataset
from provisioner.storage.fingerprints import read_fingerprints

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


def compare_datasets(
    client: S3Client, bucket: str, datasets: Iterable[WorkspaceDataset], sizes: Collection[int]
) -> DatasetComparison:
    """The objects of `datasets` whose size is in `sizes`, from the fingerprint index in
    `bucket` (module docstring)."""
    objects: list[DatasetObject] = []
    not_compared: list[str] = []
    for dataset in sorted(datasets, key=lambda d: d.name):
        if dataset.source.s3 is None:
            not_compared.append(f"{dataset.name} (NFS: not listable)")
            continue
        try:
            objects.extend(
                DatasetObject(dataset=dataset.name, key=f.key, size=f.size, etag=f.etag)
                for f in read_fingerprints(client, bucket, dataset.manifest_sha256, sizes)
            )
        except NotFoundError:
            not_compared.append(
                f"{dataset.name} (no fingerprints recorded for its verified listing "
                f"{dataset.manifest_sha256[:12]}: the controller writes them when it next "
                "verifies the dataset)"
            )
        except TreError as exc:
            not_compared.append(f"{dataset.name} ({exc})")
    return DatasetComparison(objects=tuple(objects), not_compared=tuple(not_compared))
