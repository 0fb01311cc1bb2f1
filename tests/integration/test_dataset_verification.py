"""A large dataset cannot stall the controller (review 3, S11), played against the real platform.

The attack: a steward registers a dataset over a bucket prefix with very many objects. Before,
the controller listed it inside its reconcile pass, holding every row in memory, so a revoke in
any other project waited for the listing (and at 10^8 objects the controller ran out of memory
and restarted into the same listing). Here the controller runs as in a cluster
(`run_controller`, its own ServiceAccount token, its own S3 client) against the session's
kube-apiserver and S3, with 2,000 small objects under one prefix.

Behaviours under test:
- over budget: with TRE_DATASET_VERIFY_MAX_OBJECTS=500, a dataset of 2,000 objects that a
  workspace mounted gets Verified=False (OverBudget) naming the budget and the setting to raise,
  its manifest is removed, and the workspace withholds it (fail closed), while the project's
  other dataset stays mounted;
- a listing that fails withholds: a verified dataset whose objects are gone gets
  Verified=False (ListingFailed) and its manifest removed, never keeps the old one;
- off the reconcile path: while the controller's listing of a 2,000-object dataset is held
  after its first page (the S3 client waits for the test before asking for the next page), a
  revoke in another project takes effect (the removed member leaves the workspace) and the
  large dataset is still unverified; released, the listing ends and the dataset is verified
  with all 2,000 objects.
"""

from __future__ import annotations

import datetime as dt
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from provisioner.controller.datasets import verify_datasets
from provisioner.devcluster.cluster import DevCluster
from provisioner.kube.resources import DATASETS
from provisioner.models.settings import Settings
from provisioner.storage.s3 import s3_client
from tests.integration.test_controller_loop import Controller, wait_until
from tests.integration.test_dataset_trust import dataset, register
from tests.integration.workspace_world import APPROVERS, World, unique

pytestmark = pytest.mark.integration

OBJECTS = 2000


@pytest.fixture
def world(installed_platform: Settings, dev_platform: DevCluster, tmp_path: Path) -> World:
    return World(installed_platform, dev_platform.kubeconfig, tmp_path)


@pytest.fixture(scope="module")
def large_prefix() -> str:
    """The prefix of the session's data bucket that holds OBJECTS small objects."""
    return unique("large")


@pytest.fixture
def prefix(world: World, large_prefix: str) -> str:
    """`large_prefix`, uploaded by the first test that needs it."""
    existing = world.s3.list_objects_v2(Bucket=world.bucket, Prefix=f"{large_prefix}/",
                                        MaxKeys=1)  # fmt: skip
    if not existing.get("KeyCount", 0):
        upload(world, large_prefix)
    return large_prefix


def upload(world: World, prefix: str) -> None:
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(
            lambda i: world.s3.put_object(Bucket=world.bucket, Key=f"{prefix}/{i:05d}.csv",
                                          Body=b"1\n"),
            range(OBJECTS),
        ))  # fmt: skip


def register_large(world: World, prefix: str) -> str:
    """Register a dataset over `prefix` as steward sam; nothing verifies it here."""
    name = unique("big")
    register(world, name, bucket=world.bucket, prefix=f"{prefix}/")
    return name


def verified(world: World, name: str) -> tuple[str, str, str] | None:
    """(status, reason, message) of the dataset's Verified condition, None before any."""
    found = [c for c in dataset(world, name).status.conditions if c.type == "Verified"]
    return (found[0].status, found[0].reason, found[0].message) if found else None


def mounted(world: World, project: str) -> set[str]:
    spec = (world.workspace(project) or {}).get("spec") or {}
    return {d["name"] for d in spec.get("datasets") or []}


def members(world: World, project: str) -> list[str]:
    return list(((world.workspace(project) or {}).get("spec") or {}).get("members") or [])


def test_a_dataset_over_budget_is_withheld_naming_the_setting(world: World, prefix: str) -> None:
    big, small = register_large(world, prefix), world.dataset()  # world.dataset verifies both
    assert dataset(world, big).status.manifest is not None  # the default budget holds it
    name, project = world.submit(datasets=[big, small])
    world.approve(name, "ann")
    world.reconcile(project)
    assert mounted(world, project) == {big, small}

    # The controller with a budget of 500 objects, an interval later: both are due again.
    budget = world.settings.model_copy(
        update={"dataset_verify_max_objects": 500, "resync_seconds": 3600.0}
    )
    later = dt.timedelta(seconds=world.settings.dataset_verify_seconds)
    with Controller(world, budget, s3_client(world.settings),
                    clock=lambda: dt.datetime.now(dt.UTC) + later):  # fmt: skip
        wait_until(lambda: (verified(world, big) or ("",))[0] == "False", "big not verified")
        wait_until(lambda: mounted(world, project) == {small}, "big withheld from the workspace")
    status, reason, message = verified(world, big) or ("", "", "")
    assert reason == "OverBudget"
    assert f"s3://{world.bucket}/{prefix}/ holds more than 500 objects" in message
    assert "(TRE_DATASET_VERIFY_MAX_OBJECTS=500)" in message
    assert "Raise the setting" in message and "withheld from workspaces" in message
    assert status == "False" and dataset(world, big).status.manifest is None
    assert (verified(world, small) or ("",))[0] == "True"


def test_a_revoke_takes_effect_while_a_large_dataset_is_being_listed(
    world: World, prefix: str
) -> None:
    first, project = world.submit(datasets=[world.dataset()])
    world.approve(first, "ann")
    second, _ = world.submit(project=project, datasets=[world.dataset()], members=["nina"])
    world.approve(second, "bob")

    # The controller's own S3 client, held before the second page of the large prefix.
    listing, release = threading.Event(), threading.Event()
    s3 = s3_client(world.settings)

    def hold(params: dict[str, Any], **_: Any) -> None:
        query = params.get("query_string") or {}
        if query.get("prefix") == f"{prefix}/" and query.get("continuation-token"):
            listing.set()
            release.wait(120)

    s3.meta.events.register("before-call.s3.ListObjectsV2", hold)
    settings = world.settings.model_copy(update={"resync_seconds": 3600.0})
    try:
        with Controller(world, settings, s3):
            wait_until(lambda: "nina" in members(world, project), "nina in the workspace")
            big = register_large(world, prefix)
            wait_until(listing.is_set, "the controller listing the large dataset")
            assert verified(world, big) is None and dataset(world, big).status.manifest is None

            revoked = world.tre("request", "revoke", second, "-m", "left", user="carl",
                                group=APPROVERS)  # fmt: skip
            assert revoked.exit_code == 0, revoked.output
            wait_until(lambda: "nina" not in members(world, project), "the revoke applied")
            # ... while the listing is still held: the dataset is not verified yet
            assert not release.is_set()
            assert verified(world, big) is None and dataset(world, big).status.manifest is None

            release.set()
            wait_until(lambda: (verified(world, big) or ("",))[0] == "True", "big verified")
            recorded = dataset(world, big).status.manifest
            assert recorded is not None and recorded.object_count == OBJECTS
    finally:
        release.set()


def test_a_failed_listing_removes_the_manifest(world: World) -> None:
    name = world.dataset()  # two objects, verified
    assert dataset(world, name).status.manifest is not None
    for i in range(2):
        world.s3.delete_object(Bucket=world.bucket, Key=f"{name}/part-{i}.csv")
    try:
        later = dt.datetime.now(dt.UTC) + dt.timedelta(
            seconds=world.settings.dataset_verify_seconds
        )
        [failed] = verify_datasets(world.controller, world.s3, [dataset(world, name)], later,
                                   world.settings)  # fmt: skip
        assert not failed.ok and failed.sha256 is None and failed.changed
        assert dataset(world, name).status.manifest is None
        status, reason, message = verified(world, name) or ("", "", "")
        assert (status, reason) == ("False", "ListingFailed")
        assert "no objects under prefix" in message and "withheld from workspaces" in message
    finally:
        # The session's later tests verify every due dataset and expect each to list: an
        # admin removes this one, whose data is gone, as an operator would.
        world.admin.delete(DATASETS, name)
