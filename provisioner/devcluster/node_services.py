"""What the platform runs on its dev node beside the kubelet, so a workspace works end to end.

`tre dev up --node` starts the node (node.py), then these, in this order:

1. the resolver: CoreDNS inside the node's namespaces on the node's address, port 53, the
   only nameserver of notebooks (dns.py): the platform's names, NXDOMAIN for everything else;
2. the dataset CSI driver: the k8s-csi-s3 node plugin and its registrar inside the node's
   namespaces, with the dev S3 server's read-only identity (csi.py);
3. project storage: the default StorageClass `tre-dev-local` and its provisioner, a host
   process that gives each claim a directory on the node (local_volumes.py);
4. the notebook image and the resolver image (the chart's images.dns, the same CoreDNS build
   as 1. in an empty image), each built from its images/<name>/Dockerfile (images.py) and
   imported into the node's containerd unless it is there already;
5. the cluster DNS: a kube-dns pod of the resolver image that answers cluster.local Service
   names to the platform's own pods when the chart installs them (cluster_dns.py).

The settings that make the planner and the hub fit this node (`node_settings`) go into `tre dev
env`, so the controller, the demo and the hub all plan for it: the platform's services (hub,
proxy, airlock, resolver) on one host outside the pod network, the resolver's address, the
CSI driver the node runs.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Final

from provisioner.devcluster.binaries import cache_dir, ensure_coredns, ensure_csi_binaries
from provisioner.devcluster.cluster_dns import start_cluster_dns
from provisioner.devcluster.csi import start_csi_node, stop_csi_node
from provisioner.devcluster.dns import platform_names, write_corefile
from provisioner.devcluster.images import DNS, GATE, NOTEBOOK, build_image
from provisioner.devcluster.node import NODE_IP, NODE_NAME, cluster_dns_ip
from provisioner.devcluster.processes import spawn, wait_ready
from provisioner.devcluster.s3server import dataset_reader_credentials
from provisioner.models.settings import Settings
from provisioner.models.types import DatasetCsiDriver

if TYPE_CHECKING:
    from provisioner.devcluster.cluster import DevCluster, Progress

# Where project volumes live: this directory inside the node is <state>/node/var-lib/... here.
VOLUMES_IN_NODE: Final = "/var/lib/tre-volumes"
LOCAL_VOLUMES_PROCESS: Final = "local-volumes"


def node_settings() -> dict[str, str]:
    """The TRE_* settings of a platform whose node runs these services (see the module doc)."""
    return {
        "TRE_PLATFORM_HOST_IP": NODE_IP,
        "TRE_DNS_RESOLVER_IP": NODE_IP,
        "TRE_DATASET_CSI_DRIVER": DatasetCsiDriver.K8S_CSI_S3.value,
    }


def workspace_settings(cluster: DevCluster) -> dict[str, str]:
    """`node_settings` once the node runs these services, else nothing: a bare node (as the
    node tests add one) changes nothing about how workspaces are planned."""
    return node_settings() if cluster.has_node() and _marker(cluster).exists() else {}


def _marker(cluster: DevCluster) -> Path:
    return cluster.node().dir / "services-started"


def start_node_services(cluster: DevCluster, settings: Settings, progress: Progress) -> None:
    """Start 1-5 of the module doc on the platform's running node; each is recorded so `tre
    dev down` stops it. Safe to call again: what runs is left running."""
    node = cluster.node()
    running = {p.name for p in cluster.processes() if p.alive()}

    if "node/coredns" not in running:
        progress("node: starting the workspace resolver (CoreDNS, no forwarding)")
        conf = write_corefile(
            node.dir / "dns", bind=NODE_IP, names=platform_names(settings, NODE_IP)
        )
        coredns = cluster.start_in_node(
            "coredns", [str(ensure_coredns(progress)), "-conf", str(conf)]
        )
        # CoreDNS prints its version once every server block listens.
        wait_ready(coredns, lambda: "CoreDNS-" in coredns.log_tail(), 30)

    progress("node: starting the dataset CSI driver (k8s-csi-s3)")
    access_key, secret_key = dataset_reader_credentials(cluster.state_dir / "s3")
    start_csi_node(
        cluster.state_dir / "csi",
        ensure_csi_binaries(progress),
        node.enter_argv(mount=True),
        node_name=NODE_NAME,
        access_key=access_key,
        secret_key=secret_key,
    )

    if LOCAL_VOLUMES_PROCESS not in running:
        progress("node: starting project storage (StorageClass tre-dev-local)")
        host_root = node.dir / "var-lib" / VOLUMES_IN_NODE.removeprefix("/var/lib/")
        host_root.mkdir(parents=True, exist_ok=True)
        volumes = spawn(
            LOCAL_VOLUMES_PROCESS,
            [
                sys.executable,
                "-m",
                "provisioner.devcluster.local_volumes",
                f"--kubeconfig={cluster.kubeconfig}",
                f"--host-root={host_root}",
                f"--node-root={VOLUMES_IN_NODE}",
                f"--node={NODE_NAME}",
            ],
            cluster.state_dir / "local-volumes.log",
            exe=sys.executable,
        )
        cluster.add_processes([volumes])
        wait_ready(volumes, lambda: "local volumes ready" in volumes.log_tail(), 60)

    # The notebook of every workspace, the browser gate beside it, and the resolver image the
    # chart's tre-dns runs.
    for image, expected in ((NOTEBOOK, "about a minute"), (GATE, "seconds"), (DNS, "seconds")):
        if node.has_image(image.ref):
            continue
        archive = build_image(image, cache_dir(), progress)
        progress(f"node: importing the {image.name} image {image.ref} ({expected})")
        started = time.monotonic()
        node.import_image(archive)
        progress(f"node: {image.name} image imported in {time.monotonic() - started:.0f}s")

    progress("node: starting the cluster DNS (Service names for ClusterFirst pods)")
    start_cluster_dns(cluster.kubeconfig, DNS.ref, cluster_dns_ip(cluster.service_cidr))
    _marker(cluster).touch()


def stop_node_services(cluster: DevCluster) -> None:
    """Unmount and stop the CSI driver (its mounts are the node's); the rest are recorded
    processes that `down` stops with the node."""
    if (cluster.state_dir / "csi").exists() and cluster.node().state() is not None:
        stop_csi_node(cluster.state_dir / "csi", cluster.node().enter_argv(mount=True))
