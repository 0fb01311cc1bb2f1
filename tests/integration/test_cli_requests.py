"""Bad input to `tre request` gets a clear error that names the field and the fix, and
nothing is created or changed.

Behaviours under test (real CLI, real API server): unknown dataset; invalid project slug
(upper case, too long, unicode); end date in the past or beyond the maximum; duplicate
members; a malformed YAML file; self-approval (refused by the CLI, and by the API server for
an impersonated user who skips the CLI); approving twice; approving a revoked request.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from provisioner.devcluster.cluster import DevCluster
from provisioner.errors import RefusedError
from provisioner.kube.api import Kube
from provisioner.kube.client import api_client
from provisioner.kube.resources import DATASETS
from provisioner.models.settings import Settings
from tests.integration.workspace_world import APPROVERS, World

pytestmark = pytest.mark.integration
TODAY = dt.date.today()


@pytest.fixture
def world(installed_platform: Settings, dev_platform: DevCluster, tmp_path: Path) -> World:
    return World(installed_platform, dev_platform.kubeconfig, tmp_path)


@pytest.fixture(scope="module")
def dataset(
    installed_platform: Settings, dev_platform: DevCluster, tmp_path_factory: pytest.TempPathFactory
) -> str:
    return World(
        installed_platform, dev_platform.kubeconfig, tmp_path_factory.mktemp("ds")
    ).dataset()


def submit_refused(world: World, expected: str, **fields: Any) -> None:
    before = world.access_request_names()
    result = world.tre("request", "submit", "-f", str(world.request_file(**fields)), user="lea")
    assert result.exit_code == 2, result.output
    assert expected in result.output
    assert world.access_request_names() == before


def test_unknown_dataset(world: World) -> None:
    submit_refused(
        world,
        "request.datasets: unknown dataset(s) no-such-data; see 'tre dataset list'",
        datasets=["no-such-data"],
    )


@pytest.mark.parametrize("slug", ["Heart-Failure", "x" * 33, "hart-studie-ö"])
def test_invalid_project_slug(world: World, dataset: str, slug: str) -> None:
    submit_refused(
        world,
        f"project: project slug {slug!r} is invalid: use 3-32 characters a-z, 0-9 and '-'",
        project=slug,
        datasets=[dataset],
    )


def test_end_date_in_the_past(world: World, dataset: str) -> None:
    past = TODAY - dt.timedelta(days=1)
    submit_refused(
        world,
        f"request.endDate: must not be in the past (got {past}",
        datasets=[dataset],
        startDate=(TODAY - dt.timedelta(days=30)).isoformat(),
        endDate=past.isoformat(),
    )


def test_end_date_beyond_the_maximum(world: World, dataset: str) -> None:
    end = TODAY + dt.timedelta(days=400)
    submit_refused(
        world,
        f"request.endDate: must be within 365 days of startDate (got {end}); "
        "ask for an extension later instead",
        datasets=[dataset],
        endDate=end.isoformat(),
    )


def test_duplicate_members(world: World, dataset: str) -> None:
    submit_refused(
        world,
        "members: duplicate entries ['ravi']; list each one once",
        datasets=[dataset],
        members=["lea", "ravi", "ravi"],
    )


def test_malformed_yaml(world: World) -> None:
    bad = world.tmp / "bad.yaml"
    bad.write_text("project: demo\nmembers: [lea, ravi\n")
    before = world.access_request_names()
    result = world.tre("request", "submit", "-f", str(bad), user="lea")
    assert result.exit_code == 2
    assert f"--file: {bad} is not valid YAML at line 3, column 1" in result.output
    assert world.access_request_names() == before


def _decisions(world: World, name: str) -> list[dict[str, Any]]:
    return list(world.request_object(name)["spec"].get("decisions", []))


def test_self_approval_is_refused_by_cli_and_by_the_api_server(
    world: World, dataset: str, dev_platform: DevCluster
) -> None:
    name, _ = world.submit(datasets=[dataset])
    result = world.tre("request", "approve", name, user="lea", group=APPROVERS)
    assert result.exit_code == 4
    assert (
        f"you (lea) are requester of request {name} and may not approve it: nobody approves "
        "their own access; another approver must decide"
    ) in result.output
    # Skipping the CLI does not help: the API server refuses the same write.
    lea = Kube(api_client(dev_platform.kubeconfig, as_user="lea", as_groups=(APPROVERS,)))
    obj = world.request_object(name)
    current = world.admin.get(DATASETS, dataset)
    assert current is not None
    obj["spec"]["decisions"] = [
        {
            "action": "approve",
            "by": "lea",
            "at": "2026-01-01T00:00:00Z",
            # pinned honestly, so only the self-approval rule can refuse it
            "manifestHashes": {dataset: current["status"]["manifest"]["sha256"]},
            "classifications": {dataset: current["spec"]["classification"]},
        }
    ]
    with pytest.raises(RefusedError, match="tre-accessrequest-decisions"):
        lea.replace(obj)
    assert _decisions(world, name) == []


def test_approving_twice_is_refused(world: World, dataset: str) -> None:
    name, _ = world.submit(datasets=[dataset])
    world.approve(name, "ann")
    result = world.tre("request", "approve", name, user="ann", group=APPROVERS)
    assert result.exit_code == 4
    # The API server refuses it: an approval may repeat only for content not seen before.
    assert "ann has already approved this request as it is" in result.output
    assert len(_decisions(world, name)) == 1


def test_approving_a_revoked_request_is_refused(world: World, dataset: str) -> None:
    name, _ = world.submit(datasets=[dataset])
    revoked = world.tre("request", "revoke", name, "-m", "withdrawn", user="carl", group=APPROVERS)
    assert revoked.exit_code == 0, revoked.output
    result = world.tre("request", "approve", name, user="ann", group=APPROVERS)
    assert result.exit_code == 4
    assert f"request {name} was already revoked by carl; file a new request instead" in (
        result.output
    )
    assert [d["action"] for d in _decisions(world, name)] == ["revoke"]


def test_workspace_list_json_is_scriptable(world: World) -> None:
    listed = world.tre_json("workspace", "list")
    assert isinstance(listed, list)
    for row in listed:
        assert {"project", "namespace", "phase"} <= set(row)
