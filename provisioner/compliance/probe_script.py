"""The program `tre check --probe-from-pods` runs inside its probe pods (python3 -c, stdlib only).

`tre check` passes this file's source as the `-c` program and one JSON argument, the spec:

    {"mode": "listen", "port": 8888, "seconds": 300}
        bind every address on `port` and accept until killed or `seconds` have passed: the
        target the other workspaces' probes must not reach;
    {"mode": "probe", "timeout": 2.0, "settle": 10.0, "connect": [{"id", "host", "port"}],
     "http": [{"id", "url"}], "dns": [{"id", "server", "name"}]}
        run every probe in parallel, each bounded by `timeout` seconds (a `connect` that
        succeeds is tried again until it fails or `settle` seconds have passed), and write the
        results as one JSON object to /dev/termination-log, where the kubelet puts it in the
        pod's status (a message is cut at 4096 bytes, so errors are short).

It reports what happened, never a verdict: {"<id>": {"connected": bool, "error": str}} for a
TCP connection (with "open_for": the seconds after the start until which it still connected,
when a first attempt succeeded and a later one failed), {"status": int} or {"error"} for an
HTTP GET, {"rcode": int, "answers": int} or {"error"} for one DNS query to one server (UDP,
an A record, recursion desired). What each
result must be is judged on the admin's side (`provisioner.planning.runtime_probes`), so the
pod holds no list of what is expected.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import socket
import struct
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

TERMINATION_LOG = "/dev/termination-log"
STARTED = time.monotonic()  # the program's start, a moment after the container's
MAX_ERROR = 60  # characters of an error kept: the whole message must fit in 4096 bytes


def connect(host: str, port: int, timeout: float) -> dict[str, Any]:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return {"connected": True}
    except OSError as exc:  # refused, unreachable, timed out
        return {"connected": False, "error": _short(exc)}


def http_get(url: str, timeout: float) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 -- http only
            return {"status": response.status}
    except urllib.error.HTTPError as exc:  # an answer all the same: the path is open
        return {"status": exc.code}
    except (OSError, ValueError) as exc:
        return {"error": _short(exc)}


def dns_query_packet(name: str, query_id: int) -> bytes:
    """One question: `name`, type A, class IN, recursion desired."""
    header = struct.pack(">HHHHHH", query_id, 0x0100, 1, 0, 0, 0)
    labels = b"".join(
        bytes([len(part)]) + part.encode("ascii") for part in name.rstrip(".").split(".")
    )
    return header + labels + b"\x00" + struct.pack(">HH", 1, 1)


def dns_answer(packet: bytes, query_id: int) -> dict[str, Any]:
    """The response code and the number of answer records of a DNS response."""
    if len(packet) < 12:
        return {"error": "short DNS response"}
    answer_id, flags, _, answers, _, _ = struct.unpack(">HHHHHH", packet[:12])
    if answer_id != query_id or not flags & 0x8000:
        return {"error": "not a response to this query"}
    return {"rcode": flags & 0x000F, "answers": answers}


def dns(server: str, name: str, timeout: float) -> dict[str, Any]:
    query_id = int.from_bytes(os.urandom(2), "big")
    error = "no answer"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout / 2)
        for _ in range(2):  # UDP: one retry, within the same bound
            try:
                sock.sendto(dns_query_packet(name, query_id), (server, 53))
                packet, _ = sock.recvfrom(4096)
                return dns_answer(packet, query_id)
            except OSError as exc:
                error = _short(exc)
    return {"error": error}


def probe(spec: dict[str, Any], started: float = STARTED) -> dict[str, dict[str, Any]]:
    timeout = float(spec["timeout"])
    jobs: dict[str, Callable[[], dict[str, Any]]] = {}
    for c in spec["connect"]:
        jobs[c["id"]] = functools.partial(connect, c["host"], int(c["port"]), timeout)
    for h in spec["http"]:
        jobs[h["id"]] = functools.partial(http_get, h["url"], timeout)
    for d in spec["dns"]:
        jobs[d["id"]] = functools.partial(dns, d["server"], d["name"], timeout)
    if not jobs:
        return {}
    with ThreadPoolExecutor(len(jobs)) as pool:
        futures = {key: pool.submit(job) for key, job in jobs.items()}
        results = {key: future.result() for key, future in futures.items()}
    # Some CNIs (kube-router) filter a new pod's traffic only once they have seen its address,
    # a moment after it starts: a connection that succeeds in that moment is retried until it
    # fails or `settle` seconds have passed since the start, and how long it stayed open is
    # reported beside the final result.
    settle = float(spec.get("settle", 0))
    open_ids = [c["id"] for c in spec["connect"] if results[c["id"]].get("connected")]
    while open_ids and time.monotonic() - started < settle:
        time.sleep(0.25)
        for key in open_ids:
            result = jobs[key]()
            if not result["connected"]:
                results[key] = {**result, "open_for": round(time.monotonic() - started, 1)}
        open_ids = [key for key in open_ids if results[key].get("connected")]
    return results


def listen(port: int, seconds: float) -> None:
    server = socket.create_server(("0.0.0.0", port), backlog=16)  # noqa: S104 -- the pod's own
    server.settimeout(1.0)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            peer, _ = server.accept()
        except TimeoutError:
            continue
        with peer:
            peer.sendall(b"tre-check\n")


def _short(exc: BaseException) -> str:
    return (str(exc) or type(exc).__name__)[:MAX_ERROR]


def main(argv: list[str]) -> int:
    spec = json.loads(argv[1])
    if spec["mode"] == "listen":
        # PID 1 in its container: without a handler, SIGTERM would be ignored until the
        # grace period ends.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        listen(int(spec["port"]), float(spec["seconds"]))
        return 0
    text = json.dumps(probe(spec), separators=(",", ":"), sort_keys=True)
    # The kubelet provides the file in a pod; elsewhere (a test) stdout is the report.
    if os.path.exists(TERMINATION_LOG):
        with open(TERMINATION_LOG, "w") as log:
            log.write(text)
    sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
