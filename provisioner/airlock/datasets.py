"""What the raw-copy check compares against: sha256 of the workspace's dataset objects.

The Dataset manifest the controller records pins a *listing* (keys, sizes, ETags) with one
hash over it; it keeps no per-object sha256, and ETags are not content hashes for multipart
uploads. Keeping a sha256 per object in the Dataset status was the alternative: it would
mean reading every byte of every dataset at each verification and an unbounded status (an
object of the API server is limited to about 1.5 MiB, some 15,000 objects). Instead the
airlock hashes on demand only the objects whose **size** equals that of a file being
exported: only those can be byte-identical copies, so the cost is one read of a few objects,
not of the dataset. Sizes come from the same listing the manifest is made of.

NFS datasets cannot be listed by the airlock (nor by the controller) and are named as not
compared; so is a dataset whose listing fails (the finding says why; nothing is hidden).
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable
from typing import TYPE_CHECKING

from provisioner.airlock.checks import DatasetComparison, DatasetObject
from provisioner.airlock.quarantine import object_chunks
from provisioner.errors import TreError
from provisioner.models.resources import WorkspaceDataset
from provisioner.storage.s3 import translated_errors

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


def compare_datasets(
    client: S3Client, datasets: Iterable[WorkspaceDataset], sizes: Collection[int]
) -> DatasetComparison:
    """Hash every object of `datasets` whose size is in `sizes` (module docstring)."""
    wanted = set(sizes)
    objects: list[DatasetObject] = []
    not_compared: list[str] = []
    for dataset in sorted(datasets, key=lambda d: d.name):
        s3 = dataset.source.s3
        if s3 is None:
            not_compared.append(f"{dataset.name} (NFS: not listable)")
            continue
        try:
            objects.extend(_hash_matching(client, dataset.name, s3.bucket, s3.prefix, wanted))
        except TreError as exc:
            not_compared.append(f"{dataset.name} ({exc})")
    return DatasetComparison(objects=tuple(objects), not_compared=tuple(not_compared))


def _hash_matching(
    client: S3Client, name: str, bucket: str, prefix: str, sizes: set[int]
) -> list[DatasetObject]:
    found: list[DatasetObject] = []
    paginator = client.get_paginator("list_objects_v2")
    # Page by page (never the whole listing in memory: datasets can hold millions of keys).
    with translated_errors(f"list s3://{bucket}/{prefix}"):
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for entry in page.get("Contents", []):
                size = int(entry.get("Size", 0))
                if size not in sizes:
                    continue
                digest = hashlib.sha256()
                for chunk in object_chunks(client, bucket, entry["Key"]):
                    digest.update(chunk)
                found.append(
                    DatasetObject(
                        dataset=name,
                        key=entry["Key"][len(prefix) :],
                        size=size,
                        sha256=digest.hexdigest(),
                    )
                )
    return found
