"""The `tre` command without a cluster: version, help, argument errors, output formats, the
dev platform's status and stop on a directory where nothing runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, ValidationError
from typer.testing import CliRunner

from provisioner import __version__
from provisioner.cli.app import app
from provisioner.cli.context import CliContext, cli_context
from provisioner.cli.main import hoist_global_options
from provisioner.cli.output import OutputFormat, format_validation_error, render
from provisioner.models.types import ProjectSlug

runner = CliRunner()


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout == f"tre {__version__}\n"


def test_help_lists_every_group() -> None:
    result = runner.invoke(app, ["-h"])
    assert result.exit_code == 0
    for group in ("install", "dataset", "request", "workspace", "audit", "controller", "dev"):
        assert group in result.stdout


def test_as_group_without_as_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", "/nonexistent")
    result = runner.invoke(app, ["--as-group", "tre:approvers", "request", "list"])
    assert result.exit_code == 2
    assert "error: --as-group: needs --as USER as well" in result.output


def test_missing_credentials_say_how_to_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", "/nonexistent/kubeconfig")
    result = runner.invoke(app, ["workspace", "list"])
    assert result.exit_code == 1
    assert "cannot load Kubernetes credentials" in result.output
    assert 'eval "$(tre dev env)"' in result.output


def test_dev_status_and_down_where_nothing_runs(tmp_path: Path) -> None:
    status = runner.invoke(app, ["dev", "status", "--state-dir", str(tmp_path)])
    assert status.exit_code == 1
    assert "s3" in status.stdout and "not running" in status.stdout
    down = runner.invoke(app, ["dev", "down", "--state-dir", str(tmp_path / "x")])
    assert down.exit_code == 0
    assert down.stdout == "not running\n"


ROWS = [{"project": "a", "phase": "Ready", "members": ["x", "y"]}, {"project": "bb", "phase": None}]


def test_render_table_json_yaml() -> None:
    assert render(ROWS, OutputFormat.TABLE, ["project", "phase", "members"]).splitlines() == [
        "PROJECT  PHASE  MEMBERS",
        "a        Ready  x,y",
        "bb       -      -",
    ]
    assert json.loads(render(ROWS, OutputFormat.JSON)) == ROWS
    assert yaml.safe_load(render(ROWS, OutputFormat.YAML)) == ROWS


def test_validation_errors_name_field_and_input() -> None:
    class Request(BaseModel):
        project: ProjectSlug

    with pytest.raises(ValidationError) as err:
        Request(project="Bad_Slug")
    assert format_validation_error(err.value) == (
        "project: project slug 'Bad_Slug' is invalid: use 3-32 characters a-z, 0-9 and '-', "
        "starting with a letter and not ending with '-' (for example 'diabetes-2026') "
        "(got 'Bad_Slug')"
    )


# --- global options before or after the subcommand (kubectl style) ---------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["workspace", "list", "-o", "json"], ["-o", "json", "workspace", "list"]),
        (["workspace", "list", "-ojson"], ["-ojson", "workspace", "list"]),
        (["request", "list", "--output=yaml"], ["--output=yaml", "request", "list"]),
        (
            [
                "request",
                "approve",
                "r1",
                "--as",
                "ann",
                "--as-group",
                "a",
                "-m",
                "ok",
                "--as-group=b",
            ],
            [
                "--as",
                "ann",
                "--as-group",
                "a",
                "--as-group=b",
                "request",
                "approve",
                "r1",
                "-m",
                "ok",
            ],
        ),
        (["--as", "ann", "request", "list"], ["--as", "ann", "request", "list"]),
        # after `--` nothing is an option; a value that only starts with -o is not moved
        (
            ["request", "reject", "r1", "-m", "-overdue", "--", "-o"],
            ["request", "reject", "r1", "-m", "-overdue", "--", "-o"],
        ),
    ],
)
def test_global_options_are_moved_in_front(args: list[str], expected: list[str]) -> None:
    assert hoist_global_options(args) == expected


def test_output_option_after_the_subcommand(tmp_path: Path) -> None:
    result = runner.invoke(app, ["dev", "status", "--state-dir", str(tmp_path), "-o", "json"])
    assert result.exit_code == 1, result.output  # nothing runs there
    assert [row["running"] for row in json.loads(result.stdout)] == [False]


def test_bad_output_format_after_the_subcommand_is_refused() -> None:
    result = runner.invoke(app, ["workspace", "list", "-o", "xml"])
    assert result.exit_code == 2
    assert "Invalid value for '--output' / '-o'" in result.output
    assert "'xml' is not one of 'table', 'json', 'yaml'" in result.output


def test_output_option_without_a_value_is_refused() -> None:
    result = runner.invoke(app, ["workspace", "list", "-o"])
    assert result.exit_code == 2
    assert result.output.endswith("Error: Option '-o' requires an argument.\n")


@pytest.mark.parametrize(
    "args",
    [
        ["--as-group", "tre:approvers", "request", "list"],
        ["request", "list", "--as-group", "tre:approvers"],
    ],
)
def test_as_group_without_as_is_refused_wherever_written(
    monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    monkeypatch.setenv("KUBECONFIG", "/nonexistent")
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert result.output == "error: --as-group: needs --as USER as well\n"


def test_repeated_as_group_reaches_the_context(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[CliContext] = []
    monkeypatch.setattr(
        "provisioner.cli.common.kube", lambda ctx: seen.append(cli_context(ctx)) or _no_kube()
    )
    result = runner.invoke(
        app, ["request", "list", "--as", "ann", "--as-group", "a", "-o", "json", "--as-group", "b"]
    )
    assert result.exit_code == 0, result.output
    assert seen == [CliContext(output=OutputFormat.JSON, as_user="ann", as_groups=("a", "b"))]


def _no_kube() -> Any:
    class Empty:
        def list(self, *_: Any, **__: Any) -> list[Any]:
            return []

    return Empty()
