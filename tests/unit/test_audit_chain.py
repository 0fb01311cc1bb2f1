"""The audit hash chain detects tampering and says which entry and what, in plain words.

Behaviours under test (pure: no S3):
- the first entry has seq 1 and the genesis prev_hash (64 zeros); each next entry has seq + 1
  and the previous entry's hash;
- the hash is sha256 over the documented canonical JSON (sorted keys, no whitespace, UTF-8,
  `at` in UTC as YYYY-MM-DDTHH:MM:SS.ffffffZ), recomputed here by hand, not by the module;
- the stored line round-trips to an equal entry; times in other zones are stored in UTC;
- an intact chain has no problems;
- an EDITED entry (content changed, hash kept) is reported at its seq and nowhere else;
- an entry edited AND rehashed breaks the link of the next entry (REPLACED);
- a DROPPED entry in the middle or at the start is reported with the missing seqs;
- a REORDERED pair is reported; reordering with renumbered seqs shows up as edits;
- a DUPLICATE seq is reported;
- truncation of the tail is NOT detectable from the entries alone (documented limitation),
  and neither is rewriting an entry together with everything after it; an anchor (seq and hash
  of a head seen earlier) detects both (TRUNCATED, REWRITTEN), and a lagging anchor is fine;
- invalid entries (bad action, naive time) are refused by the model;
- signatures: entries signed with the controller's key verify; a forged entry that chains
  perfectly (valid hash and link) but has no signature is named UNSIGNED, one signed with
  another key or carrying someone else's signature is named BAD_SIGNATURE; editing a signed
  entry's key (idempotency key) breaks its hash; the signature is over the documented message;
- the key (idempotency key) is covered by the hash and left out when unset, so entries from
  before keys existed keep their hash;
- key files: PEM, raw and base64 keys load to the same signer; public keys round-trip through
  their published base64; a key file readable by others, or not an Ed25519 key, is refused
  naming TRE_AUDIT_SIGNING_KEY_FILE and the fix.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from provisioner.audit.chain import (
    GENESIS_HASH,
    SIGNATURE_CONTEXT,
    AuditEntry,
    ChainAnchor,
    ChainProblem,
    ProblemKind,
    next_entry,
    public_key_from_b64,
    public_key_to_b64,
    sign_entry,
    signature_valid,
    verify_chain,
)
from provisioner.audit.signing import AuditSigner
from provisioner.errors import InvalidInputError, NotFoundError

T0 = dt.datetime(2026, 3, 1, 9, 30, tzinfo=dt.UTC)


def _chain(n: int) -> list[AuditEntry]:
    entries: list[AuditEntry] = []
    prev = None
    for i in range(n):
        prev = next_entry(
            prev,
            actor="alice" if i % 2 else "controller",
            action="request.approve" if i % 2 else "workspace.provision",
            subject=f"accessrequest/req-{i}",
            details={"step": i, "comment": "ok"},
            at=T0 + dt.timedelta(minutes=i),
        )
        entries.append(prev)
    return entries


def _rehash(entry: AuditEntry) -> AuditEntry:
    return entry.model_copy(update={"hash": entry.computed_hash()})


def _kinds(problems: list[ChainProblem]) -> list[tuple[int | None, ProblemKind]]:
    return [(p.seq, p.kind) for p in problems]


def test_first_entry_starts_from_genesis_and_next_links_to_it() -> None:
    first, second = _chain(2)
    assert (first.seq, first.prev_hash) == (1, GENESIS_HASH)
    assert (second.seq, second.prev_hash) == (2, first.hash)


def test_hash_is_sha256_of_the_documented_canonical_json() -> None:
    entry = next_entry(
        None,
        actor="a.jansen@umc.nl",
        action="dataset.register",
        subject="dataset/cohort-é",
        details={"z": 1, "a": [True, None, 2.5]},
        at=dt.datetime(2026, 3, 1, 10, 0, 0, 5, tzinfo=dt.timezone(dt.timedelta(hours=1))),
    )
    expected_text = (
        '{"action":"dataset.register","actor":"a.jansen@umc.nl","at":"2026-03-01T09:00:00.000005Z",'
        '"details":{"a":[true,null,2.5],"z":1},"prev_hash":"' + "0" * 64 + '",'
        '"seq":1,"subject":"dataset/cohort-é"}'
    )
    assert entry.hash == hashlib.sha256(expected_text.encode("utf-8")).hexdigest()
    # The stored line is the same canonical form with the hash added, plus a newline.
    stored = json.loads(entry.to_json_line())
    assert entry.to_json_line() == (
        json.dumps(stored, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n"
    )
    assert "é".encode() in entry.to_json_line().encode("utf-8")  # UTF-8, not \\u escapes


def test_stored_line_round_trips_and_times_are_kept_in_utc() -> None:
    entry = _chain(1)[0]
    again = AuditEntry.from_json_line(entry.to_json_line())
    assert again == entry
    assert again.computed_hash() == entry.hash
    assert again.at.tzinfo == dt.UTC


def test_intact_chain_has_no_problems() -> None:
    assert verify_chain(_chain(6)) == []
    assert verify_chain([]) == []


def test_edited_entry_is_reported_at_its_seq_only() -> None:
    entries = _chain(5)
    entries[2] = entries[2].model_copy(update={"details": {"step": 2, "comment": "changed"}})
    problems = verify_chain(entries)
    assert _kinds(problems) == [(3, ProblemKind.EDITED)]
    assert problems[0].message.startswith("entry 3 was edited: its content hashes to ")


def test_edited_and_rehashed_entry_breaks_the_next_link() -> None:
    entries = _chain(5)
    entries[2] = _rehash(entries[2].model_copy(update={"actor": "mallory"}))
    problems = verify_chain(entries)
    assert _kinds(problems) == [(4, ProblemKind.REPLACED)]
    assert "entry 4 does not follow entry 3" in problems[0].message


def test_dropped_entry_in_the_middle_is_reported() -> None:
    entries = _chain(5)
    del entries[2]
    problems = verify_chain(entries)
    assert _kinds(problems) == [(3, ProblemKind.DROPPED)]
    assert problems[0].message == "entry 3 is missing: the chain jumps from entry 2 to entry 4"


def test_dropped_entries_at_the_start_are_reported() -> None:
    entries = _chain(5)[2:]
    problems = verify_chain(entries)
    assert _kinds(problems) == [(1, ProblemKind.DROPPED)]
    assert problems[0].message == (
        "entries 1 to 2 are missing: the chain jumps from the start to entry 3"
    )


def test_first_entry_must_start_from_genesis() -> None:
    first = _rehash(_chain(1)[0].model_copy(update={"prev_hash": "f" * 64}))
    assert _kinds(verify_chain([first])) == [(1, ProblemKind.REPLACED)]


def test_reordered_pair_is_reported() -> None:
    entries = _chain(5)
    entries[1], entries[2] = entries[2], entries[1]
    problems = verify_chain(entries)
    assert _kinds(problems) == [(2, ProblemKind.REORDERED)]
    assert problems[0].message == (
        "entries 3 and 2 are out of order: entry 2 is stored after entry 3"
    )


def test_reordered_pair_with_renumbered_seqs_shows_up_as_edits() -> None:
    entries = _chain(5)
    second, third = entries[1], entries[2]
    entries[1] = third.model_copy(update={"seq": 2})
    entries[2] = second.model_copy(update={"seq": 3})
    kinds = _kinds(verify_chain(entries))
    assert (2, ProblemKind.EDITED) in kinds
    assert (3, ProblemKind.EDITED) in kinds


def test_duplicate_seq_is_reported() -> None:
    entries = _chain(3)
    entries.insert(2, entries[1])
    assert (2, ProblemKind.DUPLICATE) in _kinds(verify_chain(entries))


def test_truncated_tail_is_not_detectable_without_an_anchor() -> None:
    # Documented limitation: a prefix of a valid chain is itself a valid chain.
    assert verify_chain(_chain(6)[:4]) == []


def test_anchor_detects_truncated_tail() -> None:
    entries = _chain(6)
    head = ChainAnchor.of(entries[-1])
    problems = verify_chain(entries[:4], anchor=head)
    assert _kinds(problems) == [(5, ProblemKind.TRUNCATED)]
    assert problems[0].message == (
        "the log ends at entry 4 but its head was entry 6: entries 5 to 6 are missing from the end"
    )
    assert _kinds(verify_chain([], anchor=head)) == [(1, ProblemKind.TRUNCATED)]


def test_rewrite_from_an_entry_onwards_needs_the_anchor() -> None:
    entries = _chain(6)
    head = ChainAnchor.of(entries[-1])
    # Rewrite entry 3 and recompute every later entry: the chain alone is consistent again.
    forged = entries[:2]
    for original in entries[2:]:
        forged.append(
            next_entry(
                forged[-1],
                actor="mallory" if original.seq == 3 else original.actor,
                action=original.action,
                subject=original.subject,
                details=original.details,
                at=original.at,
            )
        )
    assert verify_chain(forged) == []
    problems = verify_chain(forged, anchor=head)
    assert _kinds(problems) == [(6, ProblemKind.REWRITTEN)]


def test_lagging_anchor_is_fine() -> None:
    entries = _chain(6)
    assert verify_chain(entries, anchor=ChainAnchor.of(entries[3])) == []
    assert verify_chain(entries, anchor=ChainAnchor(seq=0, hash=GENESIS_HASH)) == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        pytest.param("action", "Request Approve", id="action-not-dotted-lower-case"),
        pytest.param("at", dt.datetime(2026, 3, 1, 9, 30), id="naive-time"),
        pytest.param("seq", 0, id="seq-starts-at-1"),
        pytest.param("prev_hash", "xyz", id="prev-hash-not-hex"),
    ],
)
def test_invalid_entries_are_refused(field: str, value: object) -> None:
    data = _chain(1)[0].model_dump()
    data[field] = value
    with pytest.raises(ValidationError):
        AuditEntry.model_validate(data)


# --- signatures and idempotency keys -----------------------------------------------------------

CONTROLLER = AuditSigner(Ed25519PrivateKey.from_private_bytes(bytes(range(32))))
MALLORY = AuditSigner(Ed25519PrivateKey.from_private_bytes(bytes(range(32, 64))))


def _signed_chain(n: int, signer: AuditSigner = CONTROLLER) -> list[AuditEntry]:
    entries: list[AuditEntry] = []
    prev = None
    for i in range(n):
        prev = next_entry(
            prev,
            actor="tre-controller",
            action="request.phase",
            subject=f"accessrequest/req-{i}",
            details={"to": "Approved"},
            at=T0 + dt.timedelta(minutes=i),
            key=f"phase/uid-{i}/Approved",
            sign=signer.sign_message,
        )
        entries.append(prev)
    return entries


def test_signed_chain_verifies_with_the_controllers_public_key() -> None:
    entries = _signed_chain(4)
    assert verify_chain(entries, public_key=CONTROLLER.public_key) == []
    assert all(signature_valid(e, CONTROLLER.public_key) for e in entries)
    again = [AuditEntry.from_json_line(e.to_json_line()) for e in entries]
    assert again == entries  # signature and key survive the stored form


def test_signature_is_ed25519_over_the_context_and_the_hash() -> None:
    entry = _signed_chain(1)[0]
    assert entry.signature is not None
    raw = base64.b64decode(entry.signature)
    CONTROLLER.public_key.verify(raw, SIGNATURE_CONTEXT + entry.hash.encode("ascii"))
    assert CONTROLLER.sign(entry.hash) == entry.signature


def test_forged_entry_with_a_valid_hash_but_no_signature_is_named() -> None:
    entries = _signed_chain(3)
    # Someone with write access to the bucket appends an entry that chains perfectly.
    forged = next_entry(
        entries[-1],
        actor="tre-controller",
        action="request.phase",
        subject="accessrequest/mine",
        details={"to": "Approved"},
        at=T0 + dt.timedelta(hours=1),
        key="phase/uid-mine/Approved",
    )
    problems = verify_chain([*entries, forged], public_key=CONTROLLER.public_key)
    assert _kinds(problems) == [(4, ProblemKind.UNSIGNED)]
    assert problems[0].message == (
        "entry 4 (request.phase by tre-controller) is not signed: it was not written by the "
        "controller, which signs every entry (forged?)"
    )
    # Without the public key the chain itself looks intact: that is why verify needs it.
    assert verify_chain([*entries, forged]) == []


def test_entry_signed_with_another_key_is_named() -> None:
    entries = _signed_chain(2)
    forged = next_entry(
        entries[-1],
        actor="tre-controller",
        action="workspace.phase",
        subject="workspace/x",
        details={},
        at=T0 + dt.timedelta(hours=1),
        sign=MALLORY.sign_message,
    )
    problems = verify_chain([*entries, forged], public_key=CONTROLLER.public_key)
    assert _kinds(problems) == [(3, ProblemKind.BAD_SIGNATURE)]
    assert "does not verify" in problems[0].message


def test_signature_copied_from_another_entry_is_named() -> None:
    first, second = _signed_chain(2)
    swapped = second.model_copy(update={"signature": first.signature})
    assert _kinds(verify_chain([first, swapped], public_key=CONTROLLER.public_key)) == [
        (2, ProblemKind.BAD_SIGNATURE)
    ]


def test_edited_key_breaks_the_hash_and_a_rehash_breaks_the_signature() -> None:
    first, second = _signed_chain(2)
    edited = second.model_copy(update={"key": "phase/other/Approved"})
    assert _kinds(verify_chain([first, edited], public_key=CONTROLLER.public_key)) == [
        (2, ProblemKind.EDITED)
    ]
    rehashed = _rehash(edited)
    assert _kinds(verify_chain([first, rehashed], public_key=CONTROLLER.public_key)) == [
        (2, ProblemKind.BAD_SIGNATURE)
    ]


def test_key_is_hashed_when_set_and_left_out_when_not() -> None:
    unkeyed = _chain(1)[0]
    assert "key" not in json.loads(unkeyed.to_json_line())
    assert "signature" not in json.loads(unkeyed.to_json_line())
    keyed = next_entry(
        None,
        actor=unkeyed.actor,
        action=unkeyed.action,
        subject=unkeyed.subject,
        details=unkeyed.details,
        at=unkeyed.at,
        key="decision/uid-1/0",
    )
    assert keyed.content() == {**unkeyed.content(), "key": "decision/uid-1/0"}
    assert keyed.hash == hashlib.sha256(canonical(keyed.content())).hexdigest()
    assert keyed.hash != unkeyed.hash


def canonical(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def test_sign_entry_adds_only_the_signature() -> None:
    entry = _chain(1)[0]
    signed = sign_entry(entry, CONTROLLER.sign_message)
    assert signed.model_copy(update={"signature": None}) == entry
    assert signed.computed_hash() == entry.hash


def test_public_key_round_trips_through_its_published_form() -> None:
    text = CONTROLLER.public_key_b64
    assert text == public_key_to_b64(CONTROLLER.public_key)
    assert len(base64.b64decode(text)) == 32
    entry = _signed_chain(1)[0]
    assert signature_valid(entry, public_key_from_b64(text))
    with pytest.raises(ValueError, match="32 bytes"):
        public_key_from_b64(base64.b64encode(b"short").decode())


@pytest.mark.parametrize("form", ["pem", "raw", "base64"])
def test_key_file_forms_load_the_same_key(form: str, tmp_path: Path) -> None:
    private = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    path = tmp_path / "key"
    if form == "pem":
        AuditSigner(private).write(path)
        assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    else:
        raw = private.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        path.write_bytes(raw if form == "raw" else base64.b64encode(raw) + b"\n")
        path.chmod(0o600)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = AuditSigner.from_file(path)
    assert loaded.public_key_b64 == CONTROLLER.public_key_b64
    assert "PRIVATE" not in repr(loaded)


def test_signer_never_overwrites_a_key_file(tmp_path: Path) -> None:
    path = tmp_path / "key"
    CONTROLLER.write(path)
    with pytest.raises(FileExistsError):
        MALLORY.write(path)
    assert AuditSigner.from_file(path).public_key_b64 == CONTROLLER.public_key_b64


def test_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "key"
    CONTROLLER.write(path)
    path.chmod(0o644)
    with pytest.raises(InvalidInputError) as refused:
        AuditSigner.from_file(path)
    assert str(refused.value) == (
        f"TRE_AUDIT_SIGNING_KEY_FILE: {path} has mode 0644, so users other than the "
        "controller may read or change the audit signing key; run 'chmod 600 "
        f"{path}' (a mounted Secret: set defaultMode: 0400)"
    )
    path.chmod(0o440)  # group read: kubelet's fsGroup handling of a mounted Secret
    assert AuditSigner.from_file(path).public_key_b64 == CONTROLLER.public_key_b64


def test_key_file_that_is_not_an_ed25519_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_bytes(b"not a key")
    path.chmod(0o600)
    with pytest.raises(InvalidInputError, match=r"TRE_AUDIT_SIGNING_KEY_FILE: .* is not an "):
        AuditSigner.from_file(path)
    with pytest.raises(NotFoundError, match=r"TRE_AUDIT_SIGNING_KEY_FILE: .* does not exist"):
        AuditSigner.from_file(tmp_path / "missing")
