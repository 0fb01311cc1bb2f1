"""Release, download and revoke: approved files out of quarantine, exactly once.

Release is a sequence of idempotent steps with one commit marker, the manifest, written last:

1. `plan_release` (pure): the request must be Approved (or already Released); its *output*
   files are released, supporting files never are;
2. `copy_and_verify` per file: a server-side copy quarantine -> egress under the same key,
   then the egress copy is read back and hashed; it must equal the sha256 the request
   declares, which is what the submission checked and the reviewers voted on. A copy that is
   already there and verifies is left alone (no second copy); one that does not verify is
   replaced;
3. `write_manifest`: ``release.json`` beside the files, create-only (``If-None-Match: *``).

A release interrupted anywhere (the service killed, S3 gone) leaves no manifest, so it is
not released; running `release_export` again skips the verified copies and writes the
manifest once. Two releases racing both verify and only one manifest is created; the other
returns it. While S3 is unreachable every step raises `TemporaryError` (retry) before any
manifest exists. The service marks the ExportRequest Released only after the manifest
exists, so a Released request always has one.

Download is a presigned GET of one released file, valid for
`settings.airlock_link_expiry_seconds`, issued only while the manifest exists and no
revocation does. Revoke writes ``revocation.json`` (who, when, why, which files) first,
create-only, and then deletes every version of every egress copy; a revoke interrupted
midway is completed by running it again. The links already issued stop working with the
deletion. Quarantine is kept as the record of what was reviewed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from provisioner.airlock.checks import FileReport
from provisioner.airlock.keys import ExportRef, normalise_export_path
from provisioner.airlock.quarantine import object_chunks
from provisioner.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermanentError,
    RefusedError,
)
from provisioner.models.resources import ExportFileKind, ExportPhase, ExportRequest, Workspace
from provisioner.storage.s3 import (
    ensure_bucket,
    get_object,
    list_versions,
    put_object,
    translated_errors,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from provisioner.models.settings import Settings

RELEASE_FORMAT = "tre.ucloud.org/release/v1"
REVOCATION_FORMAT = "tre.ucloud.org/revocation/v1"


@dataclass(frozen=True)
class ReleaseFile:
    path: str
    key: str
    size: int
    sha256: str
    description: str


@dataclass(frozen=True)
class ReleasePlan:
    ref: ExportRef
    files: tuple[ReleaseFile, ...]


def plan_release(request: ExportRequest) -> ReleasePlan:
    """The output files of an Approved (or Released) request; PermanentError otherwise."""
    phase = request.status.phase
    if phase not in (ExportPhase.APPROVED, ExportPhase.RELEASED):
        raise RefusedError(
            f"export request {request.namespace}/{request.name}: is {phase.value}; only an "
            "Approved request is released (two independent output checkers approve first)"
        )
    ref = ExportRef.of(request)
    files = tuple(
        ReleaseFile(
            path=normalise_export_path(f.path),
            key=ref.file_key(f.path),
            size=f.size,
            sha256=f.sha256,
            description=f.description,
        )
        for f in request.spec.files
        if f.kind is ExportFileKind.OUTPUT
    )
    if not files:
        raise InvalidInputError(
            f"export request {request.namespace}/{request.name}: has no output files, only "
            "supporting ones, which are never released"
        )
    return ReleasePlan(ref=ref, files=files)


def stored_sha256(client: S3Client, bucket: str, key: str) -> tuple[int, str]:
    """Size and sha256 of the bytes stored at s3://bucket/key, read back in full."""
    digest = hashlib.sha256()
    size = 0
    for chunk in object_chunks(client, bucket, key):
        digest.update(chunk)
        size += len(chunk)
    return size, digest.hexdigest()


def copy_and_verify(
    client: S3Client, quarantine_bucket: str, egress_bucket: str, file: ReleaseFile
) -> bool:
    """Make the egress copy of `file` and prove its bytes; True when a copy was made, False
    when a verified copy was already there (module docstring, step 2)."""
    where = f"s3://{egress_bucket}/{file.key}"
    try:
        if stored_sha256(client, egress_bucket, file.key) == (file.size, file.sha256):
            return False
    except NotFoundError:
        pass
    with translated_errors(f"copy s3://{quarantine_bucket}/{file.key} to {where}"):
        client.copy_object(
            Bucket=egress_bucket,
            Key=file.key,
            CopySource={"Bucket": quarantine_bucket, "Key": file.key},
            MetadataDirective="COPY",
        )
    size, sha256 = stored_sha256(client, egress_bucket, file.key)
    if (size, sha256) != (file.size, file.sha256):
        with translated_errors(f"delete unverified copy {where}"):
            client.delete_object(Bucket=egress_bucket, Key=file.key)
        raise PermanentError(
            f"file {file.path!r}: the egress copy ({size} bytes, sha256 {sha256}) is not what "
            f"was reviewed ({file.size} bytes, sha256 {file.sha256}); the copy was removed. "
            f"The quarantined object s3://{quarantine_bucket}/{file.key} was changed or "
            "damaged: do not release; investigate the bucket's access log"
        )
    return True


def release_manifest(
    request: ExportRequest,
    workspace: Workspace,
    plan: ReleasePlan,
    reports: Mapping[str, FileReport],
    *,
    released_by: str,
    now: dt.datetime,
) -> dict[str, Any]:
    """The release manifest (pure): what left, why it was allowed, and what was checked.

    Every released file needs its automated check report (the reviewers saw them), or
    InvalidInputError: a release never records checks that did not run.
    """
    missing = [f.path for f in plan.files if f.path not in reports]
    if missing:
        raise InvalidInputError(
            f"export request {request.name}: no check report for {', '.join(missing)}; run "
            "the automated checks on the quarantined files before release"
        )
    counted = set(request.status.reviewers)
    return {
        "format": RELEASE_FORMAT,
        "exportRequest": {
            "namespace": request.namespace,
            "name": request.name,
            "uid": request.uid,
            "project": request.spec.project,
            "author": request.spec.author,
            "context": request.spec.context,
        },
        "accessRequests": list(workspace.spec.requests),
        "datasets": [
            {
                "name": d.name,
                "manifestSha256": d.manifest_sha256,
                "classification": d.classification.value,
            }
            for d in workspace.spec.datasets
        ],
        "files": [
            {
                "path": f.path,
                "key": f.key,
                "size": f.size,
                "sha256": f.sha256,
                "description": f.description,
            }
            for f in plan.files
        ],
        "supportingFiles": sorted(
            normalise_export_path(f.path)
            for f in request.spec.files
            if f.kind is ExportFileKind.SUPPORTING
        ),
        "reviewers": [
            {
                "by": r.by,
                "at": r.at.isoformat(),
                "votes": [v.to_wire() for v in r.votes],
            }
            for r in request.spec.reviews
            if r.by in counted
        ],
        "checks": [reports[f.path].to_dict() for f in plan.files],
        "releasedBy": released_by,
        "releasedAt": now.isoformat(),
    }


def _read_json(client: S3Client, bucket: str, key: str) -> dict[str, Any] | None:
    try:
        stored = get_object(client, bucket, key)
    except NotFoundError:
        return None
    loaded: dict[str, Any] = json.loads(stored.body)
    return loaded


def read_manifest(client: S3Client, bucket: str, ref: ExportRef) -> dict[str, Any] | None:
    return _read_json(client, bucket, ref.manifest_key)


def read_revocation(client: S3Client, bucket: str, ref: ExportRef) -> dict[str, Any] | None:
    return _read_json(client, bucket, ref.revocation_key)


def _document_bytes(document: Mapping[str, Any]) -> bytes:
    """How a manifest or revocation record is stored: stable, so a document read back
    serialises to the same bytes."""
    return json.dumps(document, indent=2, sort_keys=True).encode()


def manifest_sha256(manifest: Mapping[str, Any]) -> str:
    """The sha256 of the manifest's stored bytes (`sha256sum release.json` gives the same);
    the ExportRequest's release record carries it."""
    return hashlib.sha256(_document_bytes(manifest)).hexdigest()


def _create_json(client: S3Client, bucket: str, key: str, document: dict[str, Any]) -> bool:
    """Create `key` with `document` unless it exists; whether this call created it."""
    body = _document_bytes(document)
    try:
        put_object(client, bucket, key, body, content_type="application/json", if_none_match=True)
    except ConflictError:
        return False
    return True


def write_manifest(
    client: S3Client, bucket: str, ref: ExportRef, manifest: dict[str, Any]
) -> dict[str, Any]:
    """Write the commit marker once; the manifest that is stored (ours or a racing one's)."""
    if _create_json(client, bucket, ref.manifest_key, manifest):
        return manifest
    stored = read_manifest(client, bucket, ref)
    if stored is None:  # created and deleted again between our two calls
        raise ConflictError(f"s3://{bucket}/{ref.manifest_key} changed meanwhile; retry")
    return stored


def release_export(
    client: S3Client,
    settings: Settings,
    request: ExportRequest,
    workspace: Workspace,
    reports: Mapping[str, FileReport],
    *,
    released_by: str,
    now: dt.datetime,
) -> dict[str, Any]:
    """Release `request` exactly once (module docstring); the stored manifest."""
    plan = plan_release(request)
    egress = settings.airlock_egress_bucket
    if read_revocation(client, egress, plan.ref) is not None:
        raise RefusedError(
            f"export request {request.name}: its release was revoked; file a new request"
        )
    existing = read_manifest(client, egress, plan.ref)
    if existing is not None:
        return existing
    manifest = release_manifest(request, workspace, plan, reports, released_by=released_by, now=now)
    for file in plan.files:
        copy_and_verify(client, settings.airlock_quarantine_bucket, egress, file)
    return write_manifest(client, egress, plan.ref, manifest)


def download_link(client: S3Client, settings: Settings, ref: ExportRef, path: str) -> str:
    """A presigned GET of released file `path`, valid for `airlock_link_expiry_seconds`."""
    egress = settings.airlock_egress_bucket
    normal = normalise_export_path(path)
    manifest = read_manifest(client, egress, ref)
    if manifest is None:
        raise NotFoundError(f"export request {ref.name}: nothing released yet")
    if read_revocation(client, egress, ref) is not None:
        raise RefusedError(f"export request {ref.name}: its release was revoked")
    released = {f["path"]: f for f in manifest["files"]}
    if normal not in released:
        raise NotFoundError(
            f"file {normal!r} was not released by export request {ref.name}; released: "
            f"{', '.join(sorted(released))}"
        )
    filename = normal.rsplit("/", 1)[-1].replace('"', "").replace("\\", "")
    with translated_errors(f"presign s3://{egress}/{released[normal]['key']}"):
        return client.generate_presigned_url(
            "get_object",
            Params={
                "Bucket": egress,
                "Key": released[normal]["key"],
                "ResponseContentDisposition": f'attachment; filename="{filename}"',
            },
            ExpiresIn=settings.airlock_link_expiry_seconds,
        )


def revoke_release(
    client: S3Client,
    settings: Settings,
    ref: ExportRef,
    *,
    reason: str,
    revoked_by: str,
    now: dt.datetime,
) -> dict[str, Any]:
    """Record why, then delete every egress copy of a release; the stored record.

    Idempotent: a second call keeps the first record and deletes whatever is left.
    """
    if len(reason.strip()) < 10:
        raise InvalidInputError(
            "reason: say why the release is revoked (at least 10 characters); it is kept in "
            "the revocation record"
        )
    egress = settings.airlock_egress_bucket
    manifest = read_manifest(client, egress, ref)
    if manifest is None:
        raise NotFoundError(f"export request {ref.name}: nothing released, nothing to revoke")
    record = {
        "format": REVOCATION_FORMAT,
        "exportRequest": manifest["exportRequest"],
        "reason": reason.strip(),
        "revokedBy": revoked_by,
        "revokedAt": now.isoformat(),
        "files": [f["key"] for f in manifest["files"]],
    }
    if not _create_json(client, egress, ref.revocation_key, record):
        record = read_revocation(client, egress, ref) or record
    for version in list_versions(client, egress, ref.files_prefix):
        with translated_errors(f"delete s3://{egress}/{version.key}"):
            client.delete_object(Bucket=egress, Key=version.key, VersionId=version.version_id)
    return record


def ensure_airlock_buckets(client: S3Client, settings: Settings) -> None:
    """Create the quarantine and egress buckets, and the datasets' fingerprint bucket the
    airlock reads for its raw-copy check, if missing (idempotent). Egress is versioned, so
    every copy ever made is listed, and revoke deletes each version."""
    ensure_bucket(client, settings.airlock_quarantine_bucket, versioning=False)
    ensure_bucket(client, settings.airlock_egress_bucket, versioning=True)
    ensure_bucket(client, settings.dataset_fingerprint_bucket, versioning=False)
