"""The S3 edge and the audit log against a real S3 server (SeaweedFS `weed mini`, 127.0.0.1).

Behaviours under test:
- the local server: every port it listens on is on 127.0.0.1 (read from /proc, not assumed);
  start is idempotent; the credentials file is private (0600); status finds it; a second
  server in another state directory gets other ports and runs beside it; stop is not an error
  when nothing runs;
- boto3 round trip: create bucket, put, get; ensure_bucket turns versioning on, is
  idempotent, and reports object lock truthfully (on when asked at creation, off otherwise);
- object lock: a locked version cannot be deleted before its retention ends;
- conditional writes: If-None-Match makes a second create fail with ConflictError; If-Match
  with a stale ETag fails with ConflictError;
- errors map to our tree: missing bucket or key -> NotFoundError, bad credentials ->
  RefusedError, nothing listening -> TemporaryError;
- compute_manifest: count, bytes and a hash equal to the documented canonical form computed by
  hand (source line first); stable when nothing changes; different when one object changes;
  lists past one page (1000 keys); leaves out directory markers; prefix 'a/' does not include 'ab/';
  the sorted lines' hash though this server lists 'part1/x' before 'part1.csv' (not in
  S3's order), also when the rows are sorted in runs on disk;
  NotFoundError naming the bucket (missing bucket) or bucket and prefix (empty prefix);
- the audit log: append, read back, verify and export round trip; concurrent writers get
  distinct seqs and one valid chain (create-only writes); an entry object edited in the
  bucket is reported (edited + overwritten); a deleted one is reported (dropped + deleted);
  swapped entry bodies are reported (misplaced + reordered); entries deleted from the end
  make append refuse and verify report truncation; an external anchor catches a rewritten
  chain; without versioning an edit is still found by its hash; locked entries cannot be
  deleted for good.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import socket
import stat
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from botocore.exceptions import ClientError

from provisioner.audit.chain import ChainAnchor, ProblemKind, next_entry
from provisioner.audit.log import AuditLog, ensure_audit_bucket, entry_key
from provisioner.audit.signing import AuditSigner
from provisioner.devcluster.s3server import S3Endpoint, s3_status, start_s3, stop_s3
from provisioner.errors import (
    AuditChainError,
    ConflictError,
    NotFoundError,
    RefusedError,
    TemporaryError,
)
from provisioner.models.resources import Dataset, DatasetSource, DatasetSpec, S3Source
from provisioner.models.settings import Settings
from provisioner.models.types import ClassificationTier
from provisioner.planning.datasets import manifest_origin
from provisioner.storage import s3 as s3_module
from provisioner.storage.s3 import (
    bucket_exists,
    compute_manifest,
    ensure_bucket,
    get_object,
    list_keys,
    make_s3_client,
    manifest_line,
    manifest_sha256,
    object_lock_enabled,
    put_object,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

pytestmark = pytest.mark.integration
SIGNER = AuditSigner.generate()  # the controller's key, for the logs of this module


# --- helpers -------------------------------------------------------------------------------


def _listening(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket `pid` listens on, from /proc (IPv4 and IPv6)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    found = set()
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A" or inode not in inodes:  # 0A = LISTEN
                continue
            address_hex, port_hex = local.split(":")
            raw = bytes.fromhex(address_hex)
            # /proc prints the address as 32-bit words in host (little-endian) byte order.
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            found.add((socket.inet_ntop(family, raw), int(port_hex, 16)))
    return found


def _pid(state_dir: Path) -> int:
    return int((state_dir / "weed.pid").read_text())


def _put(s3: S3Client, bucket: str, key: str, body: bytes) -> str:
    return s3.put_object(Bucket=bucket, Key=key, Body=body)["ETag"].strip('"')


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# --- the local server ----------------------------------------------------------------------


def test_server_listens_only_on_loopback(s3_endpoint: S3Endpoint, s3_server_dir: Path) -> None:
    listening = _listening(_pid(s3_server_dir))
    ports = {port for _, port in listening}
    assert {address for address, _ in listening} == {"127.0.0.1"}
    s3_port = int(s3_endpoint.url.rsplit(":", 1)[1])
    assert s3_port in ports
    # master, volume, filer, s3 and admin gRPC, plus the HTTP ports except the admin UI's.
    assert len(ports) >= 9


def test_start_is_idempotent_and_credentials_are_private(
    s3_endpoint: S3Endpoint, s3_server_dir: Path
) -> None:
    pid = _pid(s3_server_dir)
    assert start_s3(s3_server_dir) == s3_endpoint
    assert _pid(s3_server_dir) == pid
    assert s3_status(s3_server_dir) == s3_endpoint
    mode = (s3_server_dir / "s3-identities.json").stat().st_mode
    assert stat.S_IMODE(mode) == 0o600
    assert s3_endpoint.secret_key not in repr(s3_endpoint)


def test_second_server_runs_beside_the_first_on_other_ports(
    s3_endpoint: S3Endpoint, s3_server_dir: Path, tmp_path: Path
) -> None:
    other_dir = tmp_path / "other"
    other = start_s3(other_dir)
    try:
        first, second = _listening(_pid(s3_server_dir)), _listening(_pid(other_dir))
        assert not first & second
        assert {address for address, _ in second} == {"127.0.0.1"}
        assert other.url != s3_endpoint.url
        assert other.access_key != s3_endpoint.access_key
        client = other.client()
        ensure_bucket(client, "only-in-other", versioning=False)
        assert bucket_exists(client, "only-in-other")
        client.close()
    finally:
        assert stop_s3(other_dir) is True
    assert s3_status(other_dir) is None
    assert stop_s3(other_dir) is False  # nothing running: not an error


# --- buckets, objects, errors --------------------------------------------------------------


def test_boto3_round_trip_with_versioning(s3: S3Client) -> None:
    name = f"rt-{uuid.uuid4().hex[:12]}"
    assert ensure_bucket(s3, name, versioning=True) is False  # no object lock asked
    assert ensure_bucket(s3, name, versioning=True) is False  # idempotent
    assert s3.get_bucket_versioning(Bucket=name)["Status"] == "Enabled"
    first = _put(s3, name, "hello.txt", b"hello")
    second = _put(s3, name, "hello.txt", b"hello again")
    assert first != second
    assert get_object(s3, name, "hello.txt").body == b"hello again"
    versions = s3.list_object_versions(Bucket=name, Prefix="hello.txt")["Versions"]
    assert len(versions) == 2


def test_object_lock_is_on_when_asked_at_creation(s3: S3Client) -> None:
    name = f"lock-{uuid.uuid4().hex[:12]}"
    assert ensure_bucket(s3, name, versioning=True, object_lock=True) is True
    assert object_lock_enabled(s3, name) is True
    assert ensure_bucket(s3, name, versioning=True, object_lock=True) is True


def test_locked_version_cannot_be_deleted(s3: S3Client) -> None:
    name = f"lock-{uuid.uuid4().hex[:12]}"
    ensure_bucket(s3, name, versioning=True, object_lock=True)
    put_object(
        s3,
        name,
        "record",
        b"kept",
        retain_until=dt.datetime.now(dt.UTC) + dt.timedelta(days=1),
    )
    version = get_object(s3, name, "record").version_id
    assert version
    with pytest.raises(ClientError) as refused:
        s3.delete_object(Bucket=name, Key="record", VersionId=version)
    assert refused.value.response["Error"]["Code"] == "AccessDenied"


def test_create_only_and_compare_and_swap_writes(s3: S3Client, bucket: str) -> None:
    etag = put_object(s3, bucket, "k", b"1", if_none_match=True)
    with pytest.raises(ConflictError, match="already exists"):
        put_object(s3, bucket, "k", b"2", if_none_match=True)
    assert get_object(s3, bucket, "k").body == b"1"
    new_etag = put_object(s3, bucket, "k", b"3", if_match=etag)
    with pytest.raises(ConflictError, match="changed since it was read"):
        put_object(s3, bucket, "k", b"4", if_match=etag)
    assert get_object(s3, bucket, "k").etag == new_etag


def test_errors_map_to_our_exception_tree(s3_endpoint: S3Endpoint, s3: S3Client) -> None:
    with pytest.raises(NotFoundError):
        get_object(s3, f"missing-{uuid.uuid4().hex[:8]}", "k")
    name = f"err-{uuid.uuid4().hex[:12]}"
    ensure_bucket(s3, name, versioning=False)
    with pytest.raises(NotFoundError, match="no-such-key"):
        get_object(s3, name, "no-such-key")
    wrong = make_s3_client(
        endpoint_url=s3_endpoint.url,
        region=s3_endpoint.region,
        access_key=s3_endpoint.access_key,
        secret_key="not-the-secret",
        max_attempts=1,
    )
    with pytest.raises(RefusedError):
        list_keys(wrong, name, "")
    nobody = make_s3_client(
        endpoint_url=f"http://127.0.0.1:{_free_port()}",
        region="us-east-1",
        access_key="x",
        secret_key="y",
        connect_timeout=1,
        max_attempts=1,
    )
    with pytest.raises(TemporaryError, match="cannot reach"):
        bucket_exists(nobody, name)


# --- dataset manifests ---------------------------------------------------------------------


def dataset_at(source: S3Source, uid: str = "") -> Dataset:
    """A Dataset of `source` as the API server returns it (with its uid)."""
    spec = DatasetSpec(title="T", steward="sam", classification=ClassificationTier.INTERNAL,
                       source=DatasetSource(s3=source))  # fmt: skip
    return Dataset(name="cohort", uid=uid, spec=spec)


def test_manifest_counts_sizes_and_hashes_the_canonical_form(
    s3: S3Client, bucket: str, s3_settings: Settings
) -> None:
    etag_a = _put(s3, bucket, "cohort/a.csv", b"abc")
    etag_b = _put(s3, bucket, 'cohort/sub/b,\t"odd".csv', b"12345")
    _put(s3, bucket, "cohort/sub/", b"")  # a directory marker: not data
    _put(s3, bucket, "other/c.csv", b"zzz")
    manifest = compute_manifest(
        s3, dataset_at(S3Source(bucket=bucket, prefix="cohort"), "u-1"), s3_settings
    )
    expected_text = (
        f"source s3://{bucket}/cohort/ region={s3_settings.s3_region} "
        f"endpoint={s3_settings.s3_endpoint_url} dataset=u-1\n"
        + f'["a.csv",3,"{etag_a}"]\n'
        + f'["sub/b,\\t\\"odd\\".csv",5,"{etag_b}"]\n'
    )
    assert (manifest.object_count, manifest.bytes) == (2, 8)
    assert manifest.sha256 == hashlib.sha256(expected_text.encode()).hexdigest()
    assert etag_a == hashlib.md5(b"abc").hexdigest()


def test_manifest_is_stable_and_changes_when_an_object_changes(
    s3: S3Client, bucket: str, s3_settings: Settings
) -> None:
    for i in range(3):
        _put(s3, bucket, f"data/{i}.csv", f"row {i}".encode())
    source = S3Source(bucket=bucket, prefix="data/")
    uid = str(uuid.uuid4())
    first = compute_manifest(s3, dataset_at(source, uid), s3_settings)
    assert compute_manifest(s3, dataset_at(source, uid), s3_settings).sha256 == first.sha256
    _put(s3, bucket, "data/1.csv", b"row X")  # same size, other content
    changed = compute_manifest(s3, dataset_at(source, uid), s3_settings)
    assert changed.sha256 != first.sha256
    assert (changed.object_count, changed.bytes) == (first.object_count, first.bytes)


def test_manifest_lists_more_than_one_page(
    s3: S3Client, bucket: str, s3_settings: Settings
) -> None:
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda i: _put(s3, bucket, f"many/{i:05d}", b"x"), range(1005)))
    manifest = compute_manifest(
        s3, dataset_at(S3Source(bucket=bucket, prefix="many/")), s3_settings
    )
    assert (manifest.object_count, manifest.bytes) == (1005, 1005)


def test_manifest_is_the_sorted_lines_whatever_order_the_server_lists(
    s3: S3Client, bucket: str, s3_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = ["part1/x.csv", "part1/z/w", "part1+", "part1-b/y", "part1.csv", "a b", "a/b", "é"]
    etags = {k: _put(s3, bucket, f"o/{k}", k.encode()) for k in keys}
    listed = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="o/")["Contents"]]
    ordered = sorted(keys, key=lambda k: k.encode())
    expected = manifest_sha256(
        manifest_origin(dataset_at(S3Source(bucket=bucket, prefix="o/"), "u-1"), s3_settings),
        [manifest_line(k, len(k.encode()), etags[k]) for k in ordered],
    )
    source = dataset_at(S3Source(bucket=bucket, prefix="o/"), "u-1")
    assert compute_manifest(s3, source, s3_settings).sha256 == expected
    monkeypatch.setattr(s3_module, "SORT_RUN_ROWS", 3)  # rows sorted in runs on disk
    assert compute_manifest(s3, source, s3_settings).sha256 == expected
    # what makes this test matter on this server: it lists a "directory" first
    assert listed != [f"o/{k}" for k in ordered]


def test_prefix_a_does_not_include_ab(s3: S3Client, bucket: str, s3_settings: Settings) -> None:
    _put(s3, bucket, "a/1", b"1")
    _put(s3, bucket, "ab/2", b"22")
    manifest = compute_manifest(
        s3, dataset_at(S3Source(bucket=bucket, prefix="a")), s3_settings
    )  # normalised to a/
    assert (manifest.object_count, manifest.bytes) == (1, 1)


def test_manifest_of_missing_bucket_or_empty_prefix_is_not_found(
    s3: S3Client, bucket: str, s3_settings: Settings
) -> None:
    missing = f"missing-{uuid.uuid4().hex[:8]}"
    with pytest.raises(NotFoundError, match=f"bucket '{missing}' does not exist"):
        compute_manifest(s3, dataset_at(S3Source(bucket=missing, prefix="x/")), s3_settings)
    _put(s3, bucket, "elsewhere/1", b"1")
    with pytest.raises(
        NotFoundError, match=f"no objects under prefix 'nothing/' in bucket '{bucket}'"
    ):
        compute_manifest(s3, dataset_at(S3Source(bucket=bucket, prefix="nothing/")), s3_settings)


# --- the audit log -------------------------------------------------------------------------


@pytest.fixture
def audit_log(s3: S3Client) -> AuditLog:
    """An audit log in a fresh bucket with object lock, each entry retained for a day."""
    name = f"audit-{uuid.uuid4().hex[:12]}"
    assert ensure_audit_bucket(s3, name, retention_days=1) is True
    return AuditLog(s3, name, retention=dt.timedelta(days=1), signer=SIGNER)


def _fill(log: AuditLog, n: int) -> None:
    for i in range(n):
        log.append("alice", "request.approve", f"accessrequest/r{i}", {"i": i})


def test_append_read_verify_and_export(audit_log: AuditLog) -> None:
    assert audit_log.head() is None
    assert audit_log.read_all() == []
    first = audit_log.append("bob", "request.submit", "accessrequest/r1", {"datasets": ["x"]})
    second = audit_log.append("alice", "request.approve", "accessrequest/r1")
    assert (first.seq, second.seq, second.prev_hash) == (1, 2, first.hash)
    assert audit_log.read_all() == [first, second]
    assert audit_log.head() == ChainAnchor.of(second)
    assert audit_log.verify() == []
    assert audit_log.export_jsonl() == first.to_json_line() + second.to_json_line()


def test_concurrent_writers_get_distinct_seqs_and_one_chain(audit_log: AuditLog) -> None:
    barrier = threading.Barrier(4)

    def writer(name: str) -> None:
        log = AuditLog(
            audit_log._client, audit_log.bucket, retention=dt.timedelta(days=1), signer=SIGNER
        )
        barrier.wait()
        for i in range(5):
            log.append(name, "workspace.reconcile", f"workspace/w{i}")

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(writer, ["w1", "w2", "w3", "w4"]))
    entries = audit_log.read_all()
    assert [e.seq for e in entries] == list(range(1, 21))
    assert audit_log.verify() == []


def test_edited_entry_object_is_detected(audit_log: AuditLog, s3: S3Client) -> None:
    _fill(audit_log, 4)
    original = audit_log.read_all()[2]
    forged = original.model_copy(update={"actor": "mallory"})
    s3.put_object(Bucket=audit_log.bucket, Key=entry_key(3), Body=forged.to_json_line().encode())
    problems = audit_log.verify()
    assert {(p.seq, p.kind) for p in problems} == {
        (3, ProblemKind.EDITED),
        (3, ProblemKind.OVERWRITTEN),
    }
    assert any("entry 3 was edited" in p.message for p in problems)


def test_deleted_entry_object_is_detected(audit_log: AuditLog, s3: S3Client) -> None:
    _fill(audit_log, 4)
    s3.delete_object(Bucket=audit_log.bucket, Key=entry_key(2))
    problems = audit_log.verify()
    assert {(p.seq, p.kind) for p in problems} == {
        (2, ProblemKind.DROPPED),
        (2, ProblemKind.DELETED),
    }


def test_swapped_entry_bodies_are_detected(audit_log: AuditLog, s3: S3Client) -> None:
    _fill(audit_log, 4)
    second, third = audit_log.read_all()[1:3]
    s3.put_object(Bucket=audit_log.bucket, Key=entry_key(2), Body=third.to_json_line().encode())
    s3.put_object(Bucket=audit_log.bucket, Key=entry_key(3), Body=second.to_json_line().encode())
    kinds = {(p.seq, p.kind) for p in audit_log.verify()}
    assert {
        (2, ProblemKind.MISPLACED),
        (3, ProblemKind.MISPLACED),
        (2, ProblemKind.REORDERED),
    } <= kinds


def test_entries_deleted_from_the_end_are_detected(audit_log: AuditLog, s3: S3Client) -> None:
    _fill(audit_log, 5)
    for seq in (4, 5):
        s3.delete_object(Bucket=audit_log.bucket, Key=entry_key(seq))
    with pytest.raises(AuditChainError, match="entry 5, the recorded head, is missing"):
        audit_log.append("alice", "request.approve", "accessrequest/late")
    kinds = {(p.seq, p.kind) for p in audit_log.verify()}
    assert (4, ProblemKind.TRUNCATED) in kinds
    assert {(4, ProblemKind.DELETED), (5, ProblemKind.DELETED)} <= kinds


def test_external_anchor_catches_a_rewritten_log(audit_log: AuditLog, s3: S3Client) -> None:
    _fill(audit_log, 3)
    anchor = audit_log.head()
    assert anchor is not None
    # Someone with write access rewrites the whole chain and the head record consistently.
    prev = None
    for entry in audit_log.read_all():
        prev = next_entry(
            prev,
            actor="mallory",
            action=entry.action,
            subject=entry.subject,
            details=entry.details,
            at=entry.at,
        )
        s3.put_object(
            Bucket=audit_log.bucket, Key=entry_key(prev.seq), Body=prev.to_json_line().encode()
        )
    assert prev is not None
    s3.put_object(
        Bucket=audit_log.bucket,
        Key="audit/v1/head.json",
        Body=ChainAnchor.of(prev).to_json().encode(),
    )
    kinds = {(p.seq, p.kind) for p in audit_log.verify(anchor=anchor)}
    assert (3, ProblemKind.REWRITTEN) in kinds
    assert (1, ProblemKind.OVERWRITTEN) in kinds  # and the version history shows it too


def test_log_in_a_bucket_without_versioning_still_detects_edits(s3: S3Client) -> None:
    name = f"plain-{uuid.uuid4().hex[:12]}"
    ensure_bucket(s3, name, versioning=False)
    log = AuditLog(s3, name, signer=SIGNER)
    _fill(log, 3)
    assert log.verify() == []
    forged = log.read_all()[1].model_copy(update={"details": {"i": 99}})
    s3.put_object(Bucket=name, Key=entry_key(2), Body=forged.to_json_line().encode())
    assert [(p.seq, p.kind) for p in log.verify()] == [(2, ProblemKind.EDITED)]


def test_locked_entries_cannot_be_deleted_for_good(audit_log: AuditLog, s3: S3Client) -> None:
    _fill(audit_log, 1)
    version = get_object(s3, audit_log.bucket, entry_key(1)).version_id
    assert version
    with pytest.raises(ClientError) as refused:
        s3.delete_object(Bucket=audit_log.bucket, Key=entry_key(1), VersionId=version)
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    assert audit_log.verify() == []
