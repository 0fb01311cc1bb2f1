"""What the airlock compares exports against, without reading a dataset: per-object fingerprints.

The controller lists every S3 dataset when it verifies it (`compute_manifest`). The same walk
feeds a `FingerprintIndex`: one line per object, the manifest's own canonical line
``[relative_key, size, etag]`` (`manifest_line`), kept in ``settings.dataset_fingerprint_bucket``
under ``fingerprint_key(<manifest sha256>)``. Keyed by the manifest hash that approvals pin and
that a workspace's datasets carry, so the airlock reads the fingerprints of exactly the listing
a workspace mounts, and a dataset whose data changed has a new key (its old index no longer
applies). Written once per manifest: a verification that finds the same listing does not
write it again.

Who reaches it: the controller writes (its credential already lists every dataset); the
airlock only reads (its credential reads no dataset bucket: docs/architecture.md, "The
airlock's credential and its reach"). An index is an ETag per object: the MD5 of the bytes
of an object uploaded in one part, so it says something about small objects (a one-value
file's MD5 can be guessed); nobody else is given the bucket.

Memory stays bounded however large the dataset: lines go to a temporary file that spills to
disk past `SPOOL_BYTES`, and are uploaded from there in one streamed PUT; the airlock reads
the index as a stream, line by line.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from provisioner.errors import ConflictError, NotFoundError, PermanentError
from provisioner.storage.s3 import manifest_line, translated_errors

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

SPOOL_BYTES = 8 << 20  # an index this large moves from memory to a temporary file
_PREFIX = "manifests/"


def fingerprint_key(manifest_sha256: str) -> str:
    """Where the index of the listing with manifest hash `manifest_sha256` is kept."""
    return f"{_PREFIX}{manifest_sha256}.jsonl"


@dataclass(frozen=True)
class Fingerprint:
    """One dataset object as listed: key relative to the dataset's prefix, size, ETag."""

    key: str
    size: int
    etag: str


class FingerprintIndex:
    """Collects the objects of one listing (`add`, fed by the manifest walk) and stores them.
    A context manager: the temporary file goes when the block ends."""

    def __init__(self) -> None:
        self._file = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115 - closed by __exit__

    def __enter__(self) -> FingerprintIndex:
        return self

    def __exit__(self, *_: object) -> None:
        self._file.close()

    def add(self, relative_key: str, size: int, etag: str) -> None:
        self._file.write(manifest_line(relative_key, size, etag).encode("utf-8") + b"\n")

    def store(self, client: S3Client, bucket: str, manifest_sha256: str) -> bool:
        """Upload the index under `fingerprint_key(manifest_sha256)` unless it is there
        already; returns whether it wrote. Raises our errors (NotFoundError: no bucket)."""
        key = fingerprint_key(manifest_sha256)
        try:
            with translated_errors(f"head s3://{bucket}/{key}"):
                client.head_object(Bucket=bucket, Key=key)
            return False
        except NotFoundError:
            pass
        self._file.seek(0)
        # Create-only: two controllers (a standby taking over) write the same bytes.
        with contextlib.suppress(ConflictError), translated_errors(f"put s3://{bucket}/{key}"):
            client.put_object(
                Bucket=bucket,
                Key=key,
                Body=self._file,  # a seekable binary file: streamed
                ContentType="application/x-ndjson",
                IfNoneMatch="*",
            )
        return True


def read_fingerprints(
    client: S3Client, bucket: str, manifest_sha256: str, sizes: Collection[int]
) -> Iterator[Fingerprint]:
    """The objects of the index of `manifest_sha256` whose size is in `sizes`, streamed.

    NotFoundError when no index was stored for that manifest (the controller has not verified
    the dataset since fingerprints were introduced, or could not store them); PermanentError
    naming the line when the index is not ours.
    """
    key = fingerprint_key(manifest_sha256)
    wanted = set(sizes)
    with translated_errors(f"get s3://{bucket}/{key}"):
        body = client.get_object(Bucket=bucket, Key=key)["Body"]
        for number, line in enumerate(body.iter_lines(), start=1):
            if not line:
                continue
            try:
                relative, size, etag = json.loads(line)
                if not (isinstance(relative, str) and isinstance(size, int)):
                    raise TypeError(line)
            except (ValueError, TypeError) as exc:
                raise PermanentError(
                    f"s3://{bucket}/{key} line {number} is not [key, size, etag]; delete the "
                    "object and the controller writes it again at the next verification"
                ) from exc
            if size in wanted:
                yield Fingerprint(key=relative, size=size, etag=str(etag))
