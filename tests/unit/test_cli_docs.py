"""docs/cli.md is current (it is generated: `python -m provisioner.cli.docs > docs/cli.md`),
names every command, and shell completion answers from the lazily loaded commands."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from provisioner.cli import docs
from provisioner.cli.app import app
from provisioner.models.settings import Settings

runner = CliRunner()


def test_the_reference_page_is_current() -> None:
    assert docs.PAGE.read_text() == docs.render(), (
        "docs/cli.md is out of date: run 'python -m provisioner.cli.docs > docs/cli.md'"
    )


def test_it_lists_every_command_setting_and_exit_code() -> None:
    page = docs.render()
    for path, _ in docs._commands():
        assert f"| `tre {path}" in page
    for name in Settings.model_fields:
        assert f"`TRE_{name.upper()}`" in page
    for code in (0, 1, 2, 3, 4, 5, 6, 7, 75):
        assert f"\n| {code} |" in page


@pytest.mark.parametrize(
    "path",
    ["controller run", "install", "whoami", "request submit", "dev up", "workspace reconcile"],
)
def test_every_command_keeps_its_path(path: str) -> None:
    result = runner.invoke(app, [*path.split(), "-h"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"Usage: tre {path} [OPTIONS]")


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        ("tre wor", ["workspace"]),
        ("tre workspace s", ["show"]),
        ("tre request list --phase ", ["Pending", "Approved", "Rejected", "Expired", "Revoked"]),
    ],
)
def test_shell_completion(words: str, expected: list[str]) -> None:
    env = {
        "_TRE_COMPLETE": "complete_bash",
        "COMP_WORDS": words,
        "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1)),
    }
    result = runner.invoke(app, [], prog_name="tre", env=env)
    assert result.exit_code == 0
    assert result.output.split() == expected
