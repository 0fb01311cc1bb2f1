"""Helpers of the tests that run on a platform with a node (`tre dev up --node`); the fixtures
(`platform_with_node`, `settings_with_node`, `world_with_node`, `outside_host`) are in
conftest.py.
"""

from __future__ import annotations

import subprocess
import sys

from provisioner.devcluster.cluster import DevCluster

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
