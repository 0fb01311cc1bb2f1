"""Rendering of command results: a table for people, JSON or YAML for scripts."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import ValidationError


class OutputFormat(StrEnum):
    TABLE = "table"
    JSON = "json"
    YAML = "yaml"


def render(data: Any, fmt: OutputFormat, columns: Sequence[str] | None = None) -> str:
    """Render a list of rows (dicts) or one object.

    `columns` picks and orders the table columns (upper-cased as headers); JSON and YAML always
    carry every field, so scripts never depend on what fits on a screen.
    """
    if fmt is OutputFormat.JSON:
        return json.dumps(data, indent=2, sort_keys=False, default=str)
    if fmt is OutputFormat.YAML:
        import yaml  # only here: most commands print a table or JSON

        return yaml.safe_dump(json.loads(json.dumps(data, default=str)), sort_keys=False).rstrip()
    if isinstance(data, Mapping):
        return "\n".join(f"{k}: {_cell(v)}" for k, v in data.items())
    rows = list(data)
    cols = list(columns) if columns else (list(rows[0]) if rows else [])
    table = [[c.upper() for c in cols]] + [[_cell(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in table
    )


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list | tuple):
        return ",".join(_cell(v) for v in value) or "-"
    return str(value)


def emit(data: Any, fmt: OutputFormat, columns: Sequence[str] | None = None) -> None:
    # What typer.echo does for text (one line, flushed), without importing typer: the fast
    # path of the queries prints through here too.
    sys.stdout.write(render(data, fmt, columns) + "\n")
    sys.stdout.flush()


def format_validation_error(exc: ValidationError) -> str:
    """One line per problem: where, what, and the input that was given."""
    lines = []
    for err in exc.errors():
        where = ".".join(str(part) for part in err["loc"]) or "input"
        message = err["msg"].removeprefix("Value error, ")
        lines.append(f"{where}: {message} (got {err.get('input')!r})")
    return "\n".join(lines)
