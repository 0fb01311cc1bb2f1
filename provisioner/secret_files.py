"""Reading a secret from a file that only its owner may read: the audit signing key, the hub's
OIDC client secret, the development hub's shared password.

One rule for all of them: a file that others may read, or anyone but its owner (and its group,
read-only) may change, is refused with the setting, the mode and the fix, never read. Group read
is tolerated because kubelet adds it to a mounted Secret when the pod sets `fsGroup`.
"""

from __future__ import annotations

import stat
from pathlib import Path

from provisioner.errors import InvalidInputError, NotFoundError

# Group write and anything for others: a file with these bits is not its owner's alone.
UNSAFE_MODE_BITS = stat.S_IWGRP | stat.S_IRWXO


def read_secret_file(path: Path, *, setting: str, owner: str, what: str, where: str) -> bytes:
    """The bytes of secret file `path`, named by `setting`, holding `what` for `owner`.

    NotFoundError when it is missing (`where` says where the right file lives);
    InvalidInputError naming the setting and the `chmod` when others may read or change it.
    """
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except FileNotFoundError:
        raise NotFoundError(
            f"{setting}: {path} does not exist; point it at {what} ({where})"
        ) from None
    if mode & UNSAFE_MODE_BITS:
        raise InvalidInputError(
            f"{setting}: {path} has mode {stat.S_IMODE(mode):04o}, so users other than "
            f"{owner} may read or change {what}; run 'chmod 600 {path}' (a mounted Secret: set "
            "defaultMode: 0400)"
        )
    return data
