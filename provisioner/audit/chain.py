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
version history of every entry object.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

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
    prev_hash: str = Field(pattern=HASH_PATTERN)
    hash: str = Field(pattern=HASH_PATTERN)

    @field_validator("at")
    @classmethod
    def _in_utc(cls, value: dt.datetime) -> dt.datetime:
        return value.astimezone(dt.UTC)

    @field_serializer("at")
    def _serialise_at(self, value: dt.datetime) -> str:
        return format_time(value)

    def content(self) -> dict[str, Any]:
        """Everything the hash covers: all fields except `hash`, as JSON values."""
        return self.model_dump(mode="json", exclude={"hash"})

    def computed_hash(self) -> str:
        """The hash this entry's content should have."""
        return hashlib.sha256(canonical_json(self.content())).hexdigest()

    def to_json_line(self) -> str:
        """The stored form: canonical JSON of the whole entry plus a newline."""
        return canonical_json(self.model_dump(mode="json")).decode("utf-8") + "\n"

    @classmethod
    def from_json_line(cls, line: str | bytes) -> AuditEntry:
        return cls.model_validate_json(line)


def next_entry(
    prev: AuditEntry | None,
    *,
    actor: str,
    action: str,
    subject: str,
    details: dict[str, JsonValue],
    at: dt.datetime,
) -> AuditEntry:
    """The entry that follows `prev` (or the first entry when `prev` is None), hash filled in."""
    fields: dict[str, Any] = {
        "seq": 1 if prev is None else prev.seq + 1,
        "at": at,
        "actor": actor,
        "action": action,
        "subject": subject,
        "details": details,
        "prev_hash": GENESIS_HASH if prev is None else prev.hash,
    }
    unsigned = AuditEntry.model_validate({**fields, "hash": GENESIS_HASH})
    return unsigned.model_copy(update={"hash": unsigned.computed_hash()})


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


@dataclass(frozen=True)
class ChainProblem:
    """One thing wrong with the chain: which entry (seq) and what, in plain words."""

    seq: int | None
    kind: ProblemKind
    message: str

    def __str__(self) -> str:
        return self.message


def verify_chain(
    entries: Sequence[AuditEntry], *, anchor: ChainAnchor | None = None
) -> list[ChainProblem]:
    """Everything wrong with `entries` (given in storage order); empty when the chain is intact.

    Without an anchor, a chain cut off at the end is not detected (see the module docstring).
    """
    problems: list[ChainProblem] = []
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
