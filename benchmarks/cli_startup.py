"""How fast `tre` answers, side by side with kubectl built from the same Kubernetes release.

Against a running local platform (`make demo` leaves one with a workspace and a request), each
pair of commands is run `--runs` times, tre and kubectl in alternation so both meet the same
machine load, and the median wall time and CPU time (user + system, of the child process) are
reported. `--baseline ROOT` adds the `tre` of another checkout (for example main before a
change) as a third column. Never timed in the test suite: a shared machine is too noisy for
timing assertions.

Run by hand:
    .venv/bin/python benchmarks/cli_startup.py --runs 10 [--state-dir DIR] [--write-docs]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from provisioner.devcluster.binaries import pinned_binaries
from provisioner.devcluster.cluster import DevCluster, default_state_dir

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "performance.md"
SECTION_START = "<!-- cli_startup: start (benchmarks/cli_startup.py) -->"
SECTION_END = "<!-- cli_startup: end -->"
TARGETS = {"help": 0.300, "ratio": 1.5}


@dataclass
class Sample:
    wall: list[float]
    cpu: list[float]

    def median_wall(self) -> float:
        return statistics.median(self.wall)

    def median_cpu(self) -> float:
        return statistics.median(self.cpu)


def run(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, env=env, check=False)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}): {done.stderr[-500:]!r}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def tre_command(root: Path) -> tuple[list[str], dict[str, str]]:
    """The `tre` console script of this venv, running the code of checkout `root`."""
    script = Path(sys.executable).with_name("tre")
    return [str(script)], {"PYTHONPATH": str(root)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--state-dir", type=Path, default=None)
    parser.add_argument("--baseline", type=Path, default=None, help="another checkout's root")
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()

    cluster = DevCluster(args.state_dir or default_state_dir())
    if not cluster.is_ready():
        raise SystemExit(f"no platform runs in {cluster.state_dir}: run 'make demo' first")
    env = {**os.environ, **cluster.env()}
    kubectl = [str(pinned_binaries().kubectl), f"--kubeconfig={cluster.kubeconfig}"]
    listed = subprocess.run(
        [*kubectl, "get", "workspaces", "-o", "json"], capture_output=True, text=True, check=True
    )
    items = json.loads(listed.stdout)["items"]
    if not items:
        raise SystemExit("no workspace to show: run 'make demo' first")
    project = items[0]["metadata"]["name"]

    pairs = [
        ("help", ["--help"], ["--help"]),
        ("request list", ["request", "list"], ["get", "accessrequests"]),
        ("workspace show", ["workspace", "show", project], ["get", "workspace", project]),
        ("-o json workspace list", ["-o", "json", "workspace", "list"],
         ["get", "workspaces", "-o", "json"]),
    ]  # fmt: skip
    sides = {"tre": tre_command(ROOT)}
    if args.baseline:
        sides["tre (baseline)"] = tre_command(args.baseline.resolve())
    results: dict[tuple[str, str], Sample] = {}
    for label, tre_args, kubectl_args in pairs:
        for _ in range(args.runs):
            for side, (command, extra) in sides.items():
                wall, cpu = run([*command, *tre_args], {**env, **extra})
                results.setdefault((label, side), Sample([], [])).wall.append(wall)
                results[(label, side)].cpu.append(cpu)
            wall, cpu = run([*kubectl, *kubectl_args], env)
            results.setdefault((label, "kubectl"), Sample([], [])).wall.append(wall)
            results[(label, "kubectl")].cpu.append(cpu)

    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    load = os.getloadavg()[0]
    head = ["command (tre / kubectl)", *(f"{s}: wall, CPU" for s in sides), "kubectl: wall, CPU",
            "tre / kubectl (wall)"]  # fmt: skip
    lines = [
        f"Measured {now} on {os.cpu_count()} cores (load average {load:.1f} at the end), "
        f"median of {args.runs} runs each, tre and kubectl in alternation; times in ms.",
        "",
        "Reproduce: `make demo`, then "
        f"`.venv/bin/python benchmarks/cli_startup.py --runs {args.runs}"
        + (f" --baseline {args.baseline}" if args.baseline else "")
        + " --write-docs`",
        "",
        "| " + " | ".join(head) + " |",
        "|---" + "|---:" * (len(head) - 1) + "|",
    ]
    for label, tre_args, kubectl_args in pairs:
        cells = [f"`tre {' '.join(tre_args)}` / `kubectl {' '.join(kubectl_args)}`"]
        for side in [*sides, "kubectl"]:
            s = results[(label, side)]
            cells.append(f"{s.median_wall() * 1000:.0f}, {s.median_cpu() * 1000:.0f}")
        ratio = results[(label, "tre")].median_wall() / results[(label, "kubectl")].median_wall()
        cells.append(f"{ratio:.1f}x")
        lines.append("| " + " | ".join(cells).replace(project, "PROJECT") + " |")
    section = "\n".join(lines) + "\n"
    print(section)
    if args.write_docs:
        write_docs(section)


def write_docs(section: str) -> None:
    block = f"{SECTION_START}\n## `tre` start-up and queries\n\n{section}{SECTION_END}\n"
    text = DOCS.read_text()
    if SECTION_START in text and SECTION_END in text:
        head, rest = text.split(SECTION_START, 1)
        _, tail = rest.split(SECTION_END, 1)
        text = head + block + tail.lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    DOCS.write_text(text)
    print(f"updated {DOCS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
