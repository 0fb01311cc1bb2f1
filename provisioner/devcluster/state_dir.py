"""The dev platform's state directory is its owner's alone, or it is not used.

The platform runs as root with a node, and its state directory holds what makes a caller
cluster-admin (the CA key, the admin certificate), the controller's audit signing key, and
`processes.json`, the pids `tre dev down` signals. Its default path is predictable
(`<tmp>/ucloud-tre-dev-<uid>`), so anyone could create it first and plant those files.
Rules, checked before anything in it is read or written:

- missing: created with mode 0700 (never a looser umask's);
- a symlink, not a directory, owned by another uid, or with any group or other permission
  bit: refused, naming the path, what is wrong and the fix; nothing in it is read, signalled
  or deleted;
- an entry directly inside it (or in its `pki/`) owned by another uid: refused the same way;
- every directory above it must be owned by root or the caller and writable by nobody else
  unless sticky (like /tmp): otherwise its owner could swap the state directory for another.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from provisioner.errors import DevClusterError

STATE_DIR_MODE = 0o700
_FIX = "remove it, or choose another directory with --state-dir (TRE_DEV_DIR)"


def ensure_state_dir(path: Path) -> None:
    """Create `path` (mode 0700) or accept it as it is: the caller's own, private directory
    with no one else's files in it. DevClusterError naming the path and the fix otherwise."""
    _check_ancestors(path)  # before creating anything under a directory someone else holds
    for directory in (*reversed(path.absolute().parents), path.absolute()):
        try:
            os.mkdir(directory, STATE_DIR_MODE)
        except FileExistsError:
            continue
        os.chmod(directory, STATE_DIR_MODE, follow_symlinks=False)  # whatever the umask was
    check_state_dir(path)


def check_state_dir(path: Path) -> None:
    """Refuse an existing state directory that is not the caller's alone (module doc). A
    missing one passes: there is nothing in it to adopt."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    _check_ancestors(path)
    uid = os.geteuid()
    if stat.S_ISLNK(info.st_mode):
        raise _refused(path, "is a symbolic link (whoever owns it chooses where it points)")
    if not stat.S_ISDIR(info.st_mode):
        raise _refused(path, "is not a directory")
    if info.st_uid != uid:
        raise _refused(path, f"is owned by uid {info.st_uid}, not by you (uid {uid})")
    if info.st_mode & 0o077:
        raise _refused(
            path,
            f"has mode {stat.S_IMODE(info.st_mode):04o}, so other users may read or change "
            "what it holds; run 'chmod 700' on it only if you created it and its files yourself",
        )
    for directory in (path, path / "pki"):
        for entry in _entries(directory):
            owner = os.lstat(entry).st_uid
            if owner != uid:
                raise _refused(path, f"holds {entry}, owned by uid {owner}, not by you")


def _entries(directory: Path) -> list[Path]:
    try:
        return list(directory.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []


def _check_ancestors(path: Path) -> None:
    """Every existing directory above `path` (symlinks resolved) is root's or the caller's,
    and no one else may rename entries in it (group/other write without the sticky bit)."""
    uid = os.geteuid()
    parent = path.absolute().parent.resolve()
    for directory in (*reversed(parent.parents), parent):
        try:
            info = os.stat(directory)
        except FileNotFoundError:
            return  # the rest does not exist yet: ensure_state_dir creates it, as the caller
        if info.st_uid not in (0, uid):
            raise _refused(
                path, f"lies under {directory}, owned by uid {info.st_uid}, who could replace it"
            )
        if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not info.st_mode & stat.S_ISVTX:
            raise _refused(
                path,
                f"lies under {directory} (mode {stat.S_IMODE(info.st_mode):04o}), where other "
                "users could replace it",
            )


def _refused(path: Path, why: str) -> DevClusterError:
    return DevClusterError(f"refusing the state directory {path}: it {why}; {_FIX}")
