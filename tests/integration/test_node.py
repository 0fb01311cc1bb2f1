"""The local node: pods really run, under the platform's rules, and `down` leaves no trace.

Behaviours under test:
- the node (kubelet, containerd, runc, CNI bridge, kube-router, kube-scheduler) becomes Ready
  against the host's apiserver, which it reaches through the relay;
- a pod the PodSecurity `restricted` level admits runs to completion, with seccomp on, no
  capabilities and the uid it asked for;
- a read-only local PersistentVolume is read-only in the pod (EROFS), and readable;
- kube-router enforces NetworkPolicy: with an ingress policy a pod not allowed gets refused,
  an allowed one connects; without the policy both connect (so the refusal is the policy's);
- the relay's other direction shows a server inside the node on the host's loopback;
- the apiserver reaches the kubelet through the relay's CONNECT proxy (`kubectl logs`, `exec`
  with stdin), and the proxy refuses anything but the node IP and the pod range;
- a second platform with a node runs beside the session's (its own cgroupRoot), and
  `tre dev down` leaves the host as found: links, routes, node-related mounts, iptables and
  nft rules, cgroups, netns list, the machine-wide kernel settings (unchanged while it runs
  too: never set and restored), and no process of its node left; `tre dev up` made its
  state directory with mode 0700;
- the kubelet changes no kernel tunable of the host (review S12): the host reads what it read
  before the session's node started, while inside the node the kubelet reads its own values
  from read-only masks, and a root process in the node that writes one (as the kubelet would)
  is refused.

The node tests need root and the Debian packages of provisioner/devcluster/node-packages.txt;
without them they FAIL with the install command (never skip).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from provisioner.devcluster.binaries import pinned_binaries
from provisioner.devcluster.cluster import DevCluster
from provisioner.devcluster.node import (
    KUBELET_KERNEL_DEFAULTS,
    NODE_IP,
    NODE_NAME,
    POD_CIDR,
    PROC_SYS,
    cgroup_root_for,
    node_egress_socket,
)
from provisioner.devcluster.processes import free_port, spawn
from provisioner.kube.client import api_client
from tests.integration.node_world import (
    host_kernel_settings,
    host_snapshot,
    restricted_pod,
    run_to_completion,
    wait_pod,
)


@pytest.fixture
def core(node_platform: DevCluster, admin_api: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(admin_api)


@pytest.fixture
def restricted_namespace(core: client.CoreV1Api) -> Iterator[str]:
    """A plain namespace (not tre-*: the platform's pod policies are for projects) where
    PodSecurity enforces `restricted`."""
    name = f"node-{uuid.uuid4().hex[:8]}"
    core.create_namespace(
        {
            "metadata": {
                "name": name,
                "labels": {"pod-security.kubernetes.io/enforce": "restricted"},
            }
        }
    )
    deadline = time.monotonic() + 30  # the ServiceAccount controller must create `default`
    while time.monotonic() < deadline:
        with contextlib.suppress(client.ApiException):
            core.read_namespaced_service_account("default", name)
            break
        time.sleep(0.2)
    yield name
    if os.environ.get("TRE_TEST_KEEP") != "1":
        core.delete_namespace(name)


def test_node_is_ready_with_the_pinned_components(core: client.CoreV1Api) -> None:
    node = core.read_node(NODE_NAME)
    ready = {c.type: c.status for c in node.status.conditions}["Ready"]
    assert ready == "True"
    assert node.status.node_info.kubelet_version == "v1.36.3"
    assert node.status.node_info.container_runtime_version == "containerd://2.3.7"
    assert {a.type: a.address for a in node.status.addresses}["InternalIP"] == NODE_IP


def test_restricted_pod_runs_with_seccomp_no_capabilities_and_its_uid(
    core: client.CoreV1Api, restricted_namespace: str
) -> None:
    script = "grep -E '^(Seccomp|NoNewPrivs|CapEff|Uid):' /proc/self/status > /dev/termination-log"
    phase, message = run_to_completion(
        core, restricted_namespace, restricted_pod("restricted", script)
    )
    assert phase == "Succeeded", message
    fields = dict(line.split(":", 1) for line in message.splitlines())
    assert fields["Seccomp"].strip() == "2"  # filter mode: RuntimeDefault is applied
    assert fields["NoNewPrivs"].strip() == "1"
    assert fields["CapEff"].strip() == "0000000000000000"
    assert fields["Uid"].split() == ["1000"] * 4


def test_privileged_pod_is_refused_by_pod_security(
    core: client.CoreV1Api, restricted_namespace: str
) -> None:
    pod = restricted_pod("privileged", "true")
    pod["spec"]["containers"][0]["securityContext"] = {"privileged": True}
    with pytest.raises(client.ApiException) as refused:
        core.create_namespaced_pod(restricted_namespace, pod)
    assert refused.value.status == 403
    assert "violates PodSecurity" in refused.value.body


def test_read_only_local_volume_is_read_only_in_the_pod(
    core: client.CoreV1Api, restricted_namespace: str, tmp_path: Path
) -> None:
    data = tmp_path / "dataset"
    data.mkdir()
    (data / "hello.txt").write_text("patient-free synthetic data\n")
    data.chmod(0o755)
    for parent in (tmp_path, *tmp_path.parents):
        if parent == Path("/"):
            break
        parent.chmod(parent.stat().st_mode | 0o005)  # uid 1000 must be able to walk there
    pv_name = f"{restricted_namespace}-data"
    core.create_persistent_volume(
        {
            "metadata": {"name": pv_name},
            "spec": {
                "capacity": {"storage": "1Mi"},
                "accessModes": ["ReadOnlyMany"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": "tre-node-test",
                "local": {"path": str(data)},
                "claimRef": {"namespace": restricted_namespace, "name": "data"},
                "nodeAffinity": {
                    "required": {
                        "nodeSelectorTerms": [
                            {
                                "matchExpressions": [
                                    {
                                        "key": "kubernetes.io/hostname",
                                        "operator": "In",
                                        "values": [NODE_NAME],
                                    }
                                ]
                            }
                        ]
                    }
                },
            },
        }
    )
    try:
        core.create_namespaced_persistent_volume_claim(
            restricted_namespace,
            {
                "metadata": {"name": "data"},
                "spec": {
                    "accessModes": ["ReadOnlyMany"],
                    "storageClassName": "tre-node-test",
                    "volumeName": pv_name,
                    "resources": {"requests": {"storage": "1Mi"}},
                },
            },
        )
        script = (
            "cat /data/hello.txt > /dev/termination-log; "
            "touch /data/new.txt 2>> /dev/termination-log && echo WROTE >> /dev/termination-log; "
            "true"
        )
        pod = restricted_pod("reader", script)
        pod["spec"]["volumes"] = [
            {"name": "data", "persistentVolumeClaim": {"claimName": "data", "readOnly": True}}
        ]
        pod["spec"]["containers"][0]["volumeMounts"] = [
            {"name": "data", "mountPath": "/data", "readOnly": True}
        ]
        phase, message = run_to_completion(core, restricted_namespace, pod)
        assert phase == "Succeeded", message
        assert "patient-free synthetic data" in message
        assert "Read-only file system" in message
        assert "WROTE" not in message
        assert not (data / "new.txt").exists()
    finally:
        core.delete_persistent_volume(pv_name)


def _probe(name: str, target: str, labels: dict[str, str]) -> dict[str, object]:
    # Up to 5 attempts: kube-router adds a new pod's address to its ipsets on the pod's event,
    # which may come a moment after the pod starts. A refused attempt fails fast (REJECT).
    script = (
        "for i in 1 2 3 4 5; do "
        f'  if out=$(nc -w 2 {target} 8080 </dev/null 2>&1) && [ -n "$out" ]; then '
        '    echo "CONNECTED $out" > /dev/termination-log; exit 0; fi; '
        "  sleep 1; "
        "done; "
        'echo "FAILED $out" > /dev/termination-log'
    )
    return restricted_pod(name, script, labels=labels)


def test_network_policy_is_enforced_by_kube_router(
    core: client.CoreV1Api, admin_api: client.ApiClient, restricted_namespace: str
) -> None:
    ns = restricted_namespace
    server = restricted_pod(
        "server",
        "while true; do echo hello-from-server | nc -l -p 8080; done",
        labels={"app": "server"},
        restart="Always",
    )
    core.create_namespaced_pod(ns, server)
    pod_ip = wait_pod(core, ns, "server", {"Running"}).status.pod_ip
    assert pod_ip.startswith(POD_CIDR.rsplit(".", 2)[0])

    # No policy: anyone connects (so a refusal below is the policy's doing).
    _, before = run_to_completion(core, ns, _probe("other-before", pod_ip, {"app": "other"}))
    assert before.startswith("CONNECTED hello-from-server"), before

    client.NetworkingV1Api(admin_api).create_namespaced_network_policy(
        ns,
        {
            "metadata": {"name": "server-ingress"},
            "spec": {
                "podSelector": {"matchLabels": {"app": "server"}},
                "policyTypes": ["Ingress"],
                # client --> server:8080; everything else into the server is denied
                "ingress": [
                    {
                        "from": [{"podSelector": {"matchLabels": {"app": "client"}}}],
                        "ports": [{"protocol": "TCP", "port": 8080}],
                    }
                ],
            },
        },
    )
    time.sleep(2)  # kube-router syncs a policy within ~1 s of its event
    _, denied = run_to_completion(core, ns, _probe("other-after", pod_ip, {"app": "other"}))
    assert denied.startswith("FAILED"), denied
    _, allowed = run_to_completion(core, ns, _probe("client", pod_ip, {"app": "client"}))
    assert allowed.startswith("CONNECTED hello-from-server"), allowed


def test_relay_shows_a_server_inside_the_node_on_the_host_loopback(
    node_platform: DevCluster,
) -> None:
    inner, outer = free_port(), free_port()
    server = node_platform.start_in_node(
        "test-http",
        [sys.executable, "-m", "http.server", "--bind", NODE_IP, str(inner)],
        env={"PATH": os.environ["PATH"]},
    )
    relay = node_platform.expose_from_node("test-expose", outer, NODE_IP, inner)
    try:
        body = ""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not body:
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"http://127.0.0.1:{outer}/", timeout=2) as resp,
            ):
                body = resp.read().decode()
            time.sleep(0.2)
        assert "Directory listing" in body
    finally:
        relay.stop()
        server.stop()
    names = {p.name for p in node_platform.processes()}
    assert {"node/test-http", "node/test-expose"} <= names


def test_kubectl_logs_and_exec_reach_the_pod_through_the_connect_proxy(
    node_platform: DevCluster, core: client.CoreV1Api, restricted_namespace: str
) -> None:
    pod = restricted_pod("talker", "echo hello-from-the-log; sleep 3600")
    core.create_namespaced_pod(restricted_namespace, pod)
    wait_pod(core, restricted_namespace, "talker", {"Running"})
    kubectl = [
        str(pinned_binaries().kubectl),
        f"--kubeconfig={node_platform.kubeconfig}",
        f"--namespace={restricted_namespace}",
    ]
    deadline = time.monotonic() + 20
    logs = ""
    while "hello-from-the-log" not in logs and time.monotonic() < deadline:
        logs = _run([*kubectl, "logs", "talker"]).stdout
        time.sleep(0.5)
    assert "hello-from-the-log" in logs
    echoed = subprocess.run(
        [*kubectl, "exec", "-i", "talker", "--", "cat"],
        input="through-the-proxy\n",
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert echoed.stdout == "through-the-proxy\n", echoed.stderr


def test_connect_proxy_refuses_the_nodes_loopback(node_platform: DevCluster) -> None:
    """The apiserver's way in reaches the kubelet and pods only: not the relay's own
    listeners on the node's loopback, nor anything addressed by name."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(node_egress_socket(node_platform.state_dir)))
        sock.sendall(b"CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 403")


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)


def test_second_platform_with_a_node_runs_beside_and_down_leaves_the_host_as_found(
    node_platform: DevCluster, busybox_archive: Path, tmp_path: Path
) -> None:
    state = tmp_path / "second"
    cgroup_root = cgroup_root_for(state)
    assert cgroup_root != cgroup_root_for(node_platform.state_dir)
    before = host_snapshot(cgroup_root, state)

    tre = [sys.executable, "-m", "provisioner.cli.main"]
    up = subprocess.run(
        [*tre, "dev", "up", "--node", "--state-dir", str(state)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    second = DevCluster(state)
    try:
        assert up.returncode == 0, up.stderr
        assert oct(state.stat().st_mode & 0o7777) == "0o700"
        # Not set and restored later: unchanged while the node runs.
        assert host_kernel_settings() == before["kernel settings"]
        status = subprocess.run(
            [*tre, "dev", "status", "--state-dir", str(state)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert status.returncode == 0, status.stdout + status.stderr
        for component in ("node/kubelet", "node/containerd", "node/kube-router", "node/relay"):
            assert component in status.stdout
        node_state = second.node().state()
        assert node_state is not None
        assert node_state.cgroup_root == cgroup_root
        # A pod runs on the second node, so shims, containers and pod cgroups exist to clean up.
        second.node().import_image(busybox_archive)
        core = client.CoreV1Api(api_client(second.kubeconfig))
        core.create_namespaced_pod("default", restricted_pod("sleeper", "sleep 3600"))
        wait_pod(core, "default", "sleeper", {"Running"})
        assert any(Path(p).name == "kubepods" for p in _cgroup_children(cgroup_root))
        recorded = second.processes()
    finally:
        down = subprocess.run(
            [*tre, "dev", "down", "--state-dir", str(state)],
            capture_output=True,
            text=True,
            check=False,
        )
    assert down.returncode == 0, down.stderr
    after = host_snapshot(cgroup_root, state)
    for aspect, lines in before.items():
        assert after[aspect] == lines, f"{aspect} changed:\nbefore {lines}\nafter  {after[aspect]}"
    assert not [p.name for p in recorded if p.alive()]
    left = _processes_in_namespaces(node_state.netns_inode, node_state.mntns_inode)
    assert not left, f"processes left in the second node's namespaces: {left}"
    assert not state.exists()


def test_the_kubelet_changes_no_kernel_tunable_of_the_host(
    node_platform: DevCluster, kernel_settings_before_the_node: list[str]
) -> None:
    """Unprotected, kubelet 1.36 sets kernel.panic=10, panic_on_oops=1, overcommit_memory=1 ...
    on the machine at start (review S12). The node's kubelet started; the host's values are
    the ones from before, the kubelet read its own in the node, and a write is refused there."""
    assert host_kernel_settings() == kernel_settings_before_the_node
    enter = node_platform.node().enter_argv(mount=True)
    for name, wanted in KUBELET_KERNEL_DEFAULTS.items():
        path = PROC_SYS / name
        inside = _run([*enter, "cat", str(path)])
        assert inside.stdout.strip() == str(wanted), inside.stderr
        # What the kubelet would do, with the host's own value: a no-op on the host if it
        # went through, so a failing test cannot change the machine either.
        host_value = path.read_text().strip()
        write = _run([*enter, "sh", "-c", f"echo {host_value} > {path}"])
        assert write.returncode != 0, f"{name}: a root process in the node may write it"
        assert "Read-only file system" in write.stderr
    kubelet_log = (node_platform.node().dir / "logs" / "kubelet.log").read_text()
    assert "invalid kernel flag" not in kubelet_log


def _cgroup_children(cgroup_root: str) -> list[str]:
    return [str(p) for p in Path("/sys/fs/cgroup/memory", cgroup_root.lstrip("/")).iterdir()]


def _processes_in_namespaces(netns: int, mntns: int) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if (entry / "ns/net").stat().st_ino == netns or (
                entry / "ns/mnt"
            ).stat().st_ino == mntns:
                found.append(f"{entry.name} {(entry / 'comm').read_text().strip()}")
    return found


def test_node_needs_root_and_says_so() -> None:
    """Not root: a clear error naming the fix, before anything starts."""
    nobody = shutil.which("setpriv")
    assert nobody, "setpriv (util-linux) is needed for this test"
    result = subprocess.run(
        [
            nobody,
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            sys.executable,
            "-m",
            "provisioner.cli.main",
            "dev",
            "up",
            "--node",
            "--state-dir",
            "/nonexistent/tre-node-test",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "HOME": "/nonexistent"},
        check=False,
    )
    assert result.returncode == 5, result.stdout + result.stderr
    assert "a node needs root" in result.stderr
    assert "sudo tre dev up --node" in result.stderr


def test_a_process_between_nsenter_and_its_exec_is_starting_not_dead(tmp_path: Path) -> None:
    """Node daemons run as `nsenter ... -- daemon`: until nsenter execs, the pid runs another
    binary. That must read as starting (not exited: kube-router once 'failed' that way), and
    `stop` must still stop it."""
    sleep = Path(shutil.which("sleep") or "/bin/sleep")
    proc = spawn(
        "late-exec", ["sh", "-c", f"sleep 1; exec {sleep} 30"], tmp_path / "log", exe=sleep
    )
    assert not proc.alive()
    assert proc.starting()
    deadline = time.monotonic() + 10
    while not proc.alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.alive()
    assert not proc.starting()
    proc.stop()
    assert not proc.alive()
    assert not proc.starting()


def test_stop_stops_a_process_that_has_not_exec_d_yet(tmp_path: Path) -> None:
    sleep = Path(shutil.which("sleep") or "/bin/sleep")
    # One process (no child to orphan): Python waits, then would exec sleep.
    wait_then_exec = f"import os, time; time.sleep(30); os.execv({str(sleep)!r}, ['sleep', '30'])"
    proc = spawn("early", [sys.executable, "-c", wait_then_exec], tmp_path / "log", exe=sleep)
    assert proc.starting()
    proc.stop()
    assert not Path(f"/proc/{proc.pid}").exists()
