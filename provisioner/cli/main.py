"""The `tre` command's entry point, and the only place where errors become exit codes.

The read-only queries people run all day (`tre request list|show`, `tre workspace
list|show`, `tre dataset list|show`, `tre whoami`) are run here directly; everything else goes
to the typer app (`provisioner.cli.app`). Why: typer 0.29 coerces every parameter through a pydantic
TypeAdapter, so importing typer and pydantic and building those adapters costs about 170 ms
of CPU before a command starts, three times what kubectl needs for a whole `get`
(docs/performance.md, "`tre` start-up and queries").

The fast path is exact or absent. Its grammar (`QUERIES`) accepts a command only when typer
would take it the same way: the same words, the global options, the command's own options
once each, values its rules accept. Anything else (help, completion, `--version`, an
unknown or repeated option, a value typer would refuse or report) is handed to typer, which
answers as it always did. Both ways run the same functions (`provisioner.cli.views`) and
print through the same `emit`, so a query prints the same bytes and exits with the same code
whichever way it went. `tests/unit/test_cli_fast_path.py` holds the grammar equal to the typer
commands' parameters; `tests/integration/test_cli_fast_path.py` runs every query both ways
against the real API server and compares what they print.

The global options (`-o/--output`, `--as`, `--as-group`) are accepted before or after the
subcommand, as in kubectl: both ways move them in front first (`hoist_global_options`).
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from provisioner.cli.context import CliContext
from provisioner.cli.output import OutputFormat, emit
from provisioner.errors import TreError
from provisioner.models.rules import (
    DomainRule,
    RequestPhase,
    validate_dataset_name,
    validate_object_name,
    validate_project_slug,
)

if TYPE_CHECKING:
    from provisioner.kube.api import Kube

# Options of the root command that may also be written after the subcommand.
_VALUE_OPTIONS = ("-o", "--output", "--as", "--as-group")
_FORMATS = frozenset(f.value for f in OutputFormat)


def hoist_global_options(args: Sequence[str]) -> list[str]:
    """`args` with every global option (and its value) moved in front, order kept.

    `tre workspace list -o json --as ann` becomes `tre -o json --as ann workspace list`, so
    the root command parses them wherever they were written. Stops at `--`. ValueError
    naming the option when its value is missing.
    """
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest.extend(args[i:])
            break
        name = arg.split("=", 1)[0]
        if arg in _VALUE_OPTIONS:
            if i + 1 == len(args):
                raise ValueError(arg)
            front.extend(args[i : i + 2])
            i += 2
            continue
        long_with_value = name in _VALUE_OPTIONS and name.startswith("--")  # --output=json
        short_with_value = arg.startswith("-o") and arg[2:] in _FORMATS  # -ojson
        if long_with_value or short_with_value:
            front.append(arg)
        else:
            rest.append(arg)
        i += 1
    return front + rest


def report(exc: TreError) -> int:
    """Say on standard error what went wrong, in our words; the exit code for it."""
    sys.stderr.write(f"error: {exc}\n")
    sys.stderr.flush()
    return exc.exit_code


# --- the fast path of the queries --------------------------------------------------------

Options = Mapping[str, str]
Result = tuple[Any, Sequence[str] | None]  # what to print, and the table's columns


def _request_list(k: Kube, _: str | None, options: Options) -> Result:
    from provisioner.cli import views

    rows = views.list_requests(k, options.get("--project"), options.get("--phase"))
    return rows, views.REQUEST_COLUMNS


def _request_show(k: Kube, name: str | None, _: Options) -> Result:
    from provisioner.cli import views

    assert name is not None  # the grammar asks for the argument
    return views.show_request(k, name), None


def _workspace_list(k: Kube, _: str | None, __: Options) -> Result:
    from provisioner.cli import views

    return views.list_workspaces(k), views.WORKSPACE_COLUMNS


def _workspace_show(k: Kube, project: str | None, _: Options) -> Result:
    from provisioner.cli import views

    assert project is not None  # the grammar asks for the argument
    return views.show_workspace(k, project), None


def _dataset_list(k: Kube, _: str | None, __: Options) -> Result:
    from provisioner.cli import views

    return views.list_datasets(k), views.DATASET_COLUMNS


def _dataset_show(k: Kube, name: str | None, _: Options) -> Result:
    from provisioner.cli import views

    assert name is not None  # the grammar asks for the argument
    return views.show_dataset(k, name), None


def _whoami(k: Kube, _: str | None, __: Options) -> Result:
    from provisioner.cli import views

    return views.whoami(k), None


def _accepted_by(rule: DomainRule) -> Callable[[str], bool]:
    """Whether `rule` takes a value as it is (typer's callback would then pass it on)."""

    def accepts(value: str) -> bool:
        try:
            return rule(value) == value
        except ValueError:
            return False

    return accepts


# A NamedTuple, not a dataclass: `dataclasses` imports `inspect`, about 5 ms of every
# `tre` query (docs/performance.md), and this sits on the query path.
class Query(NamedTuple):
    """A read-only command the fast path runs: its words, its one argument if it has one
    (with the rule typer's callback applies), its options (with what typer takes as value),
    and the function that runs it."""

    words: tuple[str, ...]
    run: Callable[[Kube, str | None, Options], Result]
    argument: DomainRule | None = None
    options: Mapping[str, Callable[[str], bool]] = {}  # never changed: safe to share


QUERIES: tuple[Query, ...] = (
    Query(
        ("request", "list"),
        _request_list,
        options={
            "--project": _accepted_by(validate_project_slug),
            "--phase": frozenset(p.value for p in RequestPhase).__contains__,
        },
    ),
    Query(("request", "show"), _request_show, argument=validate_object_name),
    Query(("workspace", "list"), _workspace_list),
    Query(("workspace", "show"), _workspace_show, argument=validate_project_slug),
    Query(("dataset", "list"), _dataset_list),
    Query(("dataset", "show"), _dataset_show, argument=validate_dataset_name),
    Query(("whoami",), _whoami),
)


class ParsedQuery(NamedTuple):
    query: Query
    context: CliContext
    argument: str | None
    options: dict[str, str]


def _global_options(args: list[str]) -> tuple[CliContext, list[str]] | None:
    """The root command's options in front of `args` (hoisted), and what follows them; None
    when typer should judge them (a bad format, a repeated option, --as-group without --as)."""
    output: str | None = None
    as_user: str | None = None
    groups: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in _VALUE_OPTIONS:
            name, value, i = arg, args[i + 1], i + 2
        elif arg.split("=", 1)[0] in _VALUE_OPTIONS and arg.startswith("--"):
            name, value = arg.split("=", 1)
            i += 1
        elif arg.startswith("-o") and arg[2:] in _FORMATS:
            name, value = "-o", arg[2:]
            i += 1
        else:
            break
        if name in ("-o", "--output"):
            if output is not None or value not in _FORMATS:
                return None
            output = value
        elif name == "--as":
            if as_user is not None:
                return None
            as_user = value
        else:
            groups.append(value)
    if groups and not as_user:
        return None  # the root command's own error
    context = CliContext(
        output=OutputFormat(output or OutputFormat.TABLE),
        as_user=as_user,
        as_groups=tuple(groups),
    )
    return context, args[i:]


def parse_query(args: Sequence[str], environ: Mapping[str, str] = os.environ) -> ParsedQuery | None:
    """The query `args` ask for, when the fast path runs it exactly as typer would; None
    when typer must (anything but a plain query, and shell completion)."""
    if any(name.startswith("_") and name.endswith("_COMPLETE") for name in environ):
        return None  # click's shell completion is driven by `_TRE_COMPLETE`
    try:
        parsed = _global_options(hoist_global_options(args))
    except ValueError:
        return None
    if parsed is None:
        return None
    context, rest = parsed
    query = next((q for q in QUERIES if tuple(rest[: len(q.words)]) == q.words), None)
    if query is None:
        return None
    tokens = rest[len(query.words) :]
    positional: list[str] = []
    options: dict[str, str] = {}
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("-"):
            positional.append(token)
            i += 1
            continue
        if "=" in token:
            name, value = token.split("=", 1)
            i += 1
        elif i + 1 < len(tokens):
            name, value = token, tokens[i + 1]
            i += 2
        else:
            return None
        accepts = query.options.get(name)
        if accepts is None or name in options or not accepts(value):
            return None
        options[name] = value
    if query.argument is None:
        if positional:
            return None
        return ParsedQuery(query, context, None, options)
    if len(positional) != 1 or not _accepted_by(query.argument)(positional[0]):
        return None
    return ParsedQuery(query, context, positional[0], options)


def run_query(args: Sequence[str], environ: Mapping[str, str] = os.environ) -> int | None:
    """Run `args` on the fast path: its exit code, or None when typer must run it."""
    parsed = parse_query(args, environ)
    if parsed is None:
        return None
    from provisioner.cli.common import kube_for

    try:
        data, columns = parsed.query.run(kube_for(parsed.context), parsed.argument, parsed.options)
    except TreError as exc:
        return report(exc)
    emit(data, parsed.context.output, columns)
    return 0


def main() -> None:
    # A query is a process of a tenth of a second whose objects (the parsed JSON) hold no
    # reference cycles: the cyclic garbage collector finds nothing, and its passes over the
    # freshly imported modules cost 4-5 ms of a 75 ms query. The typer commands get it back
    # (`tre controller run` runs for days).
    gc.disable()
    try:
        code = run_query(sys.argv[1:])
    except KeyboardInterrupt:
        # as click ends an interrupted command
        sys.stderr.write("\nAborted!\n")
        sys.exit(1)
    except BrokenPipeError:
        # as click does when the reader went away (`tre request list | head -1`)
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - the interpreter flushes it at exit
        sys.exit(1)
    if code is not None:
        sys.exit(code)
    gc.enable()
    from provisioner.cli.app import app

    app()


if __name__ == "__main__":
    main()
