"""Start of a notebook server until JupyterLab answers through the proxy, on the dev node.

Issue 9's target: median under 10 s over 10 spawns, image already present. Needs a platform
with a node and the demo's workspace (as root):

    tre dev up --node --state-dir DIR && TRE_DEV_DIR=DIR .venv/bin/python -m provisioner.demo
    PYTHONPATH=$PWD .venv/bin/python benchmarks/notebook_spawn.py --state-dir DIR --spawns 10

Side by side with another release: bring up its platform the same way from its own checkout
(its own state directory) and add `--vs ITS_DIR`; spawns alternate between the two.

Each round: the demo researcher (signed in through the hub's login form) asks the hub's REST
API to start the named server; the clock stops when GET /user/<user>/<server>/lab answers 200
through the proxy with the researcher's token; then the server is stopped and the round waits
until the hub reports it gone (not timed). Prints one line per spawn and a Markdown summary.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import requests

from provisioner.devcluster.cluster import DevCluster
from provisioner.devcluster.hub import DevHub, sign_in

USER, SERVER = "rik.researcher", "heart-failure-ml"


def spawn_once(hub: str, token: str) -> float:
    api = requests.Session()
    api.headers["Authorization"] = f"token {token}"
    lab = f"{hub}/user/{USER}/{SERVER}/lab"
    started = time.monotonic()
    response = api.post(f"{hub}/hub/api/users/{USER}/servers/{SERVER}", json={}, timeout=60)
    if response.status_code not in (201, 202):
        raise SystemExit(f"start refused: {response.status_code} {response.text}")
    while True:
        if api.get(lab, timeout=30, allow_redirects=False).status_code == 200:
            elapsed = time.monotonic() - started
            break
        if time.monotonic() - started > 300:
            raise SystemExit("JupyterLab did not answer within 300 s")
        time.sleep(0.05)
    api.delete(f"{hub}/hub/api/users/{USER}/servers/{SERVER}", timeout=60)
    while SERVER in api.get(f"{hub}/hub/api/users/{USER}", timeout=30).json().get("servers", {}):
        time.sleep(0.2)
    return elapsed


def signed_in(state_dir: Path) -> tuple[str, str]:
    """(hub URL, the demo researcher's token) of the platform in `state_dir`."""
    dev_hub = DevHub(DevCluster(state_dir))
    endpoints = dev_hub.endpoints()
    if endpoints is None:
        raise SystemExit(f"no hub in {state_dir}: run tre dev up --node first")
    _, token = sign_in(
        endpoints.probe_url, USER, dev_hub.password_file.read_text().strip(), "benchmark"
    )
    return endpoints.probe_url, token


def summary(name: str, times: list[float]) -> str:
    ordered = sorted(times)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return (
        f"| {name} | {len(times)} | {statistics.median(times):.2f} | {p95:.2f} | "
        f"{ordered[0]:.2f} | {ordered[-1]:.2f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument(
        "--vs",
        type=Path,
        help="a second platform (e.g. of the previous release): spawns alternate between the "
        "two, A B B A ..., so a drift of the machine falls on both",
    )
    parser.add_argument("--spawns", type=int, default=10, help="per platform")
    args = parser.parse_args()
    platforms = {"this": signed_in(args.state_dir)}
    if args.vs is not None:
        platforms["vs"] = signed_in(args.vs)
    times: dict[str, list[float]] = {name: [] for name in platforms}
    for i in range(args.spawns):
        order = list(platforms) if i % 2 == 0 else list(reversed(platforms))
        for name in order:
            seconds = spawn_once(*platforms[name])
            times[name].append(seconds)
            print(f"spawn {i + 1} ({name}): {seconds:.2f} s", flush=True)
    load = os.getloadavg()
    print("\n| platform | spawns | median (s) | p95 (s) | min (s) | max (s) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, values in times.items():
        print(summary(name, values))
    if args.vs is not None:
        pairs = [a - b for a, b in zip(times["this"], times["vs"], strict=True)]
        print(
            f"\nmedian of the pairwise differences (this - vs): {statistics.median(pairs):+.2f} s"
        )
    print(f"\nload average at the end: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}")


if __name__ == "__main__":
    main()
