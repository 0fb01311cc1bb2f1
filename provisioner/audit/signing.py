"""The controller's audit signing key: load it from a file, sign entry hashes.

Only the controller holds the private key (`TRE_AUDIT_SIGNING_KEY_FILE`; in a cluster a
Secret mounted into the controller's pod only). Everyone else checks signatures with the
public key that the controller publishes beside the chain head (`provisioner.audit.anchor`).

Key file formats accepted: PEM (PKCS#8 "PRIVATE KEY", as `openssl genpkey -algorithm ed25519`
writes it), the 32 raw bytes of the private key, or those 32 bytes in base64 on one line.
The file must not be readable by other users (mode 0600 or 0400; group read is tolerated
because kubelet adds it to a mounted Secret when the pod sets `fsGroup`).
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from provisioner.audit.chain import AuditEntry, public_key_to_b64, sign_entry, signing_message
from provisioner.errors import InvalidInputError
from provisioner.secret_files import read_secret_file

SETTING = "TRE_AUDIT_SIGNING_KEY_FILE"


class AuditSigner:
    """Signs audit entries with the controller's Ed25519 private key."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._private_key = private_key
        self.public_key: Ed25519PublicKey = private_key.public_key()
        self.public_key_b64 = public_key_to_b64(self.public_key)

    def __repr__(self) -> str:  # never the private key
        return f"AuditSigner(public_key_b64={self.public_key_b64!r})"

    @classmethod
    def generate(cls) -> AuditSigner:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_file(cls, path: Path) -> AuditSigner:
        """Load the key from `path` (formats: module docstring).

        NotFoundError when the file is missing; InvalidInputError naming the setting and the fix
        when it is readable by others or is not an Ed25519 private key.
        """
        data = read_secret_file(
            path,
            setting=SETTING,
            owner="the controller",
            what="the audit signing key",
            where="in a cluster: the mounted Secret; locally: the file 'tre dev up' made",
        )
        return cls(_parse_private_key(data, path))

    def write(self, path: Path) -> None:
        """Write the private key as PEM (PKCS#8) to a new file `path`, mode 0600.

        Refuses to overwrite: replacing the key would make every earlier signature unverifiable
        with the published public key.
        """
        pem = self._private_key.private_bytes(
            encoding=serialization.Encoding.PEM,
            format=serialization.PrivateFormat.PKCS8,
            encryption_algorithm=serialization.NoEncryption(),
        )
        # O_EXCL: never replace a key; 0600 from the start, no window with a wider mode.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)

    def sign_message(self, message: bytes) -> bytes:
        """Raw Ed25519 signature of `message` (chain.SignFunction)."""
        return self._private_key.sign(message)

    def sign(self, entry_hash: str) -> str:
        """The base64 signature an entry with hash `entry_hash` carries (chain.signing_message)."""
        return base64.b64encode(self.sign_message(signing_message(entry_hash))).decode("ascii")

    def sign_entry(self, entry: AuditEntry) -> AuditEntry:
        return sign_entry(entry, self.sign_message)


def _parse_private_key(data: bytes, path: Path) -> Ed25519PrivateKey:
    wrong = (
        f"{SETTING}: {path} is not an Ed25519 private key (PEM, 32 raw bytes or their base64); "
        "create one with 'openssl genpkey -algorithm ed25519 -out FILE'"
    )
    if data.lstrip().startswith(b"-----BEGIN"):
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise InvalidInputError(f"{wrong} ({exc})") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise InvalidInputError(f"{wrong} (it holds a {type(key).__name__})")
        return key
    raw = data
    if len(data) != 32:
        try:
            raw = base64.b64decode(data.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise InvalidInputError(wrong) from None
    if len(raw) != 32:
        raise InvalidInputError(wrong)
    return Ed25519PrivateKey.from_private_bytes(raw)
