"""The node's DNS resolver answers the platform's names and nothing else (a real CoreDNS).

Behaviours under test:
- the hub's and the airlock's service names resolve to the address given;
- any other name, inside cluster.local or outside, is NXDOMAIN: nothing is forwarded (the
  binary has no forward plugin, and the test would see a SERVFAIL or a timeout if it tried);
- the resolver listens only where it is bound.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from provisioner.devcluster.binaries import ensure_coredns
from provisioner.devcluster.dns import platform_names, write_corefile
from provisioner.devcluster.processes import Process, free_port, spawn
from provisioner.models.settings import Settings

pytestmark = pytest.mark.integration

NOERROR, NXDOMAIN = 0, 3


def lookup(name: str, port: int, server: str = "127.0.0.1") -> tuple[int, list[str]]:
    """One A query over UDP: (rcode, addresses)."""
    query = struct.pack(">HHHHHH", 0x5452, 0x0100, 1, 0, 0, 0)
    query += b"".join(bytes([len(label)]) + label.encode() for label in name.split("."))
    query += b"\0" + struct.pack(">HH", 1, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        sock.sendto(query, (server, port))
        answer = sock.recv(512)
    rcode = struct.unpack(">H", answer[2:4])[0] & 0xF
    count = struct.unpack(">H", answer[6:8])[0]
    # Answers follow the question; with a single A question each record ends in its 4 bytes.
    addresses = [socket.inet_ntoa(answer[len(answer) - 16 * i + 12 : len(answer) - 16 * i + 16])
                 for i in range(count, 0, -1)]  # fmt: skip
    return rcode, addresses


@pytest.fixture(scope="module")
def resolver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    port = free_port()
    names = platform_names(Settings(), "10.99.0.1")
    state = Path(tmp_path_factory.mktemp("dns"))
    conf = write_corefile(state, bind="127.0.0.1", names=names, port=port)
    binary = str(ensure_coredns(print))
    proc: Process = spawn("coredns", [binary, "-conf", str(conf)], state / "coredns.log")
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                lookup("hub.tre-hub.svc.cluster.local", port)
                break
            except OSError:
                if time.monotonic() > deadline or not proc.alive():
                    pytest.fail(f"CoreDNS did not answer:\n{proc.log_tail()}")
                time.sleep(0.2)
        yield port
    finally:
        proc.stop()


def test_the_platforms_names_resolve(resolver: int) -> None:
    assert lookup("hub.tre-hub.svc.cluster.local", resolver) == (NOERROR, ["10.99.0.1"])
    assert lookup("tre-airlock.tre-airlock.svc.cluster.local", resolver) == (
        NOERROR,
        ["10.99.0.1"],
    )


@pytest.mark.parametrize(
    "name",
    ["example.org", "data-0123456789.attacker.example", "kubernetes.default.svc.cluster.local"],
)
def test_every_other_name_ends_here(resolver: int, name: str) -> None:
    assert lookup(name, resolver) == (NXDOMAIN, [])
