"""`tre request submit -f`: every input that is not a well-formed request file gets one
clear message naming the file and the problem, exit code 2, and no traceback; all of it
before any call to the API server (KUBECONFIG points nowhere here)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from provisioner.cli.app import app
from provisioner.cli.inputs import MAX_INPUT_BYTES

runner = CliRunner()

GOOD = (
    "project: heart-study\nlead: lea\nmembers: [lea]\ndatasets: [cohort]\n"
    "purpose: Predict readmission.\nendDate: 2030-01-01\n"
)


@pytest.fixture(autouse=True)
def _no_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", "/nonexistent/kubeconfig")


def submit(path: Path | str, stdin: bytes | None = None) -> tuple[int, str]:
    result = runner.invoke(app, ["request", "submit", "-f", str(path)], input=stdin)
    assert isinstance(result.exception, SystemExit | None), result.exception  # no traceback
    return result.exit_code, result.output


def write(tmp_path: Path, content: str | bytes) -> Path:
    path = tmp_path / "request.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


CASES: list[tuple[str, str | bytes, Callable[[Path], str]]] = [
    (
        "not utf-8",
        b"project: caf\xe9\n",
        lambda p: f"error: --file: {p} is not UTF-8 text (byte 0xe9 at offset 12)",
    ),
    (
        "nul bytes",
        "project: a\x00b\n",
        lambda p: f"error: --file: {p} is not text (it holds NUL bytes)",
    ),
    (
        "too large",
        "purpose: " + "x" * MAX_INPUT_BYTES + "\n",
        lambda p: f"error: --file: {p} is larger than 64 KiB; a request is a few lines of YAML",
    ),
    (
        "not yaml",
        "project: demo\nmembers: [lea, ravi\n",
        lambda p: (
            f"error: --file: {p} is not valid YAML at line 3, column 1: "
            "expected ',' or ']', but got '<stream end>'"
        ),
    ),
    (
        "duplicate key",
        GOOD + "lead: mallory\n",
        lambda p: (
            f"error: --file: {p} is not valid YAML at line 7, column 1: key 'lead' is "
            "given twice (lines 2 and 7); give it once"
        ),
    ),
    (
        "duplicate nested key",
        "project: a\nlead: {x: 1, x: 2}\n",
        lambda p: (
            f"error: --file: {p} is not valid YAML at line 2, column 14: key 'x' is "
            "given twice (lines 2 and 2); give it once"
        ),
    ),
    (
        "alias bomb",
        'a: &a ["x","x"]\nb: &b [*a,*a]\nc: &c [*b,*b]\n',
        lambda p: (
            f"error: --file: {p} is not valid YAML at line 2, column 8: alias *a is not "
            "allowed: write the value out (a request never needs anchors or aliases)"
        ),
    ),
    ("too deep", "[" * 20000 + "]" * 20000, lambda p: f"error: --file: {p} is nested too deeply"),
    (
        "a list",
        "- project\n- lead\n",
        lambda p: f"error: --file: {p} must hold a mapping of request fields (got a list)",
    ),
    (
        "a scalar",
        "just text\n",
        lambda p: f"error: --file: {p} must hold a mapping of request fields (got a str)",
    ),
    (
        "empty",
        "",
        lambda p: f"error: --file: {p} must hold a mapping of request fields (got an empty file)",
    ),
    (
        "several documents",
        GOOD + "---\n" + GOOD,
        lambda p: (
            f"error: --file: {p} is not valid YAML at line 7, column 1: but found another document"
        ),
    ),
    (
        "unknown field",
        GOOD + "projcet: typo\ncolour: red\n",
        lambda p: (
            f"error: --file: {p}: unknown field(s) colour, projcet; a request has "
            "computeTier, datasets, endDate, lead, members, project, purpose, startDate"
        ),
    ),
    (
        "requester given",
        GOOD + "requester: someone-else\n",
        lambda p: (
            f"error: --file: {p}: remove requester: tre sets the requester (who you "
            "are) and only approvers add decisions"
        ),
    ),
    (
        "non-text key",
        GOOD + "1: one\n",
        lambda p: f"error: --file: {p}: field names must be text (got 1)",
    ),
]


@pytest.mark.parametrize(("content", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_request_file_is_refused_cleanly(
    tmp_path: Path, content: str | bytes, expected: Callable[[Path], str]
) -> None:
    path = write(tmp_path, content)
    code, output = submit(path)
    assert (code, output) == (2, expected(path) + "\n")


def test_a_directory(tmp_path: Path) -> None:
    assert submit(tmp_path) == (2, f"error: --file: {tmp_path} is a directory, not a file\n")


def test_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    assert submit(path) == (2, f"error: --file: {path} does not exist\n")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_an_unreadable_file(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    path.chmod(0)
    assert submit(path) == (2, f"error: --file: cannot read {path}: Permission denied\n")


def test_a_device_that_never_ends() -> None:
    assert submit("/dev/zero") == (
        2,
        "error: --file: /dev/zero is larger than 64 KiB; a request is a few lines of YAML\n",
    )


def test_standard_input_is_read_with_the_same_checks() -> None:
    code, output = submit("-", stdin=b"- a\n")
    assert (code, output) == (
        2,
        "error: --file: standard input must hold a mapping of request fields (got a list)\n",
    )


def test_a_well_formed_file_gets_as_far_as_the_api_server(tmp_path: Path) -> None:
    code, output = submit(write(tmp_path, GOOD))
    assert code == 1
    assert "cannot load Kubernetes credentials" in output
