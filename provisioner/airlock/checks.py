"""Automated checks of a file offered for export: findings for the reviewers, never a decision.

Every check returns a `Finding` (``ok``, ``flag`` or ``not_run`` with a sentence a reviewer
can act on). Nothing here approves or refuses an export; the two output checkers do, with
these findings in front of them. All functions are pure: they read bytes handed to them
(`inspect_file` takes an iterable of chunks, so a 1 GiB object is checked in one streaming
pass with bounded memory) and the rules (`CheckRules`).

The checks and their limits (say them to reviewers as plainly as here):

- **type** (by extension *and* content): the extension must be one of the allowed types, and
  the bytes must look like it: PNG and PDF by their magic numbers, every text type by being
  valid UTF-8 throughout without NUL or other control bytes (tab, CR, LF and form feed
  allowed), JSON and notebooks by starting with '{' or '['. Sniffing proves a file is *not*
  what its name says; it cannot prove a text file holds only what the reviewers think (a CSV
  can carry anything in its cells; a PNG can hide bytes after its end or in ancillary chunks).
- **size**: at most `max_file_bytes`.
- **declared hash**: the bytes read have the sha256 and size the export request declares
  (what the reviewers' votes refer to).
- **small numbers** (CSV/TSV): integer cells from 1 to `small_count_threshold - 1` in
  count-like columns. A column is count-like when its header names a count (n, count, freq,
  total, cases, patients, events, deaths, people, persons, num, number, admissions) or when
  every non-empty cell below the header is a non-negative integer. A heuristic: it misses
  counts in columns with mixed content or written as text ("five"), percentages and rates
  that reveal small denominators, and differencing across tables or files; it flags
  harmless small integers (ages, years since, category codes) in all-integer columns. Zeros
  are not flagged, though structural zeros can disclose too. Suppression markers ("<10",
  "*", "[c]") are not numbers and pass.
- **notebook outputs** (.ipynb): code cells that still carry outputs (tables, plots, printed
  values can hold row-level data). A notebook larger than `notebook_inspect_bytes` is not
  parsed (the parser holds it whole) and is flagged as if it carried outputs.
- **raw dataset copy**: the file's S3 ETag equals that of an object of a dataset mounted in
  the workspace (`DatasetComparison`: the size and ETag the controller listed when it
  verified the dataset, read by `airlock.datasets` from its fingerprint index; the airlock
  never reads a dataset). Same size first, then the ETag: the MD5 of the bytes for an object
  uploaded in one part, and for one uploaded in parts (ETag ``<md5 of part md5s>-<parts>``)
  the same computed over the file cut at each of `MULTIPART_PART_SIZES` that gives that many
  parts. Only byte-identical copies are found: a subset, a re-sorted or re-encoded copy of
  the data is not; nor is a copy of an object uploaded in parts of another size, or of one
  whose ETag is not an MD5 (server-side encryption with KMS or customer keys); datasets on
  NFS are not compared (the controller cannot list them) and are named in the finding. MD5
  is enough here: the check looks for copies, and whoever would dodge it needs no collision,
  only to change one byte (which is why it is a finding for reviewers, not a gate).
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from provisioner.models.settings import Settings


class Outcome(StrEnum):
    OK = "ok"
    FLAG = "flag"  # a reviewer should look; never a refusal by itself
    NOT_RUN = "not_run"  # the check does not apply or could not run


@dataclass(frozen=True)
class Finding:
    check: str
    outcome: Outcome
    detail: str

    def to_dict(self) -> dict[str, str]:
        return {"check": self.check, "outcome": self.outcome.value, "detail": self.detail}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Finding:
        return cls(str(data["check"]), Outcome(data["outcome"]), str(data["detail"]))


class ContentKind(StrEnum):
    TEXT = "text"
    JSON = "json"
    PNG = "png"
    PDF = "pdf"


# Extension (lower case, without the dot) -> what its bytes must look like. The allowed
# subset is a setting (TRE_AIRLOCK_ALLOWED_TYPES); a type missing here cannot be allowed,
# because the airlock would not know how to check it.
FILE_TYPES: dict[str, ContentKind] = {
    "csv": ContentKind.TEXT,
    "tsv": ContentKind.TEXT,
    "txt": ContentKind.TEXT,
    "md": ContentKind.TEXT,
    "log": ContentKind.TEXT,
    "py": ContentKind.TEXT,
    "r": ContentKind.TEXT,
    "sql": ContentKind.TEXT,
    "json": ContentKind.JSON,
    "ipynb": ContentKind.JSON,
    "png": ContentKind.PNG,
    "pdf": ContentKind.PDF,
}
_MAGIC = {ContentKind.PNG: b"\x89PNG\r\n\x1a\n", ContentKind.PDF: b"%PDF-"}
# Well-known formats, named when a file pretends to be something else.
_KNOWN_BINARY = (
    (b"PK\x03\x04", "a zip archive (or xlsx/docx)"),
    (b"\x1f\x8b", "a gzip file"),
    (b"SQLite format 3\x00", "an SQLite database"),
    (b"PAR1", "a Parquet file"),
    (b"\x89HDF", "an HDF5 file"),
    (b"\x93NUMPY", "a NumPy array"),
    (b"\x80", "a Python pickle"),
    (b"\x7fELF", "an executable"),
)
_DISALLOWED_TEXT_BYTES = re.compile(rb"[\x00-\x08\x0b\x0e-\x1f\x7f]")
HEAD_BYTES = 8192  # enough for every magic number and the start of a text file
CHUNK_BYTES = 1 << 20
_COUNT_HEADER = re.compile(
    r"(^|[^a-z])(n|count|counts|freq|frequency|total|cases|patients|events|deaths|people|"
    r"persons|num|number|admissions)([^a-z]|$)",
    re.IGNORECASE,
)
_INTEGER = re.compile(r"^\s*[0-9]+\s*$")
MAX_EXAMPLES = 10
MAX_LINE_CHARS = 16 << 20
MAX_COLUMNS = 4096  # wider tables are checked in their first MAX_COLUMNS columns


@dataclass(frozen=True)
class CheckRules:
    allowed_types: frozenset[str]
    max_file_bytes: int
    small_count_threshold: int
    notebook_inspect_bytes: int = 64 << 20

    @classmethod
    def from_settings(cls, settings: Settings) -> CheckRules:
        return cls(
            allowed_types=frozenset(settings.airlock_allowed_types),
            max_file_bytes=settings.airlock_max_file_bytes,
            small_count_threshold=settings.airlock_small_count_threshold,
        )


# Part sizes tried for a dataset object uploaded in parts: the defaults of the common
# uploaders (5 MiB, S3's smallest part and rclone's; 8 MiB, boto3's, the AWS CLI's and
# Mountpoint's; 15 MiB, s3cmd's; 16 MiB, MinIO's mc) and round sizes above them. A copy of an
# object uploaded in parts of any other size is not recognised (module docstring).
MULTIPART_PART_SIZES = tuple(mib << 20 for mib in (5, 8, 15, 16, 32, 64, 100, 128))


@dataclass(frozen=True)
class DatasetObject:
    """One object of a dataset mounted in the workspace: its size and S3 ETag as the
    controller listed them when it verified the dataset (without quotes)."""

    dataset: str
    key: str
    size: int
    etag: str

    @property
    def parts(self) -> int:
        """How many parts it was uploaded in (its ETag ends in ``-<parts>``); 0 for one."""
        _, dash, parts = self.etag.rpartition("-")
        return int(parts) if dash and parts.isdigit() else 0


def part_sizes_for(size: int, parts: int) -> tuple[int, ...]:
    """The sizes of `MULTIPART_PART_SIZES` that cut `size` bytes into `parts` parts."""
    return tuple(p for p in MULTIPART_PART_SIZES if parts > 0 and -(-size // p) == parts)


class EtagDigest:
    """The S3 ETags a stream of bytes would have once uploaded: in one part (the MD5 of the
    bytes) and in parts of each of `part_sizes` (the MD5 of the parts' MD5s, ``-<parts>``)."""

    def __init__(self, part_sizes: Iterable[int] = ()) -> None:
        self._whole = hashlib.md5(usedforsecurity=False)
        self._parts = [_PartDigests(size) for size in sorted(set(part_sizes))]

    def update(self, chunk: bytes) -> None:
        self._whole.update(chunk)
        for parts in self._parts:
            parts.update(chunk)

    def etags(self) -> frozenset[str]:
        return frozenset([self._whole.hexdigest(), *(p.etag() for p in self._parts)])


class _PartDigests:
    """The MD5 of each `part_size` slice of a stream (16 bytes a part: at most 1,024 parts
    for the largest file an export may carry)."""

    def __init__(self, part_size: int) -> None:
        self.part_size = part_size
        self._current = hashlib.md5(usedforsecurity=False)
        self._filled = 0
        self._digests: list[bytes] = []

    def update(self, chunk: bytes) -> None:
        view = memoryview(chunk)
        while view:
            take = min(len(view), self.part_size - self._filled)
            self._current.update(view[:take])
            self._filled += take
            view = view[take:]
            if self._filled == self.part_size:
                self._digests.append(self._current.digest())
                self._current = hashlib.md5(usedforsecurity=False)
                self._filled = 0

    def etag(self) -> str:
        digests = [*self._digests, *([self._current.digest()] if self._filled else [])]
        return f"{hashlib.md5(b''.join(digests), usedforsecurity=False).hexdigest()}-{len(digests)}"


@dataclass(frozen=True)
class DatasetComparison:
    """What the raw-copy check compares against: the dataset objects of a size being
    exported, and the datasets that could not be compared."""

    objects: tuple[DatasetObject, ...] = ()
    not_compared: tuple[str, ...] = ()  # datasets whose fingerprints could not be read, and why

    def part_sizes(self, size: int) -> frozenset[int]:
        """The part sizes to try for a file of `size` bytes (`EtagDigest`)."""
        return frozenset(
            p for o in self.objects if o.size == size for p in part_sizes_for(o.size, o.parts)
        )


@dataclass(frozen=True)
class FileReport:
    """Everything the automated checks found about one file, for the reviewers."""

    path: str
    size: int
    sha256: str
    findings: tuple[Finding, ...] = field(default_factory=tuple)

    @property
    def flagged(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.outcome is not Outcome.OK)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "size": self.size,
            "sha256": self.sha256,
            "findings": [f.to_dict() for f in self.findings],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FileReport:
        return cls(
            path=str(data["path"]),
            size=int(data["size"]),
            sha256=str(data["sha256"]),
            findings=tuple(Finding.from_dict(f) for f in data["findings"]),
        )


def extension(path: str) -> str:
    name = path.rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[-1].lower() if "." in name.lstrip(".") else ""


def type_refusal(path: str, head: bytes, allowed: Iterable[str]) -> str | None:
    """Why a file may not even be submitted (its type), or None. Same words as `check_type`.

    Submission refuses a type outside the allowed list, and bytes that are plainly not that
    type; the full check runs again on the quarantined bytes (`inspect_file`).
    """
    finding = check_type(path, head, allowed)
    return None if finding.outcome is Outcome.OK else finding.detail


def check_type(path: str, head: bytes, allowed: Iterable[str]) -> Finding:
    """Extension allowed, and the first bytes look like that type (module docstring)."""
    allowed_set = sorted(set(allowed))
    ext = extension(path)
    if ext not in allowed_set or ext not in FILE_TYPES:
        return Finding(
            "type",
            Outcome.FLAG,
            f"{path}: type {('.' + ext) if ext else '(no extension)'} is not allowed; "
            f"allowed: {', '.join('.' + a for a in allowed_set)} (TRE_AIRLOCK_ALLOWED_TYPES); "
            "save the result in one of these formats",
        )
    mismatch = _content_mismatch(FILE_TYPES[ext], head, final=False)
    if mismatch:
        return Finding("type", Outcome.FLAG, f"{path}: named .{ext} but {mismatch}")
    return Finding("type", Outcome.OK, f".{ext}, content consistent with the name")


def _describe_binary(head: bytes) -> str:
    for magic, what in _KNOWN_BINARY:
        if head.startswith(magic):
            return f"its content is {what}"
    return "its content is binary"


def _content_mismatch(kind: ContentKind, head: bytes, *, final: bool) -> str | None:
    """How `head` contradicts `kind`, or None. `final`: head is the whole file."""
    if kind in _MAGIC:
        if head.startswith(_MAGIC[kind]):
            return None
        return _describe_binary(head) if head else "it is empty"
    bad = _DISALLOWED_TEXT_BYTES.search(head)
    if bad:
        offset = bad.start()
        return f"{_describe_binary(head)} (byte {head[offset]:#04x} at offset {offset})"
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=final)
    except UnicodeDecodeError as exc:
        return f"it is not UTF-8 text (invalid byte at offset {exc.start})"
    if kind is ContentKind.JSON:
        start = head.lstrip(b" \t\r\n\xef\xbb\xbf")[:1]
        if start not in (b"{", b"["):
            return "it does not start like JSON ('{' or '[')"
    return None


def check_size(size: int, max_bytes: int) -> Finding:
    if size > max_bytes:
        return Finding("size", Outcome.FLAG, f"{size} bytes, over the limit of {max_bytes} bytes")
    return Finding("size", Outcome.OK, f"{size} bytes (limit {max_bytes})")


def check_declared(size: int, sha256: str, declared_size: int, declared_sha256: str) -> Finding:
    if (size, sha256) != (declared_size, declared_sha256):
        return Finding(
            "declared_hash",
            Outcome.FLAG,
            f"the bytes read ({size} bytes, sha256 {sha256}) are not what the request "
            f"declares ({declared_size} bytes, sha256 {declared_sha256}): the reviewers "
            "would not see what they vote on",
        )
    return Finding("declared_hash", Outcome.OK, "size and sha256 as declared")


def check_raw_copy(size: int, etags: frozenset[str], comparison: DatasetComparison) -> Finding:
    """Whether the file (`size` bytes with the ETags of `EtagDigest`) is a byte-identical copy
    of a dataset object (module docstring)."""
    same_size = [o for o in comparison.objects if o.size == size]
    copies = [o for o in same_size if o.etag in etags]
    caveat = (
        f"; not compared: {', '.join(comparison.not_compared)}" if comparison.not_compared else ""
    )
    in_parts = [o for o in same_size if o.parts and o not in copies]
    if in_parts:
        sizes = ", ".join(str(p >> 20) for p in MULTIPART_PART_SIZES)
        caveat += (
            f"; {len(in_parts)} object(s) of the same size were uploaded in parts and are "
            f"recognised only if those parts were of {sizes} MiB"
        )
    if copies:
        named = ", ".join(f"{o.dataset}:{o.key}" for o in copies[:MAX_EXAMPLES])
        return Finding(
            "raw_dataset_copy",
            Outcome.FLAG,
            f"identical to dataset object(s) {named}: this is a raw copy of the data{caveat}",
        )
    if not comparison.objects and comparison.not_compared:
        return Finding(
            "raw_dataset_copy",
            Outcome.NOT_RUN,
            f"no dataset object could be compared{caveat}",
        )
    return Finding(
        "raw_dataset_copy",
        Outcome.OK,
        f"differs from every dataset object of the same size ({len(same_size)} compared){caveat}",
    )


class _LineTooLong(ValueError):
    pass


def _text_lines(chunks: Iterable[bytes]) -> Iterator[str]:
    """Decoded lines ending in '\\n' (csv.reader joins quoted multi-line cells itself), invalid
    UTF-8 replaced (the type check reports it). Split on '\\n' only: str.splitlines would also
    break inside cells at U+2028 and the like. A line over MAX_LINE_CHARS raises
    `_LineTooLong`, so a file without newlines cannot make this hold it whole."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pending = ""
    for chunk in chunks:
        pending += decoder.decode(chunk)
        *lines, pending = pending.split("\n")
        for line in lines:
            yield line + "\n"
        if len(pending) > MAX_LINE_CHARS:
            raise _LineTooLong(f"a line is over {MAX_LINE_CHARS} characters")
    pending += decoder.decode(b"", final=True)
    if pending:
        yield pending


@dataclass
class _Column:
    header: str
    all_integers: bool = True
    small: int = 0
    examples: list[str] = field(default_factory=list)


def check_small_numbers(path: str, lines: Iterable[str], delimiter: str, threshold: int) -> Finding:
    """Small counts in a CSV/TSV (module docstring for the heuristic and its limits).

    Streams `lines` once; memory is bounded by the number of columns, not rows.
    """
    reader = csv.reader(lines, delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        return Finding("small_numbers", Outcome.NOT_RUN, f"{path}: no rows")
    except (csv.Error, _LineTooLong) as exc:
        return Finding("small_numbers", Outcome.FLAG, f"{path}: not parseable as a table: {exc}")
    columns = [_Column(name.strip()) for name in header[:MAX_COLUMNS]]
    rows = 0
    try:
        for row_number, row in enumerate(reader, start=2):
            rows += 1
            for index, cell in enumerate(row[: len(columns)]):
                column = columns[index]
                if not cell.strip():
                    continue
                if not _INTEGER.match(cell):
                    column.all_integers = False
                    continue
                if 0 < int(cell) < threshold:
                    column.small += 1
                    if len(column.examples) < MAX_EXAMPLES:
                        column.examples.append(f"row {row_number}: {cell.strip()}")
    except (csv.Error, _LineTooLong) as exc:
        return Finding("small_numbers", Outcome.FLAG, f"{path}: not parseable as a table: {exc}")
    flagged = [
        c
        for c in columns
        if c.small and (c.all_integers or _COUNT_HEADER.search(c.header) is not None)
    ]
    if not flagged:
        return Finding(
            "small_numbers",
            Outcome.OK,
            f"no counts from 1 to {threshold - 1} in count-like columns ({rows} rows)",
        )
    described = "; ".join(
        f"column {c.header!r}: {c.small} cell(s), e.g. {', '.join(c.examples[:3])}" for c in flagged
    )
    return Finding(
        "small_numbers",
        Outcome.FLAG,
        f"counts below {threshold} (TRE_AIRLOCK_SMALL_COUNT_THRESHOLD): {described}; "
        "suppress or round them, or explain in the request why they are safe",
    )


def check_notebook_outputs(path: str, content: bytes | None, size: int, limit: int) -> Finding:
    """Code cells of a notebook that still carry outputs. `content` is None when the notebook
    was larger than `limit` and not kept (flagged: it may carry anything)."""
    if content is None:
        return Finding(
            "notebook_outputs",
            Outcome.FLAG,
            f"{path}: {size} bytes, too large to inspect (limit {limit}); treat it as carrying "
            "outputs, or clear them (Kernel > Restart Kernel and Clear Outputs) and resubmit",
        )
    try:
        notebook = json.loads(content)
        cells = notebook["cells"]
    except (ValueError, KeyError, TypeError) as exc:
        return Finding("notebook_outputs", Outcome.FLAG, f"{path}: not a readable notebook ({exc})")
    with_outputs = [
        index
        for index, cell in enumerate(cells, start=1)
        if isinstance(cell, dict) and cell.get("cell_type") == "code" and cell.get("outputs")
    ]
    if with_outputs:
        listed = ", ".join(str(i) for i in with_outputs[:MAX_EXAMPLES])
        return Finding(
            "notebook_outputs",
            Outcome.FLAG,
            f"{path}: {len(with_outputs)} code cell(s) carry outputs (cells {listed}); clear "
            "them (Kernel > Restart Kernel and Clear Outputs) unless the reviewers need them",
        )
    return Finding("notebook_outputs", Outcome.OK, f"{path}: no code cell carries outputs")


class _Tap:
    """Counts and hashes the chunks that pass through, and keeps the first HEAD_BYTES."""

    def __init__(self, chunks: Iterable[bytes], etags: EtagDigest) -> None:
        self._chunks = iter(chunks)
        self.digest = hashlib.sha256()
        self.etags = etags
        self.size = 0
        self.text_error: str | None = None
        self._decoder = codecs.getincrementaldecoder("utf-8")()

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._chunks:
            self.digest.update(chunk)
            self.etags.update(chunk)
            self.size += len(chunk)
            yield chunk

    def check_text(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        """Pass chunks through, noting the first byte that is not UTF-8 text."""
        offset = 0
        for chunk in chunks:
            if self.text_error is None:
                bad = _DISALLOWED_TEXT_BYTES.search(chunk)
                if bad:
                    self.text_error = f"control byte {chunk[bad.start()]:#04x} at offset " + str(
                        offset + bad.start()
                    )
                else:
                    try:
                        self._decoder.decode(chunk)
                    except UnicodeDecodeError as exc:
                        self.text_error = f"invalid UTF-8 at offset {offset + exc.start}"
            offset += len(chunk)
            yield chunk
        if self.text_error is None:
            try:
                self._decoder.decode(b"", final=True)
            except UnicodeDecodeError:
                self.text_error = "the file ends inside a UTF-8 character"


def _head_and_rest(chunks: Iterator[bytes]) -> tuple[bytes, Iterator[bytes]]:
    """The first HEAD_BYTES (or the whole file if shorter), and every chunk from the start."""
    taken: list[bytes] = []
    length = 0
    for chunk in chunks:
        taken.append(chunk)
        length += len(chunk)
        if length >= HEAD_BYTES:
            break
    head = b"".join(taken)[:HEAD_BYTES]

    def replay() -> Iterator[bytes]:
        yield from taken
        yield from chunks

    return head, replay()


def _bounded(chunks: Iterable[bytes], limit: int) -> bytes | None:
    """The whole content if it is at most `limit` bytes, else None (and the rest drained)."""
    kept: list[bytes] = []
    length = 0
    for chunk in chunks:
        length += len(chunk)
        if length <= limit:
            kept.append(chunk)
        else:
            kept.clear()
    return b"".join(kept) if length <= limit else None


def inspect_file(
    path: str,
    chunks: Iterable[bytes],
    *,
    declared_size: int,
    declared_sha256: str,
    rules: CheckRules,
    comparison: DatasetComparison,
) -> FileReport:
    """Run every check on the bytes of one file, read once from `chunks`.

    Memory: one chunk at a time, plus a notebook up to `rules.notebook_inspect_bytes`.
    """
    tap = _Tap(chunks, EtagDigest(comparison.part_sizes(declared_size)))
    head, stream = _head_and_rest(iter(tap))
    type_finding = check_type(path, head, rules.allowed_types)
    ext = extension(path)
    kind = FILE_TYPES.get(ext)
    content_finding: Finding | None = None
    if kind in (ContentKind.TEXT, ContentKind.JSON):
        stream = tap.check_text(stream)
    if ext in ("csv", "tsv"):
        content_finding = check_small_numbers(
            path, _text_lines(stream), "," if ext == "csv" else "\t", rules.small_count_threshold
        )
    elif ext == "ipynb":
        content = _bounded(stream, rules.notebook_inspect_bytes)
        content_finding = check_notebook_outputs(
            path, content, tap.size, rules.notebook_inspect_bytes
        )
    for _ in stream:  # drain: the hash and size cover every byte
        pass
    if tap.text_error and type_finding.outcome is Outcome.OK:
        type_finding = Finding("type", Outcome.FLAG, f"{path}: named .{ext} but {tap.text_error}")
    sha256 = tap.digest.hexdigest()
    findings: list[Finding] = [
        type_finding,
        check_size(tap.size, rules.max_file_bytes),
        check_declared(tap.size, sha256, declared_size, declared_sha256),
    ]
    if content_finding is not None:
        findings.append(content_finding)
    findings.append(check_raw_copy(tap.size, tap.etags.etags(), comparison))
    return FileReport(path=path, size=tap.size, sha256=sha256, findings=tuple(findings))
