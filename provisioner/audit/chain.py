"""The audit hash chain, pure: entries, their canonical bytes, and verification. No I/O.

Each entry commits to the one before it::

    hash = sha256( canonical_json( entry without "hash" ) )
    canonical_json = json.dumps(obj, sort_keys=True, separators=(",", ":"),
                                ensure_ascii=False, allow_nan=False).encode("utf-8")

The first entry has seq 1 and prev_hash = 64 zeros (`GENESIS_HASH`); entry n+1 has seq n+1
and prev_hash = hash of entry n. `at` is always written in UTC as
``YYYY-MM-DDTHH:MM:SS.ffffffZ`` by this module itself (not by pydantic's default), so the bytes
and therefore the hashes do not change with a library upgrade.

What `verify_chain` detects, entry by entry, in plain words:

- an EDITED entry: its content no longer matches its own hash;
- a DROPPED entry: a gap in seq (including entries missing before the first one we have);
- a REORDERED pair: seq going backwards in storage order;
- a REPLACED entry: its prev_hash does not match the hash of the entry before it (someone
  changed an entry and recomputed its hash, but not everything after it);
- a DUPLICATE seq.

What a chain alone cannot detect: entries cut off at the END (the shorter chain is itself a
valid chain), and a rewrite of an entry together with every entry after it. Both need an
anchor, a `ChainAnchor` (seq and hash of a head seen earlier) kept where the writer of the log
cannot change it. `verify_chain(..., anchor=...)` then reports TRUNCATED when the chain ends
before the anchor and REWRITTEN when the anchored entry's hash differs. `provisioner.audit.log`
keeps such a head record beside the entries and, on buckets with object lock, also checks the
version history of every entry object; `provisioner.audit.anchor` publishes the head where only
the controller can write it.

Signatures. A hash chain has no key: anyone who may write the bucket can append entries that
chain perfectly. So every entry also carries `signature`, an Ed25519 signature by the
controller's key (only the controller holds it) over::

    SIGNATURE_CONTEXT + hash        (hash as its 64 lower-case hex characters, ASCII)

The hash covers everything else (prev_hash, seq, at, actor, action, subject, details, key), so
the signature does too; the context prefix keeps an audit signature from ever being valid for
anything else the same key might sign. `signature` is base64 (standard alphabet, padded) of the
64 signature bytes and is not itself covered by the hash. `verify_chain(..., public_key=...)`
reports an entry without a signature as UNSIGNED and one whose signature does not verify as
BAD_SIGNATURE: both mean someone other than the controller wrote it.

`key` is the writer's idempotency key (e.g. ``decision/<request uid>/<index>``), so a writer
that derives entries from state can tell which it already wrote. Entries without a key (and
entries written before keys existed) simply leave the field out of the stored and hashed form,
so their hashes do not change.

Signing and checking take key objects or a callable here; loading keys from files is
`provisioner.audit.signing`, so this module stays free of I/O.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import itertools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    field_serializer,
    field_validator,
)

GENESIS_HASH = "0" * 64
HASH_PATTERN = r"^[0-9a-f]{64}$"
# Prefixed to the hash before signing (module docstring): domain separation.
SIGNATURE_CONTEXT: Final = b"ucloud-tre audit entry v1\n"
# Base64 of 64 bytes: 86 characters and "==".
SIGNATURE_PATTERN = r"^[A-Za-z0-9+/]{86}==$"
KEY_PATTERN = r"^[\x21-\x7e]+$"  # printable ASCII, no spaces: safe in messages and logs

# Signs a message with the controller's private key, returns the raw signature bytes.
SignFunction = Callable[[bytes], bytes]


def canonical_json(value: object) -> bytes:
    """The one byte form that hashes are computed over: sorted keys, no whitespace, UTF-8."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def format_time(value: dt.datetime) -> str:
    """`value` in UTC with microseconds and a Z, e.g. 2026-01-31T09:30:00.000000Z."""
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class AuditEntry(BaseModel):
    """One audit record: who did what to which object, when, and the link to its predecessor."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seq: int = Field(ge=1, description="Position in the chain, starting at 1, no gaps.")
    at: AwareDatetime = Field(description="When it happened (stored in UTC).")
    actor: str = Field(min_length=1, max_length=256, description="Who: a user or service.")
    action: str = Field(
        min_length=1,
        max_length=100,
        pattern=r"^[a-z][a-z0-9._-]*$",
        description="What, dotted lower case, e.g. 'request.approve', 'workspace.teardown'.",
    )
    subject: str = Field(
        min_length=1, max_length=512, description="Which object, e.g. 'accessrequest/x'."
    )
    details: dict[str, JsonValue] = Field(default_factory=dict)
    key: str | None = Field(
        default=None,
        min_length=1,
        max_length=512,
        pattern=KEY_PATTERN,
        description="The writer's idempotency key, e.g. 'decision/<request uid>/<index>': "
        "one event, one key, so a retried append is recognised. Covered by the hash.",
    )
    prev_hash: str = Field(pattern=HASH_PATTERN)
    hash: str = Field(pattern=HASH_PATTERN)
    signature: str | None = Field(
        default=None,
        pattern=SIGNATURE_PATTERN,
        description="Base64 Ed25519 signature by the controller's key over "
        "SIGNATURE_CONTEXT + hash. Not covered by the hash (it signs the hash).",
    )

    @field_validator("at")
    @classmethod
    def _in_utc(cls, value: dt.datetime) -> dt.datetime:
        return value.astimezone(dt.UTC)

    @field_serializer("at")
    def _serialise_at(self, value: dt.datetime) -> str:
        return format_time(value)

    def content(self) -> dict[str, Any]:
        """Everything the hash covers: all fields except `hash` and `signature`, as JSON
        values; `key` only when set (so entries from before keys existed keep their hash)."""
        return _without_unset(self.model_dump(mode="json", exclude={"hash", "signature"}))

    def computed_hash(self) -> str:
        """The hash this entry's content should have."""
        return hashlib.sha256(canonical_json(self.content())).hexdigest()

    def to_json_line(self) -> str:
        """The stored form: canonical JSON of the whole entry plus a newline."""
        return canonical_json(_without_unset(self.model_dump(mode="json"))).decode("utf-8") + "\n"

    @classmethod
    def from_json_line(cls, line: str | bytes) -> AuditEntry:
        return cls.model_validate_json(line)


def _without_unset(dumped: dict[str, Any]) -> dict[str, Any]:
    """`dumped` without the optional fields that are None (`key`, `signature`)."""
    return {k: v for k, v in dumped.items() if not (k in ("key", "signature") and v is None)}


def signing_message(entry_hash: str) -> bytes:
    """The bytes an entry's signature is over: the context prefix and the hash (docstring)."""
    return SIGNATURE_CONTEXT + entry_hash.encode("ascii")


def sign_entry(entry: AuditEntry, sign: SignFunction) -> AuditEntry:
    """`entry` with its signature filled in; `sign` holds the private key (e.g.
    `Ed25519PrivateKey.sign` or `AuditSigner.sign_message`)."""
    signature = base64.b64encode(sign(signing_message(entry.hash))).decode("ascii")
    return entry.model_copy(update={"signature": signature})


def signature_valid(entry: AuditEntry, public_key: Ed25519PublicKey) -> bool:
    """Whether `entry` carries a signature by `public_key` over its recorded hash.

    Only the signature: whether the hash matches the content is `computed_hash`'s question.
    """
    if entry.signature is None:
        return False
    try:
        raw = base64.b64decode(entry.signature, validate=True)
        public_key.verify(raw, signing_message(entry.hash))
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


def next_entry(
    prev: AuditEntry | None,
    *,
    actor: str,
    action: str,
    subject: str,
    details: dict[str, JsonValue],
    at: dt.datetime,
    key: str | None = None,
    sign: SignFunction | None = None,
) -> AuditEntry:
    """The entry that follows `prev` (or the first entry when `prev` is None), hash filled in,
    and signed when `sign` is given."""
    fields: dict[str, Any] = {
        "seq": 1 if prev is None else prev.seq + 1,
        "at": at,
        "actor": actor,
        "action": action,
        "subject": subject,
        "details": details,
        "key": key,
        "prev_hash": GENESIS_HASH if prev is None else prev.hash,
    }
    unsigned = AuditEntry.model_validate({**fields, "hash": GENESIS_HASH})
    entry = unsigned.model_copy(update={"hash": unsigned.computed_hash()})
    return sign_entry(entry, sign) if sign is not None else entry


def public_key_to_b64(public_key: Ed25519PublicKey) -> str:
    """The 32 raw bytes of an Ed25519 public key, base64: how it is published."""
    raw = public_key.public_bytes(
        encoding=serialization.Encoding.Raw, format=serialization.PublicFormat.Raw
    )
    return base64.b64encode(raw).decode("ascii")


def public_key_from_b64(text: str) -> Ed25519PublicKey:
    """The inverse of `public_key_to_b64`; ValueError naming what is wrong."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except binascii.Error as exc:
        raise ValueError(f"not base64: {exc}") from exc
    if len(raw) != 32:
        raise ValueError(f"an Ed25519 public key has 32 bytes, this has {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


class ChainAnchor(BaseModel):
    """A head of the chain seen earlier: entry `seq` had `hash`.

    seq 0 with the genesis hash is the head of an empty chain.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    seq: int = Field(ge=0)
    hash: str = Field(pattern=HASH_PATTERN)

    def to_json(self) -> str:
        return canonical_json(self.model_dump(mode="json")).decode("utf-8") + "\n"

    @classmethod
    def of(cls, entry: AuditEntry) -> ChainAnchor:
        return cls(seq=entry.seq, hash=entry.hash)


class ProblemKind(StrEnum):
    EDITED = "edited"  # content does not match its own hash
    DROPPED = "dropped"  # seq gap: entries missing
    REORDERED = "reordered"  # seq goes backwards in storage order
    REPLACED = "replaced"  # prev_hash does not match the entry before
    DUPLICATE = "duplicate"  # the same seq twice
    TRUNCATED = "truncated"  # the chain ends before the anchored head
    REWRITTEN = "rewritten"  # the anchored entry has another hash now
    # Found by the storage layer (provisioner.audit.log), not by the pure chain:
    UNREADABLE = "unreadable"  # an entry object that is not a valid entry
    MISPLACED = "misplaced"  # an entry stored under another seq's key
    OVERWRITTEN = "overwritten"  # an entry object has more than one version
    DELETED = "deleted"  # an entry object has a delete marker
    HEAD_MISSING = "head-missing"  # entries exist but the head record does not
    # Signatures (verify_chain with a public key):
    UNSIGNED = "unsigned"  # no signature: not written by the controller
    BAD_SIGNATURE = "bad-signature"  # a signature the controller's public key does not verify
    # The published head (provisioner.audit.anchor):
    NOT_ANCHORED = "not-anchored"  # no head published, or published for another bucket


@dataclass(frozen=True)
class ChainProblem:
    """One thing wrong with the chain: which entry (seq) and what, in plain words."""

    seq: int | None
    kind: ProblemKind
    message: str

    def __str__(self) -> str:
        return self.message


def verify_chain(
    entries: Sequence[AuditEntry],
    *,
    anchor: ChainAnchor | None = None,
    public_key: Ed25519PublicKey | None = None,
) -> list[ChainProblem]:
    """Everything wrong with `entries` (given in storage order); empty when the chain is intact.

    Without an anchor, a chain cut off at the end is not detected; without the controller's
    `public_key`, neither is an entry appended by someone else (see the module docstring).
    """
    problems: list[ChainProblem] = []
    if public_key is not None:
        problems.extend(check_signatures(entries, public_key))
    for before, after in itertools.pairwise(entries):
        if after.seq < before.seq:
            problems.append(
                ChainProblem(
                    after.seq,
                    ProblemKind.REORDERED,
                    f"entries {before.seq} and {after.seq} are out of order: entry {after.seq} "
                    f"is stored after entry {before.seq}",
                )
            )

    by_seq = sorted(entries, key=lambda e: e.seq)
    previous: AuditEntry | None = None
    for entry in by_seq:
        computed = entry.computed_hash()
        if computed != entry.hash:
            problems.append(
                ChainProblem(
                    entry.seq,
                    ProblemKind.EDITED,
                    f"entry {entry.seq} was edited: its content hashes to {computed[:12]}... "
                    f"but it records {entry.hash[:12]}...",
                )
            )
        expected_seq = 1 if previous is None else previous.seq + 1
        if previous is not None and entry.seq == previous.seq:
            problems.append(
                ChainProblem(
                    entry.seq, ProblemKind.DUPLICATE, f"entry {entry.seq} appears more than once"
                )
            )
            continue
        if entry.seq > expected_seq:
            missing = (
                f"entry {expected_seq} is"
                if entry.seq == expected_seq + 1
                else f"entries {expected_seq} to {entry.seq - 1} are"
            )
            problems.append(
                ChainProblem(
                    expected_seq,
                    ProblemKind.DROPPED,
                    f"{missing} missing: the chain jumps from "
                    f"{'the start' if previous is None else f'entry {previous.seq}'} "
                    f"to entry {entry.seq}",
                )
            )
        elif previous is None and entry.prev_hash != GENESIS_HASH:
            problems.append(
                ChainProblem(
                    entry.seq,
                    ProblemKind.REPLACED,
                    f"entry {entry.seq} is the first entry but does not start from the genesis "
                    "hash (64 zeros)",
                )
            )
        elif previous is not None and entry.prev_hash != previous.hash:
            problems.append(
                ChainProblem(
                    entry.seq,
                    ProblemKind.REPLACED,
                    f"entry {entry.seq} does not follow entry {previous.seq}: it links to "
                    f"{entry.prev_hash[:12]}... but entry {previous.seq} has hash "
                    f"{previous.hash[:12]}...; entry {previous.seq} was replaced or rehashed",
                )
            )
        previous = entry

    if anchor is not None:
        problems.extend(check_anchor(entries, anchor))
    return problems


def check_signatures(
    entries: Sequence[AuditEntry], public_key: Ed25519PublicKey
) -> list[ChainProblem]:
    """UNSIGNED and BAD_SIGNATURE for every entry not signed by `public_key`'s private key."""
    problems: list[ChainProblem] = []
    for entry in sorted(entries, key=lambda e: e.seq):
        if entry.signature is None:
            problems.append(
                ChainProblem(
                    entry.seq,
                    ProblemKind.UNSIGNED,
                    f"entry {entry.seq} ({entry.action} by {entry.actor}) is not signed: it "
                    "was not written by the controller, which signs every entry (forged?)",
                )
            )
        elif not signature_valid(entry, public_key):
            problems.append(
                ChainProblem(
                    entry.seq,
                    ProblemKind.BAD_SIGNATURE,
                    f"entry {entry.seq} ({entry.action} by {entry.actor}) has a signature "
                    "that the controller's public key does not verify: forged, or signed by "
                    "another key",
                )
            )
    return problems


def check_anchor(entries: Sequence[AuditEntry], anchor: ChainAnchor) -> list[ChainProblem]:
    """Whether `entries` still reach `anchor` with the same hash (TRUNCATED / REWRITTEN).

    The anchor may lag behind the chain (entries appended since it was taken are fine).
    """
    by_seq = sorted(entries, key=lambda e: e.seq)
    last = by_seq[-1].seq if by_seq else 0
    if last < anchor.seq:
        lost = (
            f"entry {anchor.seq} is"
            if last + 1 == anchor.seq
            else f"entries {last + 1} to {anchor.seq} are"
        )
        return [
            ChainProblem(
                last + 1,
                ProblemKind.TRUNCATED,
                f"the log ends at entry {last} but its head was entry {anchor.seq}: {lost} "
                "missing from the end",
            )
        ]
    anchored = [e for e in by_seq if e.seq == anchor.seq]
    if anchored and all(e.hash != anchor.hash for e in anchored):
        return [
            ChainProblem(
                anchor.seq,
                ProblemKind.REWRITTEN,
                f"entry {anchor.seq} has hash {anchored[0].hash[:12]}... but the head record "
                f"says {anchor.hash[:12]}...: the chain was rewritten up to there",
            )
        ]
    return []
