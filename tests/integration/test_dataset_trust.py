"""Data is exactly what was approved: the attacks on datasets, played against the real platform.

Setup: `installed_platform` (CRDs, every admission policy and the real RBAC of `tre install`)
on the session's kube-apiserver and S3. People are impersonated: sam and tess are stewards
(group tre:stewards), the controller acts with its own ServiceAccount token.

Behaviours under test:
- steward tess edits sam's dataset: refused (only its own steward updates a Dataset); sam
  hands it over to tess, after which sam may no longer change it and tess may;
- sam changes the source of his own dataset: refused by the CRD (source immutable);
- sam lowers the classification: refused; raising it is allowed;
- a steward writes datasets/status (a forged manifest): forbidden by RBAC;
- overlapping sources: a public whole-bucket dataset over a sensitive prefix is refused,
  naming both datasets and tiers, as is a public prefix inside a sensitive whole bucket's
  partner the other way round, an NFS path under a more sensitive export path, and raising a
  contained dataset above its container; a more sensitive container is accepted; the CLI says
  the same before asking;
- `verify_datasets` as the controller records a manifest and a Verified condition; the hash
  changes when the content changes; a dataset whose data cannot be listed gets
  Verified=False naming the error while the others are verified; an NFS dataset gets a
  source-only manifest; a fresh manifest is not recomputed before the interval;
- `tre dataset register` writes no status; `tre dataset verify` is read-only, passes on
  unchanged data and exits 7 naming the dataset when the data changed.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from provisioner import API_GROUP, API_VERSION
from provisioner.controller.datasets import verify_datasets
from provisioner.devcluster.cluster import DevCluster
from provisioner.kube.resources import DATASETS
from provisioner.models.resources import Dataset
from provisioner.models.settings import Settings
from provisioner.planning.admission import DATASET_OVERLAP_POLICY, DATASET_STEWARD_POLICY
from provisioner.storage.s3 import ensure_bucket
from tests.integration.workspace_world import STEWARDS, World

pytestmark = pytest.mark.integration

AsUser = Callable[..., client.ApiClient]
DS = (API_GROUP, API_VERSION, "datasets")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def denied_by(policy: str) -> str:
    return f"ValidatingAdmissionPolicy '{policy}' with binding '{policy}' denied request: "


def refusal(call: Callable[[], Any]) -> tuple[int, str]:
    with pytest.raises(ApiException) as refused:
        call()
    return refused.value.status, str(json.loads(refused.value.body)["message"])


def body(
    name: str,
    tier: str,
    *,
    steward: str = "sam",
    bucket: str | None = None,
    prefix: str | None = None,
    nfs: tuple[str, str] | None = None,
) -> dict[str, Any]:
    source: dict[str, Any]
    if nfs is not None:
        source = {"nfs": {"server": nfs[0], "path": nfs[1]}}
    else:
        source = {"s3": {"bucket": bucket or "tre-data", "prefix": f"{name}/" if prefix is None
                         else prefix}}  # fmt: skip
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": "Dataset",
        "metadata": {"name": name},
        "spec": {"title": "Test data", "steward": steward, "classification": tier,
                 "source": source},
    }  # fmt: skip


class People:
    """The API as the stewards, the admin and the controller; deletes what it created."""

    def __init__(self, admin_api: client.ApiClient, as_user: AsUser) -> None:
        self.admin = client.CustomObjectsApi(admin_api)
        self._as_user = as_user
        self.created: list[str] = []

    def steward(self, user: str) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self._as_user(user, STEWARDS))

    def register(self, obj: dict[str, Any], user: str = "sam") -> dict[str, Any]:
        created: dict[str, Any] = self.steward(user).create_cluster_custom_object(*DS, obj)
        self.created.append(obj["metadata"]["name"])
        return created

    def get(self, name: str) -> dict[str, Any]:
        got: dict[str, Any] = self.admin.get_cluster_custom_object(*DS, name)
        return got

    def update(self, user: str, name: str, **spec: Any) -> dict[str, Any]:
        obj = self.get(name)
        obj["spec"].update(spec)
        updated: dict[str, Any] = self.steward(user).replace_cluster_custom_object(*DS, name, obj)
        return updated

    def cleanup(self) -> None:
        for name in self.created:
            try:
                self.admin.delete_cluster_custom_object(*DS, name)
            except ApiException as exc:
                if exc.status != 404:
                    raise


@pytest.fixture
def people(
    installed_platform: Settings, admin_api: client.ApiClient, as_user: AsUser
) -> Iterator[People]:
    p = People(admin_api, as_user)
    yield p
    p.cleanup()


def wait_until_refused(call: Callable[[], Any], policy: str, timeout: float = 30) -> None:
    """Policies and their Dataset parameters load asynchronously: probe with a dry run."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            call()
        except ApiException as exc:
            if denied_by(policy) in json.loads(exc.body)["message"]:
                return
            raise
        if time.monotonic() > deadline:
            pytest.fail(f"policy {policy} did not refuse within {timeout:.0f}s")
        time.sleep(0.25)


# --- who may change a dataset -------------------------------------------------------------------


def test_another_steward_cannot_edit_a_dataset(people: People) -> None:
    name = unique("ds")
    people.register(body(name, "sensitive"))
    edit = {**people.get(name)["spec"], "title": "Mine now"}

    def attack(dry_run: str | None = None) -> Any:
        obj = people.get(name)
        obj["spec"] = edit
        return people.steward("tess").replace_cluster_custom_object(
            *DS, name, obj, **({"dry_run": dry_run} if dry_run else {})
        )

    wait_until_refused(lambda: attack("All"), DATASET_STEWARD_POLICY)
    status, message = refusal(attack)
    assert status == 403
    assert message.endswith(
        denied_by(DATASET_STEWARD_POLICY) + f"tess may not change dataset {name}: only its "
        "steward sam may (a steward hands a dataset over by setting spec.steward); ask them"
    )
    assert people.get(name)["spec"]["title"] == "Test data"


def test_a_steward_hands_a_dataset_over(people: People) -> None:
    name = unique("ds")
    people.register(body(name, "internal"))
    wait_until_refused(
        lambda: people.steward("tess").replace_cluster_custom_object(
            *DS, name, people.get(name), dry_run="All"
        ),
        DATASET_STEWARD_POLICY,
    )
    people.update("sam", name, steward="tess")
    status, message = refusal(lambda: people.update("sam", name, title="Back to me"))
    assert status == 403
    assert f"sam may not change dataset {name}: only its steward tess may" in message
    assert people.update("tess", name, title="Renamed")["spec"]["title"] == "Renamed"


def test_the_source_cannot_change(people: People) -> None:
    name = unique("ds")
    people.register(body(name, "sensitive", bucket="tre-data"))
    status, message = refusal(
        lambda: people.update("sam", name, source={"s3": {"bucket": "elsewhere", "prefix": ""}})
    )
    assert status == 422
    assert (
        "spec.source: Invalid value: source is immutable: approvals were given for "
        "the data at this source; register a new dataset for other data" in message
    )
    assert people.get(name)["spec"]["source"] == {"s3": {"bucket": "tre-data",
                                                         "prefix": f"{name}/"}}  # fmt: skip


def test_classification_goes_up_never_down(people: People) -> None:
    name = unique("ds")
    people.register(body(name, "confidential"))
    status, message = refusal(lambda: people.update("sam", name, classification="internal"))
    assert status == 422
    assert (
        'spec.classification: Invalid value: "internal": classification may only be raised '
        "(public < internal < confidential < sensitive), never lowered; register a new dataset "
        "for a less sensitive release" in message
    )
    assert people.get(name)["spec"]["classification"] == "confidential"
    raised = people.update("sam", name, classification="sensitive")
    assert raised["spec"]["classification"] == "sensitive"


def test_a_steward_cannot_write_the_manifest(people: People) -> None:
    name = unique("ds")
    people.register(body(name, "sensitive"))
    forged = {"manifest": {"objectCount": 1, "bytes": 1, "sha256": "0" * 64,
                           "computedAt": "2026-01-01T00:00:00Z"}}  # fmt: skip
    status, message = refusal(
        lambda: people.steward("sam").patch_cluster_custom_object_status(
            *DS, name, {"status": forged}
        )
    )
    assert status == 403
    assert (
        f'datasets.tre.ucloud.org "{name}" is forbidden: User "sam" cannot patch resource '
        '"datasets/status" in API group "tre.ucloud.org" at the cluster scope' in message
    )
    assert "status" not in people.get(name) or "manifest" not in people.get(name)["status"]


# --- overlapping sources ------------------------------------------------------------------------


def overlap_refused(people: People, obj: dict[str, Any]) -> tuple[int, str]:
    """Create `obj` as sam once the policy has seen the existing Datasets; the refusal."""
    wait_until_refused(
        lambda: people.steward("sam").create_cluster_custom_object(*DS, obj, dry_run="All"),
        DATASET_OVERLAP_POLICY,
    )
    status, message = refusal(lambda: people.register(obj))
    assert (
        people.admin.list_cluster_custom_object(
            *DS, field_selector=f"metadata.name={obj['metadata']['name']}"
        )["items"]
        == []
    )
    return status, message


def test_public_whole_bucket_over_a_sensitive_prefix_is_refused(people: People) -> None:
    bucket, secret, wide = unique("bkt"), unique("secret"), unique("wide")
    people.register(body(secret, "sensitive", bucket=bucket, prefix="patients/"))
    status, message = overlap_refused(people, body(wide, "public", bucket=bucket, prefix=""))
    assert status == 403
    assert message.endswith(
        denied_by(DATASET_OVERLAP_POLICY) + f"spec.source: s3://{bucket}/ contains "
        f"s3://{bucket}/patients/ of dataset {secret} (sensitive), whose data would then be "
        f"readable at the lower tier public through dataset {wide}; classify {wide} as "
        "sensitive or higher, or register a source that does not overlap"
    )


def test_sensitive_prefix_inside_a_public_dataset_is_refused(people: People) -> None:
    bucket, wide, secret = unique("bkt"), unique("wide"), unique("secret")
    people.register(body(wide, "public", bucket=bucket, prefix="cohort"))  # read as cohort/
    status, message = overlap_refused(
        people, body(secret, "sensitive", bucket=bucket, prefix="cohort/2026/")
    )
    assert status == 403
    assert message.endswith(
        f"spec.source: s3://{bucket}/cohort/2026/ lies within s3://{bucket}/cohort/ of dataset "
        f"{wide} (public), so the data of dataset {secret} (sensitive) would be readable at "
        f"the lower tier public; raise dataset {wide} to sensitive first, or register a source "
        "that does not overlap"
    )


def test_nfs_path_under_a_less_sensitive_export_is_refused(people: People) -> None:
    server, wide, secret = f"{unique('nfs')}.example.org", unique("wide"), unique("secret")
    people.register(body(wide, "internal", nfs=(server, "/exports")))
    status, message = overlap_refused(
        people, body(secret, "confidential", nfs=(server.upper(), "/exports/reg"))
    )
    assert status == 403
    assert f"spec.source: nfs://{server}/exports/reg/ lies within nfs://{server}/exports/ of " \
           f"dataset {wide} (internal)" in message  # fmt: skip


def test_raising_a_contained_dataset_above_its_container_is_refused(people: People) -> None:
    bucket, wide, part = unique("bkt"), unique("wide"), unique("part")
    people.register(body(wide, "internal", bucket=bucket, prefix=""))
    people.register(body(part, "internal", bucket=bucket, prefix="p/"))  # same tier: allowed

    def raise_part(dry_run: str | None = None) -> Any:
        obj = people.get(part)
        obj["spec"]["classification"] = "sensitive"
        return people.steward("sam").replace_cluster_custom_object(
            *DS, part, obj, **({"dry_run": dry_run} if dry_run else {})
        )

    wait_until_refused(lambda: raise_part("All"), DATASET_OVERLAP_POLICY)
    status, message = refusal(raise_part)
    assert status == 403
    assert f"raise dataset {wide} to sensitive first" in message
    assert people.get(part)["spec"]["classification"] == "internal"
    # the container goes first, then the part may follow
    people.update("sam", wide, classification="sensitive")
    people.update("sam", part, classification="sensitive")


def test_a_more_sensitive_container_is_accepted(people: People) -> None:
    bucket, part, wide = unique("bkt"), unique("part"), unique("wide")
    people.register(body(part, "public", bucket=bucket, prefix="open/"))
    time.sleep(1)  # give the policy's cache time to see `part`, which must not matter
    people.register(body(wide, "sensitive", bucket=bucket, prefix=""))
    assert people.get(wide)["spec"]["classification"] == "sensitive"


# --- the controller verifies ---------------------------------------------------------------------


@pytest.fixture
def world(
    installed_platform: Settings, dev_platform: DevCluster, tmp_path: Path
) -> Iterator[World]:
    w = World(installed_platform, dev_platform.kubeconfig, tmp_path)
    existing = w.dataset_names()
    yield w
    for name in w.dataset_names() - existing:
        w.admin.delete(DATASETS, name)


def register(world: World, name: str, **source: str) -> None:
    args = [f"--{k.replace('_', '-')}={v}" for k, v in source.items()]
    result = world.tre(
        "-o", "json", "dataset", "register", name, "--title", "T", "--steward", "sam",
        "--classification", "internal", *args, user="sam", group=STEWARDS,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "pending: the controller lists the data" in result.output


def dataset(world: World, name: str) -> Dataset:
    obj = world.admin.get(DATASETS, name)
    assert obj is not None
    return Dataset.from_object(obj)


def test_register_writes_no_manifest_and_the_controller_records_it(world: World) -> None:
    name = unique("vds")
    for i in range(2):
        world.s3.put_object(Bucket=world.bucket, Key=f"{name}/{i}.csv", Body=b"1,2\n")
    register(world, name, bucket=world.bucket, prefix=f"{name}/")
    assert dataset(world, name).status.manifest is None

    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    [done] = verify_datasets(world.controller, world.s3, [dataset(world, name)], now,
                             world.settings)  # fmt: skip
    assert done.ok and done.changed
    recorded = dataset(world, name).status
    assert recorded.manifest is not None
    assert (recorded.manifest.object_count, recorded.manifest.bytes) == (2, 8)
    assert recorded.manifest.sha256 == done.sha256
    assert recorded.manifest.computed_at == now
    [verified] = recorded.conditions
    assert (verified.type, verified.status, verified.reason) == ("Verified", "True",
                                                                 "ManifestComputed")  # fmt: skip

    # not due again before the interval: nothing is listed or written
    assert verify_datasets(world.controller, world.s3, [dataset(world, name)],
                           now + dt.timedelta(seconds=60), world.settings) == []  # fmt: skip

    # the content changes: the next verification records another hash
    world.s3.put_object(Bucket=world.bucket, Key=f"{name}/0.csv", Body=b"9,9\n")
    later = now + dt.timedelta(seconds=world.settings.dataset_verify_seconds)
    [again] = verify_datasets(world.controller, world.s3, [dataset(world, name)], later,
                              world.settings)  # fmt: skip
    assert again.ok and again.changed and again.sha256 != done.sha256
    assert dataset(world, name).status.manifest.sha256 == again.sha256  # type: ignore[union-attr]


def test_a_failed_listing_is_reported_on_that_dataset_only(world: World) -> None:
    good, missing, nfs = unique("vds"), unique("vds"), unique("vds")
    world.s3.put_object(Bucket=world.bucket, Key=f"{good}/a.csv", Body=b"a")
    register(world, good, bucket=world.bucket, prefix=f"{good}/")
    register(world, missing, bucket=world.bucket, prefix=f"{missing}/")  # nothing uploaded
    register(world, nfs, nfs_server="nfs.example.org", nfs_path=f"/exports/{nfs}")
    done = {
        v.name: v
        for v in verify_datasets(
            world.controller, world.s3, [dataset(world, n) for n in (good, missing, nfs)],
            dt.datetime.now(dt.UTC), world.settings,
        )
    }  # fmt: skip
    assert done[good].ok and done[nfs].ok
    assert not done[missing].ok
    assert f"no objects under prefix '{missing}/'" in str(done[missing].error)
    failed = dataset(world, missing).status
    assert failed.manifest is None
    [condition] = failed.conditions
    assert (condition.status, condition.reason) == ("False", "ListingFailed")
    assert f"cannot list s3://{world.bucket}/{missing}/" in condition.message
    nfs_manifest = dataset(world, nfs).status.manifest
    assert nfs_manifest is not None
    assert (nfs_manifest.object_count, nfs_manifest.bytes) == (0, 0)


def test_cli_verify_is_read_only_and_reports_changed_data(world: World) -> None:
    name = world.dataset()  # registered, then verified as the controller
    before = world.admin.get(DATASETS, name)
    ok = world.tre("-o", "json", "dataset", "verify", name, user="sam", group=STEWARDS)
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["matches"] is True

    world.s3.put_object(Bucket=world.bucket, Key=f"{name}/part-0.csv", Body=b"changed\n")
    changed = world.tre("dataset", "verify", name, user="sam", group=STEWARDS)
    assert changed.exit_code == 7
    assert f"dataset {name!r}: the data at s3://{world.bucket}/{name}/ no longer matches the " \
           "manifest recorded at" in changed.output  # fmt: skip
    after = world.admin.get(DATASETS, name)
    assert before is not None and after is not None
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


def test_cli_register_refuses_an_overlap_before_asking(world: World) -> None:
    # A bucket of its own: the whole-bucket dataset below must overlap exactly one dataset.
    world.bucket = unique("own")
    ensure_bucket(world.s3, world.bucket, versioning=True)
    secret = unique("vds")
    world.s3.put_object(Bucket=world.bucket, Key=f"{secret}/a.csv", Body=b"a")
    result = world.tre(
        "dataset", "register", secret, "--title", "T", "--steward", "sam",
        "--classification", "sensitive", "--bucket", world.bucket, "--prefix", f"{secret}/",
        user="sam", group=STEWARDS,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    wide = unique("vds")
    refused = world.tre(
        "dataset", "register", wide, "--title", "T", "--steward", "sam",
        "--classification", "internal", "--bucket", world.bucket,
        user="sam", group=STEWARDS,
    )  # fmt: skip
    assert refused.exit_code == 4
    expected = (
        f"dataset {wide}: spec.source: s3://{world.bucket}/ contains s3://{world.bucket}/"
        f"{secret}/ of dataset {secret} (sensitive)"
    )
    assert expected in refused.output
    assert wide not in world.dataset_names()
