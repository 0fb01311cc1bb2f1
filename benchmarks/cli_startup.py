"""How fast `tre` answers, side by side with kubectl built from the same Kubernetes release.

Against a running local platform (`make demo` leaves one with a workspace and a request), each
pair of commands is run `--runs` times, tre and kubectl in alternation so both meet the same
machine load, and the median wall time and CPU time (user + system, of the child process) are
reported. `--baseline ROOT` adds the `tre` of another checkout (for example main before a
change) as a third column. Never timed in the test suite: a shared machine is too noisy for
timing assertions.

Python runs with its modules' bytecode already compiled, as an installed `tre` has it (pip
compiles a wheel's modules at install time): the checkouts are editable installs, and a
development shell with PYTHONDONTWRITEBYTECODE=1 would otherwise compile every module of the
checkout from source on every run (about 12 ms of a query). The bytecode goes to a temporary
PYTHONPYCACHEPREFIX, written by one warm-up run per command, so no checkout is written to.

`--installed` adds a column for `tre` as a person runs it: a wheel of this checkout installed
into a fresh virtual environment (its dependencies from this venv), so without the
editable-install finder that the checkout's venv loads into every Python it starts.

`--floor` adds a second table: what the interpreter and the modules every Python client of
the API server needs (an HTTPS client, a YAML reader for the kubeconfig) cost by themselves,
and what typer and pydantic would add, beside kubectl; the lower bound of a Python `tre`.

Run by hand:
    .venv/bin/python benchmarks/cli_startup.py --runs 10 [--state-dir DIR] [--floor] [--write-docs]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from provisioner.devcluster.binaries import pinned_binaries
from provisioner.devcluster.cluster import DevCluster, default_state_dir

ROOT = Path(__file__).resolve().parents[1]
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

    def fastest_wall(self) -> float:
        return min(self.wall)


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


def installed_tre(root: Path, where: Path) -> tuple[list[str], dict[str, str]]:
    """`tre` of a wheel of checkout `root`, installed into a new venv at `where` whose only
    other packages are this venv's (a path entry, so its editable finder is not loaded)."""
    import sysconfig
    import venv

    source = where / "src"
    shutil.copytree(root, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "__pycache__", "*.egg-info", "build", "dist"))  # fmt: skip
    pip = [sys.executable, "-m", "pip", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(where),
                    str(source)], check=True)  # fmt: skip
    venv.create(where / "venv", with_pip=False)
    python = where / "venv" / "bin" / "python"
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = subprocess.run(
        [python, "-c", purelib], capture_output=True, text=True, check=True
    ).stdout.strip()
    Path(site, "tre-bench-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    wheel = next(where.glob("*.whl"))
    subprocess.run([*pip, "--python", str(python), "install", "--no-deps", "--no-index",
                    str(wheel)], check=True)  # fmt: skip
    return [str(where / "venv" / "bin" / "tre")], {"PYTHONPATH": ""}


def compiled_python_env(env: dict[str, str], cache: Path) -> dict[str, str]:
    """`env` for a Python that reads (and on its first run writes) compiled bytecode in
    `cache`, as an installed package has it."""
    return {
        **{k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"},
        "PYTHONPYCACHEPREFIX": str(cache),
    }


# What any Python client of the API server pays before its first line (the interpreter, an
# HTTPS client and a YAML reader for the kubeconfig, as `provisioner.kube.http` uses them),
# and what a framework would add; `tre` itself for scale.
FLOOR = [
    ("python -S -c pass (no site)", ["-S", "-c", "pass"]),
    ("python -c pass (the venv's site)", ["-c", "pass"]),
    ("+ import json, ssl, http.client", ["-c", "import json, ssl, http.client"]),
    ("+ import yaml", ["-c", "import json, ssl, http.client, yaml"]),
    ("+ import provisioner.cli.views (tre's query path)", ["-c", "import provisioner.cli.views"]),
    ("import typer", ["-c", "import typer"]),
    ("import typer, pydantic", ["-c", "import typer, pydantic"]),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--state-dir", type=Path, default=None)
    parser.add_argument("--baseline", type=Path, default=None, help="another checkout's root")
    parser.add_argument("--installed", action="store_true", help="also an installed wheel")
    parser.add_argument("--floor", action="store_true", help="also measure the Python floor")
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tre-bench-") as tmp:
        (Path(tmp) / "pyc").mkdir()
        measure(args, Path(tmp) / "pyc")


def measure(args: argparse.Namespace, cache: Path) -> None:
    load_before = os.getloadavg()[0]

    cluster = DevCluster(args.state_dir or default_state_dir())
    if not cluster.is_ready():
        raise SystemExit(f"no platform runs in {cluster.state_dir}: run 'make demo' first")
    env = compiled_python_env({**os.environ, **cluster.env()}, cache)
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
    if args.installed:
        sides["tre (installed wheel)"] = installed_tre(ROOT, cache.parent / "installed")
    if args.baseline:
        sides["tre (baseline)"] = tre_command(args.baseline.resolve())
    results: dict[tuple[str, str], Sample] = {}
    for label, tre_args, kubectl_args in pairs:
        for command, extra in sides.values():  # warm-up: writes the bytecode
            run([*command, *tre_args], {**env, **extra})
        for _ in range(args.runs):
            for side, (command, extra) in sides.items():
                wall, cpu = run([*command, *tre_args], {**env, **extra})
                results.setdefault((label, side), Sample([], [])).wall.append(wall)
                results[(label, side)].cpu.append(cpu)
            wall, cpu = run([*kubectl, *kubectl_args], env)
            results.setdefault((label, "kubectl"), Sample([], [])).wall.append(wall)
            results[(label, "kubectl")].cpu.append(cpu)

    floor = measure_floor(args.runs, env, kubectl) if args.floor else {}

    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    load = os.getloadavg()[0]
    compared = [s for s in sides if s != "tre (baseline)"]
    head = ["command (tre / kubectl)", *(f"{s}: wall, CPU" for s in sides), "kubectl: wall, CPU",
            *(f"{s} / kubectl (wall: median, fastest)" for s in compared)]  # fmt: skip
    lines = [
        f"Measured {now} on {os.cpu_count()} cores (load average {load_before:.1f} at the "
        f"start, {load:.1f} at the end), median of {args.runs} runs each, tre and kubectl in "
        "alternation, Python with compiled bytecode; times in ms. The fastest run of each is "
        "the one the other processes on the machine disturbed least.",
        "",
        "Reproduce: `make demo`, then "
        f"`.venv/bin/python benchmarks/cli_startup.py --runs {args.runs}"
        + (f" --baseline {args.baseline}" if args.baseline else "")
        + (" --installed" if args.installed else "")
        + (" --floor" if args.floor else "")
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
        theirs = results[(label, "kubectl")]
        for side in compared:
            ours = results[(label, side)]
            median = ours.median_wall() / theirs.median_wall()
            fastest = ours.fastest_wall() / theirs.fastest_wall()
            cells.append(f"{median:.1f}x, {fastest:.1f}x")
        lines.append("| " + " | ".join(cells).replace(project, "PROJECT") + " |")
    if floor:
        lines += floor_lines(floor)
    section = "\n".join(lines) + "\n"
    print(section)
    if args.write_docs:
        # Imported here: the shared writer's module imports the Kubernetes client, which
        # must not be loaded while this script times start-ups.
        from benchmarks.provision_workspaces import update_docs_section

        update_docs_section(
            SECTION_START, SECTION_END, "## `tre` start-up and queries", section.rstrip("\n")
        )


def measure_floor(runs: int, env: dict[str, str], kubectl: list[str]) -> dict[str, Sample]:
    env = {**env, "PYTHONPATH": str(ROOT)}
    commands = [(label, [sys.executable, *python_args]) for label, python_args in FLOOR]
    commands.append(("kubectl get accessrequests", [*kubectl, "get", "accessrequests"]))
    for _, command in commands:  # warm-up: writes the bytecode
        run(command, env)
    floor: dict[str, Sample] = {}
    for _ in range(runs):
        for label, command in commands:
            wall, cpu = run(command, env)
            floor.setdefault(label, Sample([], [])).wall.append(wall)
            floor[label].cpu.append(cpu)
    return floor


def floor_lines(floor: dict[str, Sample]) -> list[str]:
    kubectl = floor["kubectl get accessrequests"]
    lines = [
        "",
        "The floor, measured in the same alternation (Python with the venv's site, which holds "
        "the editable-install finder):",
        "",
        "| what | wall, CPU | / kubectl get (wall: median, fastest) |",
        "|---|---:|---:|",
    ]
    for label, sample in floor.items():
        lines.append(
            f"| {label} | {sample.median_wall() * 1000:.0f}, {sample.median_cpu() * 1000:.0f} "
            f"| {sample.median_wall() / kubectl.median_wall():.2f}x, "
            f"{sample.fastest_wall() / kubectl.fastest_wall():.2f}x |"
        )
    return lines


if __name__ == "__main__":
    main()
