"""A real Kubernetes node for the local platform, in network and mount namespaces of its own.

What runs where (all started by `tre dev up --node`, all recorded in ``processes.json``):

    host (127.0.0.1 only)            node namespaces (held by the "node/holder" process)
    ---------------------            ----------------------------------------------------
    kube-apiserver, etcd, S3    <--  relay: 127.0.0.1:<apiserver>, 127.0.0.1:<s3> inside,
                                            10.99.0.1:<apiserver>, 10.99.0.1:80 (S3) for pods
    kube-apiserver (egress)     -->  relay: CONNECT proxy to the node IP and pods only
    kube-scheduler (host)            containerd (+ shims), runc, CNI bridge cni0 10.88.0.0/24
                                     kubelet (node tre-node, node IP 10.99.0.1 on veth node0)
                                     kube-router (NetworkPolicy firewall only)
                                     kube-proxy (Services: ClusterIPs, nftables mode)

- **Network namespace.** New and empty: loopback, a veth pair ``node0``/``node0p`` that only
  carries the node IP (the kubelet refuses a loopback node IP and this kernel has no
  ``dummy``), and the pods' bridge. No link to the host, no default route: pods reach nothing
  outside the node. Every iptables rule (kubelet, bridge plugin, kube-router) lives in there
  and vanishes with it.
- **Mount namespace.** Private to the host (nothing propagates back), ``/`` made rshared inside
  (kubelet's volume mounts need it), a tmpfs on ``/run`` and ``<state>/node/var-lib`` and
  ``var-log`` bound on ``/var/lib`` and ``/var/log``: containerd, kubelet and CNI use their
  default paths without touching the host's. Read-only files bound over the kubelet's
  machine-wide kernel tunables in ``/proc/sys`` show it the values it wants, so it changes
  none of the host's (``KUBELET_KERNEL_DEFAULTS``).
- **The relay** (relay.py) makes the host's apiserver and S3 reachable at the same
  127.0.0.1 URLs inside the node, so the node's kubeconfigs equal the host's; and it is the
  apiserver's CONNECT proxy (egress selector) to the kubelet for exec, logs, port-forward.
  Pods cannot use the node's loopback, so it also listens on the node IP: the apiserver
  advertises NODE_IP:<port> (the endpoint of Service default/kubernetes, which kube-proxy
  resolves ``kubernetes.default.svc`` to) and S3 answers on NODE_IP:80 (``pod_s3_url``).
  Pods reach them only where their NetworkPolicies allow, as on any cluster.
- **cgroups are not namespaced.** The kubelet gets a per-platform ``cgroupRoot``
  (``/tre-<hash of the state dir>``), created here in every hierarchy and removed by `down`,
  so two platforms on one machine never share ``/kubepods``.
- **No CAP_SYS_RESOURCE** on the machines this was built on: runc cannot lower
  ``oom_score_adj``, and every sandbox fails unless containerd clamps it
  (``restrict_oom_score_adj = true``).

Teardown (`stop_node`): stop the node's processes by pid, SIGKILL whatever is left in the
node's namespaces or cgroups (shims, containers), stop the holder (the namespaces go with the
last process), then rmdir the cgroup tree under our cgroupRoot, deepest first.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from provisioner.devcluster.binaries import NodeBinaries, pinned_node_binaries
from provisioner.devcluster.certs import PkiPaths, ensure_client_cert, write_kubeconfig
from provisioner.devcluster.processes import Process, spawn, wait_ready
from provisioner.devcluster.relay import READY_LINE
from provisioner.errors import DevClusterError

Progress = Callable[[str], None]

NODE_NAME = "tre-node"
NODE_IP = "10.99.0.1"
NODE_IP_PREFIX = 24
POD_CIDR = "10.88.0.0/24"
SANDBOX_IMAGE = "registry.k8s.io/pause:3.10.2"  # containerd 2.3.7's default; pinned by it
CNI_BIN_DIR = Path("/usr/lib/cni")  # Debian's containernetworking-plugins
CGROUP_FS = Path("/sys/fs/cgroup")
PROCESS_PREFIX = "node/"  # names of the node's entries in processes.json
# The node's own components; processes started with `start_in_node` come and go beside them.
COMPONENTS = tuple(
    f"{PROCESS_PREFIX}{name}"
    for name in (
        "holder",
        "relay",
        "kube-scheduler",
        "containerd",
        "kubelet",
        "kube-router",
        "kube-proxy",
    )
)
# What exists once kube-router's firewall and kube-proxy have synced the first time.
KUBE_ROUTER_CHAIN = ("iptables", "-w", "5", "-S", "KUBE-ROUTER-INPUT")
KUBE_PROXY_TABLE = ("nft", "list", "table", "ip", "kube-proxy")
# Pods reach S3 here (the relay): a port every S3 NetworkPolicy rule opens (80 and 443).
POD_S3_PORT = 80
# The cluster DNS (node_services.py) answers Service names at this ClusterIP, as kube-dns does.
CLUSTER_DOMAIN = "cluster.local"
PACKAGES_FILE = Path(__file__).with_name("node-packages.txt")
INSTALL_SCRIPT = Path(__file__).with_name("node-packages.sh")
READY_TIMEOUT = 120.0  # seconds; Ready ~3 s after the kubelet starts on an idle machine
CONTAINERD_SOCKET = "/run/containerd/containerd.sock"  # inside the node's mount namespace
# Commands the node runs on the host's binaries (inside its namespaces).
HOST_COMMANDS = ("unshare", "nsenter", "ip", "mount", "sysctl", "iptables", "ipset", "nft", "sleep")
CNI_PLUGINS = ("bridge", "host-local", "loopback")
# The machine-wide sysctls kubelet v1.36 sets on start unless `protectKernelDefaults` is on,
# with the values it wants (pkg/kubelet/cm/container_manager_linux.go, setupKernelTunables):
# panic 10 s after any oops, overcommit always. They are not namespaced: set from the node, they
# would change the developer's machine. So the kubelet runs with `protectKernelDefaults: true`
# (it never writes them, and refuses to start if it reads other values) and reads, inside the
# node's mount namespace only, read-only files holding these values bound over /proc/sys
# (`kernel_defaults_masks`); the host keeps its own. A kubelet that wants another value fails
# at start, naming it, instead of changing the host.
KUBELET_KERNEL_DEFAULTS = {
    "vm/overcommit_memory": 1,
    "vm/panic_on_oom": 0,
    "kernel/panic": 10,
    "kernel/panic_on_oops": 1,
    "kernel/keys/root_maxkeys": 1000000,
    "kernel/keys/root_maxbytes": 25000000,
}
PROC_SYS = Path("/proc/sys")


@dataclass(frozen=True)
class NodeEndpoints:
    """What the node needs from the platform: its PKI, where the apiserver and S3 listen, and
    the service CIDR (kube-router must know it)."""

    state_dir: Path
    pki: PkiPaths
    api_port: int
    s3_port: int
    service_cidr: str


@dataclass(frozen=True)
class NodeState:
    """Written to ``<state>/node/node.json`` when the node is up: what `down` needs even when
    every process is gone (the namespace inodes to find leftovers, the cgroup root to rmdir)."""

    holder_pid: int
    netns_inode: int
    mntns_inode: int
    cgroup_root: str

    def to_json(self) -> dict[str, object]:
        return dict(vars(self))

    @classmethod
    def from_json(cls, data: dict[str, object]) -> NodeState:
        return cls(
            holder_pid=int(str(data["holder_pid"])),
            netns_inode=int(str(data["netns_inode"])),
            mntns_inode=int(str(data["mntns_inode"])),
            cgroup_root=str(data["cgroup_root"]),
        )


def node_dir(state_dir: Path) -> Path:
    return state_dir / "node"


CGROUP_ROOT_PATTERN = re.compile(r"/tre-[0-9a-f]{10}")  # what cgroup_root_for returns


def cgroup_root_for(state_dir: Path) -> str:
    """The kubelet's cgroupRoot for this platform: stable for one state dir, distinct across
    platforms (cgroups are global: two kubelets sharing /kubepods would kill each other's pods)."""
    digest = hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:10]
    return f"/tre-{digest}"


def enter_argv(holder_pid: int, *, mount: bool) -> list[str]:
    """The nsenter prefix that runs a command inside the node's network (and mount) namespace.
    nsenter execs the command, so the pid we record is the command's own."""
    return ["nsenter", "-t", str(holder_pid), "-n", *(["-m"] if mount else []), "--"]


# --- prerequisites ------------------------------------------------------------------------------


def required_packages() -> list[str]:
    lines = PACKAGES_FILE.read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def check_prerequisites() -> None:
    """Fail before touching anything: root, the Debian packages, the host commands."""
    if os.geteuid() != 0:
        raise DevClusterError(
            "a node needs root (network and mount namespaces, cgroups, iptables): run "
            "'sudo tre dev up --node', or 'tre dev up' without --node for a control plane only"
        )
    missing = [pkg for pkg in required_packages() if not _dpkg_installed(pkg)]
    if missing:
        raise DevClusterError(
            f"a node needs the Debian packages {', '.join(missing)}: run 'sudo {INSTALL_SCRIPT}' "
            f"(or: apt-get update && apt-get install -y {' '.join(missing)})"
        )
    absent = [cmd for cmd in HOST_COMMANDS if shutil.which(cmd) is None]
    absent += [str(CNI_BIN_DIR / p) for p in CNI_PLUGINS if not (CNI_BIN_DIR / p).exists()]
    if absent:
        raise DevClusterError(
            f"a node needs {', '.join(absent)} on this host; run 'sudo {INSTALL_SCRIPT}'"
        )
    if not (CGROUP_FS / "memory").is_dir() and not (CGROUP_FS / "cgroup.controllers").exists():
        raise DevClusterError(f"no cgroup hierarchy under {CGROUP_FS}; the kubelet needs one")


def _dpkg_installed(package: str) -> bool:
    result = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True, check=False
    )
    return result.returncode == 0 and result.stdout.endswith("install ok installed")


# --- configuration (pure) ----------------------------------------------------------------------


def containerd_config(runc: Path, cni_conf_dir: Path) -> str:
    """containerd's config (version 4, containerd 2.3's own format: no migration warning)."""
    return f"""\
version = 4
# Ignore /etc/containerd/conf.d on the host: the node's configuration is this file only.
imports = []
root = '/var/lib/containerd'
state = '/run/containerd'

[grpc]
  address = '{CONTAINERD_SOCKET}'

[plugins.'io.containerd.cri.v1.images']
  snapshotter = 'overlayfs'

[plugins.'io.containerd.cri.v1.images'.pinned_images]
  # Imported by us (no registry): pinned, so image GC never removes it.
  sandbox = '{SANDBOX_IMAGE}'

[plugins.'io.containerd.cri.v1.runtime']
  # These machines grant no CAP_SYS_RESOURCE: runc cannot set an oom_score_adj below ours
  # (sandboxes ask for -998), so clamp it to containerd's own instead of failing every pod.
  restrict_oom_score_adj = true

[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
  runtime_type = 'io.containerd.runc.v2'

[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
  SystemdCgroup = false
  BinaryName = '{runc}'

[plugins.'io.containerd.cri.v1.runtime'.cni]
  bin_dirs = ['{CNI_BIN_DIR}']
  conf_dir = '{cni_conf_dir}'
"""


def cni_conflist() -> dict[str, object]:
    """One bridge, host-local addresses from POD_CIDR, no masquerade: there is nowhere to go."""
    return {
        "cniVersion": "1.0.0",
        "name": "tre-node",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_CIDR}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            }
        ],
    }


def pod_s3_url() -> str:
    """S3 as pods on the node reach it (the relay on the node IP)."""
    return f"http://{NODE_IP}:{POD_S3_PORT}"


def cluster_dns_ip(service_cidr: str) -> str:
    """The tenth address of the service range: where kube-dns lives by convention."""
    return str(ipaddress.IPv4Network(service_cidr)[10])


def kube_proxy_config(kubeconfig: Path) -> dict[str, object]:
    """kube-proxy in nftables mode: no iptables rules of its own beside kube-router's, and no
    conntrack sysctls (a network namespace cannot set the machine's)."""
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "nftables",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": NODE_NAME,
        "clusterCIDR": POD_CIDR,
        "bindAddress": NODE_IP,
        # The node's own loopback (a namespace of its own): no port is shared with the host.
        "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        "conntrack": {"maxPerCore": 0},
        "nodePortAddresses": ["primary"],
    }


def kubelet_config(ca_cert: Path, cgroup_root: str, cluster_dns_ip: str) -> dict[str, object]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "containerRuntimeEndpoint": f"unix://{CONTAINERD_SOCKET}",
        "cgroupDriver": "cgroupfs",
        # Per platform: cgroups are shared by the whole machine (see cgroup_root_for).
        "cgroupRoot": cgroup_root,
        # These machines run cgroup v1 (hybrid); 1.36 still supports it when asked to.
        "failCgroupV1": False,
        # Never write the machine-wide kernel tunables (KUBELET_KERNEL_DEFAULTS).
        "protectKernelDefaults": True,
        "failSwapOn": False,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(ca_cert)},
        },
        "authorization": {"mode": "Webhook"},
        # Never hand pods the host's resolver: ClusterFirst pods get the cluster DNS only (it
        # answers Service names and nothing else: node_services.py); notebooks set their own.
        "resolvConf": "",
        "clusterDNS": [cluster_dns_ip],
        "clusterDomain": CLUSTER_DOMAIN,
        "readOnlyPort": 0,
        "address": NODE_IP,
        "healthzBindAddress": "127.0.0.1",
        # Images are imported, not pulled: garbage collection must never remove them.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
        },
    }


def kube_router_rbac(user: str) -> list[dict[str, object]]:
    """Read-only access to what the firewall controller watches; nothing else."""
    name = "tre-node:kube-router"
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": name},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["namespaces", "pods", "services", "nodes", "endpoints"],
                    "verbs": ["get", "list", "watch"],
                },
                {
                    "apiGroups": ["networking.k8s.io"],
                    "resources": ["networkpolicies"],
                    "verbs": ["get", "list", "watch"],
                },
                {
                    "apiGroups": ["discovery.k8s.io"],
                    "resources": ["endpointslices"],
                    "verbs": ["get", "list", "watch"],
                },
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": name,
            },
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
        },
    ]


# The apiserver's identity towards kubelets (exec, logs): file stem, user, groups. In
# system:masters, so the kubelet's webhook authorization lets it through.
KUBELET_CLIENT = ("apiserver-kubelet-client", "kube-apiserver-kubelet-client", ("system:masters",))


def node_egress_socket(state_dir: Path) -> Path:
    """The unix socket of the node's CONNECT proxy (the relay), for the apiserver."""
    return state_dir / "node-egress.sock"


def egress_selector_config(socket_path: Path) -> dict[str, object]:
    """The apiserver's EgressSelectorConfiguration: traffic to the cluster (kubelets, pods)
    goes through the node's CONNECT proxy; the control plane and etcd are dialled directly."""
    return {
        "apiVersion": "apiserver.k8s.io/v1beta1",
        "kind": "EgressSelectorConfiguration",
        "egressSelections": [
            {
                "name": "cluster",
                "connection": {
                    "proxyProtocol": "HTTPConnect",
                    "transport": {"uds": {"udsName": str(socket_path)}},
                },
            }
        ],
    }


# Client identities of the node's components: file stem -> (user, groups).
NODE_IDENTITIES: dict[str, tuple[str, tuple[str, ...]]] = {
    # The Node authorizer and NodeRestriction know a kubelet by exactly this name and group.
    "kubelet": (f"system:node:{NODE_NAME}", ("system:nodes",)),
    # Bound to its ClusterRole by the apiserver's bootstrap RBAC.
    "kube-scheduler": ("system:kube-scheduler", ()),
    "kube-router": ("tre-node:kube-router", ()),
    # Bound to system:node-proxier by the apiserver's bootstrap RBAC.
    "kube-proxy": ("system:kube-proxy", ()),
}


# --- the node --------------------------------------------------------------------------------


class Node:
    """The node of one platform (its state directory)."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.dir = node_dir(state_dir)
        self._state_file = self.dir / "node.json"

    def state(self) -> NodeState | None:
        try:
            return NodeState.from_json(json.loads(self._state_file.read_text()))
        except FileNotFoundError:
            return None

    @property
    def holder_pid(self) -> int:
        state = self.state()
        if state is None:
            raise DevClusterError(f"{self.state_dir} has no node; 'tre dev up --node'")
        return state.holder_pid

    def enter_argv(self, *, mount: bool) -> list[str]:
        return enter_argv(self.holder_pid, mount=mount)

    def kubeconfig(self, stem: str) -> Path:
        return self.dir / f"{stem}.kubeconfig"

    # --- start -------------------------------------------------------------------------------

    def start(
        self,
        ep: NodeEndpoints,
        binaries: NodeBinaries,
        kubectl: Path,
        images: list[Path],
        record: Callable[[Process], None],
        progress: Progress,
    ) -> None:
        """Create the namespaces and start every component; `record` is called with each
        process as soon as it runs, so a failure half-way leaves nothing unrecorded."""
        check_prerequisites()
        for sub in ("var-lib", "var-log", "cni-conf", "logs"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        for stem, (user, groups) in NODE_IDENTITIES.items():
            ensure_client_cert(ep.pki, f"node-{stem}", user, groups)
            write_kubeconfig(
                self.kubeconfig(stem),
                f"https://127.0.0.1:{ep.api_port}",
                ep.pki,
                f"node-{stem}",
                user,
            )
        cgroup_root = cgroup_root_for(ep.state_dir)

        progress("node: creating its network and mount namespaces")
        host = _host_namespace_ids()
        holder = self._start_holder()
        # Recorded only once they are the holder's own: `stop` kills whatever shares them, so
        # recording them before unshare(2) ran would name the host's (and kill everything).
        netns, mntns = _wait_for_own_namespaces(holder, host)
        record(holder)
        self._state_file.write_text(
            json.dumps(NodeState(holder.pid, netns, mntns, cgroup_root).to_json())
        )
        self._setup_namespaces(holder.pid, ep.service_cidr)
        _make_cgroup_root(cgroup_root)

        progress("node: starting the relay to the apiserver and S3")
        record(self._start_relay(ep, holder.pid))
        progress("node: starting kube-scheduler")
        record(self._start_scheduler(binaries))
        _apply(
            kubectl,
            ep.state_dir / "kubeconfig",
            kube_router_rbac(NODE_IDENTITIES["kube-router"][0]),
        )

        progress("node: starting containerd")
        containerd = self._start_containerd(binaries)
        record(containerd)
        wait_ready(containerd, lambda: self._ctr(binaries, ["version"]).returncode == 0, 60)
        for image in images:
            progress(f"node: importing {image.name}")
            self.import_image(image)

        progress("node: starting kubelet")
        kubelet = self._start_kubelet(
            binaries, ep.pki.ca_cert, cgroup_root, cluster_dns_ip(ep.service_cidr)
        )
        record(kubelet)
        progress(f"node: waiting for {NODE_NAME} to be Ready")
        wait_ready(
            kubelet, lambda: _node_ready(kubectl, ep.state_dir / "kubeconfig"), READY_TIMEOUT
        )
        # After Ready: kube-router reads its node's address from the Node object and shuts
        # down (with a nil-pointer panic in v2.10.0) when the node is not registered yet.
        progress("node: starting kube-router (NetworkPolicy firewall)")
        router = self._start_kube_router(binaries, ep.service_cidr)
        record(router)
        # Its filter chain exists once the policy controller has synced the first time.
        wait_ready(router, lambda: self._succeeds_in_node(holder.pid, *KUBE_ROUTER_CHAIN), 60)
        progress("node: starting kube-proxy (Services)")
        proxy = self._start_kube_proxy(binaries)
        record(proxy)
        wait_ready(proxy, lambda: self._succeeds_in_node(holder.pid, *KUBE_PROXY_TABLE), 60)

    def start_in_node(
        self, name: str, argv: list[str], *, mount: bool = True, env: dict[str, str] | None = None
    ) -> Process:
        """Start an extra process inside the node's namespaces (e.g. the hub's proxy). The
        caller records it in processes.json with the rest (`DevCluster.start_in_node` does)."""
        exe = shutil.which(argv[0]) or argv[0]
        return spawn(
            f"{PROCESS_PREFIX}{name}",
            [*self.enter_argv(mount=mount), *argv],
            self.dir / "logs" / f"{name}.log",
            env=env,
            exe=Path(exe),
        )

    def import_image(self, archive: Path) -> None:
        """``ctr -n k8s.io images import`` an OCI archive into the node's containerd. The tar
        goes in on stdin: a host path under /run or /var/lib is not the same file in the node."""
        with archive.open("rb") as stream:
            result = subprocess.run(
                [
                    *self.enter_argv(mount=True),
                    str(pinned_node_binaries().ctr),
                    "--address",
                    CONTAINERD_SOCKET,
                    "-n",
                    "k8s.io",
                    "images",
                    "import",
                    "-",
                ],
                stdin=stream,
                capture_output=True,
                text=True,
                check=False,
            )
        if result.returncode != 0:
            raise DevClusterError(
                f"importing {archive} into the node's containerd failed: {result.stderr.strip()}"
            )

    def has_image(self, ref: str) -> bool:
        """Whether the node's containerd holds image `ref` (full name, e.g. docker.io/...)."""
        result = self._ctr(
            pinned_node_binaries(), ["-n", "k8s.io", "images", "ls", "-q", f"name=={ref}"]
        )
        if result.returncode != 0:
            raise DevClusterError(f"listing the node's images failed: {result.stderr.strip()}")
        return ref in result.stdout.split()

    def _ctr(self, binaries: NodeBinaries, args: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                *self.enter_argv(mount=True),
                str(binaries.ctr),
                "--address",
                CONTAINERD_SOCKET,
                *args,
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )

    def _succeeds_in_node(self, holder_pid: int, *command: str) -> bool:
        """Whether `command` exits 0 inside the node's namespaces (e.g. a rule table exists)."""
        result = subprocess.run(
            [*enter_argv(holder_pid, mount=True), *command], capture_output=True, check=False
        )
        return result.returncode == 0

    def _start_holder(self) -> Process:
        # `unshare` execs `sleep`, which then owns the namespaces; nothing else runs in it.
        sleep = shutil.which("sleep") or "/bin/sleep"
        return spawn(
            f"{PROCESS_PREFIX}holder",
            ["unshare", "--net", "--mount", "--propagation", "private", sleep, "infinity"],
            self.dir / "logs" / "holder.log",
            exe=Path(sleep),
        )

    def _setup_namespaces(self, holder_pid: int, service_cidr: str) -> None:
        enter = enter_argv(holder_pid, mount=True)
        steps = [
            ["ip", "link", "set", "lo", "up"],
            ["ip", "link", "add", "node0", "type", "veth", "peer", "name", "node0p"],
            ["ip", "addr", "add", f"{NODE_IP}/{NODE_IP_PREFIX}", "dev", "node0"],
            ["ip", "link", "set", "node0", "up"],
            ["ip", "link", "set", "node0p", "up"],
            # The node's own connections to a ClusterIP (e.g. the relay showing a Service to
            # the host) need a route before kube-proxy's output hook rewrites them; pods have
            # theirs (the bridge).
            ["ip", "route", "add", service_cidr, "dev", "node0", "src", NODE_IP],
            # kubelet wants an rshared root for volume mounts; private from the host (unshare
            # --propagation private), shared inside.
            ["mount", "--make-rshared", "/"],
            ["mount", "-t", "tmpfs", "-o", "mode=755", "tre-node-run", "/run"],
            ["mount", "--bind", str(self.dir / "var-lib"), "/var/lib"],
            ["mount", "--bind", str(self.dir / "var-log"), "/var/log"],
            ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"],  # this namespace's, not the host's
            *kernel_defaults_masks(self.dir / "kernel-defaults"),
        ]
        for step in steps:
            result = subprocess.run([*enter, *step], capture_output=True, text=True, check=False)
            if result.returncode != 0:
                raise DevClusterError(
                    f"setting up the node's namespaces: '{' '.join(step)}' failed: "
                    f"{result.stderr.strip()}"
                )

    def _start_relay(self, ep: NodeEndpoints, holder_pid: int) -> Process:
        forwards = [
            *("--into-node", str(ep.api_port), "--into-node", str(ep.s3_port)),
            # ... and on the node IP, for pods (the apiserver advertises this address).
            *("--into-node", f"{NODE_IP}:{ep.api_port}={ep.api_port}"),
            *("--into-node", f"{NODE_IP}:{POD_S3_PORT}={ep.s3_port}"),
            # apiserver --> kubelet (exec, logs) and pods; nothing else in the node.
            *("--connect-proxy", str(node_egress_socket(ep.state_dir))),
            *("--connect-allow", f"{NODE_IP}/32", "--connect-allow", POD_CIDR),
        ]
        return self.start_relay("relay", holder_pid, forwards)

    def start_relay(self, name: str, holder_pid: int, forwards: list[str]) -> Process:
        """Start a relay (relay.py) with `forwards` (``--into-node PORT``, ``--out-of-node
        HPORT=ADDR:PORT``) and wait until it listens. The caller records it."""
        log = self.dir / "logs" / f"{name}.log"
        log.unlink(missing_ok=True)  # its "ready" line must be this run's
        relay = spawn(
            f"{PROCESS_PREFIX}{name}",
            [
                sys.executable,
                "-m",
                "provisioner.devcluster.relay",
                "--netns",
                f"/proc/{holder_pid}/ns/net",
                *forwards,
            ],
            log,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        )
        wait_ready(relay, lambda: READY_LINE in _read(relay.log), 30)
        return relay

    def _start_scheduler(self, b: NodeBinaries) -> Process:
        kubeconfig = self.kubeconfig("kube-scheduler")
        return spawn(
            f"{PROCESS_PREFIX}kube-scheduler",
            [
                str(b.kube_scheduler),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                "--secure-port=0",  # no health endpoint: free ports for parallel platforms
                "--leader-elect=false",
                "--v=1",
            ],
            self.dir / "logs" / "kube-scheduler.log",
        )

    def _node_env(self, b: NodeBinaries) -> dict[str, str]:
        # containerd finds its shim on PATH; iptables, mount, ipset come from the host.
        path = [
            str(b.containerd.parent),
            str(b.runc.parent),
            "/usr/sbin",
            "/usr/bin",
            "/sbin",
            "/bin",
        ]
        return {"PATH": ":".join(path), "HOME": "/root"}

    def _start_containerd(self, b: NodeBinaries) -> Process:
        config = self.dir / "containerd.toml"
        config.write_text(containerd_config(b.runc, self.dir / "cni-conf"))
        (self.dir / "cni-conf" / "10-tre-node.conflist").write_text(json.dumps(cni_conflist()))
        return spawn(
            f"{PROCESS_PREFIX}containerd",
            [*self.enter_argv(mount=True), str(b.containerd), "--config", str(config)],
            self.dir / "logs" / "containerd.log",
            env=self._node_env(b),
            exe=b.containerd,
        )

    def _start_kubelet(
        self, b: NodeBinaries, ca_cert: Path, cgroup_root: str, dns_ip: str
    ) -> Process:
        config = self.dir / "kubelet.yaml"
        config.write_text(
            yaml.safe_dump(kubelet_config(ca_cert, cgroup_root, dns_ip), sort_keys=False)
        )
        return spawn(
            f"{PROCESS_PREFIX}kubelet",
            [
                *self.enter_argv(mount=True),
                str(b.kubelet),
                f"--config={config}",
                f"--kubeconfig={self.kubeconfig('kubelet')}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={NODE_IP}",
                "--v=1",
            ],
            self.dir / "logs" / "kubelet.log",
            env=self._node_env(b),
            exe=b.kubelet,
        )

    def _start_kube_proxy(self, b: NodeBinaries) -> Process:
        config = self.dir / "kube-proxy.yaml"
        config.write_text(
            yaml.safe_dump(kube_proxy_config(self.kubeconfig("kube-proxy")), sort_keys=False)
        )
        return spawn(
            f"{PROCESS_PREFIX}kube-proxy",
            [*self.enter_argv(mount=True), str(b.kube_proxy), f"--config={config}", "--v=1"],
            self.dir / "logs" / "kube-proxy.log",
            env=self._node_env(b),
            exe=b.kube_proxy,
        )

    def _start_kube_router(self, b: NodeBinaries, service_cidr: str) -> Process:
        return spawn(
            f"{PROCESS_PREFIX}kube-router",
            [
                *self.enter_argv(mount=True),
                str(b.kube_router),
                "--run-firewall=true",
                "--run-router=false",
                "--run-service-proxy=false",
                "--enable-cni=false",
                f"--kubeconfig={self.kubeconfig('kube-router')}",
                f"--hostname-override={NODE_NAME}",
                "--health-port=0",
                "--metrics-port=0",
                f"--service-cluster-ip-range={service_cidr}",
                "--v=1",
            ],
            self.dir / "logs" / "kube-router.log",
            env=self._node_env(b),
            exe=b.kube_router,
        )

    # --- stop --------------------------------------------------------------------------------

    def stop(self, processes: list[Process], progress: Progress) -> None:
        """Stop the node's recorded processes (newest first), then everything left in its
        namespaces and cgroups, then remove its cgroup tree. Safe to repeat."""
        state = self.state()
        holder = [p for p in processes if p.name == f"{PROCESS_PREFIX}holder"]
        for proc in reversed(processes):
            if proc.name.startswith(PROCESS_PREFIX) and proc not in holder:
                if proc.alive():
                    progress(f"stopping {proc.name} (pid {proc.pid})")
                proc.stop()
        if state is not None:
            for _ in range(50):  # containers can fork while we kill; repeat until none is left
                left = _pids_of_node(state)
                if not left:
                    break
                for pid in left:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                time.sleep(0.1)
        for proc in holder:
            proc.stop()
        if state is not None:
            _remove_cgroup_root(state.cgroup_root)
            self._state_file.unlink(missing_ok=True)


# --- helpers ---------------------------------------------------------------------------------


def kernel_defaults_masks(directory: Path) -> list[list[str]]:
    """Write one file per KUBELET_KERNEL_DEFAULTS entry into `directory` and return the
    commands that bind each, read-only, over its /proc/sys file (run inside the node's mount
    namespace: the host's /proc/sys stays as it is)."""
    directory.mkdir(parents=True, exist_ok=True)
    commands = []
    for name, value in KUBELET_KERNEL_DEFAULTS.items():
        mask = directory / name.replace("/", ".")
        mask.write_text(f"{value}\n")
        commands.append(["mount", "--bind", "-o", "ro", str(mask), str(PROC_SYS / name)])
    return commands


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _apply(kubectl: Path, kubeconfig: Path, manifests: list[dict[str, object]]) -> None:
    result = subprocess.run(
        [str(kubectl), f"--kubeconfig={kubeconfig}", "apply", "--server-side", "-f", "-"],
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests}),
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise DevClusterError(f"applying the node's RBAC failed: {result.stderr.strip()}")


def _node_ready(kubectl: Path, kubeconfig: Path) -> bool:
    result = subprocess.run(
        [
            str(kubectl),
            f"--kubeconfig={kubeconfig}",
            "get",
            "node",
            NODE_NAME,
            "-o",
            "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.returncode == 0 and result.stdout.strip() == "True"


def _cgroup_hierarchies() -> list[Path]:
    """Every mounted cgroup hierarchy (v1 controllers, name=systemd, the v2 `unified`)."""
    return sorted(
        Path(line.split()[1])
        for line in Path("/proc/self/mounts").read_text().splitlines()
        if line.split()[2] in ("cgroup", "cgroup2")
    )


def _make_cgroup_root(cgroup_root: str) -> None:
    """The kubelet refuses a cgroupRoot that does not exist: create it in every hierarchy."""
    for hierarchy in _cgroup_hierarchies():
        path = hierarchy / cgroup_root.lstrip("/")
        path.mkdir(exist_ok=True)
        # A new cpuset cgroup starts with no CPUs and no memory nodes, and no task may join it
        # until both are set: inherit the parent's.
        for knob in ("cpuset.cpus", "cpuset.mems"):
            parent = hierarchy / knob  # absent at a cgroup v2 root
            if parent.exists() and (path / knob).exists() and not (path / knob).read_text().strip():
                (path / knob).write_text(parent.read_text())


def cgroup_dirs(cgroup_root: str) -> list[Path]:
    """Every cgroup directory under our root, deepest first (the order rmdir needs)."""
    found: list[Path] = []
    for hierarchy in _cgroup_hierarchies():
        top = hierarchy / cgroup_root.lstrip("/")
        if top.is_dir():
            found.extend(p for p, _, _ in _walk_dirs(top))
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def _walk_dirs(top: Path) -> Iterator[tuple[Path, list[str], list[str]]]:
    for dirpath, dirnames, filenames in os.walk(top):
        yield Path(dirpath), dirnames, filenames


def _namespace_ids(pid: int | str) -> tuple[int, int]:
    """(network, mount) namespace inode numbers of a process."""
    ns = Path(f"/proc/{pid}/ns")
    return (ns / "net").stat().st_ino, (ns / "mnt").stat().st_ino


def _host_namespace_ids() -> set[int]:
    """The namespaces a node must never claim: ours, and PID 1's where we may read them (a
    sandbox's init may hide them)."""
    ids = set(_namespace_ids("self"))
    with contextlib.suppress(OSError):
        ids.update(_namespace_ids(1))
    return ids


def _wait_for_own_namespaces(
    holder: Process, host: set[int], timeout: float = 10.0
) -> tuple[int, int]:
    """The holder's namespace ids, once `unshare` has exec'd `sleep` (so unshare(2) is done:
    until then the pid shares the host's namespaces). On failure the holder, still our
    unreaped child, is killed: its pid cannot belong to anyone else yet."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if holder.alive():
            netns, mntns = _namespace_ids(holder.pid)
            if netns not in host and mntns not in host:
                return netns, mntns
        elif holder.exit_code() is not None:
            break
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(holder.pid, signal.SIGKILL)
    holder.exit_code()
    raise DevClusterError(
        f"the node's namespace holder (pid {holder.pid}) did not get namespaces of its own "
        f"within {timeout:.0f}s; last lines of {holder.log}:\n{holder.log_tail()}"
    )


def select_node_pids(
    state: NodeState,
    processes: list[tuple[int, tuple[int, int], str]],
    host_namespaces: set[int],
    own_pids: set[int],
    *,
    holder_holds_namespaces: bool,
    node_executables: set[str],
) -> list[int]:
    """The pids the teardown kills: those sharing the node's network or mount namespace.
    `processes`: (pid, (netns, mntns), executable) of every process.

    Refuses (raises) when the recorded namespaces are the host's: killing "everything in the
    node's namespace" would then kill every process on the machine. `own_pids` (this process,
    PID 1, the holder) are never selected. Namespace ids are inode numbers the kernel reuses
    once a namespace is gone: unless the holder still holds them (so they are still the
    node's), only processes running one of the node's own executables are selected."""
    if state.netns_inode in host_namespaces or state.mntns_inode in host_namespaces:
        raise DevClusterError(
            f"refusing to kill by namespace: the node's recorded namespaces "
            f"({state.netns_inode}, {state.mntns_inode}) are the host's; stop the node's "
            "processes by hand and delete node/node.json"
        )
    return sorted(
        pid
        for pid, (netns, mntns), exe in processes
        if pid not in own_pids
        and (netns == state.netns_inode or mntns == state.mntns_inode)
        and (holder_holds_namespaces or exe in node_executables)
    )


def _pids_of_node(state: NodeState) -> list[int]:
    """Processes in the node's namespaces (shims, daemons) or in its cgroups (containers,
    which have namespaces of their own), the holder excepted: it goes last."""
    listing = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                ids = _namespace_ids(entry.name)
                exe = ""
                with contextlib.suppress(OSError):
                    exe = os.readlink(entry / "exe").removesuffix(" (deleted)")
                listing.append((int(entry.name), ids, exe))
    holds = False
    with contextlib.suppress(OSError):
        holder_exe = os.readlink(f"/proc/{state.holder_pid}/exe")
        holds = Path(holder_exe).name == "sleep" and _namespace_ids(state.holder_pid) == (
            state.netns_inode,
            state.mntns_inode,
        )
    binaries = pinned_node_binaries()
    own = {os.getpid(), 1, state.holder_pid}
    pids = set(
        select_node_pids(
            state,
            listing,
            _host_namespace_ids(),
            own,
            holder_holds_namespaces=holds,
            node_executables={os.path.realpath(p) for p in vars(binaries).values()},
        )
    )
    if not CGROUP_ROOT_PATTERN.fullmatch(state.cgroup_root):
        raise DevClusterError(
            f"refusing to kill by cgroup: {state.cgroup_root!r} is not a node's cgroupRoot"
        )
    for directory in cgroup_dirs(state.cgroup_root):
        with contextlib.suppress(OSError):
            pids.update(int(p) for p in (directory / "cgroup.procs").read_text().split())
    return sorted(pids - own)


def _remove_cgroup_root(cgroup_root: str) -> None:
    """rmdir our cgroup tree, deepest first. A cgroup whose last task just died can stay busy
    for a moment, so retry briefly; what still cannot go is an error naming it."""
    deadline = time.monotonic() + 15
    while True:
        left = []
        for directory in cgroup_dirs(cgroup_root):
            try:
                directory.rmdir()
            except FileNotFoundError:
                continue
            except OSError:
                left.append(directory)
        if not left:
            return
        if time.monotonic() > deadline:
            raise DevClusterError(
                "could not remove the node's cgroups (still in use): "
                + ", ".join(str(p) for p in left[:5])
            )
        time.sleep(0.2)
