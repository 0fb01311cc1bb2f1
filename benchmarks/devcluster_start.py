"""Start-up time of the local platform (etcd + kube-apiserver + controller-manager + S3).

cold: a fresh state directory (new certificates, empty etcd), binaries already built.
warm: `up` again while it runs (the no-op path `tre dev up` takes the second time).
Run by hand:  .venv/bin/python benchmarks/devcluster_start.py --runs 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from provisioner.devcluster.cluster import DevCluster


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    cold: list[float] = []
    warm: list[float] = []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="tre-start-") as tmp:
            cluster = DevCluster(Path(tmp) / "platform")
            try:
                started = time.perf_counter()
                cluster.up(lambda _: None)
                cold.append(time.perf_counter() - started)
                started = time.perf_counter()
                cluster.up(lambda _: None)
                warm.append(time.perf_counter() - started)
            finally:
                cluster.down(lambda _: None, purge=True)
    print("| start | median s | min s | max s | runs |")
    print("| --- | --- | --- | --- | --- |")
    for name, values in (("cold (fresh state)", cold), ("warm (already running)", warm)):
        print(
            f"| {name} | {statistics.median(values):.2f} | {min(values):.2f} | "
            f"{max(values):.2f} | {len(values)} |"
        )


if __name__ == "__main__":
    main()
