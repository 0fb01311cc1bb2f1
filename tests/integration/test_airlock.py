"""The airlock's data path against the real S3 server (SeaweedFS on 127.0.0.1).

Behaviours under test:
- declare: path normalised, size and sha256 read through the confined open; two spellings of
  one file in one request are refused before anything is uploaded;
- submit: a file larger than one part streams into quarantine as a multipart upload; the
  stored bytes, their sha256 and the declared hash in the object's metadata agree; a second
  submission of the same bytes returns the stored object, another file under the same name
  is refused; no upload is left behind;
- a failed submission leaves nothing: bytes other than declared (after every part was
  sent), a file that grows while it is read (after the first part), a disallowed type (before
  any byte is sent): no object and no pending multipart upload;
- the checks run on the quarantined bytes as stored, and a file that is a byte-identical
  copy of a dataset object in the workspace is flagged (same size, then the ETag the controller
  recorded in its fingerprint index: the airlock reads no dataset);
- release exactly once: interrupted after the first copy, or after every copy but before
  the manifest, a rerun completes with one version of each egress copy and one manifest; a
  rerun after completion changes nothing; two releases racing write one manifest; a
  quarantined object changed after review is never released; supporting files never leave;
- release while S3 is unreachable fails with TemporaryError and leaves no manifest;
- download: the presigned link serves the released bytes, and stops working after
  `airlock_link_expiry_seconds`;
- revoke: a record with the reason is written beside the manifest, every version of every
  egress copy is deleted (links already issued stop working), new links and a new release
  are refused, and a second revoke is harmless.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import socket
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from provisioner.airlock.checks import CheckRules, DatasetComparison, FileReport, Outcome
from provisioner.airlock.client import declare_file
from provisioner.airlock.datasets import compare_datasets
from provisioner.airlock.keys import ExportRef
from provisioner.airlock.paths import ConfinedFile, open_confined
from provisioner.airlock.quarantine import (
    META_SHA256,
    inspect_quarantined,
    quarantine_file,
    quarantine_request,
)
from provisioner.airlock.release import (
    copy_and_verify,
    download_link,
    ensure_airlock_buckets,
    plan_release,
    read_manifest,
    read_revocation,
    release_export,
    revoke_release,
)
from provisioner.errors import (
    InvalidInputError,
    NotFoundError,
    PermanentError,
    RefusedError,
    TemporaryError,
)
from provisioner.models.resources import (
    ExportFile,
    ExportFileKind,
    ExportPhase,
    ExportRequest,
    ExportRequestSpec,
    ExportRequestStatus,
    Workspace,
    WorkspaceDataset,
    WorkspaceSpec,
)
from provisioner.models.settings import Settings
from provisioner.storage.fingerprints import FingerprintIndex
from provisioner.storage.s3 import list_versions, make_s3_client

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

pytestmark = pytest.mark.integration
NOW = dt.datetime(2026, 11, 30, 12, tzinfo=dt.UTC)
MiB = 1 << 20
ALLOWED = ("csv", "txt", "png")


@pytest.fixture(scope="module")
def airlock(s3_settings: Settings, s3: S3Client) -> Settings:
    """Settings with a quarantine and an egress bucket of this module's own."""
    suffix = uuid.uuid4().hex[:10]
    settings = s3_settings.model_copy(
        update={
            "airlock_quarantine_bucket": f"q-{suffix}",
            "airlock_egress_bucket": f"e-{suffix}",
            "dataset_fingerprint_bucket": f"f-{suffix}",
            "airlock_link_expiry_seconds": 3,
        }
    )
    ensure_airlock_buckets(s3, settings)
    return settings


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    (root / "out").mkdir(parents=True)
    return root


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def declared(path: str, data: bytes, kind: ExportFileKind = ExportFileKind.OUTPUT) -> ExportFile:
    return ExportFile(
        path=path, size=len(data), sha256=sha256(data), kind=kind, description="a result"
    )


def approved(*files: ExportFile) -> ExportRequest:
    return ExportRequest(
        name=f"x-{uuid.uuid4().hex[:8]}",
        namespace="tre-cardio",
        uid=str(uuid.uuid4()),
        spec=ExportRequestSpec(
            project="cardio",
            author="lea",
            files=list(files),
            context="Counts of admissions by region, all adults, 2020-2024.",
        ),
        status=ExportRequestStatus(phase=ExportPhase.APPROVED, reviewers=["omar", "una"]),
    )


WORKSPACE = Workspace(
    name="cardio",
    spec=WorkspaceSpec(
        project="cardio", namespace="tre-cardio", owner="lea", requests=["cardio-2026"]
    ),
)


def submit(
    s3: S3Client, settings: Settings, root: Path, request: ExportRequest, contents: dict[str, bytes]
) -> None:
    """Write each file into project storage and quarantine them, as `tre export submit` will."""
    for path, data in contents.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)
    quarantine_request(s3, settings, request, root)


def reports_of(s3: S3Client, settings: Settings, request: ExportRequest) -> dict[str, FileReport]:
    rules = CheckRules.from_settings(settings)
    return {
        f.path: inspect_quarantined(
            s3,
            settings.airlock_quarantine_bucket,
            ExportRef.of(request),
            f,
            rules=rules,
            comparison=DatasetComparison(),
        )
        for f in request.spec.files
    }


def pending_uploads(s3: S3Client, bucket: str, prefix: str) -> list[str]:
    answer = s3.list_multipart_uploads(Bucket=bucket, Prefix=prefix)
    return [u["Key"] for u in answer.get("Uploads", [])]


def versions(s3: S3Client, bucket: str, prefix: str) -> dict[str, int]:
    counted: dict[str, int] = {}
    for version in list_versions(s3, bucket, prefix):
        if not version.is_delete_marker:
            counted[version.key] = counted.get(version.key, 0) + 1
    return counted


def table(size: int) -> bytes:
    """A CSV of `size` bytes with counts of at least 10."""
    row = b"region-0001,12345\n"
    body = b"region,n\n" + row * (size // len(row))
    return body + b"x" * (size - len(body) - 1) + b"\n" if len(body) < size else body[:size]


# --- submit -----------------------------------------------------------------------------------


def test_a_file_larger_than_one_part_streams_into_quarantine(
    s3: S3Client, airlock: Settings, project: Path
) -> None:
    data = table(20 * MiB + 123)  # three parts of 8 MiB
    file = declared("out/big.csv", data)
    request = approved(file)
    ref = ExportRef.of(request)
    bucket = airlock.airlock_quarantine_bucket
    submit(s3, airlock, project, request, {"out/big.csv": data})

    key = ref.file_key("out/big.csv")
    stored = s3.get_object(Bucket=bucket, Key=key)
    assert sha256(stored["Body"].read()) == file.sha256
    assert stored["Metadata"][META_SHA256] == file.sha256
    assert stored["ETag"].strip('"').endswith("-3")  # really a multipart upload
    assert pending_uploads(s3, bucket, ref.prefix) == []

    # the same bytes again (a retry after a crash): the stored object is the answer
    with open_confined(project, "out/big.csv", max_bytes=airlock.airlock_max_file_bytes) as src:
        again = quarantine_file(s3, bucket, ref, file, src, allowed_types=ALLOWED)
    assert (again.key, again.sha256) == (key, file.sha256)
    # another file under the same name of the same request: refused, the stored one stays
    other = b"region,n\nnorth,99\n"
    (project / "out" / "big.csv").write_bytes(other)
    with (
        open_confined(project, "out/big.csv", max_bytes=airlock.airlock_max_file_bytes) as src,
        pytest.raises(RefusedError) as refused,
    ):
        quarantine_file(s3, bucket, ref, declared("out/big.csv", other), src, allowed_types=ALLOWED)
    assert "already holds another file under the same name" in str(refused.value)
    assert sha256(s3.get_object(Bucket=bucket, Key=key)["Body"].read()) == file.sha256


def test_a_request_is_declared_from_project_storage_and_collisions_are_refused(
    s3: S3Client, airlock: Settings, project: Path
) -> None:
    data = b"region,n\nnorth,12\n"
    (project / "out" / "a.csv").write_bytes(data)
    file = declare_file(
        project, "./out//a.csv", description="counts", max_bytes=airlock.airlock_max_file_bytes
    )
    assert (file.path, file.size, file.sha256) == ("out/a.csv", len(data), sha256(data))
    twice = approved(file, file.model_copy(update={"path": "out//a.csv"}))
    with pytest.raises(InvalidInputError, match=r"names the same file as 'out/a\.csv'"):
        quarantine_request(s3, airlock, twice, project)
    prefix = ExportRef.of(twice).prefix
    assert (
        s3.list_objects_v2(Bucket=airlock.airlock_quarantine_bucket, Prefix=prefix).get(
            "KeyCount", 0
        )
        == 0
    )


def test_a_failed_submission_leaves_no_object_and_no_parts(
    s3: S3Client, airlock: Settings, project: Path
) -> None:
    bucket = airlock.airlock_quarantine_bucket
    data = table(9 * MiB)  # two parts
    (project / "out" / "t.csv").write_bytes(data)
    request = approved(declared("out/t.csv", data))
    ref = ExportRef.of(request)

    # 1. the bytes are not what the request declares: found after every part was sent
    wrong = ExportFile(path="out/t.csv", size=len(data), sha256="0" * 64, description="x")
    with (
        open_confined(project, "out/t.csv", max_bytes=airlock.airlock_max_file_bytes) as src,
        pytest.raises(InvalidInputError) as refused,
    ):
        quarantine_file(s3, bucket, ref, wrong, src, allowed_types=ALLOWED)
    assert "the file changed after it was declared: submit it again" in str(refused.value)

    # 2. the file grows while it is read: found after the first part
    fd = os.open(project / "out" / "t.csv", os.O_RDONLY)
    try:
        shorter = ConfinedFile(path="out/t.csv", fd=fd, size=8 * MiB + 1)  # as if it grew
        grown = ExportFile(path="out/t.csv", size=8 * MiB + 1, sha256="1" * 64, description="x")
        with pytest.raises(InvalidInputError, match="grew while it was read"):
            quarantine_file(s3, bucket, ref, grown, shorter, allowed_types=ALLOWED)
    finally:
        os.close(fd)

    # 3. a zip archive named .csv: refused before any byte is sent
    (project / "out" / "z.csv").write_bytes(b"PK\x03\x04" + b"\x00" * 100)
    zipped = declared("out/z.csv", b"PK\x03\x04" + b"\x00" * 100)
    with (
        open_confined(project, "out/z.csv", max_bytes=airlock.airlock_max_file_bytes) as src,
        pytest.raises(InvalidInputError, match=r"named \.csv but its content is a zip archive"),
    ):
        quarantine_file(s3, bucket, ref, zipped, src, allowed_types=ALLOWED)

    assert pending_uploads(s3, bucket, ref.prefix) == []
    assert s3.list_objects_v2(Bucket=bucket, Prefix=ref.prefix).get("KeyCount", 0) == 0


def test_checks_run_on_the_stored_bytes_and_find_a_raw_copy_of_the_data(
    s3: S3Client, airlock: Settings, project: Path, bucket: str
) -> None:
    rows = b"id,age,diagnosis\n1,54,I21\n2,61,I50\n"
    s3.put_object(Bucket=bucket, Key="cohort/people.csv", Body=rows)
    s3.put_object(Bucket=bucket, Key="cohort/other.csv", Body=b"y" * len(rows))
    s3.put_object(Bucket=bucket, Key="cohort/large.csv", Body=b"z" * 1000)
    cohort = WorkspaceDataset.model_validate(
        {
            "name": "cohort",
            "manifestSha256": "c" * 64,
            "classification": "sensitive",
            "source": {"s3": {"bucket": bucket, "prefix": "cohort/"}},
        }
    )
    registry = WorkspaceDataset.model_validate(
        {
            "name": "registry",
            "manifestSha256": "d" * 64,
            "classification": "sensitive",
            "source": {"nfs": {"server": "nfs.example.org", "path": "/registry"}},
        }
    )
    # What the controller records when it verifies the dataset: the listing's sizes and ETags,
    # under the manifest hash the workspace carries (storage.fingerprints).
    with FingerprintIndex() as index:
        for entry in s3.list_objects_v2(Bucket=bucket, Prefix="cohort/")["Contents"]:
            index.add(entry["Key"].removeprefix("cohort/"), entry["Size"], entry["ETag"].strip('"'))
        index.store(s3, airlock.dataset_fingerprint_bucket, cohort.manifest_sha256)
    counts = b"region,n\nnorth,3\nsouth,40\n"
    copy = declared("out/copy.csv", rows)
    small = declared("out/counts.csv", counts)
    request = approved(copy, small)
    submit(s3, airlock, project, request, {"out/copy.csv": rows, "out/counts.csv": counts})

    comparison = compare_datasets(
        s3, airlock.dataset_fingerprint_bucket, [cohort, registry], {copy.size, small.size}
    )
    assert sorted(o.key for o in comparison.objects) == ["other.csv", "people.csv"]  # same size
    assert comparison.not_compared == ("registry (NFS: not listable)",)
    rules = CheckRules.from_settings(airlock)
    ref = ExportRef.of(request)
    found = {
        f.path: inspect_quarantined(
            s3, airlock.airlock_quarantine_bucket, ref, f, rules=rules, comparison=comparison
        )
        for f in request.spec.files
    }
    by_check = {p: {f.check: f for f in r.findings} for p, r in found.items()}
    raw = by_check["out/copy.csv"]["raw_dataset_copy"]
    assert raw.outcome is Outcome.FLAG
    assert "identical to dataset object(s) cohort:people.csv" in raw.detail
    assert by_check["out/counts.csv"]["raw_dataset_copy"].outcome is Outcome.OK
    assert by_check["out/counts.csv"]["small_numbers"].outcome is Outcome.FLAG
    assert by_check["out/counts.csv"]["declared_hash"].outcome is Outcome.OK


# --- release ----------------------------------------------------------------------------------


def two_files(s3: S3Client, airlock: Settings, project: Path) -> tuple[ExportRequest, dict]:
    contents = {
        "out/a.csv": b"region,n\nnorth,12\nsouth,40\n",
        "out/b.csv": table(9 * MiB),
        "src/model.txt": b"the method, for the reviewers only\n",
    }
    request = approved(
        declared("out/a.csv", contents["out/a.csv"]),
        declared("out/b.csv", contents["out/b.csv"]),
        declared("src/model.txt", contents["src/model.txt"], ExportFileKind.SUPPORTING),
    )
    submit(s3, airlock, project, request, contents)
    return request, contents


@pytest.mark.parametrize("copied_before_the_crash", [1, 2])
def test_a_release_interrupted_and_rerun_completes_exactly_once(
    s3: S3Client, airlock: Settings, project: Path, copied_before_the_crash: int
) -> None:
    request, contents = two_files(s3, airlock, project)
    egress = airlock.airlock_egress_bucket
    plan = plan_release(request)
    ref = plan.ref
    # the service dies after copying (and verifying) the first file(s), before the manifest
    for file in plan.files[:copied_before_the_crash]:
        assert copy_and_verify(s3, airlock.airlock_quarantine_bucket, egress, file) is True
    assert read_manifest(s3, egress, ref) is None  # not released

    reports = reports_of(s3, airlock, request)
    manifest = release_export(s3, airlock, request, WORKSPACE, reports, released_by="lea", now=NOW)
    keys = [ref.file_key("out/a.csv"), ref.file_key("out/b.csv")]
    assert versions(s3, egress, ref.files_prefix) == dict.fromkeys(keys, 1)  # no second copy
    assert [(f["path"], f["sha256"]) for f in manifest["files"]] == [
        ("out/a.csv", sha256(contents["out/a.csv"])),
        ("out/b.csv", sha256(contents["out/b.csv"])),
    ]
    assert manifest["supportingFiles"] == ["src/model.txt"]
    assert manifest["accessRequests"] == ["cardio-2026"]
    assert [c["path"] for c in manifest["checks"]] == ["out/a.csv", "out/b.csv"]
    assert read_manifest(s3, egress, ref) == manifest
    for key, path in zip(keys, ("out/a.csv", "out/b.csv"), strict=True):
        assert s3.get_object(Bucket=egress, Key=key)["Body"].read() == contents[path]

    # a rerun after completion (the status write failed, say) changes nothing
    later = NOW + dt.timedelta(hours=1)
    again = release_export(s3, airlock, request, WORKSPACE, reports, released_by="x", now=later)
    assert again == manifest
    assert versions(s3, egress, ref.files_prefix) == dict.fromkeys(keys, 1)
    assert versions(s3, egress, ref.prefix)[ref.manifest_key] == 1


def test_two_releases_racing_write_one_manifest(
    s3: S3Client, airlock: Settings, project: Path
) -> None:
    request, _ = two_files(s3, airlock, project)
    reports = reports_of(s3, airlock, request)

    def release(who: str) -> dict[str, Any]:
        return release_export(s3, airlock, request, WORKSPACE, reports, released_by=who, now=NOW)

    with ThreadPoolExecutor(2) as pool:
        first, second = pool.map(release, ["lea", "omar"])
    assert first == second  # the loser returns the winner's manifest
    ref = ExportRef.of(request)
    assert versions(s3, airlock.airlock_egress_bucket, ref.prefix)[ref.manifest_key] == 1


def test_a_quarantined_file_changed_after_review_is_never_released(
    s3: S3Client, airlock: Settings, project: Path
) -> None:
    request, _ = two_files(s3, airlock, project)
    reports = reports_of(s3, airlock, request)
    ref = ExportRef.of(request)
    # someone with write access to the quarantine bucket swaps the reviewed bytes
    s3.put_object(
        Bucket=airlock.airlock_quarantine_bucket,
        Key=ref.file_key("out/a.csv"),
        Body=b"id,name\n1,Jane Doe\n",
    )
    with pytest.raises(PermanentError) as refused:
        release_export(s3, airlock, request, WORKSPACE, reports, released_by="lea", now=NOW)
    assert "is not what was reviewed" in str(refused.value)
    assert "the copy was removed" in str(refused.value)
    egress = airlock.airlock_egress_bucket
    assert read_manifest(s3, egress, ref) is None
    current = s3.list_objects_v2(Bucket=egress, Prefix=ref.files_prefix).get("Contents", [])
    assert [o["Key"] for o in current] == []


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_release_while_s3_is_unreachable_is_retryable_and_leaves_no_manifest(
    s3: S3Client, airlock: Settings, project: Path
) -> None:
    request, _ = two_files(s3, airlock, project)
    reports = reports_of(s3, airlock, request)
    down = make_s3_client(
        endpoint_url=f"http://127.0.0.1:{closed_port()}",
        region=airlock.s3_region,
        access_key="x",
        secret_key="y",
        connect_timeout=1,
        max_attempts=1,
    )
    with pytest.raises(TemporaryError) as failed:
        release_export(down, airlock, request, WORKSPACE, reports, released_by="lea", now=NOW)
    assert "cannot reach the S3 endpoint" in str(failed.value)
    assert "retry later" in str(failed.value)
    ref = ExportRef.of(request)
    assert read_manifest(s3, airlock.airlock_egress_bucket, ref) is None
    # S3 is back: the retry releases
    manifest = release_export(s3, airlock, request, WORKSPACE, reports, released_by="lea", now=NOW)
    assert len(manifest["files"]) == 2


# --- download and revoke -------------------------------------------------------------------


def fetch(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:  # 127.0.0.1 only
            return int(answer.status), answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""


def test_a_download_link_serves_the_released_bytes_until_it_expires(
    s3: S3Client, airlock: Settings, project: Path
) -> None:
    request, contents = two_files(s3, airlock, project)
    ref = ExportRef.of(request)
    with pytest.raises(NotFoundError, match="nothing released yet"):
        download_link(s3, airlock, ref, "out/a.csv")
    release_export(
        s3,
        airlock,
        request,
        WORKSPACE,
        reports_of(s3, airlock, request),
        released_by="lea",
        now=NOW,
    )
    url = download_link(s3, airlock, ref, "out/b.csv")
    assert url.startswith(airlock.s3_endpoint_url or "")
    assert fetch(url) == (200, contents["out/b.csv"])
    with pytest.raises(NotFoundError, match="was not released"):
        download_link(s3, airlock, ref, "src/model.txt")  # supporting files never leave
    time.sleep(airlock.airlock_link_expiry_seconds + 1.5)
    status, _ = fetch(url)
    assert status == 403


def test_a_revoke_removes_every_egress_copy_and_records_why(
    s3: S3Client, airlock: Settings, project: Path
) -> None:
    request, contents = two_files(s3, airlock, project)
    ref = ExportRef.of(request)
    egress = airlock.airlock_egress_bucket
    with pytest.raises(NotFoundError, match="nothing released, nothing to revoke"):
        revoke_release(s3, airlock, ref, reason="too early to say", revoked_by="dac", now=NOW)
    reports = reports_of(s3, airlock, request)
    release_export(s3, airlock, request, WORKSPACE, reports, released_by="lea", now=NOW)
    url = download_link(s3, airlock, ref, "out/a.csv")
    assert fetch(url) == (200, contents["out/a.csv"])
    with pytest.raises(InvalidInputError, match="say why the release is revoked"):
        revoke_release(s3, airlock, ref, reason=" ", revoked_by="dac", now=NOW)

    record = revoke_release(
        s3,
        airlock,
        ref,
        reason="table b re-identifies a rare condition",
        revoked_by="dac",
        now=NOW,
    )
    assert record["reason"] == "table b re-identifies a rare condition"
    assert record["revokedBy"] == "dac"
    assert record["files"] == [ref.file_key("out/a.csv"), ref.file_key("out/b.csv")]
    assert read_revocation(s3, egress, ref) == record
    assert list_versions(s3, egress, ref.files_prefix) == []  # every version gone
    assert read_manifest(s3, egress, ref) is not None  # the record of what had left stays
    assert fetch(url)[0] == 404  # a link issued before the revoke stops working
    with pytest.raises(RefusedError, match="its release was revoked"):
        download_link(s3, airlock, ref, "out/a.csv")
    with pytest.raises(RefusedError, match="its release was revoked"):
        release_export(s3, airlock, request, WORKSPACE, reports, released_by="lea", now=NOW)
    # a second revoke (a retry) keeps the first record
    again = revoke_release(
        s3, airlock, ref, reason="another reason entirely", revoked_by="x", now=NOW
    )
    assert again == record
