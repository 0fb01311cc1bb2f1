"""The audit trail cannot be forged, blinded or bypassed: real S3 (SeaweedFS) and the real
kube-apiserver with the platform installed.

Behaviours under test:
- forged: an entry appended by someone with write access to the bucket, chaining perfectly
  (valid hash and link, head.json moved too) but unsigned, is named by `verify` (UNSIGNED);
  the controller refuses to build on it, and its key does not count in `keys()`, so it cannot
  blind the controller into skipping a real event;
- truncated: entries deleted from the end with head.json rewritten to match are reported
  against the head the controller published in the cluster (TRUNCATED), by the library and by
  `tre -o json audit verify`; the controller refuses to move the published head past them;
- controller-only head: an administrator (system:masters, impersonated) who tries to publish,
  change or delete the head ConfigMap is refused by the API server with the policy's message;
  a user without rights is refused too;
- idempotent: append with the key of the newest entry returns that entry and writes nothing;
  `keys()` returns exactly the keys written; a pass that derives the same events again appends
  only the missing ones (`append_missing`) and publishes the newest as the head;
- fail closed: opening the log for writing on a bucket without object lock while
  TRE_AUDIT_RETENTION_DAYS > 0 is refused naming the setting and the fix, and so is
  `ensure_audit_bucket`; readers may open it; a missing bucket is never created by opening;
- no published head yet: `verify_against_published` says so in plain words;
- every call on the audit bucket states TRE_AUDIT_BUCKET_OWNER when set, and the calls
  succeed against the local server, which does not check it (a wrong owner is not refused);
- the dev platform's key file is 0600 and only in the controller's environment, not in what
  `tre dev env` prints.
"""

from __future__ import annotations

import json
import stat
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from kubernetes import client as k8s

from provisioner.audit.anchor import (
    CONFIGMAPS,
    AnchoredAuditLog,
    publish_head,
    read_published_head,
    verify_against_published,
)
from provisioner.audit.chain import AuditEntry, ChainAnchor, ProblemKind, next_entry
from provisioner.audit.log import (
    HEAD_KEY,
    AuditEvent,
    AuditLog,
    ensure_audit_bucket,
    entry_key,
    open_audit_log,
)
from provisioner.audit.signing import AuditSigner
from provisioner.devcluster.cluster import DevCluster
from provisioner.errors import (
    AuditChainError,
    ConflictError,
    NotFoundError,
    PermanentError,
    RefusedError,
)
from provisioner.kube.api import Kube
from provisioner.models.settings import Settings
from provisioner.planning.names import AUDIT_HEAD_CONFIGMAP, SYSTEM_NAMESPACE
from provisioner.storage.s3 import ensure_bucket, s3_client
from tests.integration.workspace_world import World

if TYPE_CHECKING:
    from collections.abc import Callable

    from mypy_boto3_s3 import S3Client

pytestmark = pytest.mark.integration


@pytest.fixture
def world(installed_platform: Settings, dev_platform: DevCluster, tmp_path: Path) -> World:
    return World(installed_platform, dev_platform.kubeconfig, tmp_path)


@pytest.fixture
def settings(world: World) -> Settings:
    """The platform's settings with a fresh audit bucket of this test's own (locked)."""
    bucket = f"audit-{uuid.uuid4().hex[:12]}"
    ensure_audit_bucket(world.s3, bucket, retention_days=1)
    return world.settings.model_copy(update={"audit_bucket": bucket, "audit_retention_days": 1})


@pytest.fixture
def log(world: World, settings: Settings) -> AnchoredAuditLog:
    """The controller's log: signed with the platform's key, head published as the controller."""
    return AnchoredAuditLog(
        open_audit_log(settings, world.s3, signer=world.signer), world.controller, world.signer
    )


def _fill(log: AnchoredAuditLog, n: int) -> list[AuditEntry]:
    return [
        log.append("tre-controller", "request.phase", f"accessrequest/r{i}", key=f"phase/r{i}")
        for i in range(n)
    ]


def _forge_next(s3: S3Client, bucket: str, prev: AuditEntry, key: str) -> AuditEntry:
    """What a writer of the bucket without the key can do: a perfectly chained entry."""
    forged = next_entry(
        prev,
        actor="tre-controller",
        action="request.phase",
        subject="accessrequest/mallory",
        details={"to": "Approved"},
        at=prev.at,
        key=key,
    )
    s3.put_object(Bucket=bucket, Key=entry_key(forged.seq), Body=forged.to_json_line().encode())
    s3.put_object(Bucket=bucket, Key=HEAD_KEY, Body=ChainAnchor.of(forged).to_json().encode())
    return forged


def test_forged_entry_is_named_refused_and_does_not_blind_the_controller(
    world: World, log: AnchoredAuditLog
) -> None:
    entries = _fill(log, 3)
    _forge_next(world.s3, log.bucket, entries[-1], key="decision/real-uid/0")

    published = read_published_head(world.admin)
    problems = verify_against_published(log.log, published)
    assert [(p.seq, p.kind) for p in problems] == [(4, ProblemKind.UNSIGNED)]
    assert "entry 4 (request.phase by tre-controller) is not signed" in problems[0].message
    # The forged key does not count: the controller still records the real event ...
    assert log.keys() == {"phase/r0", "phase/r1", "phase/r2"}
    # ... but refuses to hide the forgery inside its own chain by building on it.
    with pytest.raises(AuditChainError, match="not signed by the controller's key"):
        log.append("tre-controller", "request.decision", "accessrequest/x", key="decision/x/0")


def test_truncation_with_rewritten_head_is_caught_by_the_published_head(
    world: World, log: AnchoredAuditLog, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    entries = _fill(log, 5)
    published = read_published_head(world.admin)
    assert published is not None
    assert (published.bucket, published.anchor) == (log.bucket, ChainAnchor.of(entries[-1]))
    assert published.public_key_b64 == world.signer.public_key_b64
    assert verify_against_published(log.log, published) == []

    # A writer of the bucket cuts off the last two entries and rewrites head.json to match.
    for seq in (4, 5):
        world.s3.delete_object(Bucket=log.bucket, Key=entry_key(seq))
    world.s3.put_object(
        Bucket=log.bucket, Key=HEAD_KEY, Body=ChainAnchor.of(entries[2]).to_json().encode()
    )
    problems = verify_against_published(log.log, read_published_head(world.admin))
    truncated = [p for p in problems if p.kind is ProblemKind.TRUNCATED]
    assert [(p.seq, p.message) for p in truncated] == [
        (
            4,
            "the log ends at entry 3 but its head was entry 5: entries 4 to 5 are missing "
            "from the end",
        )
    ]

    # The CLI, as an auditor with read access, says the same, also as JSON.
    monkeypatch.setenv("TRE_AUDIT_BUCKET", settings.audit_bucket)
    result = world.tre("-o", "json", "audit", "verify")
    assert result.exit_code == 6, result.output
    report = json.loads(result.stdout)
    assert report["ok"] is False
    assert report["publishedHead"] == {
        "bucket": log.bucket,
        "seq": 5,
        "hash": entries[-1].hash,
    }
    assert any("entries 4 to 5 are missing from the end" in p for p in report["problems"])

    # The controller goes on from entry 3, but never moves the published head past the gap.
    log.append("tre-controller", "request.phase", "accessrequest/r5", key="phase/r5")
    with pytest.raises(AuditChainError, match="refusing to move the published head past them"):
        log.append("tre-controller", "request.phase", "accessrequest/r6", key="phase/r6")
    after = read_published_head(world.admin)
    assert after is not None and after.anchor == published.anchor


def _wait_until_refused(kube: Kube, manifest: dict[str, Any], timeout: float = 30.0) -> str:
    """Admission policies load asynchronously: a dry-run create until the policy refuses it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            kube.create(manifest, dry_run=True)
        except RefusedError as exc:
            return str(exc)
        except (ConflictError, PermanentError):
            pass  # AlreadyExists: the policy is not active yet
        time.sleep(0.25)
    pytest.fail("the audit head policy did not become active within 30s")


def test_only_the_controller_may_write_the_published_head(
    world: World, log: AnchoredAuditLog, as_user: Callable[..., k8s.ApiClient]
) -> None:
    _fill(log, 1)  # the controller publishes: allowed
    admin = Kube(as_user("root", "system:masters"))  # an administrator, RBAC aside
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": AUDIT_HEAD_CONFIGMAP, "namespace": SYSTEM_NAMESPACE},
        "data": {"bucket": log.bucket, "seq": "0", "hash": "0" * 64, "publicKey": "x"},
    }
    message = _wait_until_refused(admin, configmap)
    assert "root may not create ConfigMap tre-system/tre-audit-head: only the controller" in (
        message
    )

    head = read_published_head(world.admin)
    assert head is not None
    forged_key = AuditSigner.generate()
    with pytest.raises(RefusedError) as refused:
        publish_head(
            admin,
            ChainAnchor(seq=head.anchor.seq + 1, hash="f" * 64),
            forged_key.public_key,
            log=log.log,
        )
    assert (
        "root may not update ConfigMap tre-system/tre-audit-head: only the controller "
        f"({world.settings.controller_user}) publishes the audit chain head and its public key "
        "there, so that nobody who can write the audit bucket can also move the head; to "
        "re-anchor after an incident, delete the ValidatingAdmissionPolicyBinding "
        "tre-audit-head-controller-only first"
    ) in str(refused.value)
    with pytest.raises(RefusedError, match="root may not delete ConfigMap"):
        admin.delete(CONFIGMAPS, AUDIT_HEAD_CONFIGMAP, SYSTEM_NAMESPACE)
    # Someone without any rights there is stopped by RBAC before the policy.
    with pytest.raises(RefusedError, match="forbidden"):
        publish_head(Kube(as_user("mallory")), head.anchor, forged_key.public_key, log=log.log)
    assert read_published_head(world.admin) == head
    # Every signed-in user may read it, to verify the log.
    assert read_published_head(Kube(as_user("auditor"))) == head


def test_append_with_the_tail_key_does_not_duplicate_and_keys_lists_what_was_written(
    log: AnchoredAuditLog,
) -> None:
    first = log.append("tre-controller", "request.phase", "accessrequest/a", key="phase/a")
    again = log.append("tre-controller", "request.phase", "accessrequest/a", key="phase/a")
    assert again == first
    second = log.append("tre-controller", "request.decision", "accessrequest/a", key="dec/a/0")
    unkeyed = log.append("tre-controller", "workspace.phase", "workspace/a")
    assert [e.seq for e in log.log.read_all()] == [1, 2, 3]
    assert (second.seq, unkeyed.key) == (2, None)
    assert log.keys() == {"phase/a", "dec/a/0"}
    assert log.log.verify() == []


def test_controller_pass_appends_only_missing_events_and_publishes_once(
    world: World, log: AnchoredAuditLog
) -> None:
    def events(*names: str) -> list[AuditEvent]:
        return [
            AuditEvent(f"decision/{n}/0", "tre-controller", "request.decision", f"ar/{n}")
            for n in names
        ]

    known = log.keys()  # at start-up: empty log
    assert known == set()
    first = log.append_missing(events("a", "b"), known)
    assert [e.key for e in first] == ["decision/a/0", "decision/b/0"]
    # the next pass derives the same events again, plus one new (and one twice)
    second = log.append_missing(events("a", "b", "c", "c"), known)
    assert [(e.seq, e.key) for e in second] == [(3, "decision/c/0")]
    assert log.append_missing(events("a", "b", "c"), known) == []
    assert known == log.keys() == {"decision/a/0", "decision/b/0", "decision/c/0"}
    published = read_published_head(world.admin)
    assert published is not None and published.anchor == ChainAnchor.of(second[-1])


def test_opening_for_writing_refuses_retention_on_an_unlocked_bucket(
    world: World, s3: S3Client
) -> None:
    bucket = f"unlocked-{uuid.uuid4().hex[:12]}"
    ensure_bucket(s3, bucket, versioning=True)  # no object lock
    settings = world.settings.model_copy(
        update={"audit_bucket": bucket, "audit_retention_days": 30}
    )
    with pytest.raises(PermanentError) as refused:
        open_audit_log(settings, s3, signer=world.signer)
    text = str(refused.value)
    assert text.startswith(
        f"TRE_AUDIT_RETENTION_DAYS=30 asks for each audit entry to be locked, but bucket "
        f"{bucket!r} does not have S3 object lock enabled"
    )
    assert "enable object lock on the bucket" in text
    assert "or set TRE_AUDIT_RETENTION_DAYS=0" in text
    # Readers need no lock, and an explicit 0 is a decision, not a downgrade.
    assert open_audit_log(settings, s3).read_all() == []
    unlocked = settings.model_copy(update={"audit_retention_days": 0})
    assert (
        open_audit_log(unlocked, s3, signer=world.signer)
        .append("tre-controller", "test.unlocked", "bucket/x", key="k")
        .seq
        == 1
    )


def test_opening_never_creates_the_bucket(world: World, s3: S3Client) -> None:
    bucket = f"missing-{uuid.uuid4().hex[:12]}"
    settings = world.settings.model_copy(update={"audit_bucket": bucket})
    with pytest.raises(NotFoundError, match=f"audit bucket '{bucket}' .* does not exist"):
        open_audit_log(settings, s3, signer=world.signer)
    with pytest.raises(NotFoundError):
        open_audit_log(settings, s3)
    assert bucket not in {b["Name"] for b in s3.list_buckets()["Buckets"]}


def test_without_a_published_head_verify_says_so(world: World, settings: Settings) -> None:
    writer: AuditLog = open_audit_log(settings, world.s3, signer=world.signer)
    reader = open_audit_log(settings, world.s3)
    assert verify_against_published(reader, None) == []  # empty: nothing to anchor yet
    writer.append("tre-controller", "request.phase", "accessrequest/a", key="phase/a")
    problems = verify_against_published(reader, None)
    assert [(p.seq, p.kind) for p in problems] == [(None, ProblemKind.NOT_ANCHORED)]
    assert problems[0].message.startswith(
        "no audit head is published in ConfigMap tre-system/tre-audit-head yet, so "
        "signatures and entries cut off at the end cannot be checked"
    )


def test_every_call_states_the_buckets_owner_and_the_local_server_does_not_check_it(
    world: World, settings: Settings
) -> None:
    """F21: with TRE_AUDIT_BUCKET_OWNER every request on the audit bucket carries it (seen on
    the way out, then sent to the real server). SeaweedFS ignores the header: a wrong owner
    is not refused there, which docs/operations.md says; on AWS the same call is a 403."""
    for owner in ("123456789012", "999999999999"):
        client = s3_client(settings)  # the hook stays with its client: a fresh one per owner
        sent: list[tuple[str, str | None]] = []

        def seen(request: Any, sent: list[tuple[str, str | None]] = sent, **_: Any) -> None:
            stated = request.headers.get("x-amz-expected-bucket-owner")
            if f"/{settings.audit_bucket}" in request.url:
                sent.append((request.method, stated.decode() if stated else None))

        client.meta.events.register("before-send.s3", seen)
        owned = settings.model_copy(update={"audit_bucket_owner": owner})
        log = open_audit_log(owned, client, signer=world.signer)
        log.append("tre-controller", "request.phase", "accessrequest/o", key=f"owner/{owner}")
        assert [e.key for e in open_audit_log(owned, client).read_all()][-1] == f"owner/{owner}"
        assert sent and all(stated == owner for _, stated in sent), sent
        assert {"HEAD", "GET", "PUT"} <= {method for method, _ in sent}


def test_dev_platform_key_is_private_and_only_in_the_controllers_environment(
    dev_platform: DevCluster,
) -> None:
    path = dev_platform.audit_signing_key_file
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    AuditSigner.from_file(path)  # a valid Ed25519 key
    assert "TRE_AUDIT_SIGNING_KEY_FILE" not in dev_platform.env()  # what `tre dev env` prints
    assert dev_platform.controller_env()["TRE_AUDIT_SIGNING_KEY_FILE"] == str(path)
