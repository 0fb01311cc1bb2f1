"""A TCP relay between the host's loopback and the node's network namespace.

The node (kubelet, containerd, kube-router, later the hub's proxy) lives in a network
namespace of its own with no link to the host: no veth, no route, nothing bound on a host
address but 127.0.0.1. This one process joins the two loopbacks:

- ``--into-node PORT``: listen on 127.0.0.1:PORT *inside* the node and connect to
  127.0.0.1:PORT on the host. The apiserver and S3 stay on the host, and every process in the
  node uses the very same URLs and kubeconfigs as the host does.
- ``--into-node ADDR:PORT=HPORT``: listen on ADDR:PORT inside the node (the node's own
  address, which pods can reach: a pod's 127.0.0.1 is its own) and connect to 127.0.0.1:HPORT
  on the host. Pods reach the apiserver and S3 this way, as they would on any cluster.
- ``--out-of-node HPORT=ADDR:PORT``: listen on 127.0.0.1:HPORT on the host and connect to
  ADDR:PORT inside the node (e.g. a proxy that runs in the node, shown to the host's browser).
- ``--connect-proxy PATH --connect-allow CIDR...``: an HTTP CONNECT proxy on a unix socket on
  the host that connects inside the node, to allowed addresses only. The apiserver's egress
  selector ("cluster") dials the kubelet (exec, logs, port-forward) through it: the host has
  no route to the node IP, on purpose.

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
import ipaddress
import os
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

_CLONE_NEWNET = 0x40000000
_LOOPBACK = "127.0.0.1"
READY_LINE = "relay ready"


@dataclass(frozen=True)
class Forward:
    """Listen on listen_host:listen_port in one namespace, connect to target in the other."""

    listen_port: int
    target_host: str
    target_port: int
    into_node: bool  # True: listen in the node, connect on the host
    listen_host: str = _LOOPBACK


def parse_into_node(value: str) -> Forward:
    """``PORT`` or ``ADDR:PORT=HPORT``."""
    if "=" not in value:
        same = _port(value, "--into-node")
        return Forward(same, _LOOPBACK, same, into_node=True)
    listen, _, host_port = value.partition("=")
    address, colon, port = listen.rpartition(":")
    if not colon:
        raise argparse.ArgumentTypeError(
            f"--into-node {value!r}: expected PORT or ADDR:PORT=HOSTPORT, e.g. 10.99.0.1:80=8333"
        )
    return Forward(
        _port(port, "--into-node"),
        _LOOPBACK,
        _port(host_port, "--into-node"),
        into_node=True,
        listen_host=_ipv4(address, "--into-node", value),
    )


def parse_out_of_node(value: str) -> Forward:
    """``HPORT=ADDR:PORT``."""
    listen, sep, target = value.partition("=")
    host, colon, port = target.rpartition(":")
    if not sep or not colon or not host:
        raise argparse.ArgumentTypeError(
            f"--out-of-node {value!r}: expected HOSTPORT=ADDR:PORT, e.g. 18000=10.88.0.5:8000"
        )
    address = _ipv4(host, "--out-of-node", value)
    return Forward(_port(listen, "--out-of-node"), address, _port(port, "--out-of-node"), False)


def _ipv4(host: str, flag: str, value: str) -> str:
    try:
        # An address, never a name: resolving one would ask the host's resolver.
        return str(ipaddress.IPv4Address(host))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"{flag} {value!r}: {host!r} is not an IPv4 address"
        ) from exc


def _port(value: str, flag: str) -> int:
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise argparse.ArgumentTypeError(f"{flag}: {value!r} is not a TCP port (1-65535)")
    return int(value)


@dataclass(frozen=True)
class ConnectProxy:
    """An HTTP CONNECT proxy on a unix socket (host) that dials into the node."""

    socket_path: Path
    allowed: tuple[ipaddress.IPv4Network, ...]


def parse_connect_request(
    head: bytes, allowed: tuple[ipaddress.IPv4Network, ...]
) -> tuple[str, int]:
    """The target of ``CONNECT a.b.c.d:port HTTP/1.1``; ValueError (with the reason) for any
    other request, a name instead of an address, or an address outside `allowed`."""
    request_line = head.split(b"\r\n", 1)[0].decode("ascii", errors="replace")
    parts = request_line.split(" ")
    if len(parts) != 3 or parts[0] != "CONNECT" or not parts[2].startswith("HTTP/1."):
        raise ValueError(f"not a CONNECT request: {request_line!r}")
    host, _, port = parts[1].rpartition(":")
    try:
        address = ipaddress.IPv4Address(host)
    except ValueError as exc:
        raise ValueError(f"CONNECT target {parts[1]!r} is not an IPv4 address") from exc
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"CONNECT target {parts[1]!r} has no valid port")
    if not any(address in network for network in allowed):
        raise ValueError(f"CONNECT target {address} is outside {[str(n) for n in allowed]}")
    return str(address), int(port)


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


async def _connect(ns: Namespaces, *, in_node: bool, host: str, port: int) -> socket.socket:
    sock = ns.socket(node=in_node)
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, (host, port))
    except OSError:
        sock.close()
        raise
    return sock


async def _splice(
    sock: socket.socket, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
) -> None:
    target_reader, target_writer = await asyncio.open_connection(sock=sock)
    await asyncio.gather(_pipe(client_reader, target_writer), _pipe(target_reader, client_writer))
    for writer in (client_writer, target_writer):
        writer.close()


async def _relay(
    ns: Namespaces,
    forward: Forward,
    client_reader: asyncio.StreamReader,
    client_writer: asyncio.StreamWriter,
) -> None:
    try:
        sock = await _connect(
            ns, in_node=not forward.into_node, host=forward.target_host, port=forward.target_port
        )
    except OSError:
        client_writer.close()  # the client sees a reset/EOF, as with a refused connection
        return
    await _splice(sock, client_reader, client_writer)


async def _proxy(
    ns: Namespaces,
    proxy: ConnectProxy,
    client_reader: asyncio.StreamReader,
    client_writer: asyncio.StreamWriter,
) -> None:
    try:
        head = await asyncio.wait_for(client_reader.readuntil(b"\r\n\r\n"), 10)
        host, port = parse_connect_request(head, proxy.allowed)
    except (ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
        client_writer.write(b"HTTP/1.1 403 Forbidden\r\n\r\n")
        client_writer.close()
        return
    try:
        sock = await _connect(ns, in_node=True, host=host, port=port)
    except OSError:
        client_writer.write(b"HTTP/1.1 502 Bad Gateway\r\n\r\n")
        client_writer.close()
        return
    client_writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
    await _splice(sock, client_reader, client_writer)


def _listener(ns: Namespaces, forward: Forward) -> socket.socket:
    sock = ns.socket(node=forward.into_node)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((forward.listen_host, forward.listen_port))
    except OSError as exc:
        where = "inside the node" if forward.into_node else "on the host"
        raise OSError(
            exc.errno,
            f"cannot listen on {forward.listen_host}:{forward.listen_port} {where}: {exc}",
        ) from exc
    sock.listen(128)
    sock.setblocking(False)
    return sock


async def serve(
    node_netns: str, forwards: list[Forward], proxy: ConnectProxy | None = None
) -> None:
    ns = Namespaces(node_netns)
    servers = []
    if proxy is not None:

        async def handle_proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await _proxy(ns, proxy, reader, writer)

        proxy.socket_path.unlink(missing_ok=True)  # a stale socket of an earlier run
        old_umask = os.umask(0o077)  # owner only: it reaches into the node
        try:
            servers.append(
                await asyncio.start_unix_server(handle_proxy, path=str(proxy.socket_path))
            )
        finally:
            os.umask(old_umask)
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
    parser.add_argument("--connect-proxy", type=Path, help="unix socket of the CONNECT proxy")
    parser.add_argument("--connect-allow", type=ipaddress.IPv4Network, action="append", default=[])
    args = parser.parse_args(argv)
    forwards = [*args.into_node, *args.out_of_node]
    if not forwards and not args.connect_proxy:
        parser.error("nothing to relay: give --into-node, --out-of-node or --connect-proxy")
    if args.connect_proxy and not args.connect_allow:
        parser.error("--connect-proxy needs --connect-allow CIDR (where it may connect)")
    proxy = (
        ConnectProxy(args.connect_proxy, tuple(args.connect_allow)) if args.connect_proxy else None
    )
    try:
        asyncio.run(serve(args.netns, forwards, proxy))
    except OSError as exc:
        sys.stderr.write(f"relay: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
