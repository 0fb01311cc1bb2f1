"""Every S3 call on the audit bucket states its expected owner (TRE_AUDIT_BUCKET_OWNER, F21).

Behaviours under test (botocore's own request pipeline; the wire is replaced by an event hook
that records each request and answers 200, so nothing leaves the process):
- with `audit_bucket_owner` set, opening the log and reading it send
  ``x-amz-expected-bucket-owner`` on every request to the audit bucket (HeadBucket,
  ListObjectsV2 through the paginator, HeadObject by anyone using the client), and on none
  to another bucket through the same client;
- `ensure_audit_bucket` states it on every call after CreateBucket, which takes none;
- unset, no request carries the header;
- the setting takes an AWS account ID (12 digits) only, naming the setting.

Whether a server enforces it is another matter: the local S3 server does not
(tests/integration/test_audit_trust.py shows the calls succeed there, docs/operations.md says so).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from botocore.awsrequest import AWSResponse
from pydantic import SecretStr, ValidationError

from provisioner.audit.log import ensure_audit_bucket, open_audit_log
from provisioner.models.settings import Settings
from provisioner.storage.s3 import s3_client

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

OWNER = "123456789012"
HEADER = "x-amz-expected-bucket-owner"


class _Headers(dict[str, str]):
    def get_all(self, name: str) -> list[str]:
        return [v for k, v in self.items() if k.lower() == name.lower()]


class Wire:
    """Records (operation, bucket, expected owner) of each request and answers 200."""

    def __init__(self, client: S3Client) -> None:
        self.sent: list[tuple[str, str, str | None]] = []
        client.meta.events.register("before-send.s3", self._send)
        client.meta.events.register("before-call.s3", self._operation)
        self._current = ""

    def _operation(self, model: Any, **_: Any) -> None:
        self._current = model.name

    def _send(self, request: Any, **_: Any) -> AWSResponse:
        path = request.url.split("://", 1)[1].split("/", 2)
        bucket = path[1].split("?", 1)[0] if len(path) > 1 else ""
        owner = request.headers.get(HEADER)
        stated = owner.decode() if isinstance(owner, bytes) else owner
        self.sent.append((self._current, bucket, stated))
        body = b""
        if self._current == "ListObjectsV2":
            body = b'<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><IsTruncated>false</IsTruncated></ListBucketResult>'
        return AWSResponse(request.url, 200, _Headers(), _Raw(body))


class _Raw:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: Any) -> Any:
        yield self._body

    def read(self, *_: Any) -> bytes:
        body, self._body = self._body, b""
        return body


def settings(owner: str | None) -> Settings:
    return Settings(
        s3_endpoint_url="http://127.0.0.1:9",
        s3_access_key_id=SecretStr("AKIAEXAMPLE"),
        s3_secret_access_key=SecretStr("secret"),
        audit_bucket="tre-audit",
        audit_bucket_owner=owner,
        audit_retention_days=0,
    )


def test_every_call_on_the_audit_bucket_states_its_owner_and_no_other_call_does() -> None:
    config = settings(OWNER)
    client = s3_client(config)
    wire = Wire(client)
    log = open_audit_log(config, client)
    assert log.read_all() == []
    client.head_object(Bucket="tre-audit", Key="head.json")  # anyone using the same client
    client.head_object(Bucket="tre-quarantine", Key="x")
    on_audit = [(op, owner) for op, bucket, owner in wire.sent if bucket == "tre-audit"]
    assert {op for op, _ in on_audit} >= {"HeadBucket", "ListObjectsV2", "HeadObject"}
    assert all(owner == OWNER for _, owner in on_audit), on_audit
    assert [o for _, b, o in wire.sent if b == "tre-quarantine"] == [None]


def test_ensure_audit_bucket_states_the_owner_wherever_s3_takes_it() -> None:
    client = s3_client(settings(None))
    wire = Wire(client)
    ensure_audit_bucket(client, "tre-audit", retention_days=0, owner=OWNER)
    stated = {op: owner for op, _, owner in wire.sent}
    assert set(stated) >= {"HeadBucket", "PutBucketVersioning", "GetObjectLockConfiguration"}
    assert all(owner == OWNER for op, owner in stated.items() if op != "CreateBucket"), stated


def test_unset_no_request_carries_an_expected_owner() -> None:
    config = settings(None)
    client = s3_client(config)
    wire = Wire(client)
    open_audit_log(config, client).read_all()
    assert wire.sent and all(owner is None for _, _, owner in wire.sent)


def test_the_owner_is_an_account_id() -> None:
    with pytest.raises(ValidationError, match="audit_bucket_owner"):
        settings("tre-admin")
