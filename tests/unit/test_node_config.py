"""The node's configuration, as pure values (the live node is tests/integration/test_node.py).

- containerd's config parses as TOML (version 4, no host imports, the oom_score_adj clamp the
  machines without CAP_SYS_RESOURCE need, our runc, the CNI dirs, the pinned sandbox image);
- the kubelet's config carries the per-platform cgroupRoot and the security-relevant fields,
  `protectKernelDefaults` among them (it never writes the machine's kernel tunables);
- the masks the node binds over /proc/sys hold exactly the values kubelet 1.36 wants, one
  read-only bind per tunable, so a kubelet that protects its defaults starts;
- the CNI conflist hands out POD_CIDR and masquerades nothing;
- cgroupRoot is stable for one state dir and distinct for two;
- the relay's flags refuse malformed forwards with the flag and an example; its CONNECT proxy
  (the apiserver's way to the kubelet) connects only to allowed addresses, never to names;
- the package list is what node-packages.sh installs;
- the teardown selects only processes sharing the node's namespaces, never this process, PID 1
  or the holder, and refuses outright when the recorded namespaces are the host's (a teardown
  with the host's ids once SIGKILLed every process on the machine).
"""

from __future__ import annotations

import argparse
import ipaddress
import tomllib
from pathlib import Path

import pytest

from provisioner.devcluster.node import (
    CGROUP_ROOT_PATTERN,
    CNI_BIN_DIR,
    KUBELET_KERNEL_DEFAULTS,
    NODE_IP,
    POD_CIDR,
    SANDBOX_IMAGE,
    NodeState,
    cgroup_root_for,
    cluster_dns_ip,
    cni_conflist,
    containerd_config,
    enter_argv,
    kernel_defaults_masks,
    kube_proxy_config,
    kubelet_config,
    required_packages,
    select_node_pids,
)
from provisioner.devcluster.relay import (
    Forward,
    parse_connect_request,
    parse_into_node,
    parse_out_of_node,
)
from provisioner.errors import DevClusterError


def test_containerd_config() -> None:
    config = tomllib.loads(containerd_config(Path("/cache/runc"), Path("/state/node/cni-conf")))
    assert config["version"] == 4
    assert config["imports"] == []
    assert config["grpc"]["address"] == "/run/containerd/containerd.sock"
    plugins = config["plugins"]
    assert plugins["io.containerd.cri.v1.images"]["pinned_images"]["sandbox"] == SANDBOX_IMAGE
    runtime = plugins["io.containerd.cri.v1.runtime"]
    assert runtime["restrict_oom_score_adj"] is True
    runc = runtime["containerd"]["runtimes"]["runc"]
    assert runc["options"] == {"SystemdCgroup": False, "BinaryName": "/cache/runc"}
    assert runtime["cni"] == {"bin_dirs": [str(CNI_BIN_DIR)], "conf_dir": "/state/node/cni-conf"}


def test_kernel_default_masks_hold_the_kubelets_values_read_only(tmp_path: Path) -> None:
    commands = kernel_defaults_masks(tmp_path)
    assert commands == [
        ["mount", "--bind", "-o", "ro", str(tmp_path / name.replace("/", ".")), f"/proc/sys/{name}"]
        for name in KUBELET_KERNEL_DEFAULTS
    ]
    read = {p.name: p.read_text() for p in tmp_path.iterdir()}
    # kubelet v1.36.3, component-helpers/node/util/sysctl: what setupKernelTunables wants
    assert read == {
        "vm.overcommit_memory": "1\n",
        "vm.panic_on_oom": "0\n",
        "kernel.panic": "10\n",
        "kernel.panic_on_oops": "1\n",
        "kernel.keys.root_maxkeys": "1000000\n",
        "kernel.keys.root_maxbytes": "25000000\n",
    }


def test_kubelet_config() -> None:
    config = kubelet_config(Path("/state/pki/ca.crt"), "/tre-0123456789", "10.0.0.10")
    assert config == {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "containerRuntimeEndpoint": "unix:///run/containerd/containerd.sock",
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": "/tre-0123456789",
        "failCgroupV1": False,
        "protectKernelDefaults": True,
        "failSwapOn": False,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": "/state/pki/ca.crt"},
        },
        "authorization": {"mode": "Webhook"},
        "resolvConf": "",
        "clusterDNS": ["10.0.0.10"],
        "clusterDomain": "cluster.local",
        "readOnlyPort": 0,
        "address": NODE_IP,
        "healthzBindAddress": "127.0.0.1",
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
        },
    }


def test_cluster_dns_is_the_tenth_service_address() -> None:
    assert cluster_dns_ip("10.0.0.0/24") == "10.0.0.10"


def test_kube_proxy_runs_nftables_without_touching_the_machines_conntrack() -> None:
    config = kube_proxy_config(Path("/state/node/kube-proxy.kubeconfig"))
    assert config["mode"] == "nftables"
    assert config["conntrack"] == {"maxPerCore": 0}
    assert config["clusterCIDR"] == POD_CIDR
    assert config["bindAddress"] == NODE_IP
    # its ports are on the node's own loopback, never on a host address
    assert str(config["healthzBindAddress"]).startswith("127.0.0.1:")
    assert str(config["metricsBindAddress"]).startswith("127.0.0.1:")


def test_cni_conflist_gives_pod_cidr_and_masquerades_nothing() -> None:
    (bridge,) = cni_conflist()["plugins"]  # type: ignore[misc]
    assert bridge["ipMasq"] is False
    assert bridge["ipam"]["ranges"] == [[{"subnet": POD_CIDR}]]


def test_cgroup_root_is_per_platform(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    assert cgroup_root_for(one) == cgroup_root_for(one)
    assert cgroup_root_for(one) != cgroup_root_for(two)
    assert CGROUP_ROOT_PATTERN.fullmatch(cgroup_root_for(one))


def test_enter_argv() -> None:
    assert enter_argv(42, mount=True) == ["nsenter", "-t", "42", "-n", "-m", "--"]
    assert enter_argv(42, mount=False) == ["nsenter", "-t", "42", "-n", "--"]


def test_relay_forwards() -> None:
    assert parse_into_node("6443") == Forward(6443, "127.0.0.1", 6443, into_node=True)
    # pods reach the host's port 8333 at the node's address, port 80
    assert parse_into_node("10.99.0.1:80=8333") == Forward(
        80, "127.0.0.1", 8333, into_node=True, listen_host="10.99.0.1"
    )
    assert parse_out_of_node("18000=10.88.0.5:8000") == Forward(
        18000, "10.88.0.5", 8000, into_node=False
    )


@pytest.mark.parametrize(
    ("parse", "value", "message"),
    [
        (parse_into_node, "http", "--into-node: 'http' is not a TCP port"),
        (parse_into_node, "70000", "--into-node: '70000' is not a TCP port"),
        (parse_into_node, "80=8333", "expected PORT or ADDR:PORT=HOSTPORT"),
        (parse_into_node, "node:80=8333", "'node' is not an IPv4 address"),
        (parse_into_node, "10.99.0.1:80=x", "--into-node: 'x' is not a TCP port"),
        (parse_out_of_node, "18000", "expected HOSTPORT=ADDR:PORT, e.g. 18000=10.88.0.5:8000"),
        (parse_out_of_node, "18000=10.88.0.5", "expected HOSTPORT=ADDR:PORT"),
        (parse_out_of_node, "x=10.88.0.5:80", "--out-of-node: 'x' is not a TCP port"),
        (parse_out_of_node, "18000=hub.example:80", "'hub.example' is not an IPv4 address"),
    ],
)
def test_relay_refuses_malformed_forwards(parse: object, value: str, message: str) -> None:
    assert callable(parse)
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        parse(value)


def test_package_list_is_what_the_script_installs() -> None:
    packages = required_packages()
    for needed in ("containernetworking-plugins", "iptables", "ipset", "libseccomp-dev"):
        assert needed in packages
    assert all(" " not in p and not p.startswith("#") for p in packages)


HOST_NET, HOST_MNT, NODE_NET, NODE_MNT, POD_NET = 1001, 1002, 2001, 2002, 3001
NODE = NodeState(holder_pid=50, netns_inode=NODE_NET, mntns_inode=NODE_MNT, cgroup_root="/tre-0")


SHIM = "/cache/containerd-v2.3.7/containerd-shim-runc-v2"
PROCESSES = [
    (1, (HOST_NET, HOST_MNT), "/process_api"),  # init
    (10, (HOST_NET, HOST_MNT), "/usr/bin/make"),  # someone else's work on the host
    (50, (NODE_NET, NODE_MNT), "/usr/bin/sleep"),  # the holder: stopped last, separately
    (60, (NODE_NET, NODE_MNT), SHIM),  # a shim
    (70, (POD_NET, NODE_MNT), "/bin/busybox"),  # a pod process in the node's mount namespace
    (80, (NODE_NET, HOST_MNT), "/usr/bin/python3"),  # entered with nsenter -n only
    (99, (NODE_NET, NODE_MNT), "/usr/bin/python3"),  # this process (entered the node itself)
]


def test_teardown_selects_the_processes_in_the_nodes_namespaces() -> None:
    chosen = select_node_pids(
        NODE,
        PROCESSES,
        {HOST_NET, HOST_MNT},
        {99, 1, 50},
        holder_holds_namespaces=True,
        node_executables={SHIM},
    )
    assert chosen == [60, 70, 80]


def test_without_the_holder_only_the_nodes_own_executables_are_selected() -> None:
    """The kernel reuses a freed namespace's inode number: a stranger may have it now."""
    chosen = select_node_pids(
        NODE,
        PROCESSES,
        {HOST_NET, HOST_MNT},
        {99, 1, 50},
        holder_holds_namespaces=False,
        node_executables={SHIM},
    )
    assert chosen == [60]


@pytest.mark.parametrize(
    "recorded",
    [
        NodeState(50, HOST_NET, NODE_MNT, "/tre-0"),
        NodeState(50, NODE_NET, HOST_MNT, "/tre-0"),
    ],
)
def test_teardown_refuses_when_the_recorded_namespaces_are_the_hosts(recorded: NodeState) -> None:
    with pytest.raises(DevClusterError, match="refusing to kill by namespace"):
        select_node_pids(
            recorded,
            PROCESSES,
            {HOST_NET, HOST_MNT},
            set(),
            holder_holds_namespaces=True,
            node_executables=set(),
        )


NODE_ONLY = (ipaddress.IPv4Network("10.99.0.1/32"), ipaddress.IPv4Network("10.88.0.0/24"))


def test_connect_proxy_accepts_the_node_and_its_pods() -> None:
    head = b"CONNECT 10.99.0.1:10250 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    assert parse_connect_request(head, NODE_ONLY) == ("10.99.0.1", 10250)
    assert parse_connect_request(b"CONNECT 10.88.0.7:8080 HTTP/1.1\r\n\r\n", NODE_ONLY) == (
        "10.88.0.7",
        8080,
    )


@pytest.mark.parametrize(
    ("head", "message"),
    [
        (b"GET / HTTP/1.1\r\n\r\n", "not a CONNECT request"),
        (b"CONNECT tre-node:10250 HTTP/1.1\r\n\r\n", "is not an IPv4 address"),
        (b"CONNECT 127.0.0.1:6443 HTTP/1.1\r\n\r\n", "outside"),  # the node's loopback
        (b"CONNECT 10.99.0.2:10250 HTTP/1.1\r\n\r\n", "outside"),
        (b"CONNECT 10.99.0.1:0 HTTP/1.1\r\n\r\n", "no valid port"),
        (b"CONNECT 10.99.0.1:10250\r\n\r\n", "not a CONNECT request"),
    ],
)
def test_connect_proxy_refuses(head: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_connect_request(head, NODE_ONLY)
