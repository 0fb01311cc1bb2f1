"""The queries print the same whichever way they run, against the real API server: the fast
path of `provisioner.cli.main` and the typer app give the same standard output, standard
error and exit code, and both print what the models would (`tests/model_rows.py`).

Behaviours under test: every query of `QUERIES`, as a table, JSON and YAML, as the admin and
as a person (`--as`, `--as-group`), filtered and not; a request with a Ready workspace and
one still Pending with no status written yet; a verified dataset; an object that does not
exist (exit 3, the same message).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from provisioner.cli.app import app
from provisioner.cli.main import QUERIES, run_query
from provisioner.devcluster.cluster import DevCluster
from provisioner.kube.resources import ACCESS_REQUESTS, DATASETS, WORKSPACES
from provisioner.models.settings import Settings
from tests import model_rows
from tests.integration.workspace_world import World

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def projects(
    installed_platform: Settings, dev_platform: DevCluster, tmp_path_factory: pytest.TempPathFactory
) -> tuple[World, str, str, str, str]:
    """(world, a request of a Ready workspace, its project, a request filed just now that the
    controller has not seen: no status, the project's dataset)."""
    world = World(installed_platform, dev_platform.kubeconfig, tmp_path_factory.mktemp("fast"))
    request, project, dataset = world.approved_project()
    world.reconcile(project)
    pending, _ = world.submit(datasets=[dataset], project=f"{project[:24]}-2")
    return world, request, project, pending, dataset


def both_ways(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """What the fast path prints for `args`; fails unless typer prints exactly the same."""
    code = run_query(args)
    fast = capsys.readouterr()
    assert code is not None, f"the fast path handed {args} to typer"
    result = CliRunner().invoke(app, args)
    assert (result.exit_code, result.stdout, result.stderr) == (code, fast.out, fast.err)
    return code, fast.out, fast.err


def test_every_query_prints_the_same_both_ways(
    projects: tuple[World, str, str, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    _, request, project, pending, dataset = projects
    commands = [
        ["request", "list"],
        ["request", "list", "--project", project, "--phase", "Approved"],
        ["request", "list", "--phase=Pending"],
        ["request", "show", request],
        ["request", "show", pending],
        ["workspace", "list"],
        ["workspace", "show", project],
        ["dataset", "list"],
        ["dataset", "show", dataset],
        ["whoami"],
    ]
    assert {tuple(c[: len(q.words)]) for c in commands for q in QUERIES} >= {
        q.words for q in QUERIES
    }
    for command in commands:
        for fmt in ("table", "json", "yaml"):
            for who in ([], ["--as", "lea"], ["--as", "ann", "--as-group", "tre:approvers"]):
                code, out, err = both_ways([*command, "-o", fmt, *who], capsys)
                if command == ["request", "show", pending] and who == ["--as", "lea"]:
                    # not yet granted: the controller has not seen it (F20), refused alike
                    assert code == 4, (command, fmt, who)
                    assert "once the controller has seen it" in err
                    continue
                assert code == 0, (command, fmt, who)
                assert out.strip()


def test_what_the_queries_print_is_what_the_models_give(
    projects: tuple[World, str, str, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    world, request, project, pending, dataset = projects
    listed = json.loads(both_ways(["-o", "json", "request", "list"], capsys)[1])
    live = sorted(world.admin.list(ACCESS_REQUESTS), key=lambda o: o["metadata"]["name"])
    assert listed == [model_rows.request_row(o) for o in live]
    assert {r["name"]: r["phase"] for r in listed}[pending] == "Pending"

    workspace = world.admin.get(WORKSPACES, project)
    for name in (request, pending):
        shown = json.loads(both_ways(["-o", "json", "request", "show", name], capsys)[1])
        obj = world.request_object(name)
        ws = workspace if obj["spec"]["project"] == project else None
        assert shown == model_rows.request_detail(obj, ws)

    assert workspace is not None
    shown = json.loads(both_ways(["-o", "json", "workspace", "show", project], capsys)[1])
    assert shown == model_rows.workspace_row(workspace)
    assert shown["phase"] == "Ready"

    listed = json.loads(both_ways(["-o", "json", "dataset", "list"], capsys)[1])
    live = sorted(world.admin.list(DATASETS), key=lambda o: o["metadata"]["name"])
    assert listed == [model_rows.dataset_row(o) for o in live]
    shown = json.loads(both_ways(["-o", "json", "dataset", "show", dataset], capsys)[1])
    dataset_obj = world.admin.get(DATASETS, dataset)
    assert dataset_obj is not None
    assert shown == model_rows.dataset_detail(dataset_obj)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["workspace", "show", "no-such-project"], "workspace 'no-such-project' does not exist"),
        (["request", "show", "no-such-request"], "access request 'no-such-request' does not"),
        (["dataset", "show", "no-such-data"], "dataset 'no-such-data' does not exist"),
    ],
)
def test_a_missing_object_is_the_same_error_both_ways(
    projects: tuple[World, str, str, str, str],
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    code, out, err = both_ways(args, capsys)
    assert (code, out) == (3, "")
    assert err.startswith(f"error: {message}")


def test_the_installed_tre_takes_the_fast_path(
    projects: tuple[World, str, str, str, str], tmp_path: Path
) -> None:
    """The console script's entry point is the fast path: `tre workspace show` imports no
    typer (the unit tier proves which modules; this proves the script is wired to it)."""
    import subprocess
    import sys

    _, _, project, _, _ = projects
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "provisioner.cli.main", "workspace", "show",
         project],
        capture_output=True, text=True, cwd=root, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"project: {project}" in done.stdout
    assert " typer" not in done.stderr
