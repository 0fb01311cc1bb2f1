"""What the browser gate costs (issue 16's targets): < 5 ms added to a Contents API request at
the median, < 10 % added to receiving a 5 MiB output, < 30 MiB resident per notebook.

A real Jupyter Server (JupyterLab's, from a venv of the notebook image's pins) and the gate
built from images/gate run on the loopback; every measurement is taken side by side, direct to
the server and through the gate, alternating pair by pair so a drift of the machine hits both.

    python3 -m venv /tmp/jl && /tmp/jl/bin/pip install jupyterlab==4.6.6   # once
    PYTHONPATH=$PWD .venv/bin/python benchmarks/browser_gate.py --jupyter /tmp/jl/bin/jupyter

Prints a Markdown table: Contents API GET of a 100 KiB text file (p50, p95 of `--requests`
pairs), a kernel printing 5 MiB (median of `--rounds` pairs; the server's iopub rate limit is
lifted for the measurement, the gate's budget set above it), and the gate's peak resident
memory (VmHWM) at the end.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import requests

from tests.jupyter_clients import Notebook

REPO = Path(__file__).resolve().parents[1]
PREFIX = "/user/bench/project/"
OUTPUT_CELL = "import sys\nfor _ in range(80):\n    sys.stdout.write('z' * 65535 + '\\n')\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=2).status_code < 500:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} did not answer within {timeout:.0f} s")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def contents_times(bases: dict[str, str], pairs: int) -> dict[str, list[float]]:
    """Milliseconds of a Contents API read of the 100 KiB file, direct and through the gate,
    alternating which goes first; 20 warm-up pairs are not counted."""
    sessions = {name: requests.Session() for name in bases}
    times: dict[str, list[float]] = {name: [] for name in bases}
    for i in range(pairs + 20):
        for name in sorted(bases, reverse=i % 2 == 1):
            started = time.perf_counter()
            response = sessions[name].get(f"{bases[name]}/api/contents/project/table.csv")
            elapsed = time.perf_counter() - started
            assert response.status_code == 200, response.text[:200]
            if i >= 20:
                times[name].append(elapsed * 1000)
    return times


def output_times(bases: dict[str, str], rounds: int) -> dict[str, list[float]]:
    """Seconds until a kernel's 5 MiB of output has all arrived, direct and through the gate,
    alternating; the first pair warms up."""
    outputs: dict[str, list[float]] = {name: [] for name in bases}
    for i in range(rounds + 1):
        for name in sorted(bases, reverse=i % 2 == 1):
            started = time.perf_counter()
            out = Notebook(bases[name], "unused").run(OUTPUT_CELL, timeout=300)
            elapsed = time.perf_counter() - started
            assert len(out) >= 5 << 20, out[:400]
            if i > 0:
                outputs[name].append(elapsed)
    return outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jupyter", required=True, help="the `jupyter` of a venv with jupyterlab")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="gate-bench-"))
    (work / "root" / "project").mkdir(parents=True)
    (work / "root" / "project" / "table.csv").write_text("a,b\n" + "1234567,89\n" * 9300)
    gate_binary = work / "gate"
    subprocess.run(
        ["go", "build", "-trimpath", "-o", str(gate_binary), "."],
        cwd=REPO / "images" / "gate",
        check=True,
        env={**os.environ, "CGO_ENABLED": "0", "GOTOOLCHAIN": "local"},
    )
    server_port, gate_port = free_port(), free_port()
    server = subprocess.Popen(
        [args.jupyter, "server", "--allow-root", "--no-browser", "--ip=127.0.0.1",
         f"--port={server_port}", f"--ServerApp.base_url={PREFIX}",
         "--IdentityProvider.token=", f"--ServerApp.root_dir={work / 'root'}",
         "--ServerApp.disable_check_xsrf=True", "--ServerApp.iopub_data_rate_limit=1e12"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    gate = subprocess.Popen(
        [str(gate_binary)],
        env={
            "GATE_LISTEN": f"127.0.0.1:{gate_port}",
            "GATE_UPSTREAM": f"127.0.0.1:{server_port}",
            "GATE_PREFIX": PREFIX,
            "GATE_USER": "bench",
            "GATE_PROJECT": "project",
            "GATE_READ_CAP": str(8 << 20),
            "GATE_UPLOAD_CAP": str(8 << 20),
            "GATE_CONTENT_BUDGET": str(64 << 30),
            "GATE_OTHER_BUDGET": str(64 << 30),
            "GATE_STATE_DIR": str(work),
        },
        stdout=subprocess.DEVNULL,
    )
    try:
        direct = f"http://127.0.0.1:{server_port}{PREFIX.rstrip('/')}"
        gated = f"http://127.0.0.1:{gate_port}{PREFIX.rstrip('/')}"
        wait_for(f"{direct}/api/status")
        wait_for(f"{gated}/api/status")
        bases = {"direct": direct, "gate": gated}
        times = contents_times(bases, args.requests)
        outputs = output_times(bases, args.rounds)
        status = Path(f"/proc/{gate.pid}/status").read_text()
        hwm = next(line for line in status.splitlines() if line.startswith("VmHWM"))
        rss_mib = int(hwm.split()[1]) / 1024
    finally:
        for process in (gate, server):
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)

    d50, g50 = statistics.median(times["direct"]), statistics.median(times["gate"])
    d95, g95 = percentile(times["direct"], 0.95), percentile(times["gate"], 0.95)
    od, og = statistics.median(outputs["direct"]), statistics.median(outputs["gate"])
    print("| measure | direct | through the gate | added |")
    print("| --- | ---: | ---: | ---: |")
    print(f"| Contents API GET, 100 KiB file, p50 ({args.requests} pairs) | {d50:.2f} ms | "
          f"{g50:.2f} ms | {g50 - d50:+.2f} ms |")  # fmt: skip
    print(f"| same, p95 | {d95:.2f} ms | {g95:.2f} ms | {g95 - d95:+.2f} ms |")
    print(f"| kernel prints 5 MiB, median of {args.rounds} | {od:.2f} s | {og:.2f} s | "
          f"{(og / od - 1) * 100:+.1f} % |")  # fmt: skip
    print(f"| gate's peak resident memory (VmHWM) | | {rss_mib:.1f} MiB | |")


if __name__ == "__main__":
    main()
