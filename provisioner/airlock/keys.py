"""Where an export's bytes live: one naming scheme for the quarantine and egress buckets.

Guarantees:

- every key of one export request starts with ``exports/<project>/<request>/<uid>/``: the
  project slug and the request name are DNS labels (no '/'), the uid is the API server's, so
  two requests never share a prefix, not even a request deleted and filed again under the
  same name (its old release cannot be mistaken for the new one's);
- a file is ``<prefix>files/<path>`` where <path> is the normalised relative path
  (`normalise_export_path`): two spellings of one file (``a//b``, ``./a/b``) are one key, so a
  collision is found before anything is uploaded (`refuse_collisions`);
- the release manifest and the revocation record sit beside ``files/``, never inside it, so no
  file path can overwrite them;
- the same key names a file in quarantine and in egress, so a release copies key to key.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

from provisioner.errors import InvalidInputError
from provisioner.models.resources import ExportRequest

MAX_PATH_CHARS = 1024  # ExportFile.path's maxLength
MAX_SEGMENT_BYTES = 255  # NAME_MAX of Linux filesystems
MAX_KEY_BYTES = 1024  # S3's limit on a key, in UTF-8 bytes
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_UID = re.compile(r"^[0-9a-f][0-9a-f-]{7,63}$")


@dataclass(frozen=True)
class ExportRef:
    """Which export request the bytes belong to."""

    project: str
    name: str
    uid: str

    @classmethod
    def of(cls, request: ExportRequest) -> ExportRef:
        if not _UID.match(request.uid):
            raise InvalidInputError(
                f"export request {request.name!r}: metadata.uid {request.uid!r} is not the API "
                "server's uid; read the request from the API server before moving its files"
            )
        return cls(project=request.spec.project, name=request.name, uid=request.uid)

    @property
    def prefix(self) -> str:
        return f"exports/{self.project}/{self.name}/{self.uid}/"

    def file_key(self, path: str) -> str:
        normal = normalise_export_path(path)
        key = f"{self.prefix}files/{normal}"
        if len(key.encode("utf-8")) > MAX_KEY_BYTES:
            room = MAX_KEY_BYTES - len(self.files_prefix.encode("utf-8"))
            raise InvalidInputError(
                f"file {path!r}: the path is {len(normal.encode('utf-8'))} bytes, over the "
                f"{room} that fit in an S3 key after this request's prefix; shorten it"
            )
        return key

    @property
    def files_prefix(self) -> str:
        return f"{self.prefix}files/"

    def report_key(self, path: str) -> str:
        """Where the automated checks' report of a quarantined file is kept (quarantine
        bucket): computed once, shown to every reviewer, recorded in the release manifest."""
        normal = normalise_export_path(path)
        return f"{self.prefix}checks/{hashlib.sha256(normal.encode()).hexdigest()}.json"

    @property
    def manifest_key(self) -> str:
        return f"{self.prefix}release.json"

    @property
    def revocation_key(self) -> str:
        return f"{self.prefix}revocation.json"


def normalise_export_path(path: str, root: str = "/project") -> str:
    """The path of a file inside project storage, relative to `root`, in one canonical spelling.

    Accepts a relative path (taken relative to `root`) or an absolute one under `root`. Drops
    empty and '.' segments. Refuses, naming the path and the fix: an empty path, a directory
    (trailing '/'), any '..' segment (never folded: with symbolic links ``a/../b`` need not be
    ``b``), an absolute path outside `root`, control characters (they make log lines and
    manifests ambiguous), over-long paths or names. Lexical only: `paths.open_confined` is what
    stops symbolic links at open time.
    """
    where = f"file {path!r}"
    if not path or not path.strip():
        raise InvalidInputError("file path is empty; name a file inside project storage")
    if _CONTROL.search(path):
        raise InvalidInputError(
            f"{where}: contains a control character; rename the file to printable characters"
        )
    base = root.rstrip("/") + "/"
    relative = path
    if path.startswith("/"):
        if not path.startswith(base):
            raise InvalidInputError(
                f"{where}: is outside project storage {base}; copy the result into "
                f"{base} and export it from there"
            )
        relative = path[len(base) :]
    if relative.endswith("/"):
        raise InvalidInputError(f"{where}: is a directory; export the files in it one by one")
    segments = [s for s in relative.split("/") if s not in ("", ".")]
    if ".." in segments:
        raise InvalidInputError(
            f"{where}: contains '..'; give the path inside project storage without '..'"
        )
    if not segments:
        raise InvalidInputError(f"{where}: names project storage itself; name a file in it")
    for segment in segments:
        if len(segment.encode("utf-8")) > MAX_SEGMENT_BYTES:
            raise InvalidInputError(f"{where}: a name is over {MAX_SEGMENT_BYTES} bytes")
    normal = "/".join(segments)
    if len(normal) > MAX_PATH_CHARS:
        raise InvalidInputError(f"{where}: is over {MAX_PATH_CHARS} characters; shorten it")
    return normal


def refuse_collisions(paths: Iterable[str], root: str = "/project") -> list[str]:
    """The normalised paths, in order; InvalidInputError when two name the same file."""
    seen: dict[str, str] = {}
    normal: list[str] = []
    for path in paths:
        key = normalise_export_path(path, root)
        if key in seen:
            raise InvalidInputError(
                f"file {path!r}: names the same file as {seen[key]!r} ({key}); list each "
                "file once in one export request"
            )
        seen[key] = path
        normal.append(key)
    return normal
