"""What a start costs the hub with many Workspaces in its cache (issue 9): the profile list
KubeSpawner asks for (the spawn form, and again as the first step of every start) and the
last check before the pod is created (`confine_pod`), each p50 / p99 over many calls.

The cache is filled through `apply_workspace_event` exactly as its watch fills it, from
Workspace objects as the API server sends them (every one Ready, 3 members, 2 datasets); no
API server is involved, because none is called on this path: that is the point of the cache.

    .venv/bin/python benchmarks/hub_decisions.py --workspaces 1000 --calls 2000
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from types import SimpleNamespace
from typing import Any

from hub_config.workspaces import (
    WorkspaceCache,
    apply_workspace_event,
    confine_pod,
    make_profile_list,
)
from provisioner.models.resources import (
    DatasetSource,
    S3Source,
    Workspace,
    WorkspaceDataset,
    WorkspaceSpec,
)
from provisioner.models.settings import Settings
from provisioner.models.types import ClassificationTier
from provisioner.planning.names import namespace_name


def workspace_event(i: int) -> dict[str, Any]:
    project = f"proj-{i:05d}"
    obj = Workspace(
        name=project,
        spec=WorkspaceSpec(
            project=project,
            namespace=namespace_name(project),
            members=[f"user-{i}", f"user-{i + 1}", "lea"],
            datasets=[
                WorkspaceDataset(
                    name=f"ds-{i}-{k}",
                    manifest_sha256="a" * 64,
                    classification=ClassificationTier.CONFIDENTIAL,
                    source=DatasetSource(s3=S3Source(bucket="data", prefix=f"d{i}/{k}/")),
                )
                for k in range(2)
            ],
        ),
    ).to_object()
    obj["metadata"]["resourceVersion"] = str(i)
    obj["status"] = {"phase": "Ready"}
    return {"type": "ADDED", "object": obj}


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[int(len(ordered) * 0.99) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspaces", type=int, default=1000)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()

    cache = WorkspaceCache(lambda: None)  # type: ignore[arg-type, return-value]  # never started
    fill = time.perf_counter()
    for i in range(args.workspaces):
        apply_workspace_event(cache._workspaces, workspace_event(i))
    fill = time.perf_counter() - fill
    cache._synced = True  # what its first list does
    profile_list = make_profile_list(cache.read, Settings())

    async def run() -> tuple[list[float], list[float]]:
        listing, checking = [], []
        for n in range(args.calls):
            i = (n * 7919) % args.workspaces  # spread over the cache
            spawner = SimpleNamespace(
                user=SimpleNamespace(name=f"user-{i}", url=f"/user/user-{i}/"),
                name=f"proj-{i:05d}",
                server=None,
                namespace=namespace_name(f"proj-{i:05d}"),
            )
            start = time.perf_counter()
            [profile] = await profile_list(spawner)
            listing.append(time.perf_counter() - start)
            pod = SimpleNamespace(
                metadata=SimpleNamespace(annotations=None),
                spec=SimpleNamespace(
                    automount_service_account_token=False,
                    containers=[*profile["kubespawner_override"]["extra_containers"]],
                ),
            )
            start = time.perf_counter()
            confine_pod(spawner, pod)
            checking.append(time.perf_counter() - start)
            assert profile["kubespawner_override"]["namespace"] == spawner.namespace
        return listing, checking

    listing, checking = asyncio.run(run())
    print(
        f"{args.workspaces} Workspaces in the cache (filled from watch events in {fill:.2f} s), "
        f"{args.calls} calls each:"
    )
    print("| step | p50 (ms) | p99 (ms) |\n|---|---:|---:|")
    for name, samples in (
        ("profile list (`make_profile_list`, every start and spawn form)", listing),
        ("last check before the create (`confine_pod`)", checking),
    ):
        p50, p99 = percentiles(samples)
        print(f"| {name} | {p50 * 1000:.3f} | {p99 * 1000:.3f} |")


if __name__ == "__main__":
    main()
