"""The fast path of the queries (`provisioner.cli.main`) takes a command only when typer
would take it the same way, and hands everything else to typer:

- its grammar has the same commands, options and arguments as the typer app;
- every command line it takes, typer parses to the same command with the same values
  (global options before or after the subcommand, `--opt value` and `--opt=value`);
- help, completion, `--version`, unknown or repeated options, values typer refuses or
  reports (a bad project slug, a phase in the wrong case, --as-group without --as), extra
  arguments and `--` all go to typer;
- `TRE_KUBECONFIG` is read as the Settings read it.

That the two ways print the same bytes against the real API server is
`tests/integration/test_cli_fast_path.py`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer._click import core as click
from typer.core import TyperArgument, TyperGroup, TyperOption

from provisioner.cli.app import app
from provisioner.cli.common import kubeconfig_setting
from provisioner.cli.main import QUERIES, parse_query
from provisioner.models.settings import Settings


def typer_command(words: tuple[str, ...]) -> click.Command:
    root = typer.main.get_command(app)
    command: click.Command | None = root
    ctx = click.Context(root)
    for word in words:
        assert isinstance(command, TyperGroup)
        command = command.get_command(ctx, word)
    assert command is not None, words
    return command


def typer_parse(
    args: list[str],
) -> tuple[dict[str, Any], tuple[str, ...], list[Any], dict[str, Any]]:
    """(root options, command words, the command's arguments, its options by name) as typer
    parses `args`, without running anything."""
    root = typer.main.get_command(app)
    ctx = root.make_context("tre", list(args))
    root_params = dict(ctx.params)
    rest = [*ctx._protected_args, *ctx.args]
    command: click.Command = root
    words: list[str] = []
    while isinstance(command, TyperGroup):
        name, found, rest = command.resolve_command(ctx, rest)
        assert name is not None and found is not None
        words.append(name)
        command = found
        ctx = command.make_context(name, rest, parent=ctx)
        rest = [*ctx._protected_args, *ctx.args]
    arguments = [ctx.params[p.name] for p in command.params if isinstance(p, TyperArgument)]
    options = {
        max(p.opts, key=len): ctx.params[p.name]
        for p in command.params
        if isinstance(p, TyperOption) and p.name != "help" and ctx.params[p.name] is not None
    }
    return root_params, tuple(words), arguments, options


@pytest.mark.parametrize("query", QUERIES, ids=lambda q: " ".join(q.words))
def test_the_grammar_has_the_typer_commands_parameters(query: Any) -> None:
    command = typer_command(query.words)
    params = [p for p in command.params if p.name != "help"]
    options = {max(p.opts, key=len) for p in params if isinstance(p, TyperOption)}
    arguments = [p for p in params if isinstance(p, TyperArgument)]
    assert options == set(query.options)
    assert len(arguments) == (1 if query.argument is not None else 0)


TAKEN = [
    ["request", "list"],
    ["request", "list", "--project", "heart-study", "--phase", "Approved"],
    ["request", "list", "--phase=Pending", "--project=heart-study"],
    ["-o", "json", "request", "list"],
    ["request", "list", "-o", "yaml"],
    ["request", "list", "-ojson"],
    ["request", "list", "--output=json"],
    ["request", "show", "heart-study-1a2b3c"],
    ["request", "show", "heart.study"],
    ["--as", "ann", "--as-group", "tre:approvers", "request", "show", "r-1"],
    ["request", "show", "r-1", "--as", "ann", "--as-group", "g1", "--as-group", "g2"],
    ["workspace", "list"],
    ["workspace", "list", "-o", "json", "--as=lea"],
    ["workspace", "show", "heart-study"],
    ["-o", "yaml", "workspace", "show", "heart-study"],
    ["whoami"],
    ["--as", "bob", "whoami", "-o", "json"],
    ["dataset", "list", "--as", "sam"],
    ["dataset", "show", "cardio-cohort", "-o", "json"],
]


@pytest.mark.parametrize("args", TAKEN, ids=" ".join)
def test_what_the_fast_path_takes_typer_parses_the_same(args: list[str]) -> None:
    parsed = parse_query(args, environ={})
    assert parsed is not None, "the fast path should take this"
    root, words, arguments, options = typer_parse(args)
    assert words == parsed.query.words
    assert (root["output"], root["as_user"], tuple(root["as_group"] or ())) == (
        parsed.context.output,
        parsed.context.as_user,
        parsed.context.as_groups,
    )
    assert arguments == ([parsed.argument] if parsed.argument is not None else [])
    assert options == parsed.options


HANDED_TO_TYPER = [
    [],
    ["--help"],
    ["-h"],
    ["--version"],
    ["request"],
    ["request", "list", "--help"],
    ["request", "list", "-h"],
    ["request", "list", "extra"],
    ["request", "list", "--project"],
    ["request", "list", "--project", "Heart"],
    ["request", "list", "--project", "a", "--project", "b"],
    ["request", "list", "--phase", "approved"],
    ["request", "list", "--owner", "lea"],
    ["request", "show"],
    ["request", "show", "Bad_Name"],
    ["request", "show", "a", "b"],
    ["request", "submit", "-f", "x.yaml"],
    ["workspace", "show", "Heart"],
    ["workspace", "show", "--", "heart-study"],
    ["workspace", "plan", "heart-study"],
    ["workspace", "list", "-o", "xml"],
    ["workspace", "list", "-o"],
    ["workspace", "list", "-o", "json", "-o", "yaml"],
    ["--as", "a", "--as", "b", "whoami"],
    ["--as-group", "tre:approvers", "whoami"],
    ["whoami", "--verbose"],
    ["dataset", "show", "Cardio"],
    ["dataset", "verify", "cardio-cohort"],
    ["--install-completion"],
]


@pytest.mark.parametrize("args", HANDED_TO_TYPER, ids=lambda a: " ".join(a) or "(nothing)")
def test_everything_else_goes_to_typer(args: list[str]) -> None:
    assert parse_query(args, environ={}) is None


def test_shell_completion_goes_to_typer() -> None:
    assert parse_query(["workspace", "list"], environ={"_TRE_COMPLETE": "bash_complete"}) is None


@pytest.mark.parametrize(
    "environ",
    [
        {},
        {"TRE_KUBECONFIG": "/etc/tre/kubeconfig"},
        {"tre_kubeconfig": "relative/kubeconfig"},
        {"TRE_KUBECONFIG": ""},
        {"KUBECONFIG": "/not/this/one"},
    ],
    ids=["unset", "set", "lower case", "empty", "only KUBECONFIG"],
)
def test_the_kubeconfig_setting_is_read_as_the_settings_read_it(
    environ: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("TRE_KUBECONFIG", "tre_kubeconfig", "KUBECONFIG"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    expected: Path | None = Settings().kubeconfig
    assert kubeconfig_setting(environ) == expected


def test_the_typer_commands_run_with_the_garbage_collector(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The fast path turns the cyclic collector off (a query is short and makes no cycles);
    whatever goes to typer, `tre controller run` included, gets it back."""
    import gc

    from provisioner.cli.main import main

    monkeypatch.setattr("sys.argv", ["tre", "--version"])
    try:
        with pytest.raises(SystemExit) as exit_:
            main()
        assert exit_.value.code in (0, None)
        assert "tre " in capsys.readouterr().out
        assert gc.isenabled()
    finally:
        gc.enable()
