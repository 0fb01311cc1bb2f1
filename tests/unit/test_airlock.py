"""The airlock's pure parts and its confined open (provisioner/airlock/).

Behaviours under test:
- paths are normalised to one spelling inside project storage; '..', absolute paths outside
  the root, directories, control characters and over-long names are refused, naming the
  file and the fix; two spellings of one file in one request are a collision;
- the confined open refuses symlinks (out of the root and inside it, as file or as
  directory), directories, FIFOs, missing, empty and oversized files, and reads the bytes of
  the descriptor it checked in bounded parts; a file that grows or shrinks while read fails;
- keys: one prefix per request uid; manifest and revocation record cannot be overwritten by
  a file; a request without the API server's uid is refused;
- checks, each a finding and never a decision: type by extension and by content (magic
  numbers, UTF-8 text, JSON start), also for bad bytes late in a file; size; declared hash;
  small counts in count-like columns of CSV/TSV (header or all-integer), not elsewhere, with
  quoted multi-line cells and chunk boundaries inside characters; notebooks with outputs; a
  raw copy of a dataset object; datasets not compared are named;
- the release plan: only Approved (or Released) requests, only output files; the manifest
  holds request, access requests, datasets, files and hashes, counted reviewers and checks,
  and refuses to be written without a check report per file;
- airlock settings: unknown types and one bucket for quarantine and egress are refused.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from provisioner.airlock.checks import (
    FILE_TYPES,
    CheckRules,
    DatasetComparison,
    DatasetObject,
    EtagDigest,
    Outcome,
    check_notebook_outputs,
    check_raw_copy,
    check_small_numbers,
    check_type,
    inspect_file,
    part_sizes_for,
)
from provisioner.airlock.keys import ExportRef, normalise_export_path, refuse_collisions
from provisioner.airlock.paths import open_confined
from provisioner.airlock.release import plan_release, release_manifest
from provisioner.errors import InvalidInputError, NotFoundError, RefusedError
from provisioner.models.resources import (
    ExportFile,
    ExportFileKind,
    ExportPhase,
    ExportRequest,
    ExportRequestSpec,
    ExportRequestStatus,
    ExportReview,
    FileVote,
    Vote,
    Workspace,
    WorkspaceDataset,
    WorkspaceSpec,
)
from provisioner.models.settings import Settings
from provisioner.models.types import EXPORT_FILE_TYPES, ClassificationTier

AT = dt.datetime(2026, 11, 30, 12, tzinfo=dt.UTC)
UID = "0b6f3c3e-8d2a-4b8e-9a55-4f6f1d2f7c11"
RULES = CheckRules(
    allowed_types=frozenset({"csv", "tsv", "txt", "png", "pdf", "json", "ipynb"}),
    max_file_bytes=1 << 20,
    small_count_threshold=10,
)
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 40


# --- paths and keys ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "normal"),
    [
        ("out/table.csv", "out/table.csv"),
        ("./out//table.csv", "out/table.csv"),
        ("/project/out/table.csv", "out/table.csv"),
        ("/project//out/./table.csv", "out/table.csv"),
        ("résumé tables/n=5.csv", "résumé tables/n=5.csv"),
        ("..hidden/a.csv", "..hidden/a.csv"),  # a name that starts with dots is a name
    ],
)
def test_paths_are_normalised_inside_project_storage(given: str, normal: str) -> None:
    assert normalise_export_path(given) == normal


@pytest.mark.parametrize(
    ("given", "words"),
    [
        ("", "file path is empty"),
        ("../etc/passwd", "contains '..'"),
        ("out/../../etc/passwd", "contains '..'"),
        ("out/..", "contains '..'"),
        ("/etc/passwd", "is outside project storage /project/"),
        ("/projects/x.csv", "is outside project storage /project/"),
        ("/project", "is outside project storage"),
        ("out/", "is a directory; export the files in it one by one"),
        ("/project/", "names project storage itself"),
        (".", "names project storage itself"),
        ("a\nb.csv", "control character"),
        ("a\x00b.csv", "control character"),
        ("x" * 256 + ".csv", "a name is over 255 bytes"),
        ("/".join(["abcdefghi"] * 110), "over 1024 characters"),
    ],
)
def test_paths_outside_or_not_files_are_refused(given: str, words: str) -> None:
    with pytest.raises(InvalidInputError) as refused:
        normalise_export_path(given)
    assert words in str(refused.value)


def test_two_spellings_of_one_file_are_a_collision() -> None:
    assert refuse_collisions(["a.csv", "b/c.csv"]) == ["a.csv", "b/c.csv"]
    with pytest.raises(InvalidInputError) as refused:
        refuse_collisions(["b/c.csv", "./b//c.csv"])
    assert str(refused.value) == (
        "file './b//c.csv': names the same file as 'b/c.csv' (b/c.csv); list each file once "
        "in one export request"
    )


def test_keys_give_each_request_its_own_prefix_and_keep_records_out_of_files() -> None:
    ref = ExportRef(project="cardio", name="x1", uid=UID)
    assert ref.file_key("./out/t.csv") == f"exports/cardio/x1/{UID}/files/out/t.csv"
    assert ref.manifest_key == f"exports/cardio/x1/{UID}/release.json"
    assert ref.revocation_key == f"exports/cardio/x1/{UID}/revocation.json"
    # no file path can reach the records: every file key is under files/
    assert ref.file_key("release.json") == f"exports/cardio/x1/{UID}/files/release.json"
    with pytest.raises(InvalidInputError, match="not the API server's uid"):
        ExportRef.of(export_request(uid=""))
    long_path = "/".join(["ééééééééé"] * 60)  # 1139 bytes in 599 characters
    with pytest.raises(InvalidInputError, match=r"over the 9\d\d that fit in an S3 key"):
        ref.file_key(long_path)


@pytest.fixture
def storage(tmp_path: Path) -> Path:
    """Project storage with a file, a directory, and traps around it."""
    root = tmp_path / "project"
    (root / "out").mkdir(parents=True)
    (root / "out" / "table.csv").write_bytes(b"group,n\na,12\n")
    (root / "empty.csv").write_bytes(b"")
    (root / "big.csv").write_bytes(b"x" * 101)
    (tmp_path / "secret.csv").write_bytes(b"patient,diagnosis\n")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "data.csv").write_bytes(b"row-level\n")
    (root / "link-out.csv").symlink_to(tmp_path / "secret.csv")
    (root / "link-in.csv").symlink_to(root / "out" / "table.csv")
    (root / "dir-out").symlink_to(tmp_path / "elsewhere")
    os.mkfifo(root / "pipe.csv")
    return root


def test_a_confined_file_is_read_from_the_descriptor_that_was_checked(storage: Path) -> None:
    with open_confined(storage, "out/table.csv", max_bytes=100) as opened:
        assert (opened.path, opened.size) == ("out/table.csv", 13)
        assert list(opened.read_parts(5)) == [b"group", b",n\na,", b"12\n"]
        # swap the path for a link out after the open: the descriptor still reads the file
        (storage / "out" / "table.csv").rename(storage / "out" / "moved.csv")
        (storage / "out" / "table.csv").symlink_to(storage.parent / "secret.csv")
        assert b"".join(opened.read_parts(1 << 20)) == b"group,n\na,12\n"


@pytest.mark.parametrize(
    ("path", "error", "message"),
    [
        (
            "link-out.csv",
            InvalidInputError,
            "file 'link-out.csv': 'link-out.csv' is a symbolic link, which the airlock never "
            "follows; export the file it points to by its own path inside project storage",
        ),
        ("link-in.csv", InvalidInputError, "'link-in.csv' is a symbolic link"),
        ("dir-out/data.csv", InvalidInputError, "'dir-out' is a symbolic link"),
        ("../secret.csv", InvalidInputError, "contains '..'"),
        ("out", InvalidInputError, "file 'out': is a directory"),
        ("pipe.csv", InvalidInputError, "is not a regular file"),
        ("nope.csv", NotFoundError, "'nope.csv' does not exist in project storage"),
        ("out/table.csv/x", InvalidInputError, "'out/table.csv' is not a directory"),
        (
            "empty.csv",
            InvalidInputError,
            "file 'empty.csv': is empty; there is nothing to export",
        ),
        (
            "big.csv",
            InvalidInputError,
            "file 'big.csv': is 101 bytes, over the limit of 100 (TRE_AIRLOCK_MAX_FILE_BYTES)",
        ),
    ],
)
def test_what_is_not_a_regular_file_in_project_storage_is_refused(
    storage: Path, path: str, error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as refused, open_confined(storage, path, max_bytes=100):
        pass
    assert message in str(refused.value)


def test_an_absolute_path_outside_the_root_is_refused(storage: Path) -> None:
    outside = str(storage.parent / "secret.csv")
    with (
        pytest.raises(InvalidInputError, match="is outside project storage"),
        open_confined(storage, outside, max_bytes=100),
    ):
        pass
    with open_confined(storage, str(storage / "out" / "table.csv"), max_bytes=100) as ok:
        assert ok.path == "out/table.csv"


def test_a_file_that_changes_size_while_read_fails(storage: Path) -> None:
    table = storage / "out" / "table.csv"
    with open_confined(storage, "out/table.csv", max_bytes=100) as opened:
        with table.open("ab") as grow:
            grow.write(b"b,3\n")
        with pytest.raises(InvalidInputError, match="grew while it was read"):
            list(opened.read_parts(5))
    with open_confined(storage, "out/table.csv", max_bytes=100) as opened:
        os.truncate(table, 4)
        with pytest.raises(InvalidInputError, match=r"shrank while it was read \(4 of 17"):
            list(opened.read_parts(5))


# --- checks --------------------------------------------------------------------------------


def test_every_known_type_can_be_checked() -> None:
    assert set(FILE_TYPES) == set(EXPORT_FILE_TYPES)


@pytest.mark.parametrize(
    ("path", "head", "outcome", "words"),
    [
        ("t.csv", b"a,b\n1,2\n", Outcome.OK, ".csv, content consistent"),
        ("t.tsv", b"a\tb\r\n", Outcome.OK, ".tsv"),
        ("r.txt", "naïve résumé\f".encode(), Outcome.OK, ".txt"),
        ("p.png", PNG, Outcome.OK, ".png"),
        ("d.pdf", b"%PDF-1.7\n", Outcome.OK, ".pdf"),
        ("d.json", b' \n{"a": 1}', Outcome.OK, ".json"),
        ("n.ipynb", b'{"cells": []}', Outcome.OK, ".ipynb"),
        ("T.CSV", b"a\n", Outcome.OK, ".csv"),
        ("x.exe", b"MZ", Outcome.FLAG, "type .exe is not allowed; allowed: .csv, .ipynb"),
        ("Makefile", b"all:\n", Outcome.FLAG, "type (no extension) is not allowed"),
        ("m.py", b"print(1)\n", Outcome.FLAG, "type .py is not allowed"),
        ("t.csv", b"PK\x03\x04rest", Outcome.FLAG, "named .csv but its content is a zip archive"),
        ("t.csv", b"SQLite format 3\x00", Outcome.FLAG, "an SQLite database"),
        ("t.txt", b"abc\x00def", Outcome.FLAG, "byte 0x00 at offset 3"),
        ("t.txt", b"abc\xff", Outcome.FLAG, "not UTF-8 text (invalid byte at offset 3)"),
        ("p.png", b"%PDF-1.7", Outcome.FLAG, "named .png but its content is binary"),
        ("d.pdf", PNG, Outcome.FLAG, "named .pdf but its content is binary"),
        ("d.json", b"a,b\n", Outcome.FLAG, "does not start like JSON"),
    ],
)
def test_type_is_judged_by_extension_and_content(
    path: str, head: bytes, outcome: Outcome, words: str
) -> None:
    finding = check_type(path, head, RULES.allowed_types)
    assert (finding.check, finding.outcome) == ("type", outcome)
    assert words in finding.detail


def test_a_split_character_at_the_end_of_the_head_is_not_a_type_error() -> None:
    assert check_type("r.txt", "aé".encode()[:-1], {"txt"}).outcome is Outcome.OK


def counts(text: str, delimiter: str = ",") -> tuple[Outcome, str]:
    finding = check_small_numbers("t.csv", text.splitlines(keepends=True), delimiter, 10)
    return finding.outcome, finding.detail


@pytest.mark.parametrize(
    ("table", "outcome", "words"),
    [
        ("group,n\na,12\nb,30\n", Outcome.OK, "no counts from 1 to 9"),
        ("group,n\na,12\nb,3\n", Outcome.FLAG, "column 'n': 1 cell(s), e.g. row 3: 3"),
        ("group,count\na,9\nb,10\n", Outcome.FLAG, "column 'count'"),
        ("region,patients\nx,0\ny,11\n", Outcome.OK, "no counts"),  # zero is not flagged
        ("site,value\nx,5\ny,12\n", Outcome.FLAG, "column 'value'"),  # all integers
        ("site,mean\nx,5\ny,12.5\n", Outcome.OK, "no counts"),  # not a count column
        ("site,n cases\nx,5\ny,<10\n", Outcome.FLAG, "column 'n cases'"),  # header names it
        ("site,n\nx,<10\ny,*\n", Outcome.OK, "no counts"),  # suppression markers pass
        ('name,count\n"a\nb",4\n', Outcome.FLAG, "row 2: 4"),  # quoted multi-line cell
        ("", Outcome.NOT_RUN, "no rows"),
    ],
)
def test_small_counts_in_count_like_columns_are_flagged(
    table: str, outcome: Outcome, words: str
) -> None:
    got, detail = counts(table)
    assert got is outcome
    assert words in detail


def test_small_counts_in_a_tsv() -> None:
    assert counts("g\tn\na\t2\n", "\t")[0] is Outcome.FLAG


@pytest.mark.parametrize(
    ("cells", "outcome", "words"),
    [
        ([{"cell_type": "code", "outputs": []}], Outcome.OK, "no code cell carries outputs"),
        (
            [
                {"cell_type": "markdown"},
                {"cell_type": "code", "outputs": [{"output_type": "stream", "text": "7"}]},
            ],
            Outcome.FLAG,
            "1 code cell(s) carry outputs (cells 2)",
        ),
    ],
)
def test_notebooks_that_carry_outputs_are_flagged(
    cells: list[dict[str, object]], outcome: Outcome, words: str
) -> None:
    content = json.dumps({"cells": cells, "nbformat": 4}).encode()
    finding = check_notebook_outputs("a.ipynb", content, len(content), 1 << 20)
    assert finding.outcome is outcome
    assert words in finding.detail


def test_a_notebook_too_large_to_parse_is_treated_as_carrying_outputs() -> None:
    finding = check_notebook_outputs("a.ipynb", None, 500, 100)
    assert finding.outcome is Outcome.FLAG
    assert "too large to inspect (limit 100); treat it as carrying outputs" in finding.detail
    assert check_notebook_outputs("a.ipynb", b"{", 1, 100).outcome is Outcome.FLAG


def md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def multipart_etag(data: bytes, part: int) -> str:
    """S3's ETag of `data` uploaded in parts of `part` bytes, computed the plain way."""
    parts = [data[i : i + part] for i in range(0, len(data), part)]
    joined = b"".join(hashlib.md5(p, usedforsecurity=False).digest() for p in parts)
    return f"{md5(joined)}-{len(parts)}"


def test_a_raw_copy_of_a_dataset_object_is_flagged() -> None:
    same = DatasetObject(dataset="cohort", key="people.csv", size=3, etag=md5(b"abc"))
    other = DatasetObject(dataset="cohort", key="visits.csv", size=3, etag=md5(b"abd"))
    flagged = check_raw_copy(3, frozenset({md5(b"abc")}), DatasetComparison(objects=(same, other)))
    assert flagged.outcome is Outcome.FLAG
    assert "identical to dataset object(s) cohort:people.csv" in flagged.detail
    clean = check_raw_copy(
        3, frozenset({md5(b"xyz")}), DatasetComparison((same,), ("registry (NFS: x)",))
    )
    assert clean.outcome is Outcome.OK
    assert "1 compared); not compared: registry (NFS: x)" in clean.detail
    # Same ETag, other size: not a copy (sizes are compared first).
    assert check_raw_copy(4, frozenset({md5(b"abc")}), DatasetComparison((same,))).outcome is (
        Outcome.OK
    )
    nothing = check_raw_copy(
        3, frozenset({"c" * 32}), DatasetComparison((), ("registry (NFS: x)",))
    )
    assert nothing.outcome is Outcome.NOT_RUN


def test_the_etags_of_a_stream_are_those_s3_gives_in_one_part_and_in_parts() -> None:
    data = os.urandom((5 << 20) * 2 + 12345)  # three parts of 5 MiB, the last short
    digest = EtagDigest([5 << 20, 8 << 20, 5 << 20])
    for chunk in chunked(data, 1 << 20 | 7):  # chunks that straddle part boundaries
        digest.update(chunk)
    assert digest.etags() == {
        md5(data),
        multipart_etag(data, 5 << 20),
        multipart_etag(data, 8 << 20),
    }
    assert EtagDigest().etags() == {md5(b"")}


def test_part_sizes_are_tried_only_where_they_give_the_listed_number_of_parts() -> None:
    size = (8 << 20) * 3 + 1  # 4 parts of 8 MiB, 5 of 5 MiB, 2 of 15 or 16 MiB, 1 of larger
    assert part_sizes_for(size, 4) == (8 << 20,)
    assert part_sizes_for(size, 5) == (5 << 20,)  # 25 MiB + 1 byte in 5 MiB parts: 5
    assert part_sizes_for(size, 0) == ()
    assert DatasetObject("d", "k", size, "0" * 32 + "-4").parts == 4
    assert DatasetObject("d", "k", size, "0" * 32).parts == 0


def test_a_copy_of_an_object_uploaded_in_parts_is_found_and_other_part_sizes_are_named() -> None:
    data = b"id,age\n" + b"1,54\n" * ((5 << 20) // 5 + 10)  # just over 5 MiB: two 5 MiB parts
    in_parts = DatasetObject("cohort", "big.csv", len(data), multipart_etag(data, 5 << 20))
    report = inspect_file(
        "out/big.csv",
        chunked(data, 1 << 16),
        declared_size=len(data),
        declared_sha256=hashlib.sha256(data).hexdigest(),
        rules=RULES,
        comparison=DatasetComparison((in_parts,)),
    )
    raw = next(f for f in report.findings if f.check == "raw_dataset_copy")
    assert raw.outcome is Outcome.FLAG
    assert "cohort:big.csv" in raw.detail
    # Uploaded in parts of a size not tried (3 MiB): named in the finding, not hidden.
    odd = DatasetObject("cohort", "big.csv", len(data), multipart_etag(data, 3 << 20))
    unknown = check_raw_copy(len(data), frozenset({md5(data)}), DatasetComparison((odd,)))
    assert unknown.outcome is Outcome.OK
    assert "1 object(s) of the same size were uploaded in parts" in unknown.detail


def chunked(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def inspect(
    path: str, data: bytes, chunk: int = 3, declared_sha256: str | None = None
) -> dict[str, Outcome]:
    actual = hashlib.sha256(data).hexdigest()
    report = inspect_file(
        path,
        chunked(data, chunk),
        declared_size=len(data),
        declared_sha256=declared_sha256 or actual,
        rules=RULES,
        comparison=DatasetComparison(),
    )
    assert (report.sha256, report.size) == (actual, len(data))
    return {f.check: f.outcome for f in report.findings}


def test_inspect_runs_every_check_in_one_pass_over_chunks() -> None:
    table = "groupe,n\nété,3\nhiver,40\n".encode()  # 'é' split across 3-byte chunks
    assert inspect("t.csv", table) == {
        "type": Outcome.OK,
        "size": Outcome.OK,
        "declared_hash": Outcome.OK,
        "small_numbers": Outcome.FLAG,
        "raw_dataset_copy": Outcome.OK,
    }
    assert inspect("p.png", PNG)["type"] is Outcome.OK
    assert inspect("n.ipynb", b'{"cells": []}')["notebook_outputs"] is Outcome.OK


def test_bad_bytes_after_the_head_still_fail_the_type() -> None:
    late = b"a,n\n" + b"x,12\n" * 3000 + b"\x00binary"
    assert inspect("t.csv", late, chunk=4096)["type"] is Outcome.FLAG
    assert inspect("t.csv", late[:-7], chunk=4096)["type"] is Outcome.OK


def test_bytes_other_than_declared_and_oversize_are_flagged() -> None:
    assert inspect("t.txt", b"hello", declared_sha256="0" * 64)["declared_hash"] is Outcome.FLAG
    big = b"x" * ((1 << 20) + 1)
    assert inspect("t.txt", big, chunk=1 << 16)["size"] is Outcome.FLAG


def test_a_table_without_newlines_is_flagged_not_held_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("provisioner.airlock.checks.MAX_LINE_CHARS", 64)
    assert inspect("t.csv", b"n," + b"1," * 100, chunk=16)["small_numbers"] is Outcome.FLAG


# --- release plan and manifest ---------------------------------------------------------------


def export_request(
    phase: ExportPhase = ExportPhase.APPROVED, uid: str = UID, name: str = "x1"
) -> ExportRequest:
    return ExportRequest(
        name=name,
        namespace="tre-cardio",
        uid=uid,
        spec=ExportRequestSpec(
            project="cardio",
            author="lea",
            files=[
                ExportFile(path="out/table.csv", size=13, sha256="a" * 64, description="counts"),
                ExportFile(
                    path="src/model.py",
                    size=10,
                    sha256="b" * 64,
                    kind=ExportFileKind.SUPPORTING,
                    description="the code",
                ),
            ],
            context="Counts of admissions by region, 2020-2024, all adults.",
            reviews=[
                ExportReview(
                    by=who,
                    at=AT,
                    votes=[
                        FileVote(path="out/table.csv", vote=Vote.APPROVE),
                        FileVote(path="src/model.py", vote=Vote.APPROVE),
                    ],
                )
                for who in ("omar", "una")
            ],
        ),
        status=ExportRequestStatus(phase=phase, reviewers=["omar", "una"]),
    )


WORKSPACE = Workspace(
    name="cardio",
    spec=WorkspaceSpec(
        project="cardio",
        namespace="tre-cardio",
        owner="lea",
        members=["lea"],
        requests=["cardio-2026"],
        datasets=[
            WorkspaceDataset.model_validate(
                {
                    "name": "cohort",
                    "manifestSha256": "c" * 64,
                    "classification": "sensitive",
                    "source": {"s3": {"bucket": "tre-data", "prefix": "cohort/"}},
                }
            )
        ],
    ),
)


@pytest.mark.parametrize(
    "phase",
    [ExportPhase.SUBMITTED, ExportPhase.RETURNED, ExportPhase.REJECTED, ExportPhase.REVOKED],
)
def test_only_an_approved_request_is_released(phase: ExportPhase) -> None:
    with pytest.raises(RefusedError, match=f"is {phase.value}; only an Approved request"):
        plan_release(export_request(phase))


def test_the_manifest_says_what_left_why_and_what_was_checked() -> None:
    request = export_request()
    plan = plan_release(request)
    assert [f.path for f in plan.files] == ["out/table.csv"]  # supporting files stay
    report = inspect_file(
        "out/table.csv",
        [b"group,n\na,12\n"],
        declared_size=13,
        declared_sha256="a" * 64,
        rules=RULES,
        comparison=DatasetComparison(),
    )
    manifest = release_manifest(
        request, WORKSPACE, plan, {"out/table.csv": report}, released_by="lea", now=AT
    )
    assert manifest == {
        "format": "tre.ucloud.org/release/v1",
        "exportRequest": {
            "namespace": "tre-cardio",
            "name": "x1",
            "uid": UID,
            "project": "cardio",
            "author": "lea",
            "context": "Counts of admissions by region, 2020-2024, all adults.",
        },
        "accessRequests": ["cardio-2026"],
        "datasets": [{"name": "cohort", "manifestSha256": "c" * 64, "classification": "sensitive"}],
        "files": [
            {
                "path": "out/table.csv",
                "key": f"exports/cardio/x1/{UID}/files/out/table.csv",
                "size": 13,
                "sha256": "a" * 64,
                "description": "counts",
            }
        ],
        "supportingFiles": ["src/model.py"],
        "reviewers": [
            {
                "by": who,
                "at": "2026-11-30T12:00:00+00:00",
                "votes": [
                    {"path": "out/table.csv", "vote": "approve", "comment": ""},
                    {"path": "src/model.py", "vote": "approve", "comment": ""},
                ],
            }
            for who in ("omar", "una")
        ],
        "checks": [report.to_dict()],
        "releasedBy": "lea",
        "releasedAt": "2026-11-30T12:00:00+00:00",
    }
    with pytest.raises(InvalidInputError, match=r"no check report for out/table\.csv"):
        release_manifest(request, WORKSPACE, plan, {}, released_by="lea", now=AT)


# --- settings ----------------------------------------------------------------------------------


def test_airlock_settings_refuse_unknown_types_and_a_shared_bucket() -> None:
    with pytest.raises(ValidationError, match=r"unknown type\(s\) \['exe'\]"):
        Settings(airlock_allowed_types=["csv", "exe"])
    with pytest.raises(ValidationError, match="airlock_egress_bucket: must differ"):
        Settings(airlock_quarantine_bucket="same", airlock_egress_bucket="same")
    assert Settings(airlock_allowed_types=["png", "csv", "csv"]).airlock_allowed_types == [
        "csv",
        "png",
    ]
    assert ClassificationTier.SENSITIVE.value == "sensitive"
