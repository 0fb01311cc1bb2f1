"""Submit: stream a confined file into the quarantine bucket; inspect what arrived there.

`quarantine_file` never holds a file whole: it reads parts of `PART_BYTES` from the open
descriptor (`paths.ConfinedFile`), hashes each part as it goes and uploads it as one part of
a multipart upload, so memory stays at a few parts whatever the size. The object becomes
visible only when the upload completes, and it completes only when size and sha256 equal
what the ExportRequest declares (what the reviewers will vote on); any failure before that
aborts the upload, so no parts are left behind. Completion is create-only
(``If-None-Match: *``): a key that already holds an object is never overwritten. A
resubmission of the same bytes (a retry after a crash) returns the object already there.

`inspect_quarantined` runs the automated checks (`checks.inspect_file`) on the bytes as they
are stored, streamed back from the bucket: the checks judge what was received, not what the
notebook claims.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from provisioner.airlock.checks import (
    CHUNK_BYTES,
    HEAD_BYTES,
    CheckRules,
    DatasetComparison,
    FileReport,
    inspect_file,
    type_refusal,
)
from provisioner.airlock.keys import ExportRef, normalise_export_path, refuse_collisions
from provisioner.airlock.paths import open_confined
from provisioner.errors import InvalidInputError, NotFoundError, RefusedError
from provisioner.models.resources import ExportFile, ExportRequest
from provisioner.storage.s3 import error_code, s3_error, translated_errors

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

    from provisioner.models.settings import Settings

PART_BYTES = 8 << 20  # S3 wants parts of at least 5 MiB (but the last); 8 MiB as boto3 uses
META_SHA256 = "sha256"  # x-amz-meta-sha256: the declared hash the upload was checked against


class FileSource(Protocol):
    """Bytes offered for one declared file: a file opened in project storage
    (`paths.ConfinedFile`) or an upload streamed to the airlock service."""

    @property
    def path(self) -> str: ...

    @property
    def size(self) -> int: ...

    def read_parts(self, part_bytes: int) -> Iterator[bytes]: ...


@dataclass(frozen=True)
class QuarantinedFile:
    path: str
    key: str
    size: int
    sha256: str


def quarantine_file(
    client: S3Client,
    bucket: str,
    ref: ExportRef,
    declared: ExportFile,
    source: FileSource,
    *,
    allowed_types: Iterable[str],
    part_bytes: int = PART_BYTES,
) -> QuarantinedFile:
    """Upload `source` as `declared` of export `ref` into quarantine (module docstring).

    Raises InvalidInputError when the file is not what the request declares (size, sha256,
    type by extension or first bytes), RefusedError when another file already holds its key,
    and S3 errors as ours (TemporaryError when S3 is unreachable: retry).
    """
    path = normalise_export_path(declared.path)
    if path != source.path:
        raise InvalidInputError(
            f"file {declared.path!r}: the open file is {source.path!r}; open the declared path"
        )
    if source.size != declared.size:
        raise InvalidInputError(
            f"file {path!r}: is {source.size} bytes but the export request declares "
            f"{declared.size}; the file changed after it was declared: submit it again"
        )
    key = ref.file_key(path)
    existing = _existing(client, bucket, key)
    if existing is not None:
        return _same_or_refuse(existing, bucket, key, declared)
    parts = source.read_parts(part_bytes)
    first = next(parts)
    refusal = type_refusal(path, first[:HEAD_BYTES], allowed_types)
    if refusal:
        raise InvalidInputError(refusal)
    where = f"s3://{bucket}/{key}"
    with translated_errors(f"start upload to {where}"):
        upload_id = client.create_multipart_upload(
            Bucket=bucket, Key=key, Metadata={META_SHA256: declared.sha256}
        )["UploadId"]
    try:
        digest, size, completed = _upload_parts(client, bucket, key, upload_id, first, parts)
        if (size, digest) != (declared.size, declared.sha256):
            raise InvalidInputError(
                f"file {path!r}: read {size} bytes with sha256 {digest}, but the export "
                f"request declares {declared.size} bytes with sha256 {declared.sha256}; the "
                "file changed after it was declared: submit it again"
            )
        client.complete_multipart_upload(
            Bucket=bucket,
            Key=key,
            UploadId=upload_id,
            MultipartUpload={"Parts": completed},
            IfNoneMatch="*",
        )
    except BaseException as exc:
        _abort(client, bucket, key, upload_id)
        if isinstance(exc, ClientError) and error_code(exc) in ("PreconditionFailed", "412"):
            # Someone completed the same key since our check: judge what is there now.
            return _same_or_refuse(_existing(client, bucket, key), bucket, key, declared)
        if isinstance(exc, BotoCoreError | ClientError):
            raise s3_error(exc, f"upload to {where}") from exc
        raise
    return QuarantinedFile(path=path, key=key, size=size, sha256=digest)


def _upload_parts(
    client: S3Client,
    bucket: str,
    key: str,
    upload_id: str,
    first: bytes,
    rest: Iterator[bytes],
) -> tuple[str, int, list[CompletedPartTypeDef]]:
    digest = hashlib.sha256()
    size = 0
    completed: list[CompletedPartTypeDef] = []

    def all_parts() -> Iterator[bytes]:
        yield first
        yield from rest

    for number, part in enumerate(all_parts(), start=1):
        digest.update(part)
        size += len(part)
        answer = client.upload_part(
            Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=part
        )
        completed.append({"PartNumber": number, "ETag": answer["ETag"]})
    return digest.hexdigest(), size, completed


def _abort(client: S3Client, bucket: str, key: str, upload_id: str) -> None:
    """Abort an upload so its parts are freed. A failed abort is not raised over the error
    that caused it (S3 down: the upload is left for a bucket lifecycle rule that aborts
    incomplete uploads, which operators should set)."""
    with contextlib.suppress(BotoCoreError, ClientError):
        client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)


@dataclass(frozen=True)
class _Stored:
    size: int
    sha256: str | None


def _existing(client: S3Client, bucket: str, key: str) -> _Stored | None:
    try:
        head = client.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if error_code(exc) in ("404", "NoSuchKey", "NotFound"):
            return None
        raise s3_error(exc, f"head s3://{bucket}/{key}") from exc
    except BotoCoreError as exc:
        raise s3_error(exc, f"head s3://{bucket}/{key}") from exc
    return _Stored(size=head["ContentLength"], sha256=head.get("Metadata", {}).get(META_SHA256))


def _same_or_refuse(
    stored: _Stored | None, bucket: str, key: str, declared: ExportFile
) -> QuarantinedFile:
    if stored is None:
        raise NotFoundError(f"s3://{bucket}/{key} vanished during upload; submit it again")
    if (stored.size, stored.sha256) != (declared.size, declared.sha256):
        raise RefusedError(
            f"file {declared.path!r}: this export request already holds another file under "
            f"the same name ({stored.size} bytes, sha256 {stored.sha256}); a request's files "
            "never change: file a new export request"
        )
    return QuarantinedFile(
        path=normalise_export_path(declared.path), key=key, size=stored.size, sha256=declared.sha256
    )


def object_chunks(
    client: S3Client, bucket: str, key: str, chunk_bytes: int = CHUNK_BYTES
) -> Iterator[bytes]:
    """The bytes of s3://bucket/key, streamed in chunks (errors translated to ours)."""
    where = f"get s3://{bucket}/{key}"
    with translated_errors(where):
        body = client.get_object(Bucket=bucket, Key=key)["Body"]
    try:
        with translated_errors(where):
            yield from body.iter_chunks(chunk_bytes)
    finally:
        body.close()


def inspect_quarantined(
    client: S3Client,
    bucket: str,
    ref: ExportRef,
    declared: ExportFile,
    *,
    rules: CheckRules,
    comparison: DatasetComparison,
) -> FileReport:
    """The automated checks over the quarantined bytes of `declared` (one streaming read)."""
    path = normalise_export_path(declared.path)
    return inspect_file(
        path,
        object_chunks(client, bucket, ref.file_key(path)),
        declared_size=declared.size,
        declared_sha256=declared.sha256,
        rules=rules,
        comparison=comparison,
    )


def quarantine_request(
    client: S3Client, settings: Settings, request: ExportRequest, root: Path
) -> list[QuarantinedFile]:
    """Upload every file of `request` from project storage `root` into quarantine.

    Two paths naming one file are refused before anything is read. Each file is uploaded as
    `quarantine_file` does; a rerun after a failure skips the files already stored.
    """
    ref = ExportRef.of(request)
    refuse_collisions(f.path for f in request.spec.files)
    stored = []
    for file in request.spec.files:
        with open_confined(root, file.path, max_bytes=settings.airlock_max_file_bytes) as source:
            stored.append(
                quarantine_file(
                    client,
                    settings.airlock_quarantine_bucket,
                    ref,
                    file,
                    source,
                    allowed_types=settings.airlock_allowed_types,
                )
            )
    return stored
