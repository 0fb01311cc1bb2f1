"""Researchers' notebooks for real: a platform with a node, the hub inside it, a Ready workspace.

The module brings up a platform of its own with `tre dev up --node` (the command people run:
node, resolver, CSI driver, project storage, notebook image, and the hub with its proxy in the
node's network namespace) and drives it as a researcher does, through the hub's sign-in form
and REST API and the notebook's own API behind the proxy; code "inside the notebook" runs in a
real kernel over the Jupyter protocol. Traffic goes only to loopback, to pods, and to a test
host in a network namespace this module creates.

Behaviours under test:
- a member's named server starts; its pod runs in the project namespace under PSA restricted;
  JupyterLab answers through the proxy;
- inside: the dataset is readable at its mount path and is what the approved manifest pins;
  writing there fails with a read-only error; /project is writable and survives a restart of
  the server; the start is in the audit log with the user and the datasets mounted;
- nothing leaves: a TCP connection to an "outside" host fails from the notebook while the same
  connection from the node succeeds; another project's notebook is unreachable; an external
  name does not resolve while the hub's Service name does; the hub API answers;
- the airlock from inside: `tre export submit` run in the kernel with nothing but the hub's
  environment (TRE_PROJECT, TRE_AIRLOCK_URL, JUPYTERHUB_API_TOKEN) files an ExportRequest
  authored by that member in the project's namespace, and the file is in quarantine with its
  sha256; the path is narrow: the airlock's port on another address (a host the node reaches)
  is out of the notebook's reach;
- a deny-all policy deleted by hand: new starts are refused until the next pass restores it;
- a revoked request: the running server is gone after the next pass;
- in a browser (a researcher's JupyterLab behind the gate is in test_browser_gate.py): an
  output checker signs in on the hub, opens the export on the airlock's page, sees the
  automated checks, votes on every file, and the page and the ExportRequest show the review
  (screenshots kept in test-artifacts/).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from provisioner.airlock.keys import ExportRef
from provisioner.airlock.quarantine import META_SHA256
from provisioner.devcluster.cluster import DevCluster
from provisioner.devcluster.hub import DEV_OUTPUT_CHECKERS
from provisioner.devcluster.node import NODE_IP
from provisioner.kube.resources import EXPORT_REQUESTS, NAMESPACES, NETWORK_POLICIES, PODS
from provisioner.models.resources import ExportRequest
from provisioner.models.settings import Settings
from provisioner.planning.names import AIRLOCK_PREFIX, POLICY_DEFAULT_DENY, namespace_name
from tests.integration.conftest import Browse
from tests.integration.platform_with_node import (
    OUTSIDE_PORT,
    TRE,
    Start,
    connect_code,
    connect_from_node,
    last_json,
    ready_project,
)
from tests.integration.workspace_world import APPROVERS, World, catching_up
from tests.jupyter_clients import Hub, HubError

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def world(world_with_node: World) -> World:
    return world_with_node


def notebook_pod(world: World, project: str) -> dict[str, Any]:
    (pod,) = world.admin.list(PODS, namespace=namespace_name(project))
    return pod


# --- a member works in their notebook -----------------------------------------------------------


def test_a_member_works_in_the_notebook_with_the_approved_data(
    world: World, sign_in: Callable[[str], Hub], start: Start
) -> None:
    _, project, dataset = ready_project(world, ["ravi"])
    hub = sign_in("ravi")
    notebook = start(hub, "ravi", project)

    pod = notebook_pod(world, project)
    assert pod["status"]["phase"] == "Running"
    namespace = world.admin.get(NAMESPACES, namespace_name(project))
    assert namespace is not None
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    lab = requests.get(
        f"{notebook.base}/lab", headers={"Authorization": f"token {hub.token}"}, timeout=30
    )
    assert lab.status_code == 200 and "JupyterLab" in lab.text

    # The data is what the manifest pins: the objects of the dataset's prefix, byte for byte.
    listed = world.s3.list_objects_v2(Bucket=world.bucket, Prefix=f"{dataset}/")["Contents"]
    expected = {o["Key"].removeprefix(f"{dataset}/"): world.s3.get_object(
        Bucket=world.bucket, Key=o["Key"])["Body"].read().decode() for o in listed}  # fmt: skip
    seen = notebook.run(
        "import json, os\n"
        f"root = '/data/{dataset}'\n"
        "print(json.dumps({n: open(os.path.join(root, n)).read() for n in os.listdir(root)}))"
    )
    assert last_json(seen) == expected
    with pytest.raises(HubError, match=r"Read-only file system"):
        notebook.run(f"open('/data/{dataset}/new.csv', 'w')")

    marker = uuid.uuid4().hex
    notebook.run(f"open('/project/kept.txt', 'w').write('{marker}')")
    hub.stop("ravi", project)
    hub.wait_gone("ravi", project, 120)
    notebook = start(hub, "ravi", project)
    assert notebook.run("print(open('/project/kept.txt').read())").strip() == marker

    # The start is in the audit log, with who and what was mounted (the controller's pass).
    world.reconcile(project)
    pinned = {d["name"]: d["manifestSha256"] for d in world.workspace(project)["spec"]["datasets"]}
    started = [
        e for e in world.audit.read_all()
        if e.action == "notebook.started" and e.subject == f"workspace/{project}"
    ]  # fmt: skip
    assert started and started[-1].details["user"] == "ravi"
    assert started[-1].details["datasets"] == {dataset: pinned[dataset]}


# --- nothing leaves -------------------------------------------------------------------------


def test_nothing_leaves_the_notebook(
    world: World,
    platform_with_node: DevCluster,
    sign_in: Callable[[str], Hub],
    outside_host: str,
    start: Start,
) -> None:
    _, project, _ = ready_project(world, ["nina"])
    _, other, _ = ready_project(world, ["omar"])
    notebook = start(sign_in("nina"), "nina", project)
    start(sign_in("omar"), "omar", other)
    other_ip = notebook_pod(world, other)["status"]["podIP"]

    # The outside host answers the node ...
    assert connect_from_node(platform_with_node, outside_host, OUTSIDE_PORT) == "connected"
    # ... and not the notebook.
    assert notebook.run(connect_code(outside_host, OUTSIDE_PORT)).startswith("refused")

    # Another project's notebook is up (the node reaches it) and out of reach.
    port = world.settings.notebook_port
    assert connect_from_node(platform_with_node, other_ip, port) == "connected"
    assert notebook.run(connect_code(other_ip, port)).startswith("refused")

    # Names: the hub's Service resolves, through the platform's resolver only; nothing else.
    resolved = notebook.run(
        "import socket\n"
        "print(socket.getaddrinfo('hub.tre-hub.svc.cluster.local', 8081)[0][4][0])\n"
        "try:\n"
        "    socket.getaddrinfo('data.outside.example', 443); print('resolved')\n"
        "except socket.gaierror as exc:\n"
        "    print('unresolved', exc.errno)\n"
        "print(open('/etc/resolv.conf').read().split())\n"
    )
    lines = resolved.strip().splitlines()
    assert lines[0] == NODE_IP
    assert lines[1].startswith("unresolved")
    assert f"'nameserver', '{NODE_IP}'" in lines[2]
    # The hub API answers (the one arrow besides DNS and the airlock).
    assert (
        notebook.run(
            "import os, urllib.request\n"
            "api = os.environ['JUPYTERHUB_API_URL'] + '/'\n"
            "print(urllib.request.urlopen(api, timeout=10).status)"
        ).strip()
        == "200"
    )


# --- the airlock from inside the notebook ------------------------------------------------------

TABLE = b"age_band,readmissions\n<50,12\n50-70,40\n>70,33\n"
NOTES = b"Model: logistic regression on 1500 synthetic admissions.\n"
DESCRIPTION = "readmissions by age band"
CONTEXT = "Counts over a synthetic cohort of 1500; no cell below 10."


def until_filed(submit: Callable[[], tuple[int, str, str]]) -> str:
    """Run `submit` (-> exit code, stdout, stderr) until the export is filed; its stdout. For a
    moment after a workspace became Ready the API server's admission parameters have not seen
    it and it refuses the request (`catching_up`), failing closed: that alone is retried."""
    deadline = time.monotonic() + 30
    while True:
        code, out, err = submit()
        if code == 0:
            return out
        assert catching_up(err) and time.monotonic() < deadline, out + err
        time.sleep(1)


def the_export(world: World, project: str) -> ExportRequest:
    """The project's one ExportRequest, as the API server has it."""
    (obj,) = world.admin.list(EXPORT_REQUESTS, namespace=namespace_name(project))
    return ExportRequest.from_object(obj)


def test_a_member_exports_from_the_notebook_through_the_airlock(
    world: World,
    settings_with_node: Settings,
    platform_with_node: DevCluster,
    sign_in: Callable[[str], Hub],
    outside_host: str,
    start: Start,
) -> None:
    _, project, _ = ready_project(world, ["tove"])
    notebook = start(sign_in("tove"), "tove", project)
    # In the kernel, as a researcher would from a cell: the result written to project
    # storage, then `tre export submit` with no address, project or token on the command line.
    notebook.run(
        "import os\n"
        "os.makedirs('/project/results', exist_ok=True)\n"
        f"open('/project/results/table.csv', 'wb').write({TABLE!r})\n"
    )
    cell = (
        "import json, subprocess\n"
        "done = subprocess.run(['tre', 'export', 'submit', 'results/table.csv',\n"
        f"    '--description', {DESCRIPTION!r}, '--context', {CONTEXT!r}],\n"
        "    capture_output=True, text=True, timeout=120)\n"
        "print(json.dumps([done.returncode, done.stdout, done.stderr]))\n"
    )
    out = until_filed(lambda: tuple(last_json(notebook.run(cell, timeout=180))))

    request = the_export(world, project)
    assert request.name in out
    assert request.spec.author == "tove"
    assert request.spec.project == project
    (declared,) = request.spec.files
    assert (declared.path, declared.size) == ("results/table.csv", len(TABLE))
    assert declared.sha256 == hashlib.sha256(TABLE).hexdigest()
    stored = world.s3.get_object(
        Bucket=settings_with_node.airlock_quarantine_bucket,
        Key=ExportRef.of(request).file_key(declared.path),
    )
    assert stored["Body"].read() == TABLE
    assert stored["Metadata"][META_SHA256] == declared.sha256

    # Narrow: the airlock's port at the airlock's address, and nowhere else. The outside host
    # listens on the same port and the node reaches it; the notebook does not.
    port = settings_with_node.airlock_port
    assert notebook.run(connect_code(NODE_IP, port)).strip() == "connected"
    assert connect_from_node(platform_with_node, outside_host, port) == "connected"
    assert notebook.run(connect_code(outside_host, port)).startswith("refused")


# --- what the controller enforces on a running notebook -------------------------------------


def test_a_deleted_deny_all_policy_blocks_starts_until_the_next_pass(
    world: World, sign_in: Callable[[str], Hub], start: Start
) -> None:
    _, project, _ = ready_project(world, ["pia"])
    hub = sign_in("pia")
    namespace = namespace_name(project)
    # By hand, with the one identity admission lets past in project namespaces besides the
    # controller (the cluster's own kube-system controllers): the drift the controller repairs.
    assert world.cluster_itself.delete(NETWORK_POLICIES, POLICY_DEFAULT_DENY, namespace)
    refused = hub.start("pia", project)
    if refused.status_code in (201, 202):
        # The hub accepted; the API server refuses the pod, so the start fails.
        with pytest.raises(HubError):
            hub.wait_ready("pia", project, 60)
    assert world.admin.list(PODS, namespace=namespace) == []
    world.reconcile(project)
    assert world.admin.get(NETWORK_POLICIES, POLICY_DEFAULT_DENY, namespace) is not None
    start(hub, "pia", project)


def test_a_revoked_member_loses_the_running_server_at_the_next_pass(
    world: World, sign_in: Callable[[str], Hub], start: Start
) -> None:
    request, project, _ = ready_project(world, ["quin"])
    hub = sign_in("quin")
    start(hub, "quin", project)
    revoked = world.tre(
        "request", "revoke", request, "-m", "project ended early", user="carl", group=APPROVERS
    )
    assert revoked.exit_code == 0, revoked.output
    world.reconcile(project, dt.datetime.now(dt.UTC))
    deadline = time.monotonic() + 60
    while world.admin.list(PODS, namespace=namespace_name(project)):
        assert time.monotonic() < deadline, "the revoked member's notebook is still running"
        time.sleep(0.5)


# --- in a browser -------------------------------------------------------------------------------


def test_an_output_checker_reviews_an_export_in_a_browser(
    world: World,
    platform_with_node: DevCluster,
    sign_in: Callable[[str], Hub],
    hub_url: str,
    browse: Browse,
    tmp_path: Path,
) -> None:
    _, project, _ = ready_project(world, ["uma"])
    root = tmp_path / "project"
    (root / "out").mkdir(parents=True)
    (root / "out" / "table.csv").write_bytes(TABLE)
    (root / "notes.txt").write_bytes(NOTES)
    # Filed with the member's hub token from here (the notebook's own path is the test above).
    env = {
        **os.environ,
        "JUPYTERHUB_API_TOKEN": sign_in("uma").token,
        "TRE_AIRLOCK_URL": f"{hub_url}{AIRLOCK_PREFIX}",
    }
    submit = [*TRE, "export", "submit", "--root", str(root), "--project", project,
              "out/table.csv", "--supporting", "notes.txt",
              "--description", DESCRIPTION, "--context", CONTEXT]  # fmt: skip

    def filed() -> tuple[int, str, str]:
        done = subprocess.run(submit, env=env, capture_output=True, text=True, check=False)
        return done.returncode, done.stdout, done.stderr

    until_filed(filed)
    request = the_export(world, project)
    checker = DEV_OUTPUT_CHECKERS[0]

    session, screenshot = browse(
        "review", checker, f"{request.namespace}/{request.name}", "approve", "airlock-review.png"
    )

    assert session.returncode == 0, session.stdout + session.stderr
    lines = session.stdout.strip().splitlines()
    checks = {line.split(": ", 1)[0]: line for line in lines if line.startswith("checks ")}
    assert set(checks) == {"checks out/table.csv", "checks notes.txt"}
    for check in ("type", "small_numbers", "raw_dataset_copy", "declared_hash"):
        assert f"{check}: " in checks["checks out/table.csv"], checks
    assert lines[-1] == "reviewed out/table.csv=approve,notes.txt=approve"
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    reviewed = the_export(world, project)
    (review,) = reviewed.spec.reviews
    assert review.by == checker
    assert {(v.path, v.vote.value, v.comment) for v in review.votes} == {
        ("out/table.csv", "approve", "checked in the browser test"),
        ("notes.txt", "approve", "checked in the browser test"),
    }
