"""A TCP relay between the host's loopback and the node's network namespace.

The node (kubelet, containerd, kube-router, later the hub's proxy) lives in a network
namespace of its own with no link to the host: no veth, no route, nothing bound on a host
address but 127.0.0.1. This one process joins the two loopbacks:

- ``--into-node PORT``: listen on 127.0.0.1:PORT *inside* the node and connect to
  127.0.0.1:PORT on the host. The apiserver and S3 stay on the host, and every process in the
  node uses the very same URLs and kubeconfigs as the host does.
- ``--out-of-node HPORT=ADDR:PORT``: listen on 127.0.0.1:HPORT on the host and connect to
  ADDR:PORT inside the node (e.g. a proxy that runs in the node, shown to the host's browser).

A socket belongs to the network namespace its creating thread was in when it was created, for
its whole life. So the relay switches its (only) thread into the node with setns(2), creates
the socket, and switches back before doing anything else; the event loop never runs while the
thread is in the node. Python 3.11 has no ``os.setns``: ctypes calls libc's. Needs
CAP_SYS_ADMIN (root), like everything about the node.

Usage: ``python -m provisioner.devcluster.relay --netns /proc/PID/ns/net --into-node 6443 ...``.
It prints ``relay ready`` once every listener is bound, so a starter can wait for it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import os
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass

_CLONE_NEWNET = 0x40000000
_LOOPBACK = "127.0.0.1"
READY_LINE = "relay ready"


@dataclass(frozen=True)
class Forward:
    """Listen on LOOPBACK:listen_port in one namespace, connect to target in the other."""

    listen_port: int
    target_host: str
    target_port: int
    into_node: bool  # True: listen in the node, connect on the host


def parse_into_node(value: str) -> Forward:
    port = _port(value, "--into-node")
    return Forward(port, _LOOPBACK, port, into_node=True)


def parse_out_of_node(value: str) -> Forward:
    """``HPORT=ADDR:PORT``."""
    listen, sep, target = value.partition("=")
    host, colon, port = target.rpartition(":")
    if not sep or not colon or not host:
        raise argparse.ArgumentTypeError(
            f"--out-of-node {value!r}: expected HOSTPORT=ADDR:PORT, e.g. 18000=10.88.0.5:8000"
        )
    return Forward(_port(listen, "--out-of-node"), host, _port(port, "--out-of-node"), False)


def _port(value: str, flag: str) -> int:
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise argparse.ArgumentTypeError(f"{flag}: {value!r} is not a TCP port (1-65535)")
    return int(value)


class Namespaces:
    """The host's and the node's network namespaces, and a way to create a socket in either."""

    def __init__(self, node_netns: str) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._host = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        self._node_path = node_netns

    def _setns(self, fd: int, where: str) -> None:
        if self._libc.setns(fd, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into the {where} network namespace: {os.strerror(err)}")

    @contextlib.contextmanager
    def in_node(self) -> Iterator[None]:
        # Opened per use, never kept: a relay must not keep a stopped node's namespace alive.
        node = os.open(self._node_path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            self._setns(node, "node")
            try:
                yield
            finally:
                self._setns(self._host, "host")  # must not fail; if it does, the relay dies
        finally:
            os.close(node)

    def socket(self, *, node: bool) -> socket.socket:
        if not node:
            return socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        with self.in_node():
            return socket.socket(socket.AF_INET, socket.SOCK_STREAM)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()  # half-close: TLS close_notify and HTTP/1.0 bodies rely on it
    except (ConnectionError, OSError):
        writer.close()


async def _relay(
    ns: Namespaces,
    forward: Forward,
    client_reader: asyncio.StreamReader,
    client_writer: asyncio.StreamWriter,
) -> None:
    sock = ns.socket(node=not forward.into_node)
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(
            sock, (forward.target_host, forward.target_port)
        )
    except OSError:
        sock.close()
        client_writer.close()  # the client sees a reset/EOF, as with a refused connection
        return
    target_reader, target_writer = await asyncio.open_connection(sock=sock)
    await asyncio.gather(_pipe(client_reader, target_writer), _pipe(target_reader, client_writer))
    for writer in (client_writer, target_writer):
        writer.close()


def _listener(ns: Namespaces, forward: Forward) -> socket.socket:
    sock = ns.socket(node=forward.into_node)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((_LOOPBACK, forward.listen_port))
    except OSError as exc:
        where = "inside the node" if forward.into_node else "on the host"
        raise OSError(
            exc.errno, f"cannot listen on {_LOOPBACK}:{forward.listen_port} {where}: {exc}"
        ) from exc
    sock.listen(128)
    sock.setblocking(False)
    return sock


async def serve(node_netns: str, forwards: list[Forward]) -> None:
    ns = Namespaces(node_netns)
    servers = []
    for forward in forwards:

        async def handle(
            reader: asyncio.StreamReader,
            writer: asyncio.StreamWriter,
            forward: Forward = forward,
        ) -> None:
            await _relay(ns, forward, reader, writer)

        servers.append(await asyncio.start_server(handle, sock=_listener(ns, forward)))
    sys.stdout.write(READY_LINE + "\n")
    sys.stdout.flush()
    await asyncio.gather(*(server.serve_forever() for server in servers))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m provisioner.devcluster.relay")
    parser.add_argument("--netns", required=True, help="the node's /proc/PID/ns/net")
    parser.add_argument("--into-node", type=parse_into_node, action="append", default=[])
    parser.add_argument("--out-of-node", type=parse_out_of_node, action="append", default=[])
    args = parser.parse_args(argv)
    forwards = [*args.into_node, *args.out_of_node]
    if not forwards:
        parser.error("nothing to relay: give --into-node and/or --out-of-node")
    try:
        asyncio.run(serve(args.netns, forwards))
    except OSError as exc:
        sys.stderr.write(f"relay: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
