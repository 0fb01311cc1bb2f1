"""Helpers of the node tests: a busybox image, restricted pods, and a snapshot of the host.

The busybox image is Debian's static busybox (package busybox-static) packed as an OCI archive
with `write_oci_archive`, with one symlink per applet the tests call (an applet that is not
linked silently does not exist in the image).
"""

from __future__ import annotations

import glob
import io
import shutil
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from provisioner.devcluster.images import write_oci_archive
from provisioner.devcluster.node import KUBELET_KERNEL_DEFAULTS, PROC_SYS

BUSYBOX = Path("/bin/busybox")
BUSYBOX_REF = "localhost/tre-test-busybox:1"
APPLETS = ("sh", "nc", "cat", "touch", "echo", "sleep", "ls", "true", "seq", "grep")


def busybox_image(out_dir: Path) -> Path:
    """An OCI archive of Debian's static busybox, for pods that need a shell."""
    if not BUSYBOX.is_file() or "static" not in _file_type(BUSYBOX):
        pytest.fail(f"{BUSYBOX} (static) is missing: apt-get install -y busybox-static")
    layer = out_dir / "busybox-layer.tar"
    with tarfile.open(layer, "w") as tar:
        for directory, mode in (("bin", 0o755), ("tmp", 0o1777), ("data", 0o755), ("etc", 0o755)):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, mode
            tar.addfile(info)
        tar.add(BUSYBOX, arcname="bin/busybox")
        for applet in APPLETS:
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)
        passwd = b"root:x:0:0::/:/bin/sh\nuser:x:1000:1000::/tmp:/bin/sh\n"
        info = tarfile.TarInfo("etc/passwd")
        info.size = len(passwd)
        tar.addfile(info, io.BytesIO(passwd))
    archive = out_dir / "busybox.oci.tar"
    write_oci_archive(
        archive, BUSYBOX_REF, {"Entrypoint": ["/bin/sh"], "Env": ["PATH=/bin"]}, [layer]
    )
    return archive


def _file_type(path: Path) -> str:
    if shutil.which("file") is None:
        return "static"  # cannot tell; the pod will say if it is not
    return subprocess.run(
        ["file", "-L", str(path)], capture_output=True, text=True, check=False
    ).stdout


def restricted_pod(
    name: str, script: str, *, labels: dict[str, str] | None = None, restart: str = "Never"
) -> dict[str, Any]:
    """A pod the PodSecurity `restricted` level admits, running `script` in busybox's sh.
    What the script writes to /dev/termination-log comes back in the pod's status."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {
            "restartPolicy": restart,
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 1,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 1000,
                "runAsGroup": 1000,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "main",
                    "image": BUSYBOX_REF,
                    "imagePullPolicy": "Never",  # imported, never pulled: there is no registry
                    "command": ["/bin/sh", "-c", script],
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
        },
    }


def wait_pod(
    core: client.CoreV1Api, namespace: str, name: str, phases: set[str], timeout: float = 90
) -> client.V1Pod:
    deadline = time.monotonic() + timeout
    pod = core.read_namespaced_pod(name, namespace)
    while time.monotonic() < deadline:
        pod = core.read_namespaced_pod(name, namespace)
        if pod.status.phase in phases:
            return pod
        time.sleep(0.5)
    pytest.fail(
        f"pod {namespace}/{name} not in {sorted(phases)} after {timeout:.0f}s "
        f"(phase {pod.status.phase}); events:\n{pod_events(core, namespace, name)}"
    )


def pod_events(core: client.CoreV1Api, namespace: str, name: str) -> str:
    """The events of pod `name`, one a line, for a failure message."""
    events = core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}")
    return "\n".join(f"  {e.reason}: {e.message}" for e in events.items)


def termination_message(pod: client.V1Pod) -> str:
    state = pod.status.container_statuses[0].state
    return (state.terminated.message or "") if state.terminated else ""


def run_to_completion(
    core: client.CoreV1Api, namespace: str, manifest: dict[str, Any], timeout: float = 90
) -> tuple[str, str]:
    """Create a Never-restarting pod, wait until it ends; (phase, termination message)."""
    core.create_namespaced_pod(namespace, manifest)
    pod = wait_pod(core, namespace, manifest["metadata"]["name"], {"Succeeded", "Failed"}, timeout)
    return pod.status.phase, termination_message(pod)


# --- the host, before and after ---------------------------------------------------------------


def _run(argv: list[str]) -> str:
    if shutil.which(argv[0]) is None:
        return f"({argv[0]} not installed)"
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    return result.stdout + result.stderr


# Machine-wide settings the node's components could change besides the kubelet's tunables:
# kube-proxy's conntrack table size (/sys/module: global), and the host's own network
# namespace's forwarding, bridge-netfilter and conntrack knobs (the node's are its own).
HOST_SETTINGS = (
    Path("/sys/module/nf_conntrack/parameters/hashsize"),
    *(
        PROC_SYS / name
        for name in (
            "net/ipv4/ip_forward",
            "net/bridge/bridge-nf-call-iptables",
            "net/netfilter/nf_conntrack_max",
            "net/netfilter/nf_conntrack_tcp_timeout_established",
            "net/netfilter/nf_conntrack_tcp_timeout_close_wait",
        )
    ),
)


def host_kernel_settings() -> list[str]:
    """`path value` of each kernel tunable the kubelet sets unless told not to, and of
    HOST_SETTINGS, as this (host) process reads them."""
    lines = []
    for path in (*(PROC_SYS / name for name in KUBELET_KERNEL_DEFAULTS), *HOST_SETTINGS):
        try:
            lines.append(f"{path} {path.read_text().strip()}")
        except OSError as exc:
            lines.append(f"{path} ({exc.strerror})")
    return lines


def host_snapshot(cgroup_root: str, state_dir: Path) -> dict[str, list[str]]:
    """What a node could leave behind on the host, one sorted list of lines per aspect.

    Mounts: only the lines that could be the node's (its state dir, container and kubelet
    paths, overlay, nsfs, tmpfs on /run), because other work on a shared machine mounts
    and unmounts things of its own while the test runs.
    """
    node_words = (str(state_dir), "containerd", "kubelet", "overlay", "nsfs", "tre-node", "cni")
    mounts = [
        line
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
        if any(word in line for word in node_words)
    ]
    rules = {
        name: [
            line
            for line in _run([name]).splitlines()
            if not line.startswith("#")  # "# Generated by ... on <date>"
        ]
        for name in ("iptables-save", "ip6tables-save", "iptables-legacy-save")
    }
    return {
        "ip -o link": sorted(_run(["ip", "-o", "link"]).splitlines()),
        "ip route": sorted(_run(["ip", "route"]).splitlines()),
        "ip -6 route": sorted(_run(["ip", "-6", "route"]).splitlines()),
        "ip netns list": sorted(_run(["ip", "netns", "list"]).splitlines()),
        "mountinfo (node-related)": sorted(mounts),
        **{name: sorted(lines) for name, lines in rules.items()},
        "nft list ruleset": _run(["nft", "list", "ruleset"]).splitlines(),
        "cgroups": sorted(glob.glob(f"/sys/fs/cgroup/*/{cgroup_root.lstrip('/')}*")),
        "kubepods cgroups": sorted(glob.glob("/sys/fs/cgroup/*/kubepods*")),
        "kernel settings": host_kernel_settings(),
    }
