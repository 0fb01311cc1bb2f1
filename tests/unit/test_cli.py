"""The `tre` command without a cluster: version, help, argument errors, output formats, the
dev platform's status and stop on a directory where nothing runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel, ValidationError
from typer.testing import CliRunner

from provisioner import __version__
from provisioner.cli.main import app
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
