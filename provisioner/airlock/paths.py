"""Open a file to export so that it provably lies inside project storage.

The check and the read are one act: the file is opened component by component from a
descriptor of the storage root (``openat`` with ``O_NOFOLLOW``, each directory with
``O_DIRECTORY``), then `fstat`-ed and streamed from that same descriptor. There is no moment
between "checked" and "read" in which a path could be swapped for a symbolic link (no
TOCTOU), and no string comparison of resolved paths to get wrong.

Refused, each naming the file and the fix (`InvalidInputError`; a missing file is
`NotFoundError`): what `keys.normalise_export_path` refuses ('..', absolute paths outside
the root, directories), **any** symbolic link on the way (stricter than "links that leave the
root": a link inside the root is refused too, because telling the two apart needs a resolve
that a rename could race; export the target by its own path), anything but a regular file
(directories, FIFOs, devices, sockets), a file on another filesystem than the root (a mount
under project storage, such as a dataset, is not project storage), an empty file and a file
over the size limit.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from provisioner.airlock.keys import normalise_export_path
from provisioner.errors import InvalidInputError, NotFoundError, PermanentError

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO must not hang waiting for a writer; fstat then refuses it.
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


@dataclass(frozen=True)
class ConfinedFile:
    """An open regular file inside project storage: read it only through `fd`."""

    path: str  # normalised, relative to the root
    fd: int
    size: int  # at open time; `read_parts` refuses a file that grows past it

    def read_parts(self, part_bytes: int) -> Iterator[bytes]:
        """The file's bytes in parts of `part_bytes` (the last one shorter), from offset 0.

        Each part is one allocation, read straight from the descriptor (`os.pread`) and
        dropped by the caller before the next: memory is bounded by a part or two whatever
        the file's size. Raises InvalidInputError when the file changed size while it was
        read (the declared sha256 would catch it too, but later and less clearly).
        """
        offset = 0
        while True:
            part = os.pread(self.fd, part_bytes, offset)
            while part and len(part) < part_bytes:  # a short read; rare for regular files
                more = os.pread(self.fd, part_bytes - len(part), offset + len(part))
                if not more:
                    break
                part += more
            if not part:
                break
            offset += len(part)
            if offset > self.size:
                raise InvalidInputError(
                    f"file {self.path!r}: grew while it was read (over {self.size} bytes); "
                    "export it once the program writing it has finished"
                )
            yield part
            if len(part) < part_bytes:
                break
        if offset != self.size:
            raise InvalidInputError(
                f"file {self.path!r}: shrank while it was read ({offset} of {self.size} "
                "bytes); export it once the program writing it has finished"
            )


def _is_link(parent: int, name: str) -> bool:
    """Whether `name` in directory `parent` is a symbolic link (for the message only: the open
    was already refused)."""
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _open_error(exc: OSError, path: str, name: str, parent: int) -> PermanentError:
    # O_DIRECTORY | O_NOFOLLOW on a link answers ENOTDIR, not ELOOP: look before naming it.
    if exc.errno == errno.ENOTDIR and _is_link(parent, name.rsplit("/", 1)[-1]):
        exc = OSError(errno.ELOOP, os.strerror(errno.ELOOP))
    if exc.errno == errno.ENOENT:
        return NotFoundError(
            f"file {path!r}: {name!r} does not exist in project storage; check the path"
        )
    if exc.errno in (errno.ELOOP, errno.EMLINK):
        return InvalidInputError(
            f"file {path!r}: {name!r} is a symbolic link, which the airlock never follows; "
            "export the file it points to by its own path inside project storage"
        )
    if exc.errno == errno.ENOTDIR:
        return InvalidInputError(f"file {path!r}: {name!r} is not a directory; check the path")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return InvalidInputError(f"file {path!r}: {name!r} is not readable; check permissions")
    return PermanentError(f"file {path!r}: cannot open {name!r}: {exc.strerror}")


@contextmanager
def open_confined(root: Path, path: str, *, max_bytes: int) -> Iterator[ConfinedFile]:
    """Open `path` (relative to `root`, or absolute under it) confined to `root`.

    Yields the open file; closes every descriptor on exit. Refusals: module docstring.
    """
    normal = normalise_export_path(path, str(root))
    *directories, leaf = normal.split("/")
    with ExitStack() as stack:
        try:
            root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise PermanentError(
                f"project storage {str(root)!r} cannot be opened ({exc.strerror}); is it mounted?"
            ) from exc
        stack.callback(os.close, root_fd)
        root_dev = os.fstat(root_fd).st_dev
        parent = root_fd
        walked: list[str] = []
        for name in directories:
            walked.append(name)
            try:
                opened = os.open(name, _DIR_FLAGS, dir_fd=parent)
            except OSError as exc:
                raise _open_error(exc, normal, "/".join(walked), parent) from exc
            parent = opened
            stack.callback(os.close, parent)
        try:
            fd = os.open(leaf, _FILE_FLAGS, dir_fd=parent)
        except OSError as exc:
            raise _open_error(exc, normal, normal, parent) from exc
        stack.callback(os.close, fd)
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise InvalidInputError(
                f"file {normal!r}: is a directory; export the files in it one by one"
            )
        if not stat.S_ISREG(info.st_mode):
            raise InvalidInputError(
                f"file {normal!r}: is not a regular file (a pipe, socket or device); "
                "write the result to a file and export that"
            )
        if info.st_dev != root_dev:
            raise InvalidInputError(
                f"file {normal!r}: lies on another filesystem than project storage (a mount "
                "such as a dataset); copy the result into project storage first"
            )
        if info.st_size == 0:
            raise InvalidInputError(f"file {normal!r}: is empty; there is nothing to export")
        if info.st_size > max_bytes:
            raise InvalidInputError(
                f"file {normal!r}: is {info.st_size} bytes, over the limit of {max_bytes} "
                "(TRE_AIRLOCK_MAX_FILE_BYTES); export a smaller result, for example an "
                "aggregate rather than row-level data"
            )
        yield ConfinedFile(path=normal, fd=fd, size=info.st_size)
