"""The published audit head: where the chain's head and the controller's public key live,
outside the audit bucket, in a Kubernetes object only the controller may write.

ConfigMap `tre-system/tre-audit-head` (names in planning/names.py; RBAC and the admission
policy that make it controller-only in planning/audit_anchor.py)::

    data:
      bucket: tre-audit              the audit bucket this head belongs to
      seq: "42"                      the newest entry the controller has published
      hash: 9f86d0...                its hash (64 hex)
      publicKey: MCowBQYDK2Vw...     base64 of the 32 raw bytes of the Ed25519 public key

Why it defeats the bucket's writers: someone who can write the bucket can delete entries from
the end and rewrite head.json to match, but cannot move this head back, so `tre audit verify`
reports the log TRUNCATED (or REWRITTEN); they cannot sign entries either, and cannot swap the
public key that `verify` checks signatures with.

The controller calls `publish_head` after a successful append (or a batch of them). It only
moves the head forwards, and only when the log still reaches the head published before
(otherwise it raises AuditChainError instead of covering up a truncation).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import JsonValue, ValidationError

from provisioner.audit.chain import (
    AuditEntry,
    ChainAnchor,
    ChainProblem,
    ProblemKind,
    public_key_from_b64,
    public_key_to_b64,
)
from provisioner.errors import AuditChainError, ConflictError, TemporaryError
from provisioner.kube.resources import RESOURCES
from provisioner.planning.names import (
    AUDIT_HEAD_CONFIGMAP,
    LABEL_MANAGED_BY,
    MANAGED_BY,
    SYSTEM_NAMESPACE,
)

if TYPE_CHECKING:
    from provisioner.audit.log import AuditLog
    from provisioner.audit.signing import AuditSigner
    from provisioner.kube.api import Kube
    from provisioner.planning.project import AuditEvent

_log = logging.getLogger(__name__)

CONFIGMAPS = RESOURCES[("v1", "ConfigMap")]
WHERE = f"ConfigMap {SYSTEM_NAMESPACE}/{AUDIT_HEAD_CONFIGMAP}"
_ATTEMPTS = 5


@dataclass(frozen=True)
class PublishedHead:
    """What the controller published: the head of the chain in `bucket` and its public key."""

    bucket: str
    anchor: ChainAnchor
    public_key_b64: str

    @property
    def public_key(self) -> Ed25519PublicKey:
        return public_key_from_b64(self.public_key_b64)

    def to_data(self) -> dict[str, str]:
        return {
            "bucket": self.bucket,
            "seq": str(self.anchor.seq),
            "hash": self.anchor.hash,
            "publicKey": self.public_key_b64,
        }

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> PublishedHead:
        """Parse the ConfigMap's data; AuditChainError naming what is wrong."""
        missing = [k for k in ("bucket", "seq", "hash", "publicKey") if k not in data]
        if missing:
            raise AuditChainError(f"{WHERE}: data.{missing[0]} is missing; {_REPUBLISH}")
        try:
            anchor = ChainAnchor(seq=int(data["seq"]), hash=str(data["hash"]))
            public_key_from_b64(str(data["publicKey"]))
        except (ValueError, ValidationError) as exc:
            raise AuditChainError(f"{WHERE}: not a valid head ({exc}); {_REPUBLISH}") from exc
        return cls(str(data["bucket"]), anchor, str(data["publicKey"]))


_REPUBLISH = (
    "it is written only by the controller, so this points at tampering by an administrator: "
    "run 'tre audit verify' and restore the ConfigMap from the API server's audit log"
)


def read_published_head(kube: Kube) -> PublishedHead | None:
    """The published head, or None when the controller has not published one yet."""
    obj = kube.get(CONFIGMAPS, AUDIT_HEAD_CONFIGMAP, SYSTEM_NAMESPACE)
    if obj is None:
        return None
    return PublishedHead.from_data(obj.get("data") or {})


def publish_head(
    kube: Kube,
    anchor: ChainAnchor,
    public_key: Ed25519PublicKey | str,
    *,
    log: AuditLog,
) -> PublishedHead:
    """Publish `anchor` (the head of `log`) and the controller's `public_key` (key object or
    its base64); returns what is published afterwards.

    Forwards only: a published head at a later seq of the same bucket and key is kept (another
    pass got there first). Before moving it forwards, checks that `log` still holds the entry
    published before with the same hash; raises AuditChainError if not (entries were deleted
    or rewritten: moving the head on would hide that). Create and update are compare-and-swap
    (resourceVersion); ConflictError if other writers kept winning. `kube` must act as the
    controller: anyone else is refused by the admission policy (RefusedError).
    """
    key_b64 = public_key if isinstance(public_key, str) else public_key_to_b64(public_key)
    wanted = PublishedHead(log.bucket, anchor, key_b64)
    for _ in range(_ATTEMPTS):
        obj = kube.get(CONFIGMAPS, AUDIT_HEAD_CONFIGMAP, SYSTEM_NAMESPACE)
        if obj is None:
            try:
                kube.create(_configmap(wanted))
            except ConflictError:
                continue  # created meanwhile: compare with it
            return wanted
        current = PublishedHead.from_data(obj.get("data") or {})
        same_log = current.bucket == wanted.bucket and current.public_key_b64 == key_b64
        if same_log:
            if current.anchor.seq > anchor.seq or current.anchor == anchor:
                return current  # never backwards; nothing to change
            if not log.reaches(current.anchor):
                raise AuditChainError(
                    f"audit log s3://{log.bucket} no longer holds entry {current.anchor.seq} "
                    f"with hash {current.anchor.hash[:12]}... as published in {WHERE}: entries "
                    "were deleted or rewritten; refusing to move the published head past them. "
                    "Run 'tre audit verify'"
                )
        # Another bucket or another key: the platform was re-configured (or the key rotated);
        # the new log starts its own anchor. Old entries then no longer verify with this key.
        replacement = {**obj, "data": wanted.to_data()}
        try:
            kube.replace(replacement)
        except ConflictError:
            continue
        return wanted
    raise ConflictError(f"{WHERE}: kept changing while publishing the audit head; retry")


class AnchoredAuditLog:
    """The controller's audit log: appends (signed, by `log`) and publishes the head after
    each one, as `kube` (the controller's identity).

    Publishing per append is the simple wiring for callers that append one event at a time;
    a caller that appends a batch can use `log` directly and call `publish()` once at the end.
    A publish that fails for a temporary reason is left to the next one (the entry is stored;
    a lagging published head is harmless); a permanent failure (refused, truncation found)
    is raised.
    """

    def __init__(self, log: AuditLog, kube: Kube, signer: AuditSigner) -> None:
        self.log = log
        self.bucket = log.bucket
        self._kube = kube
        self._signer = signer

    def append(
        self,
        actor: str,
        action: str,
        subject: str,
        details: Mapping[str, JsonValue] | None = None,
        *,
        key: str | None = None,
    ) -> AuditEntry:
        entry = self.log.append(actor, action, subject, details, key=key)
        self._publish(entry)
        return entry

    def keys(self) -> set[str]:
        return self.log.keys()

    def append_missing(self, events: Iterable[AuditEvent], known: set[str]) -> list[AuditEntry]:
        """`AuditLog.append_missing`, then one publish of the newest entry written (also when
        an append failed part way: what was written is anchored)."""
        written: list[AuditEntry] = []
        try:
            for event in events:
                if event.key in known:
                    continue
                written.append(
                    self.log.append(
                        event.actor, event.action, event.subject, event.details, key=event.key
                    )
                )
                known.add(event.key)
        finally:
            if written:
                self._publish(written[-1])
        return written

    def _publish(self, entry: AuditEntry) -> None:
        try:
            publish_head(self._kube, ChainAnchor.of(entry), self._signer.public_key, log=self.log)
        except TemporaryError as exc:
            _log.warning(
                "audit head not published this time (the next publish catches up): %s", exc
            )

    def publish(self) -> PublishedHead | None:
        """Publish the log's current head (after a batch); None while the log is empty."""
        head = self.log.head()
        if head is None or head.seq == 0:
            return None
        return publish_head(self._kube, head, self._signer.public_key, log=self.log)


def verify_against_published(log: AuditLog, published: PublishedHead | None) -> list[ChainProblem]:
    """Everything wrong with `log`, checked against the head and public key the controller
    published (`read_published_head`): signatures, truncation, rewrites, plus all of
    `AuditLog.verify`.

    Without a published head, or with one for another bucket, signatures and truncation cannot
    be checked: that is reported (NOT_ANCHORED) next to what the log's own checks find, unless
    the log is empty.
    """
    if published is None:
        problems = log.verify()
        if log.head() is None:
            return problems  # nothing written yet, nothing to anchor
        return [
            ChainProblem(
                None,
                ProblemKind.NOT_ANCHORED,
                f"no audit head is published in {WHERE} yet, so signatures and entries cut "
                "off at the end cannot be checked; the controller publishes it after its "
                "first append (is it running with TRE_AUDIT_SIGNING_KEY_FILE?)",
            ),
            *problems,
        ]
    if published.bucket != log.bucket:
        return [
            ChainProblem(
                None,
                ProblemKind.NOT_ANCHORED,
                f"the head published in {WHERE} is for bucket {published.bucket!r}, not "
                f"{log.bucket!r}, so this log's signatures and end cannot be checked; verify "
                "the bucket the controller writes (TRE_AUDIT_BUCKET)",
            ),
            *log.verify(),
        ]
    return log.verify(anchor=published.anchor, public_key=published.public_key)


def _configmap(head: PublishedHead) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": AUDIT_HEAD_CONFIGMAP,
            "namespace": SYSTEM_NAMESPACE,
            "labels": {LABEL_MANAGED_BY: MANAGED_BY},
        },
        "data": head.to_data(),
    }
