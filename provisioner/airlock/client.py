"""The airlock's API as `tre export` calls it, from a notebook or anywhere with a hub token.

Submitting is three steps, each safe to repeat: declare the files (size and sha256, read
through the same confined open as the upload: a path outside project storage or a symbolic
link out of it is refused before anything is sent), file the ExportRequest, then stream each
file to the airlock, which checks it against the declaration as it uploads it to quarantine.
It runs in the notebook, whose `tre` is installed without its heavy dependencies (the
notebook image): the standard library, pydantic (the ExportFile model) and this package's
stdlib-only modules; never boto3, botocore or the Kubernetes client.
`tests/unit/test_export_in_notebook.py` fails when this import chain grows one of them.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from provisioner.airlock.paths import open_confined
from provisioner.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    RefusedError,
    TemporaryError,
    TreError,
)
from provisioner.models.resources import ExportFile, ExportFileKind

UPLOAD_PART_BYTES: Final = 1 << 20
_ERRORS: Final[dict[int, type[TreError]]] = {
    400: InvalidInputError,
    401: RefusedError,
    403: RefusedError,
    404: NotFoundError,
    409: ConflictError,
}


@dataclass(frozen=True)
class Airlock:
    """The airlock API at `url` (ending in the service prefix, e.g. .../services/airlock/),
    called with a JupyterHub token."""

    url: str
    token: str
    timeout: float = 300.0

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        stream: Iterable[bytes] | None = None,
        length: int | None = None,
    ) -> dict[str, Any]:
        parts = urllib.parse.urlsplit(self.url)
        connection_class = (
            http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        )
        connection = connection_class(parts.hostname or "", parts.port, timeout=self.timeout)
        headers = {"Authorization": f"token {self.token}", "Accept": "application/json"}
        data: Any = None
        if stream is not None:
            headers["Content-Length"] = str(length)
            headers["Content-Type"] = "application/octet-stream"
            data = stream
        elif body is not None:
            headers["Content-Type"] = "application/json"
            data = json.dumps(body).encode()
        target = parts.path.rstrip("/") + "/" + path
        try:
            connection.request(method, target, body=data, headers=headers)
            response = connection.getresponse()
            raw = response.read()
        except OSError as exc:
            raise TemporaryError(f"airlock at {self.url}: cannot reach it ({exc})") from exc
        finally:
            connection.close()
        try:
            answer: dict[str, Any] = json.loads(raw) if raw else {}
        except ValueError:
            answer = {"error": raw[:300].decode(errors="replace")}
        if response.status >= 400:
            kind = _ERRORS.get(response.status, TemporaryError)
            message = answer.get("error") or response.reason
            raise kind(f"airlock: {message}")
        return answer


def declare_file(
    root: Path,
    path: str,
    *,
    description: str,
    kind: ExportFileKind = ExportFileKind.OUTPUT,
    max_bytes: int,
    part_bytes: int = UPLOAD_PART_BYTES,
) -> ExportFile:
    """What an ExportRequest declares for one file: its normalised path, size and sha256, read
    through the same confined open as the upload (`tre export submit` does this first)."""
    digest = hashlib.sha256()
    with open_confined(root, path, max_bytes=max_bytes) as source:
        for part in source.read_parts(part_bytes):
            digest.update(part)
        return ExportFile(
            path=source.path,
            size=source.size,
            sha256=digest.hexdigest(),
            kind=kind,
            description=description,
        )


def declare(
    root: Path,
    outputs: Sequence[str],
    supporting: Sequence[str],
    description: str,
    *,
    max_bytes: int,
) -> list[ExportFile]:
    """What the request declares for each file (read once, confined to `root`)."""
    return [
        declare_file(root, path, description=description, kind=kind, max_bytes=max_bytes)
        for paths, kind in (
            (outputs, ExportFileKind.OUTPUT),
            (supporting, ExportFileKind.SUPPORTING),
        )
        for path in paths
    ]


def submit(
    airlock: Airlock,
    root: Path,
    project: str,
    context: str,
    files: Sequence[ExportFile],
    *,
    max_bytes: int,
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """File the request, then stream each file into quarantine; the created request."""
    created = airlock.call(
        "POST",
        "api/exports",
        {"project": project, "context": context, "files": [f.to_wire() for f in files]},
    )
    progress(f"filed export request {created['name']} in {created['namespace']}")
    for declared in files:
        upload(airlock, root, created["namespace"], created["name"], declared, max_bytes=max_bytes)
        progress(f"uploaded {declared.path} ({declared.size} bytes)")
    return created


def upload(
    airlock: Airlock,
    root: Path,
    namespace: str,
    name: str,
    declared: ExportFile,
    *,
    max_bytes: int,
) -> dict[str, Any]:
    with open_confined(root, declared.path, max_bytes=max_bytes) as source:
        return airlock.call(
            "PUT",
            f"api/exports/{namespace}/{name}/files/{urllib.parse.quote(source.path)}",
            stream=source.read_parts(UPLOAD_PART_BYTES),
            length=source.size,
        )
