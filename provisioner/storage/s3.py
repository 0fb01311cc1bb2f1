"""boto3 at the edge: the client, bucket set-up, dataset manifests and conditional writes.

Errors: every botocore error leaves this module as one of ours, chained with ``from exc``:
a missing bucket or key (NoSuchBucket, NoSuchKey, 404) is a `NotFoundError`; AccessDenied,
bad keys and signatures are a `RefusedError`; a failed If-None-Match / If-Match (412) is a
`ConflictError` (someone else wrote first: re-read and retry); connection failures, timeouts,
throttling and 5xx are a `TemporaryError`; any other 4xx is a `PermanentError`.

Manifest canonical form (`compute_manifest`). The hash that an approval pins is::

    sha256( source_line + line_1 + line_2 + ... + line_n )    over UTF-8 bytes
    source_line = "source " + origin + "\\n"
    origin = "s3://<bucket>/<prefix> region=<region> endpoint=<url|aws> dataset=<uid>"
          or "nfs://<server><path> dataset=<uid>"          (`planning.datasets.manifest_origin`)
    line = json.dumps([relative_key, size, etag], ensure_ascii=False,
                      separators=(",", ":")) + "\\n"

- the source line binds the hash to *where* the data is and *which server* is read: the same
  objects under another bucket or prefix, in another region or behind another endpoint give
  another hash, so a manifest can never vouch for a place it was not computed for (the
  prefix is the model's, normalised to end with '/' unless empty; the region is the
  dataset's or the platform's, the endpoint the platform's, as the dataset PVs carry them);
- it binds the hash to the Dataset object too (its uid): a dataset deleted and registered
  again is a new object, and no approval of the old one counts for it;
- one line per object under ``s3://<bucket>/<prefix>``, found by a paginated
  ListObjectsV2 of the whole prefix (no delimiter, so nested keys count);
- ``relative_key`` is the key with the prefix removed; ``size`` is the size in bytes as an
  integer; ``etag`` is the ETag as listed, without its surrounding double quotes (for a
  multipart upload it is ``<md5 of part md5s>-<parts>``, so it identifies the stored
  object, not only its bytes: re-uploading the same bytes with another part size changes the
  hash, which errs on the side of a new approval);
- lines are sorted by the UTF-8 bytes of ``relative_key`` (S3's own listing order), so the
  hash does not depend on how the server pages, nor on servers that list in another order
  (SeaweedFS lists a "directory" ``a/`` before its sibling ``a.csv``, measured);
- each line is a JSON array, so keys containing commas, tabs, quotes or newlines cannot make
  two different listings produce the same text (and no line can pass for the source line);
- directory markers (zero-byte keys ending in ``/``, made by consoles and some tools) are left
  out: they hold no data, and creating one must not invalidate an approval;
- an empty S3 listing is an error (`NotFoundError`), never the hash of nothing.

Bounds: a listing stops past `VerificationBudget` (`planning.datasets`: the settings
TRE_DATASET_VERIFY_MAX_OBJECTS and TRE_DATASET_VERIFY_MAX_SECONDS) with BudgetExceededError.
Memory holds at most `SORT_RUN_ROWS` rows whatever the number of objects: beyond that the
rows are sorted in runs written to temporary files (an external merge sort, `SortedRows`) and
merged into the hash (`ManifestDigest`); the files hold one manifest line per object (about
100 bytes each, at most 1 KiB of key plus size and ETag) and are gone when the listing ends.

NFS datasets (known limitation): the controller cannot list an NFS export, so their manifest
is the source line alone (object count 0, bytes 0). It pins *where* the data is, not its
content: a change of files on the export is not detected; the steward answers for it.

Example: objects ``cohort/a.csv`` (3 bytes, ETag ``"900150983cd24fb0d6963f7d28e17f72"``) in
bucket ``tre-data`` under prefix ``cohort/``, region ``us-east-1`` at the AWS default endpoint,
Dataset uid ``u1`` hash the text ``source s3://tre-data/cohort/ region=us-east-1 endpoint=aws
dataset=u1\\n["a.csv",3,"900150983cd24fb0d6963f7d28e17f72"]\\n``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import heapq
import json
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Literal, cast

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
)

from provisioner.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermanentError,
    RefusedError,
    TemporaryError,
    TreError,
)
from provisioner.models.resources import Dataset, DatasetManifest
from provisioner.planning.datasets import VerificationBudget, manifest_origin, source_uri

if TYPE_CHECKING:
    from botocore.model import OperationModel
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.literals import BucketLocationConstraintType
    from mypy_boto3_s3.type_defs import PutObjectRequestTypeDef

    from provisioner.models.settings import Settings

LockMode = Literal["COMPLIANCE", "GOVERNANCE"]

_NOT_FOUND_CODES = frozenset(
    {"NoSuchBucket", "NoSuchKey", "NotFound", "404", "NoSuchVersion", "NoSuchUpload"}
)
_REFUSED_CODES = frozenset(
    {
        "AccessDenied",
        "403",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "AllAccessDisabled",
        "AccountProblem",
    }
)
_CONFLICT_CODES = frozenset(
    {"PreconditionFailed", "412", "ConditionalRequestConflict", "OperationAborted"}
)
_TEMPORARY_CODES = frozenset(
    {
        "SlowDown",
        "RequestTimeout",
        "InternalError",
        "ServiceUnavailable",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
    }
)
# What servers without object lock answer to GetObjectLockConfiguration.
_NO_OBJECT_LOCK_CODES = frozenset(
    {"ObjectLockConfigurationNotFoundError", "NotImplemented", "501", "InvalidRequest"}
)


# --- client and errors ---------------------------------------------------------------------


def s3_client(
    settings: Settings,
    *,
    connect_timeout: float = 5.0,
    read_timeout: float = 30.0,
    max_attempts: int = 4,
) -> S3Client:
    """A boto3 S3 client for the endpoint, region and credentials in `settings`.

    Without keys in `settings`, boto3's default chain (environment, instance role) applies.
    Timeouts and attempts as in `make_s3_client`.
    """
    access_key = settings.s3_access_key_id
    secret_key = settings.s3_secret_access_key
    if (access_key is None) != (secret_key is None):
        missing = "s3_secret_access_key" if secret_key is None else "s3_access_key_id"
        raise InvalidInputError(
            f"settings.{missing}: set both TRE_S3_ACCESS_KEY_ID and TRE_S3_SECRET_ACCESS_KEY, "
            "or neither to use the default AWS credential chain"
        )
    return make_s3_client(
        endpoint_url=settings.s3_endpoint_url,
        region=settings.s3_region,
        access_key=access_key.get_secret_value() if access_key else None,
        secret_key=secret_key.get_secret_value() if secret_key else None,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        max_attempts=max_attempts,
    )


def make_s3_client(
    *,
    endpoint_url: str | None,
    region: str,
    access_key: str | None,
    secret_key: str | None,
    connect_timeout: float = 5.0,
    read_timeout: float = 30.0,
    max_attempts: int = 4,
) -> S3Client:
    """A boto3 S3 client from plain values (`s3_client` is the one to use with Settings).

    Seconds for the timeouts. `max_attempts` counts the first try: botocore's "standard" retry
    mode retries throttling, 5xx and connection errors with jittered back-off, so a restarting
    S3 server costs a few seconds, not a failed reconciliation. With a custom endpoint
    (SeaweedFS, MinIO, Ceph) addressing is path-style, because virtual-host names such as
    ``bucket.127.0.0.1`` do not resolve; against AWS (no endpoint) boto3 picks the style.
    """
    config = Config(
        region_name=region,
        signature_version="s3v4",
        s3={"addressing_style": "path" if endpoint_url else "auto"},
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries={"mode": "standard", "total_max_attempts": max_attempts},
    )
    # A session of its own: boto3's shared default session is not safe to use from threads.
    session = boto3.session.Session()
    return session.client(
        "s3",
        endpoint_url=endpoint_url,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        config=config,
    )


def error_code(exc: ClientError) -> str:
    """The S3 error code of a ClientError ('NoSuchBucket', '404', ...)."""
    return str(exc.response.get("Error", {}).get("Code", ""))


def _http_status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def s3_error(exc: BotoCoreError | ClientError, what: str) -> TreError:
    """Our exception for a botocore error raised while doing `what` ("get s3://b/k").

    Only builds the exception; the caller raises it ``from exc``.
    """
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return RefusedError(
            f"S3 {what}: no usable credentials ({exc}); set TRE_S3_ACCESS_KEY_ID and "
            'TRE_S3_SECRET_ACCESS_KEY (for the local platform: eval "$(tre dev env)")'
        )
    if isinstance(exc, ConnectionError | HTTPClientError):
        return TemporaryError(f"S3 {what}: cannot reach the S3 endpoint ({exc}); retry later")
    if isinstance(exc, BotoCoreError):
        return PermanentError(f"S3 {what}: {exc}")
    code = error_code(exc)
    status = _http_status(exc)
    message = exc.response.get("Error", {}).get("Message", "") or code
    text = f"S3 {what}: {code or status} {message}".rstrip()
    if code in _NOT_FOUND_CODES or status == 404:
        return NotFoundError(text)
    if code in _REFUSED_CODES or status == 403:
        return RefusedError(f"{text}; check that the S3 credentials may do this")
    if code in _CONFLICT_CODES or status in (409, 412):
        return ConflictError(f"{text}; someone else wrote first: re-read and retry")
    if code in _TEMPORARY_CODES or status >= 500:
        return TemporaryError(f"{text}; retry later")
    return PermanentError(text)


@contextmanager
def translated_errors(what: str) -> Iterator[None]:
    """Turn botocore errors inside the block into ours (see `s3_error`)."""
    try:
        yield
    except (BotoCoreError, ClientError) as exc:
        raise s3_error(exc, what) from exc


def expect_bucket_owner(client: S3Client, bucket: str, owner: str) -> None:
    """From now on, every call `client` makes on `bucket` states `owner` as the bucket's
    expected owner (ExpectedBucketOwner, header x-amz-expected-bucket-owner), paginators and
    helpers of this module included: S3 refuses the call (403) when another account owns a
    bucket of that name. Every operation that takes the parameter gets it (CreateBucket and
    ListBuckets do not). Once per client and bucket: a second owner for the same pair is ignored."""

    def state_owner(params: dict[str, object], model: OperationModel, **_: object) -> None:
        shape = model.input_shape
        if params.get("Bucket") == bucket and shape and "ExpectedBucketOwner" in shape.members:
            params["ExpectedBucketOwner"] = owner

    client.meta.events.register(
        "before-parameter-build.s3", state_owner, unique_id=f"tre-expected-owner/{bucket}"
    )


# --- buckets -------------------------------------------------------------------------------


def bucket_exists(client: S3Client, name: str) -> bool:
    """Whether `name` exists and these credentials may use it (HeadBucket)."""
    try:
        client.head_bucket(Bucket=name)
    except ClientError as exc:
        if error_code(exc) in _NOT_FOUND_CODES or _http_status(exc) == 404:
            return False
        raise s3_error(exc, f"head bucket {name!r}") from exc
    except BotoCoreError as exc:
        raise s3_error(exc, f"head bucket {name!r}") from exc
    return True


def ensure_bucket(
    client: S3Client, name: str, *, versioning: bool, object_lock: bool = False
) -> bool:
    """Create bucket `name` if it is missing; idempotent. Returns whether object lock is on.

    versioning=True turns versioning on (it is never turned off: a bucket that once kept
    versions keeps them). object_lock=True asks for object lock: at creation when the bucket
    is new, otherwise by enabling it on the existing (versioned) bucket as AWS allows. Servers
    without object lock answer that it is not there; the return value says what the bucket
    really has, so a caller that needs WORM storage can refuse to go on.
    """
    if not bucket_exists(client, name):
        _create_bucket(client, name, object_lock=object_lock)
    if versioning or object_lock:  # object lock needs versioning
        with translated_errors(f"enable versioning on bucket {name!r}"):
            status = client.get_bucket_versioning(Bucket=name).get("Status")
            if status != "Enabled":
                client.put_bucket_versioning(
                    Bucket=name, VersioningConfiguration={"Status": "Enabled"}
                )
    enabled = object_lock_enabled(client, name)
    if object_lock and not enabled:
        try:
            client.put_object_lock_configuration(
                Bucket=name, ObjectLockConfiguration={"ObjectLockEnabled": "Enabled"}
            )
        except ClientError as exc:
            if _http_status(exc) >= 500 and error_code(exc) not in _NO_OBJECT_LOCK_CODES:
                raise s3_error(exc, f"enable object lock on bucket {name!r}") from exc
            return False  # this server (or this bucket) cannot have object lock
        except BotoCoreError as exc:
            raise s3_error(exc, f"enable object lock on bucket {name!r}") from exc
        enabled = object_lock_enabled(client, name)
    return enabled


def _create_bucket(client: S3Client, name: str, *, object_lock: bool) -> None:
    region = client.meta.region_name
    try:
        if region and region != "us-east-1":
            # Outside us-east-1, AWS wants the region repeated in the request body.
            client.create_bucket(
                Bucket=name,
                ObjectLockEnabledForBucket=object_lock,
                CreateBucketConfiguration={
                    "LocationConstraint": cast("BucketLocationConstraintType", region)
                },
            )
        else:
            client.create_bucket(Bucket=name, ObjectLockEnabledForBucket=object_lock)
    except ClientError as exc:
        code = error_code(exc)
        if code == "BucketAlreadyOwnedByYou":
            return  # created by a concurrent caller: fine, we are idempotent
        if code == "BucketAlreadyExists":
            if bucket_exists(client, name):
                return
            raise RefusedError(
                f"bucket {name!r} belongs to someone else (bucket names are global on AWS); "
                "choose another name"
            ) from exc
        raise s3_error(exc, f"create bucket {name!r}") from exc
    except BotoCoreError as exc:
        raise s3_error(exc, f"create bucket {name!r}") from exc


def object_lock_enabled(client: S3Client, name: str) -> bool:
    """Whether bucket `name` has object lock (WORM retention) enabled."""
    try:
        answer = client.get_object_lock_configuration(Bucket=name)
    except ClientError as exc:
        if error_code(exc) in _NO_OBJECT_LOCK_CODES or _http_status(exc) in (404, 501):
            return False
        raise s3_error(exc, f"get object lock configuration of bucket {name!r}") from exc
    except BotoCoreError as exc:
        raise s3_error(exc, f"get object lock configuration of bucket {name!r}") from exc
    lock = answer.get("ObjectLockConfiguration", {})
    return lock.get("ObjectLockEnabled") == "Enabled"


# --- dataset manifests ---------------------------------------------------------------------


def manifest_line(relative_key: str, size: int, etag: str) -> str:
    """One line of the canonical manifest text (see the module docstring)."""
    return json.dumps([relative_key, size, etag], ensure_ascii=False, separators=(",", ":"))


def _source_line(origin: str) -> bytes:
    return f"source {origin}\n".encode()


def manifest_sha256(origin: str, lines: Iterable[str]) -> str:
    """The manifest hash of a dataset at `origin` (`planning.datasets.manifest_origin`) with
    its object `lines`, already in canonical order."""
    digest = hashlib.sha256(_source_line(origin))
    for line in lines:
        digest.update(line.encode("utf-8") + b"\n")
    return digest.hexdigest()


class ManifestDigest:
    """The manifest hash of one dataset, taken one object at a time in canonical order.

    Holds the running hash, the count, the byte total and the last key (to check the order),
    so its memory does not grow with the objects; the hash equals `manifest_sha256` over the
    same lines, so manifests recorded before, and the approvals that pin them, stay valid. A
    key out of order, or given twice, raises PermanentError. Fed by `SortedRows` in
    `compute_manifest`; another reader of a dataset's objects in that order (the airlock's,
    per object) gets the same hash with `add`.
    """

    def __init__(self, origin: str, where: str) -> None:
        self._digest = hashlib.sha256(_source_line(origin))
        self._where = where
        self._last: bytes | None = None
        self.object_count = 0
        self.bytes = 0

    def add(self, relative_key: str, size: int, etag: str) -> None:
        encoded = relative_key.encode("utf-8")
        if self._last is not None and encoded <= self._last:
            raise PermanentError(
                f"S3 list {self._where}: {relative_key!r} came after "
                f"{self._last.decode('utf-8')!r}, out of the manifest's order (UTF-8 bytes of "
                "the keys): a key the server listed twice"
            )
        self._last = encoded
        self._digest.update(manifest_line(relative_key, size, etag).encode("utf-8") + b"\n")
        self.object_count += 1
        self.bytes += size

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


# Rows held in memory before a sorted run is written out: a few MB.
SORT_RUN_ROWS = 20_000
_Row = tuple[str, int, str]  # relative key, size, ETag


def _row_order(row: _Row) -> bytes:
    return row[0].encode("utf-8")


class SortedRows:
    """A listing's rows (relative key, size, ETag), given back in canonical order (UTF-8
    bytes of the key), whatever order they came in, holding at most `run_rows` in memory
    (default `SORT_RUN_ROWS`):
    each full run is sorted and written to a temporary file, and iterating merges the files
    and the rows still held (an external merge sort). Use it as a context manager: leaving
    it removes the files."""

    def __init__(self, run_rows: int | None = None) -> None:
        self._run_rows = run_rows or SORT_RUN_ROWS
        self._rows: list[_Row] = []
        self._runs: list[IO[str]] = []
        self._files = ExitStack()

    def __enter__(self) -> SortedRows:
        return self

    def __exit__(self, *_: object) -> None:
        self._files.close()  # unnamed temporary files: closing removes them
        self._runs.clear()

    def add(self, relative_key: str, size: int, etag: str) -> None:
        self._rows.append((relative_key, size, etag))
        if len(self._rows) >= self._run_rows:
            self._spill()

    def _spill(self) -> None:
        run = self._files.enter_context(
            tempfile.TemporaryFile("w+", encoding="utf-8", prefix="tre-manifest-")  # noqa: SIM115 - the ExitStack closes it
        )
        for row in sorted(self._rows, key=_row_order):
            run.write(manifest_line(*row) + "\n")  # JSON: a key's newline is escaped
        run.seek(0)
        self._runs.append(run)
        self._rows = []

    def __iter__(self) -> Iterator[_Row]:
        runs = [(tuple(json.loads(line)) for line in run) for run in self._runs]
        held = sorted(self._rows, key=_row_order)
        return heapq.merge(*runs, held, key=_row_order)


def compute_manifest(
    client: S3Client,
    dataset: Dataset,
    settings: Settings,
    *,
    now: dt.datetime | None = None,
    budget: VerificationBudget | None = None,
    keep_going: Callable[[], bool] = lambda: True,
    clock: Callable[[], float] = time.monotonic,
    on_object: Callable[[str, int, str], None] | None = None,
) -> DatasetManifest:
    """Count, size and hash every object of `dataset` (canonical form: module docstring);
    `settings` are the platform's (its S3 endpoint and default region are in the hash).

    An NFS source gives the manifest of its source line alone (not listed; see the module
    docstring). For S3, raises NotFoundError naming the bucket when it does not exist, and
    naming bucket and prefix when the prefix holds no objects (an empty dataset is always a
    mistake). After each page of the listing: BudgetExceededError past `budget` (default:
    the settings' `VerificationBudget`), TemporaryError when `keep_going()` says stop (the
    controller is stopping or lost its lease). `clock` (seconds) times the listing.
    `on_object(key, size, etag)` sees each object as it is listed (the key relative to the
    prefix, in the server's order): the airlock's fingerprints (`storage.fingerprints`).
    """
    full = dataset.spec.source
    origin = manifest_origin(dataset, settings)
    computed_at = now or dt.datetime.now(dt.UTC)
    if full.s3 is None:
        return DatasetManifest(
            object_count=0, bytes=0, sha256=manifest_sha256(origin, []), computed_at=computed_at
        )
    s3 = full.s3
    where = source_uri(full)
    limits = budget or VerificationBudget.of(settings)
    with SortedRows() as rows:
        count = _list_rows(
            client, s3.bucket, s3.prefix, where, rows, limits, keep_going, clock, on_object
        )
        if count == 0:
            raise NotFoundError(
                f"dataset source {where}: no objects under prefix {s3.prefix!r} in bucket "
                f"{s3.bucket!r}; upload the data first or correct source.s3.prefix"
            )
        digest = ManifestDigest(origin, where)
        for row in rows:
            digest.add(*row)
    return DatasetManifest(
        object_count=digest.object_count,
        bytes=digest.bytes,
        sha256=digest.hexdigest(),
        computed_at=computed_at,
    )


def _list_rows(
    client: S3Client,
    bucket: str,
    prefix: str,
    where: str,
    rows: SortedRows,
    limits: VerificationBudget,
    keep_going: Callable[[], bool],
    clock: Callable[[], float],
    on_object: Callable[[str, int, str], None] | None = None,
) -> int:
    """Add every object under `prefix` to `rows`, checking the budget and `keep_going` after
    each page; the number of objects."""
    count = 0
    started = clock()
    paginator = client.get_paginator("list_objects_v2")
    try:
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                key, size = obj["Key"], int(obj.get("Size", 0))
                if not key.startswith(prefix):
                    continue  # defensive: a server that ignores Prefix must not add data
                if size == 0 and key.endswith("/"):
                    continue  # directory marker
                relative, etag = key[len(prefix) :], obj.get("ETag", "").strip('"')
                rows.add(relative, size, etag)
                if on_object is not None:
                    on_object(relative, size, etag)
                count += 1
            limits.check(where, count, clock() - started)
            if not keep_going():
                raise TemporaryError(
                    f"listing {where} stopped after {count} objects: the controller is "
                    "stopping or no longer leads"
                )
    except ClientError as exc:
        if error_code(exc) == "NoSuchBucket" or _http_status(exc) == 404:
            raise NotFoundError(
                f"dataset source {where}: bucket {bucket!r} does not exist; create it "
                "or correct source.s3.bucket"
            ) from exc
        raise s3_error(exc, f"list {where}") from exc
    except BotoCoreError as exc:
        raise s3_error(exc, f"list {where}") from exc
    return count


# --- objects (what the audit log needs) ----------------------------------------------------


@dataclass(frozen=True)
class StoredObject:
    key: str
    body: bytes
    etag: str
    version_id: str | None


@dataclass(frozen=True)
class ObjectVersion:
    """One entry of a versioned listing: a stored version or a delete marker."""

    key: str
    version_id: str
    is_latest: bool
    is_delete_marker: bool
    last_modified: dt.datetime | None


def put_object(
    client: S3Client,
    bucket: str,
    key: str,
    body: bytes,
    *,
    content_type: str = "application/octet-stream",
    if_none_match: bool = False,
    if_match: str | None = None,
    retain_until: dt.datetime | None = None,
    lock_mode: LockMode = "COMPLIANCE",
) -> str:
    """Write an object; returns its ETag (without quotes).

    if_none_match=True makes it create-only (``If-None-Match: *``) and if_match=ETAG makes it
    compare-and-swap; either raises ConflictError when the condition fails. retain_until puts
    object lock retention of `lock_mode` on this version (the bucket needs object lock).
    """
    request: PutObjectRequestTypeDef = {
        "Bucket": bucket,
        "Key": key,
        "Body": body,
        "ContentType": content_type,
    }
    if if_none_match:
        request["IfNoneMatch"] = "*"
    if if_match is not None:
        request["IfMatch"] = f'"{if_match}"'
    if retain_until is not None:
        request["ObjectLockMode"] = lock_mode
        request["ObjectLockRetainUntilDate"] = retain_until
    try:
        answer = client.put_object(**request)
    except ClientError as exc:
        if error_code(exc) in _CONFLICT_CODES or _http_status(exc) in (409, 412):
            condition = "already exists" if if_none_match else "changed since it was read"
            raise ConflictError(f"s3://{bucket}/{key} {condition}; re-read and retry") from exc
        raise s3_error(exc, f"put s3://{bucket}/{key}") from exc
    except BotoCoreError as exc:
        raise s3_error(exc, f"put s3://{bucket}/{key}") from exc
    return answer.get("ETag", "").strip('"')


def get_object(client: S3Client, bucket: str, key: str) -> StoredObject:
    """The current version of s3://bucket/key; NotFoundError when there is none."""
    with translated_errors(f"get s3://{bucket}/{key}"):
        answer = client.get_object(Bucket=bucket, Key=key)
        body = answer["Body"].read()
    return StoredObject(
        key=key,
        body=body,
        etag=answer.get("ETag", "").strip('"'),
        version_id=answer.get("VersionId"),
    )


def list_keys(client: S3Client, bucket: str, prefix: str, *, start_after: str = "") -> list[str]:
    """Every key under `prefix` after `start_after`, in S3 order (UTF-8 byte order)."""
    keys: list[str] = []
    paginator = client.get_paginator("list_objects_v2")
    with translated_errors(f"list s3://{bucket}/{prefix}"):
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix, StartAfter=start_after):
            keys.extend(obj["Key"] for obj in page.get("Contents", []))
    return keys


def list_versions(client: S3Client, bucket: str, prefix: str) -> list[ObjectVersion]:
    """Every version and delete marker under `prefix` (one "null" version when unversioned)."""
    found: list[ObjectVersion] = []
    paginator = client.get_paginator("list_object_versions")
    with translated_errors(f"list versions of s3://{bucket}/{prefix}"):
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            versions = page.get("Versions", [])
            markers = page.get("DeleteMarkers", [])
            for entries, is_delete_marker in ((versions, False), (markers, True)):
                for entry in entries:
                    found.append(
                        ObjectVersion(
                            key=entry["Key"],
                            version_id=entry.get("VersionId", "null"),
                            is_latest=entry.get("IsLatest", False),
                            is_delete_marker=is_delete_marker,
                            last_modified=entry.get("LastModified"),
                        )
                    )
    return found
