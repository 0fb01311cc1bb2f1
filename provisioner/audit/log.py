"""The append-only audit log in S3: one object per entry, a head record, verification.

Layout in the audit bucket::

    audit/v1/entries/000000000001.json   entry seq 1: one canonical JSON line (chain.py)
    audit/v1/entries/000000000002.json   ...
    audit/v1/head.json                   {"hash": ..., "seq": N}: the newest entry we know of

One object per entry, so that every entry carries its own object lock retention (WORM) where
the bucket has object lock: a locked version can be neither deleted nor overwritten in place
until its retention ends. What remains possible on a locked bucket (a new version on top, a
delete marker) stays visible in the version history, and `verify` reads that history.

Appending is safe with several writers: entry n+1 is written create-only (``If-None-Match: *``,
which SeaweedFS 4.48 and AWS S3 honour atomically), so of two writers racing for the same seq
exactly one wins; the other re-reads the tail and tries seq n+2. The controller's Lease keeps
it to a single writer in normal operation anyway.

The head record is the anchor against truncation (see chain.py): an append refuses to extend a
log whose recorded head entry has gone, and `verify` reports TRUNCATED when the entries end
before the head. It lives in the same bucket, so it only catches someone who deletes entries
without also rewriting head.json; on a bucket with object lock, the version history catches
that too. For protection against a writer of the bucket, publish `head()` somewhere that
writer cannot change (for example a Kubernetes object) and pass it back as `verify(anchor=)`.
The head is updated after the entry, compare-and-swap and only forwards; if that update is
lost (crash, race), the head lags, which is harmless: an anchor only has to be reached.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import secrets
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from provisioner.audit.chain import (
    GENESIS_HASH,
    AuditEntry,
    ChainAnchor,
    ChainProblem,
    ProblemKind,
    check_anchor,
    next_entry,
    verify_chain,
)
from provisioner.errors import AuditChainError, ConflictError, NotFoundError, TreError
from provisioner.storage.s3 import (
    LockMode,
    ensure_bucket,
    get_object,
    list_keys,
    list_versions,
    put_object,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

ENTRY_PREFIX = "audit/v1/entries/"
HEAD_KEY = "audit/v1/head.json"
_ENTRY_KEY = re.compile(r"^audit/v1/entries/(\d{12})\.json$")
_READ_THREADS = 8  # parallel GETs when reading the whole log; boto3 clients are thread-safe


def entry_key(seq: int) -> str:
    return f"{ENTRY_PREFIX}{seq:012d}.json"


def seq_of_key(key: str) -> int | None:
    match = _ENTRY_KEY.fullmatch(key)
    return int(match.group(1)) if match else None


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def ensure_audit_bucket(client: S3Client, bucket: str) -> bool:
    """Create the audit bucket (versioned, object lock asked for). Returns whether lock is on."""
    return ensure_bucket(client, bucket, versioning=True, object_lock=True)


class AuditLog:
    """The audit chain stored in `bucket`.

    retention: how long each entry is locked (object lock, `lock_mode`) after it was written;
    None writes no retention (for buckets without object lock). clock: where `at` comes from.
    """

    def __init__(
        self,
        client: S3Client,
        bucket: str,
        *,
        retention: dt.timedelta | None = None,
        lock_mode: LockMode = "COMPLIANCE",
        clock: Callable[[], dt.datetime] = _utc_now,
        max_attempts: int = 10,
    ) -> None:
        self._client = client
        self.bucket = bucket
        self._retention = retention
        self._lock_mode: LockMode = lock_mode
        self._clock = clock
        self._max_attempts = max_attempts

    def _where(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{key}"

    # --- writing -------------------------------------------------------------------------------

    def append(
        self,
        actor: str,
        action: str,
        subject: str,
        details: Mapping[str, Any] | None = None,
        *,
        key: str | None = None,
    ) -> AuditEntry:
        """Write the next entry and return it.

        Raises AuditChainError (and writes nothing) when the tail of the log is damaged, and
        ConflictError when other writers kept winning the race for the next seq.
        """
        for attempt in range(self._max_attempts):
            head, head_etag = self._read_head()
            if head is None:
                self._create_head()
                continue
            prev = self._tail(head)
            entry = next_entry(
                prev,
                actor=actor,
                action=action,
                subject=subject,
                details={**(details or {}), **({"key": key} if key else {})},
                at=self._clock(),
            )
            retain_until = entry.at + self._retention if self._retention is not None else None
            try:
                put_object(
                    self._client,
                    self.bucket,
                    entry_key(entry.seq),
                    entry.to_json_line().encode("utf-8"),
                    content_type="application/json",
                    if_none_match=True,
                    retain_until=retain_until,
                    lock_mode=self._lock_mode,
                )
            except ConflictError:
                # Another writer took this seq: back off a little and build on its entry.
                time.sleep((attempt + 1) * secrets.randbelow(50) / 1000)
                continue
            self._advance_head(entry, head_etag)
            return entry
        raise ConflictError(
            f"audit log {self._where()}: no append after {self._max_attempts} attempts, other "
            "writers kept taking the next seq; retry"
        )

    def keys(self) -> set[str]:
        """The idempotency keys of every entry in the log."""
        return {str(e.details["key"]) for e in self.read_all() if "key" in e.details}

    def _create_head(self) -> None:
        if list_keys(self._client, self.bucket, ENTRY_PREFIX):
            raise AuditChainError(
                f"audit log {self._where()}: entries exist but the head record {HEAD_KEY} is "
                "gone, so truncation cannot be ruled out; refusing to append. Run "
                "'tre audit verify' and restore head.json from the bucket's version history"
            )
        genesis = ChainAnchor(seq=0, hash=GENESIS_HASH)
        with contextlib.suppress(ConflictError):  # a concurrent first append created it
            put_object(
                self._client,
                self.bucket,
                HEAD_KEY,
                genesis.to_json().encode("utf-8"),
                content_type="application/json",
                if_none_match=True,
            )

    def _tail(self, head: ChainAnchor) -> AuditEntry | None:
        """The newest entry, checked against the head record before anything builds on it."""
        start_after = entry_key(head.seq - 1) if head.seq >= 1 else ""
        keys = [
            k
            for k in list_keys(self._client, self.bucket, ENTRY_PREFIX, start_after=start_after)
            if seq_of_key(k) is not None
        ]
        if head.seq >= 1 and (not keys or keys[0] != entry_key(head.seq)):
            raise AuditChainError(
                f"audit log {self._where()}: entry {head.seq}, the recorded head, is missing: "
                "entries were deleted from the end; refusing to append. Run 'tre audit verify' "
                "and restore them from the bucket's version history"
            )
        if not keys:
            return None
        key = keys[-1]
        try:
            tail = AuditEntry.from_json_line(get_object(self._client, self.bucket, key).body)
        except ValidationError as exc:
            raise AuditChainError(
                f"audit log {self._where(key)}: the newest entry is not a valid entry "
                f"({exc.error_count()} errors); refusing to append. Run 'tre audit verify'"
            ) from exc
        damage = ""
        if tail.seq != seq_of_key(key):
            damage = f"it holds entry {tail.seq}"
        elif tail.computed_hash() != tail.hash:
            damage = "its content does not match its hash"
        elif tail.seq == head.seq and tail.hash != head.hash:
            damage = "its hash differs from the head record"
        if damage:
            raise AuditChainError(
                f"audit log {self._where(key)}: the newest entry is damaged ({damage}); "
                "refusing to append. Run 'tre audit verify'"
            )
        return tail

    def _advance_head(self, entry: AuditEntry, etag: str | None) -> None:
        """Move the head record forward to `entry` (compare-and-swap; never backwards).

        Best effort on purpose: the entry is already stored, and raising here would make the
        caller append the same event twice. A head that lags is harmless (module docstring).
        """
        body = ChainAnchor.of(entry).to_json().encode("utf-8")
        for _ in range(self._max_attempts):
            try:
                put_object(
                    self._client,
                    self.bucket,
                    HEAD_KEY,
                    body,
                    content_type="application/json",
                    if_match=etag,
                )
                return
            except ConflictError:
                head, etag = self._read_head()
                if head is None or head.seq >= entry.seq:
                    return  # a later writer moved it past us (or it is gone: verify reports it)
            except TreError:
                return  # the entry is safe; the head catches up on the next append

    def _read_head(self) -> tuple[ChainAnchor | None, str | None]:
        try:
            stored = get_object(self._client, self.bucket, HEAD_KEY)
        except NotFoundError:
            return None, None
        try:
            return ChainAnchor.model_validate_json(stored.body), stored.etag
        except ValidationError as exc:
            raise AuditChainError(
                f"audit log {self._where(HEAD_KEY)}: the head record is not valid "
                f"({exc.error_count()} errors); restore it from the bucket's version history"
            ) from exc

    # --- reading -------------------------------------------------------------------------------

    def head(self) -> ChainAnchor | None:
        """The stored head record (seq 0 for an empty log), None before the first append.

        Publish it where the writers of this bucket cannot change it, and pass it back to
        `verify(anchor=...)` later, to detect a rewrite of the whole log.
        """
        return self._read_head()[0]

    def _read_records(self) -> list[tuple[str, AuditEntry | str]]:
        """Every object under the entry prefix in key order: the entry, or why it is unreadable."""
        keys = list_keys(self._client, self.bucket, ENTRY_PREFIX)

        def read(key: str) -> tuple[str, AuditEntry | str]:
            body = get_object(self._client, self.bucket, key).body
            try:
                return key, AuditEntry.from_json_line(body)
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(part) for part in first["loc"]) or "body"
                return key, f"{where}: {first['msg']}"

        with ThreadPoolExecutor(max_workers=_READ_THREADS) as pool:
            return list(pool.map(read, keys))

    def read_all(self) -> list[AuditEntry]:
        """Every entry in seq order. AuditChainError if an object is not a valid entry."""
        entries: list[AuditEntry] = []
        for key, parsed in self._read_records():
            if isinstance(parsed, str):
                raise AuditChainError(
                    f"audit log {self._where(key)}: not a valid audit entry ({parsed}); run "
                    "'tre audit verify'"
                )
            entries.append(parsed)
        return entries

    def export_jsonl(self) -> str:
        """The whole log as JSON Lines, one canonical entry per line, in seq order."""
        return "".join(entry.to_json_line() for entry in self.read_all())

    # --- verification --------------------------------------------------------------------------

    def verify(self, *, anchor: ChainAnchor | None = None) -> list[ChainProblem]:
        """Everything wrong with the stored log; empty when it is intact.

        Checks the chain (chain.verify_chain) against the head record, that every entry sits
        under its own seq's key, the version history of every entry object (more than one
        version: overwritten; a delete marker: deleted), and the optional external `anchor`.
        """
        problems: list[ChainProblem] = []
        records = self._read_records()
        entries: list[AuditEntry] = []
        for key, parsed in records:
            seq = seq_of_key(key)
            if seq is None:
                problems.append(
                    ChainProblem(
                        None,
                        ProblemKind.UNREADABLE,
                        f"object {key} is under the audit prefix but is not an entry key",
                    )
                )
                continue
            if isinstance(parsed, str):
                problems.append(
                    ChainProblem(
                        seq,
                        ProblemKind.UNREADABLE,
                        f"entry {seq} ({key}) is not a valid audit entry: {parsed}",
                    )
                )
                continue
            if parsed.seq != seq:
                problems.append(
                    ChainProblem(
                        seq,
                        ProblemKind.MISPLACED,
                        f"the object of entry {seq} ({key}) holds entry {parsed.seq}",
                    )
                )
            entries.append(parsed)

        head = self.head()
        if head is None and records:
            problems.append(
                ChainProblem(
                    None,
                    ProblemKind.HEAD_MISSING,
                    f"the head record {HEAD_KEY} is missing, so entries cut off at the end "
                    "cannot be detected",
                )
            )
        problems.extend(verify_chain(entries, anchor=head))
        if anchor is not None:
            problems.extend(check_anchor(entries, anchor))
        problems.extend(self._history_problems())
        return sorted(problems, key=lambda p: (p.seq is None, p.seq or 0))

    def _history_problems(self) -> list[ChainProblem]:
        """Overwrites and deletions that the bucket's version history still shows."""
        problems: list[ChainProblem] = []
        versions: dict[str, list[bool]] = {}  # key -> is_delete_marker per version
        for version in list_versions(self._client, self.bucket, ENTRY_PREFIX):
            versions.setdefault(version.key, []).append(version.is_delete_marker)
        for key, markers in sorted(versions.items()):
            seq = seq_of_key(key)
            stored = markers.count(False)
            if stored > 1:
                problems.append(
                    ChainProblem(
                        seq,
                        ProblemKind.OVERWRITTEN,
                        f"entry {seq} was overwritten after it was written: {key} has {stored} "
                        "versions (the oldest is the original)",
                    )
                )
            if any(markers):
                problems.append(
                    ChainProblem(
                        seq,
                        ProblemKind.DELETED,
                        f"entry {seq} was deleted: {key} has a delete marker (the original "
                        "version is still in the bucket's history)",
                    )
                )
        if any(v.is_delete_marker for v in list_versions(self._client, self.bucket, HEAD_KEY)):
            problems.append(
                ChainProblem(
                    None,
                    ProblemKind.HEAD_MISSING,
                    f"the head record {HEAD_KEY} was deleted at some point (delete marker)",
                )
            )
        return problems
