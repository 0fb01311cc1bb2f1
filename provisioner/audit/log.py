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
that too. Against a writer of the bucket who rewrites head.json as well, the controller
publishes the head where that writer cannot change it (`provisioner.audit.anchor`, a
controller-only ConfigMap) and `verify(anchor=...)` checks against that.
The head is updated after the entry, compare-and-swap and only forwards; if that update is
lost (crash, race), the head lags, which is harmless: an anchor only has to be reached.

Who writes. Only the controller: every entry is signed with its key (`AuditSigner`, chain.py
says what is signed), and a log opened without a signer is read-only. An entry that someone
else put into the bucket, however well it chains, fails `verify` as UNSIGNED or BAD_SIGNATURE,
and the controller refuses to build on it (`_tail`). Each entry carries the writer's
idempotency `key`; `keys()` tells the controller which events are already recorded, so it can
derive entries from cluster state on every pass and append only the missing ones
(`append_missing`).

Opening (`open_audit_log`) never creates anything; the bucket is made by `tre install` and
`tre dev up` (`ensure_audit_bucket`). Both refuse, rather than silently writing unlocked
entries, when `TRE_AUDIT_RETENTION_DAYS` asks for retention and the bucket has no object lock.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from pydantic import JsonValue, ValidationError

from provisioner.audit.chain import (
    GENESIS_HASH,
    AuditEntry,
    ChainAnchor,
    ChainProblem,
    ProblemKind,
    check_anchor,
    next_entry,
    signature_valid,
    verify_chain,
)
from provisioner.audit.signing import AuditSigner
from provisioner.errors import (
    AuditChainError,
    ConflictError,
    NotFoundError,
    PermanentError,
    TreError,
)
from provisioner.planning.project import AuditEvent
from provisioner.storage.s3 import (
    LockMode,
    bucket_exists,
    ensure_bucket,
    expect_bucket_owner,
    get_object,
    list_keys,
    list_versions,
    object_lock_enabled,
    put_object,
)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from mypy_boto3_s3 import S3Client

    from provisioner.models.settings import Settings

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


def ensure_audit_bucket(
    client: S3Client, bucket: str, *, retention_days: int, owner: str | None = None
) -> bool:
    """Create the audit bucket (versioned, object lock asked for); idempotent. Returns whether
    object lock is on. For install and dev paths only: opening the log never creates it.

    Raises PermanentError (and leaves the bucket as it is) when `retention_days` > 0 but the
    bucket has no object lock: entries would otherwise be written unlocked, silently. `owner`
    (TRE_AUDIT_BUCKET_OWNER): every call on the bucket states it (`expect_bucket_owner`).
    """
    if owner is not None:
        expect_bucket_owner(client, bucket, owner)
    locked = ensure_bucket(client, bucket, versioning=True, object_lock=True)
    _require_lock(bucket, retention_days, locked=locked)
    return locked


def _require_lock(bucket: str, retention_days: int, *, locked: bool) -> None:
    if retention_days > 0 and not locked:
        raise PermanentError(
            f"TRE_AUDIT_RETENTION_DAYS={retention_days} asks for each audit entry to be "
            f"locked, but bucket {bucket!r} does not have S3 object lock enabled, so entries "
            "could be deleted or overwritten; enable object lock on the bucket (it can only be "
            "enabled on a versioned bucket, or at creation), or set "
            "TRE_AUDIT_RETENTION_DAYS=0 to write entries without a lock on purpose"
        )


def open_audit_log(
    settings: Settings, s3: S3Client, *, signer: AuditSigner | None = None
) -> AuditLog:
    """The audit log of `settings.audit_bucket`. Creates nothing.

    Without `signer` the log is read-only (`verify`, `read_all`, `export_jsonl`, `keys`), which
    is all anyone but the controller needs. With it (the controller) the log is opened for
    writing, and that refuses a bucket without object lock when
    `settings.audit_retention_days` > 0 (PermanentError naming the setting and the fix).
    NotFoundError when the bucket does not exist. With `settings.audit_bucket_owner`, every
    call on the bucket, from the first, states that owner (`expect_bucket_owner`): where the
    server checks it, a bucket of another account is refused before anything is read.
    """
    bucket = settings.audit_bucket
    if settings.audit_bucket_owner is not None:
        expect_bucket_owner(s3, bucket, settings.audit_bucket_owner)
    if not bucket_exists(s3, bucket):
        raise NotFoundError(
            f"audit bucket {bucket!r} (TRE_AUDIT_BUCKET) does not exist; 'tre install' creates "
            "it with object lock (locally 'tre dev up' does)"
        )
    days = settings.audit_retention_days
    if signer is not None:
        _require_lock(bucket, days, locked=object_lock_enabled(s3, bucket))
    return AuditLog(
        s3,
        bucket,
        retention=dt.timedelta(days=days) if days > 0 else None,
        signer=signer,
        expected_owner=settings.audit_bucket_owner,
    )


class AuditLog:
    """The audit chain stored in `bucket`.

    retention: how long each entry is locked (object lock, `lock_mode`) after it was written;
    None writes no retention (for buckets without object lock). clock: where `at` comes from.
    signer: the controller's key; without it the log is read-only. expected_owner: the account
    every call on `bucket` states as its owner (`expect_bucket_owner`). Use `open_audit_log`,
    which checks the bucket first.
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
        signer: AuditSigner | None = None,
        expected_owner: str | None = None,
    ) -> None:
        if expected_owner is not None:
            expect_bucket_owner(client, bucket, expected_owner)
        self._client = client
        self.bucket = bucket
        self._retention = retention
        self._lock_mode: LockMode = lock_mode
        self._clock = clock
        self._max_attempts = max_attempts
        self._signer = signer

    @property
    def public_key(self) -> Ed25519PublicKey | None:
        """The key entries are checked against by default: the signer's, if this log has one."""
        return self._signer.public_key if self._signer is not None else None

    def _where(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{key}"

    # --- writing -------------------------------------------------------------------------------

    def append(
        self,
        actor: str,
        action: str,
        subject: str,
        details: Mapping[str, JsonValue] | None = None,
        *,
        key: str | None = None,
    ) -> AuditEntry:
        """Write the next entry, signed, and return it.

        key: the event's idempotency key (e.g. ``decision/<request uid>/<index>``). When the
        newest entry already carries it (a retry after a crash or a lost reply), that entry is
        returned and nothing is written; older duplicates are the caller's to avoid with
        `keys()`. None only for callers that have no stable key for their event (the CLI's
        own entries, until the controller derives them from the cluster).

        Raises PermanentError when the log was opened without a signer (read-only),
        AuditChainError (and writes nothing) when the tail of the log is damaged or not signed
        by this signer's key, and ConflictError when other writers kept winning the race for
        the next seq.
        """
        signer = self._signer
        if signer is None:
            raise PermanentError(
                f"audit log {self._where()} is open read-only: only the controller writes "
                "audit entries, signed with its key (TRE_AUDIT_SIGNING_KEY_FILE)"
            )
        for attempt in range(self._max_attempts):
            head, head_etag = self._read_head()
            if head is None:
                self._create_head()
                continue
            prev = self._tail(head)
            if key is not None and prev is not None and prev.key == key:
                return prev  # already recorded: the retry of an append whose reply was lost
            entry = next_entry(
                prev,
                actor=actor,
                action=action,
                subject=subject,
                details=dict(details or {}),
                at=self._clock(),
                key=key,
                sign=signer.sign_message,
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

    def append_missing(self, events: Iterable[AuditEvent], known: set[str]) -> list[AuditEntry]:
        """Append, in order, each event whose key is not in `known` (the log's `keys()`, kept
        by the caller across passes); adds the keys written to `known`. Returns the entries
        written. If an append fails, the ones before it are written and in `known`, and the
        rest are simply retried on the next call.
        """
        written: list[AuditEntry] = []
        for event in events:
            if event.key in known:
                continue
            entry = self.append(
                event.actor, event.action, event.subject, event.details, key=event.key
            )
            known.add(event.key)
            written.append(entry)
        return written

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
        elif self.public_key is not None and not signature_valid(tail, self.public_key):
            # Building on it would hide a forged entry inside the controller's chain.
            damage = "it is not signed by the controller's key: someone else wrote it"
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

    def reaches(self, anchor: ChainAnchor) -> bool:
        """Whether the log still holds entry `anchor.seq` with `anchor.hash` (one GET)."""
        if anchor.seq == 0:
            return True
        try:
            body = get_object(self._client, self.bucket, entry_key(anchor.seq)).body
            entry = AuditEntry.from_json_line(body)
        except (NotFoundError, ValidationError):
            return False
        return entry.seq == anchor.seq and entry.hash == anchor.hash

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

    def keys(self) -> set[str]:
        """The idempotency keys of every entry in the log (reads the whole log, in parallel).

        With a public key (a log opened with the controller's signer), only entries signed by
        it count: a forged entry carrying a key must not make the controller skip the real
        event. AuditChainError if an object is not a valid entry (run `verify`).
        """
        public_key = self.public_key
        return {
            e.key
            for e in self.read_all()
            if e.key is not None and (public_key is None or signature_valid(e, public_key))
        }

    def export_jsonl(self) -> str:
        """The whole log as JSON Lines, one canonical entry per line, in seq order."""
        return "".join(entry.to_json_line() for entry in self.read_all())

    # --- verification --------------------------------------------------------------------------

    def verify(
        self,
        *,
        anchor: ChainAnchor | None = None,
        public_key: Ed25519PublicKey | None = None,
    ) -> list[ChainProblem]:
        """Everything wrong with the stored log; empty when it is intact.

        Checks the chain (chain.verify_chain) against the head record, that every entry sits
        under its own seq's key, the version history of every entry object (more than one
        version: overwritten; a delete marker: deleted), the optional external `anchor` (the
        published head), and every entry's signature against `public_key` (default: this
        log's signer's; with neither, signatures are not checked: pass the published key).
        """
        if public_key is None:
            public_key = self.public_key
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
        problems.extend(verify_chain(entries, anchor=head, public_key=public_key))
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
