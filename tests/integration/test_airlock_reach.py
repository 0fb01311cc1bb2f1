"""The airlock's S3 credential reaches its own buckets only, and the raw-copy check still works
(review 3, S14), against the session's real S3 server.

Every notebook and every person reaches the airlock, so a flaw in its parsers must not become
a read of every project's data. Its key (`airlock_credentials`, the one `tre dev up` gives the
local airlock) is played here as the attacker's: code running inside the airlock.

- with the airlock's key, a dataset's bucket is refused by the S3 server: get, head, list,
  list versions, and a server-side copy into the airlock's own quarantine; so is the audit
  bucket, and writing the fingerprint index (the airlock cannot make its own check pass);
- with the same key the airlock does all its work: quarantine, copy to egress, a download
  link, deleting an egress copy, reading the fingerprints the controller recorded;
- the controller's verification records each object's size and ETag under the manifest hash
  the workspace carries; with only those (and the airlock's key), an export that is a byte
  copy of a dataset object is flagged: one uploaded in one part (ETag = MD5) and one uploaded
  in 5 MiB parts (ETag = MD5 of the parts' MD5s, as the local server computes it too); a
  file that differs by one byte is not.
"""

from __future__ import annotations

import hashlib
import io
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import requests
from boto3.s3.transfer import TransferConfig

from provisioner.airlock.checks import CheckRules, Outcome
from provisioner.airlock.datasets import compare_datasets
from provisioner.airlock.keys import ExportRef
from provisioner.airlock.quarantine import inspect_quarantined, quarantine_request
from provisioner.airlock.release import ensure_airlock_buckets
from provisioner.devcluster.cluster import DevCluster
from provisioner.devcluster.s3server import AirlockScope, airlock_credentials
from provisioner.errors import RefusedError
from provisioner.kube.resources import DATASETS
from provisioner.models.resources import (
    Dataset,
    ExportFile,
    ExportFileKind,
    ExportPhase,
    ExportRequest,
    ExportRequestSpec,
    ExportRequestStatus,
    WorkspaceDataset,
)
from provisioner.models.settings import Settings
from provisioner.storage.fingerprints import fingerprint_key, read_fingerprints
from provisioner.storage.s3 import (
    get_object,
    list_keys,
    make_s3_client,
    s3_client,
    translated_errors,
)
from tests.integration.workspace_world import STEWARDS, World, unique

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

pytestmark = pytest.mark.integration
MiB = 1 << 20


@pytest.fixture(scope="module")
def platform(installed_platform: Settings) -> Settings:
    """The platform's settings, its buckets made as `tre install` makes them."""
    ensure_airlock_buckets(s3_client(installed_platform), installed_platform)
    return installed_platform


@pytest.fixture(scope="module")
def airlock_s3(dev_platform: DevCluster, platform: Settings) -> S3Client:
    """The S3 client the local airlock runs with: its own key, never the admin's."""
    key, secret = airlock_credentials(dev_platform.state_dir / "s3", AirlockScope.of(platform))
    assert key != dev_platform.s3().access_key
    return make_s3_client(
        endpoint_url=platform.s3_endpoint_url,
        region=platform.s3_region,
        access_key=key,
        secret_key=secret,
        max_attempts=1,
    )


@pytest.fixture
def world(platform: Settings, dev_platform: DevCluster, tmp_path: Path) -> World:
    return World(platform, dev_platform.kubeconfig, tmp_path)


def refused(call: Callable[[], object]) -> str:
    with pytest.raises(RefusedError) as caught, translated_errors("the airlock's call"):
        call()
    return str(caught.value)


def workspace_dataset(world: World, name: str) -> WorkspaceDataset:
    """The dataset as a workspace mounts it: pinned to the manifest the controller recorded."""
    stored = world.controller.get(DATASETS, name)
    assert stored is not None
    dataset = Dataset.from_object(stored)
    assert dataset.status.manifest is not None
    return WorkspaceDataset(
        name=name,
        manifest_sha256=dataset.status.manifest.sha256,
        classification=dataset.spec.classification,
        source=dataset.spec.source,
    )


def register(
    world: World, objects: dict[str, bytes], *, multipart: frozenset[str] = frozenset()
) -> str:
    """A dataset of `objects` (those in `multipart` uploaded in 5 MiB parts), registered by
    its steward and verified by the controller."""
    name = unique("ds")
    parts = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)
    for key, data in objects.items():
        where = f"{name}/{key}"
        if key in multipart:
            world.s3.upload_fileobj(io.BytesIO(data), world.bucket, where, Config=parts)
        else:
            world.s3.put_object(Bucket=world.bucket, Key=where, Body=data)
    result = world.tre(
        "dataset", "register", name, "--title", f"Test data {name}", "--steward", "sam",
        "--classification", "internal", "--bucket", world.bucket, "--prefix", f"{name}/",
        user="sam", group=STEWARDS,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    world.verify_datasets()
    return name


def test_the_airlocks_key_reads_no_dataset_and_no_audit_log(
    world: World, platform: Settings, airlock_s3: S3Client
) -> None:
    name = world.dataset()
    bucket, key = world.bucket, f"{name}/part-0.csv"
    assert get_object(world.s3, bucket, key).body == b"a,b\n1,2\n"  # it is there

    for words, call in (
        ("GetObject", lambda: airlock_s3.get_object(Bucket=bucket, Key=key)),
        ("HeadObject", lambda: airlock_s3.head_object(Bucket=bucket, Key=key)),
        ("ListObjectsV2", lambda: airlock_s3.list_objects_v2(Bucket=bucket, Prefix=f"{name}/")),
        ("ListObjectVersions", lambda: airlock_s3.list_object_versions(Bucket=bucket)),
        (
            "CopyObject",  # into its own quarantine, where it may write
            lambda: airlock_s3.copy_object(
                Bucket=platform.airlock_quarantine_bucket,
                Key=f"exports/stolen/{uuid.uuid4().hex}",
                CopySource={"Bucket": bucket, "Key": key},
            ),
        ),
        ("audit log", lambda: airlock_s3.list_objects_v2(Bucket=platform.audit_bucket)),
        (
            "fingerprints",  # it reads them, and cannot write what its own check compares
            lambda: airlock_s3.put_object(
                Bucket=platform.dataset_fingerprint_bucket, Key=fingerprint_key("0" * 64), Body=b""
            ),
        ),
    ):
        answer = refused(call)
        assert "AccessDenied" in answer or "403" in answer, (words, answer)
    assert list_keys(airlock_s3, platform.airlock_quarantine_bucket, "exports/stolen/") == []


def test_the_airlocks_key_does_all_the_airlocks_work(
    world: World, platform: Settings, airlock_s3: S3Client
) -> None:
    quarantine, egress = platform.airlock_quarantine_bucket, platform.airlock_egress_bucket
    key = f"exports/reach/{uuid.uuid4().hex}/files/out/t.csv"
    airlock_s3.put_object(Bucket=quarantine, Key=key, Body=b"n\n12\n")
    assert get_object(airlock_s3, quarantine, key).body == b"n\n12\n"
    airlock_s3.copy_object(Bucket=egress, Key=key, CopySource={"Bucket": quarantine, "Key": key})
    link = airlock_s3.generate_presigned_url(
        "get_object", Params={"Bucket": egress, "Key": key}, ExpiresIn=60
    )
    assert requests.get(link, timeout=30).content == b"n\n12\n"
    airlock_s3.delete_object(Bucket=egress, Key=key)
    assert list_keys(airlock_s3, egress, key) == []
    dataset = workspace_dataset(world, world.dataset())
    listed = list(
        read_fingerprints(
            airlock_s3, platform.dataset_fingerprint_bucket, dataset.manifest_sha256, {8}
        )
    )
    assert sorted(f.key for f in listed) == ["part-0.csv", "part-1.csv"]


def declared(path: str, data: bytes) -> ExportFile:
    return ExportFile(
        path=path,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        kind=ExportFileKind.OUTPUT,
        description="a result",
    )


def test_a_byte_copy_of_the_data_is_flagged_from_the_fingerprints_alone(
    world: World, platform: Settings, airlock_s3: S3Client, tmp_path: Path
) -> None:
    rows = b"id,age,diagnosis\n1,54,I21\n2,61,I50\n"
    big = b"id,visit\n" + b"".join(b"%08d,2024-01-%02d\n" % (i, i % 28 + 1) for i in range(600_000))
    assert 10 * MiB < len(big) < 15 * MiB  # three 5 MiB parts
    name = register(
        world, {"people.csv": rows, "visits.csv": big}, multipart=frozenset({"visits.csv"})
    )
    dataset = workspace_dataset(world, name)
    listed = {
        f.key: f.etag
        for f in read_fingerprints(
            airlock_s3, platform.dataset_fingerprint_bucket, dataset.manifest_sha256,
            {len(rows), len(big)},
        )
    }  # fmt: skip
    assert listed["visits.csv"].endswith("-3"), listed  # stored in parts, as uploaded

    nearly = big[:-2] + b"9\n"  # one byte changed
    contents = {"out/people.csv": rows, "out/visits.csv": big, "out/nearly.csv": nearly}
    request = ExportRequest(
        name=f"x-{uuid.uuid4().hex[:8]}",
        namespace="tre-reach",
        uid=str(uuid.uuid4()),
        spec=ExportRequestSpec(
            project="reach",
            author="lea",
            files=[declared(path, data) for path, data in contents.items()],
            context="Counts of admissions by region, all adults, 2020-2024.",
        ),
        status=ExportRequestStatus(phase=ExportPhase.SUBMITTED),
    )
    root = tmp_path / "project"
    for path, data in contents.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)
    quarantine_request(airlock_s3, platform, request, root)  # as the airlock does

    comparison = compare_datasets(
        airlock_s3, platform.dataset_fingerprint_bucket, [dataset], {len(rows), len(big)}
    )
    assert comparison.not_compared == ()
    raw = {}
    for file in request.spec.files:
        report = inspect_quarantined(
            airlock_s3,
            platform.airlock_quarantine_bucket,
            ExportRef.of(request),
            file,
            rules=CheckRules.from_settings(platform),
            comparison=comparison,
        )
        raw[file.path] = next(f for f in report.findings if f.check == "raw_dataset_copy")
    assert raw["out/people.csv"].outcome is Outcome.FLAG
    assert f"identical to dataset object(s) {name}:people.csv" in raw["out/people.csv"].detail
    assert raw["out/visits.csv"].outcome is Outcome.FLAG
    assert f"{name}:visits.csv" in raw["out/visits.csv"].detail
    assert raw["out/nearly.csv"].outcome is Outcome.OK, raw["out/nearly.csv"].detail
