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
- no source field configures the mounters (review 3, S1): bucket, prefix, region, NFS server
  and path, each with rclone/mount-s3 flags, mount(8) options and a newline appended or as
  the whole value, are refused by the API server naming the field and what to write; the
  review's region payload is refused; a plain region is stored;
- one spelling per location (S5): a sensitive prefix and export registered again as public
  under every other spelling ('//', './', '..', a leading or trailing '/', a trailing '.',
  upper case, a short name or an address for the server) are refused by the schema, and the
  spellings left are refused by the overlap rule as the location they name;
- the platform's buckets (S6): audit, quarantine and egress are refused as a dataset source by
  the API server and by `tre`, in the same words; the controller never lists one for a
  dataset stored earlier and removes its manifest;
- deleting and registering again (S7): nobody gives a Dataset an owner reference or a
  finalizer (the garbage collector would delete it for a steward); a dataset registered again
  under the same name, source and data gets another manifest hash, so no old approval counts;
- the controller's dataset PVs: a planned one is admitted; with an added rclone flag or mount
  option, an NFS server or path of another spelling, or (k8s-csi-s3) a volume handle that is
  not `<bucket>/<prefix>` of their domain types, refused by `tre-controller-scope`;
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
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from provisioner import API_GROUP, API_VERSION
from provisioner.controller.datasets import verify_datasets
from provisioner.devcluster.cluster import DevCluster
from provisioner.errors import RefusedError
from provisioner.kube.resources import DATASETS
from provisioner.models.resources import (
    Dataset,
    DatasetSource,
    NfsSource,
    S3Source,
    WorkspaceDataset,
)
from provisioner.models.settings import Settings
from provisioner.models.types import ClassificationTier, DatasetCsiDriver
from provisioner.planning.admission import (
    DATASET_OVERLAP_POLICY,
    DATASET_PLATFORM_BUCKET_POLICY,
    DATASET_STEWARD_POLICY,
    METADATA_POLICY,
)
from provisioner.planning.storage import dataset_persistent_volume
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
        people, body(secret, "confidential", nfs=(server, "/exports/reg"))
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


# --- no value of a steward configures software that runs as root (review 3, S1) ------------------

# Every Dataset field that reaches a PV (volumeHandle, volume attributes, mount options, NFS
# server and path), each followed by the option syntax of the mounters that read it: rclone and
# mount-s3 flags, mount(8)'s comma-separated options, and a newline.
SOURCE_FIELDS = {
    "s3.bucket": ("s3", "bucket", "tre-data"),
    "s3.prefix": ("s3", "prefix", "cohort/"),
    "s3.region": ("s3", "region", "us-east-1"),
    "nfs.server": ("nfs", "server", "nfs.example.org"),
    "nfs.path": ("nfs", "path", "/exports"),
}
INJECTIONS = (" --allow-other", "--vfs-cache-mode=full", " --no-check-certificate", ",rw",
              "\n--rc", " --rc --rc-no-auth --rc-addr=:5572 --rc-files=/")  # fmt: skip


def with_source_value(name: str, field: str, value: str) -> dict[str, Any]:
    kind, key, _ = SOURCE_FIELDS[field]
    obj = body(name, "public", nfs=("nfs.example.org", "/exports") if kind == "nfs" else None)
    obj["spec"]["source"][kind][key] = value
    return obj


@pytest.mark.parametrize("injection", INJECTIONS)
@pytest.mark.parametrize("field", SOURCE_FIELDS)
def test_no_source_field_takes_a_mounters_option_syntax(
    people: People, field: str, injection: str
) -> None:
    """Appended to a valid value and as the whole value (a leading '-'): the API server itself
    refuses the Dataset, naming the field and what to write instead."""
    valid = SOURCE_FIELDS[field][2]
    for value in (valid + injection, injection.strip()):
        obj = with_source_value(unique("inj"), field, value)
        status, message = refusal(partial(people.register, obj))
        assert status == 422, message
        # our words (what to write instead), or the server's own for a value over the length
        assert f"spec.source.{field}: Invalid value: " in message or (
            f"spec.source.{field}: Too long: may not be more than" in message
        ), message
        assert any(fix in message for fix in ("use ", "remove ", "write ", "Too long")), message


def test_the_reviews_region_payload_is_refused_and_a_plain_region_is_stored(
    people: People,
) -> None:
    payload = "us-east-1 --rc --rc-no-auth --rc-addr=:5572 --rc-files=/"  # review 3, S1
    status, message = refusal(
        lambda: people.register(with_source_value(unique("inj"), "s3.region", payload))
    )
    assert status == 422
    assert "spec.source.s3.region: Too long: may not be more than 32 bytes" in message
    versions = "us-east-1 --s3-versions"  # fits the length: refused in our words
    status, message = refusal(
        lambda: people.register(with_source_value(unique("inj"), "s3.region", versions))
    )
    assert status == 422
    assert (
        f'spec.source.s3.region: Invalid value: "{versions}": use 1-32 characters a-z, 0-9 and '
        "'-', starting and ending with a letter or digit (for example 'eu-west-1')" in message
    ), message
    ok = unique("region")
    people.register(with_source_value(ok, "s3.region", "eu-west-1"))
    assert people.get(ok)["spec"]["source"]["s3"]["region"] == "eu-west-1"


# --- one spelling per location: the overlap rule compares locations (review 3, S5) ---------------

S3_ALIASES = ("cohort//", "cohort///", "./cohort/", "cohort/./", "x/../cohort/", "/cohort/")
NFS_ALIASES = (
    ("nfs.hospital.example.", "/exports/registry"),
    ("NFS.hospital.example", "/exports/registry"),
    ("nfs", "/exports/registry"),
    ("10.0.0.7", "/exports/registry"),
    ("fd00::7", "/exports/registry"),
    ("nfs.hospital.example", "/exports//registry"),
    ("nfs.hospital.example", "//exports/registry"),
    ("nfs.hospital.example", "/exports/registry/"),
    ("nfs.hospital.example", "/exports/./registry"),
    ("nfs.hospital.example", "/exports/x/../registry"),
)


@pytest.fixture
def sensitive_locations(people: People) -> tuple[str, str]:
    """A sensitive S3 prefix and a sensitive NFS export, each its own place: (bucket, server)."""
    bucket, server = unique("bkt"), "nfs.hospital.example"
    people.register(body(unique("cardio"), "sensitive", bucket=bucket, prefix="cohort/"))
    registry = unique("registry")
    people.register(body(registry, "sensitive", nfs=(server, "/exports/registry")))
    return bucket, server


@pytest.mark.parametrize("prefix", S3_ALIASES)
def test_a_sensitive_prefix_cannot_be_registered_public_under_another_spelling(
    people: People, sensitive_locations: tuple[str, str], prefix: str
) -> None:
    bucket, _ = sensitive_locations
    status, message = refusal(
        lambda: people.register(body(unique("open"), "public", bucket=bucket, prefix=prefix))
    )
    assert status == 422, message
    assert "spec.source.s3.prefix: Invalid value: " in message, message


@pytest.mark.parametrize(("server", "path"), NFS_ALIASES)
def test_a_sensitive_export_cannot_be_registered_public_under_another_spelling(
    people: People, sensitive_locations: tuple[str, str], server: str, path: str
) -> None:
    status, message = refusal(
        lambda: people.register(body(unique("open"), "public", nfs=(server, path)))
    )
    assert status == 422, message
    field = "server" if server != "nfs.hospital.example" else "path"
    assert f"spec.source.nfs.{field}: Invalid value: " in message, message


@pytest.mark.parametrize(
    "source",
    [{"prefix": "cohort/"}, {"prefix": "cohort"}, {"prefix": ""},
     {"nfs": "/exports/registry"}, {"nfs": "/exports"}, {"nfs": "/"}],
    ids=repr,
)  # fmt: skip
def test_the_one_spelling_left_is_judged_as_the_location_it_names(
    people: People, sensitive_locations: tuple[str, str], source: dict[str, str]
) -> None:
    bucket, server = sensitive_locations
    obj = (
        body(unique("open"), "public", nfs=(server, source["nfs"]))
        if "nfs" in source
        else body(unique("open"), "public", bucket=bucket, prefix=source["prefix"])
    )
    status, message = overlap_refused(people, obj)
    assert status == 403
    assert "(sensitive), whose data would then be readable at the lower tier public" in message


# --- the platform's own buckets are never a dataset (review 3, S6) ------------------------------


def test_the_platforms_buckets_are_never_a_dataset_source(
    people: People, installed_platform: Settings
) -> None:
    buckets = installed_platform.platform_buckets
    assert {installed_platform.audit_bucket, installed_platform.airlock_quarantine_bucket,
            installed_platform.airlock_egress_bucket,
            installed_platform.dataset_fingerprint_bucket} == set(buckets)  # fmt: skip
    wait_until_refused(
        lambda: people.steward("sam").create_cluster_custom_object(
            *DS, body(unique("view"), "public", bucket=buckets[0], prefix=""), dry_run="All"
        ),
        DATASET_PLATFORM_BUCKET_POLICY,
    )
    for bucket in buckets:
        for prefix in ("", "exports/"):
            obj = body(unique("view"), "public", bucket=bucket, prefix=prefix)
            status, message = refusal(partial(people.register, obj))
            assert status == 422
            assert message.endswith(
                denied_by(DATASET_PLATFORM_BUCKET_POLICY) + f"spec.source.s3.bucket: {bucket} "
                f"is one of the platform's own buckets ({', '.join(buckets)}): they hold the "
                "audit log, the airlock's unreviewed and released files of every project and "
                "the datasets' fingerprints, which no dataset may show; register data from a "
                "bucket of its own"
            ), message


def test_tre_refuses_the_platforms_buckets_in_the_same_words(world: World) -> None:
    for bucket in world.settings.platform_buckets:
        name = unique("vds")
        result = world.tre(
            "dataset", "register", name, "--title", "T", "--steward", "sam",
            "--classification", "public", "--bucket", bucket, user="sam", group=STEWARDS,
        )  # fmt: skip
        assert result.exit_code == 2, result.output
        assert f"dataset {name}: spec.source.s3.bucket: {bucket} is one of the platform's own " \
               "buckets" in result.output  # fmt: skip
        assert name not in world.dataset_names()


def test_the_controller_never_verifies_a_dataset_on_a_platform_bucket(world: World) -> None:
    """A dataset stored before the policy existed (played here by the controller's view of a
    verified dataset whose source names the quarantine): never listed, its manifest removed,
    so no approval matches it and no workspace mounts it."""
    name = world.dataset()
    assert dataset(world, name).status.manifest is not None
    stored = dataset(world, name)
    quarantine = S3Source(bucket=world.settings.airlock_quarantine_bucket, prefix="exports/")
    old = stored.model_copy(
        update={"spec": stored.spec.model_copy(update={"source": DatasetSource(s3=quarantine)})}
    )
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=world.settings.dataset_verify_seconds)
    [refused] = verify_datasets(world.controller, world.s3, [old], later, world.settings)
    assert not refused.ok and refused.sha256 is None
    assert f"spec.source.s3.bucket: {quarantine.bucket} is one of the platform's own buckets" in (
        str(refused.error)
    )
    status = dataset(world, name).status
    assert status.manifest is None
    [condition] = status.conditions
    assert (condition.status, condition.reason) == ("False", "PlatformBucket")


# --- deleting and registering again starts no history (review 3, S7) ----------------------------

DANGLING_OWNER = [{"apiVersion": "v1", "kind": "Namespace", "name": "r3-gone",
                   "uid": "00000000-0000-0000-0000-000000000003"}]  # fmt: skip


def test_nobody_gives_a_dataset_an_owner_or_a_finalizer(people: People) -> None:
    """An owner that does not exist would make the garbage collector delete the dataset for a
    steward, who may not delete it; a finalizer would hold its deletion."""
    name = unique("ds")
    owned = body(unique("ds"), "internal")
    owned["metadata"]["ownerReferences"] = DANGLING_OWNER

    def create_owned(dry_run: str | None = None) -> Any:
        return people.steward("sam").create_cluster_custom_object(
            *DS, owned, **({"dry_run": dry_run} if dry_run else {})
        )

    wait_until_refused(lambda: create_owned("All"), METADATA_POLICY)
    status, message = refusal(create_owned)
    assert status == 422
    assert message.endswith(
        denied_by(METADATA_POLICY) + "metadata.ownerReferences: a Dataset takes none: "
        "the garbage collector would delete it once its owner is gone, and datasets are "
        "deleted by administrators only; remove the entry"
    )
    people.register(body(name, "internal"))
    for field, value in (("ownerReferences", DANGLING_OWNER), ("finalizers", ["r3/hold"])):
        obj = people.get(name)
        obj["metadata"][field] = value
        steward = people.steward("sam")
        status, message = refusal(partial(steward.replace_cluster_custom_object, *DS, name, obj))
        assert status == 422
        assert f"metadata.{field}: a Dataset takes none" in message
        assert field not in people.get(name)["metadata"]


def test_a_dataset_registered_again_gets_a_new_manifest_hash(world: World) -> None:
    """Same name, same source, same data, same region: another object, so no approval given
    for the one deleted counts for it."""
    name = world.dataset("sensitive")
    first = dataset(world, name).status.manifest
    assert first is not None
    world.admin.delete(DATASETS, name)
    register(world, name, bucket=world.bucket, prefix=f"{name}/")
    [again] = verify_datasets(world.controller, world.s3, [dataset(world, name)],
                              dt.datetime.now(dt.UTC), world.settings)  # fmt: skip
    assert again.ok
    second = dataset(world, name).status.manifest
    assert second is not None
    assert (second.object_count, second.bytes) == (first.object_count, first.bytes)
    assert second.sha256 != first.sha256


# --- the controller's own PVs carry the planned mount configuration only -------------------------


def test_the_controllers_dataset_volumes_carry_no_option_of_anyones_choosing(world: World) -> None:
    """Behind the CRD, the API server judges the PV itself: with the controller's credential, a
    planned dataset PV passes; the same PV with a flag, a mount option or an NFS server of
    another spelling is refused."""
    settings = world.settings
    s3 = WorkspaceDataset(
        name="cohort",
        manifest_sha256="a" * 64,
        classification=ClassificationTier.PUBLIC,
        source=DatasetSource(s3=S3Source(bucket="tre-data", prefix="c/")),
    )
    nfs = s3.model_copy(
        update={"source": DatasetSource(nfs=NfsSource(server="nfs.example.org", path="/x"))}
    )
    planned_s3 = dataset_persistent_volume("someproject", s3, settings)
    planned_nfs = dataset_persistent_volume("someproject", nfs, settings)
    for planned in (planned_s3, planned_nfs):
        world.controller.create(planned, dry_run=True)

    def tampered(planned: dict[str, Any], change: Callable[[dict[str, Any]], None]) -> Any:
        pv = json.loads(json.dumps(planned))
        change(pv["spec"])
        return pv

    def add_option(spec: dict[str, Any]) -> None:
        if (
            "volumeAttributes" in spec.get("csi", {})
            and "options" in spec["csi"]["volumeAttributes"]
        ):
            spec["csi"]["volumeAttributes"]["options"] += " --s3-versions"
        else:
            spec["mountOptions"] = [*spec.get("mountOptions", []), "rw"]

    attacks = [
        tampered(planned_s3, add_option),
        tampered(planned_nfs, add_option),
        tampered(planned_nfs, lambda spec: spec["nfs"].update(server="nfs.example.org.")),
        tampered(planned_nfs, lambda spec: spec["nfs"].update(path="/x/../etc")),
    ]
    if settings.dataset_csi_driver is DatasetCsiDriver.K8S_CSI_S3:  # the handle names the data
        attacks += [
            tampered(planned_s3, lambda spec: spec["csi"].update(volumeHandle="tre-data/c//")),
            tampered(planned_s3, lambda spec: spec["csi"].update(volumeHandle="-o/c/")),
        ]
    for pv in attacks:
        with pytest.raises(RefusedError) as refused:
            world.controller.create(pv, dry_run=True)
        assert "its mount options, volume attributes or NFS server and path are not the " \
               "planned ones" in str(refused.value)  # fmt: skip
