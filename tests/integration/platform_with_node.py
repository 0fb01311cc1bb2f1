"""Helpers of the tests that run on a platform with a node (`tre dev up --node`); the fixtures
(`platform_with_node`, `settings_with_node`, `world_with_node`, `outside_host`) are in
conftest.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from provisioner.devcluster.cluster import DevCluster
from tests.integration.workspace_world import World
from tests.jupyter_clients import Hub, HubError, Notebook

TRE = [sys.executable, "-m", "provisioner.cli.main"]
# The port the outside host (the `outside_host` fixture) listens on, besides the airlock's.
OUTSIDE_PORT = 8443
# The outside host's server: accept on ADDRESS PORT..., answer 'outside', close.
OUTSIDE_LISTENER = (
    "import selectors, socket, sys\n"
    "listening = selectors.DefaultSelector()\n"
    "for port in sys.argv[2:]:\n"
    "    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "    s.bind((sys.argv[1], int(port))); s.listen()\n"
    "    listening.register(s, selectors.EVENT_READ)\n"
    "while True:\n"
    "    for key, _ in listening.select():\n"
    "        c, _ = key.fileobj.accept(); c.sendall(b'outside'); c.close()\n"
)


def run_checked(argv: list[str]) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=30)


def connect_from_node(platform: DevCluster, host: str, port: int) -> str:
    """'connected' or 'refused <why>': one TCP connection from the node's network namespace
    (the node reaches what the pods' policies keep from them)."""
    in_node = ["nsenter", "-t", str(platform.node().holder_pid), "-n", "--", sys.executable]
    done = subprocess.run(
        [*in_node, "-c", connect_code(host, port)],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() or done.stderr


def connect_code(host: str, port: int) -> str:
    return (
        "import socket\n"
        "try:\n"
        f"    socket.create_connection(('{host}', {port}), timeout=4).close(); print('connected')\n"
        "except OSError as exc:\n"
        "    print('refused', exc)\n"
    )


START_TIMEOUT = 180.0  # seconds; a first start on a busy machine, image already imported


def ready_project(
    world: World, members: list[str], classification: str = "internal"
) -> tuple[str, str, str]:
    """(request, project, dataset) of a Ready workspace whose members are lea and `members`."""
    dataset = world.dataset(classification, files=2)
    request, project = world.submit(datasets=[dataset], members=members)
    world.approve(request, "ann", "bob")
    result = world.reconcile(project)
    assert result.phase is not None and result.phase.value == "Ready", result
    return request, project, dataset


def start_server(hub: Hub, user: str, project: str) -> Notebook:
    """Start `user`'s server for `project`. For a moment after the controller made a workspace
    Ready (or restored its policies) the platform still refuses, failing closed: the hub's
    Workspace cache has not seen it yet (400 "no project", 503), or the API server's
    admission parameters and RBAC have not (the spawn fails). Each is retried briefly."""
    deadline = time.monotonic() + 30
    while True:
        response = hub.start(user, project)
        if response.status_code in (201, 202):
            try:
                hub.wait_ready(user, project, START_TIMEOUT)
                return Notebook(f"{hub.url}/user/{user}/{project}", hub.token)
            except HubError:
                if time.monotonic() > deadline:
                    raise
        elif response.status_code not in (400, 503) or time.monotonic() > deadline:
            raise HubError(f"start {user}/{project}: {response.status_code} {response.text}")
        time.sleep(0.5)


Start = Callable[[Hub, str, str], Notebook]


def last_json(text: str) -> Any:
    """The JSON a notebook cell printed last."""
    return json.loads(text.strip().splitlines()[-1])
