"""Reading `-f` input files: a mapping of fields from a small, plain YAML file, or one clear
error (InvalidInputError, exit code 2) naming the file and the problem. Nothing else escapes:
no traceback for a directory, binary data, a huge file or a YAML bomb.

Stricter than `yaml.safe_load`, as kubectl is: a key given twice is refused (the last one
would silently win), and so are anchors and aliases (a request never needs them, and
aliases can expand a small file into an enormous value).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node

from provisioner.errors import InvalidInputError

# The largest request is a few hundred members and datasets: far below this.
MAX_INPUT_BYTES = 64 * 1024
STDIN = Path("-")


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys and aliases."""

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        if self.check_event(AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise ConstructorError(
                None,
                None,
                f"alias *{event.anchor} is not allowed: write the value out (a request "
                "never needs anchors or aliases)",
                event.start_mark,
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key; the constructor refuses it below
                continue
            if first is not None:
                raise ConstructorError(
                    None,
                    None,
                    f"key {key!r} is given twice (lines {first} and {line}); give it once",
                    key_node.start_mark,
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def read_text_input(path: Path, option: str = "--file") -> str:
    """The UTF-8 text of `path` ('-': standard input), at most MAX_INPUT_BYTES."""
    where = "standard input" if path == STDIN else str(path)
    try:
        if path == STDIN:
            data = sys.stdin.buffer.read(MAX_INPUT_BYTES + 1)
        else:
            if path.is_dir():
                raise InvalidInputError(f"{option}: {where} is a directory, not a file")
            with path.open("rb") as file:
                data = file.read(MAX_INPUT_BYTES + 1)
    except FileNotFoundError:
        raise InvalidInputError(f"{option}: {where} does not exist") from None
    except OSError as exc:
        raise InvalidInputError(f"{option}: cannot read {where}: {exc.strerror or exc}") from exc
    if len(data) > MAX_INPUT_BYTES:
        raise InvalidInputError(
            f"{option}: {where} is larger than {MAX_INPUT_BYTES // 1024} KiB; a request is a "
            "few lines of YAML"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInputError(
            f"{option}: {where} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset "
            f"{exc.start})"
        ) from None
    if "\x00" in text:
        raise InvalidInputError(f"{option}: {where} is not text (it holds NUL bytes)")
    return text


def load_mapping(path: Path, what: str, option: str = "--file") -> dict[str, Any]:
    """The mapping of fields in YAML file `path`; InvalidInputError for anything else."""
    where = "standard input" if path == STDIN else str(path)
    text = read_text_input(path, option)
    try:
        raw = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise InvalidInputError(
            f"{option}: {where} is not valid YAML{at}: {getattr(exc, 'problem', exc)}"
        ) from None
    except RecursionError:
        raise InvalidInputError(f"{option}: {where} is nested too deeply") from None
    if not isinstance(raw, dict):
        got = "an empty file" if raw is None else f"a {type(raw).__name__}"
        raise InvalidInputError(f"{option}: {where} must hold a mapping of {what} (got {got})")
    keys = [k for k in raw if not isinstance(k, str)]
    if keys:
        raise InvalidInputError(f"{option}: {where}: field names must be text (got {keys[0]!r})")
    return raw
