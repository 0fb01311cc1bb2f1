"""The local development platform: etcd + kube-apiserver + kube-controller-manager + S3.

Everything binds to 127.0.0.1 on free ports and lives in one state directory:

    <state>/pki/           CA, serving and client certificates, ServiceAccount signing key;
                           etcd's own CA, its certificate, the apiserver's client cert for it
    <state>/etcd/          etcd data (fsync off: throwaway data, much faster); etcd serves
                           TLS and answers only the apiserver's client certificate
    <state>/kubeconfig     admin kubeconfig (user tre-admin, group system:masters)
    <state>/s3/            the S3 server (see s3server.py)
    <state>/audit-signing.key  the controller's audit signing key (Ed25519, PEM, 0600)
    <state>/processes.json pids of what we started; `down` stops exactly those
    <state>/*.log          one log per component
    <state>/node/          the node's state, configs and logs, when there is one (node.py)
    <state>/egress-selector.yaml, node-egress.sock  the apiserver's way to the node's kubelet

The state directory is the caller's alone (state_dir.py: made 0700; someone else's, a looser
one or a symlink is refused before anything in it is read), and etcd answers only the
apiserver's client certificate (certs.py).

The apiserver runs RBAC authorization, PodSecurity and ValidatingAdmissionPolicy admission, and
signs ServiceAccount tokens; the admin identity is in system:masters, so it may impersonate
(``kubectl --as``). Without a node (the default) pods stay Pending and NetworkPolicies are
stored but not enforced; `up(node=True)` / `add_node` add a real one (node.py).
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import ssl
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from provisioner.devcluster.binaries import (
    Binaries,
    cache_dir,
    ensure_binaries,
    ensure_node_binaries,
)
from provisioner.devcluster.certs import (
    ETCD_CLIENT,
    PkiPaths,
    ensure_client_cert,
    ensure_pki,
    write_kubeconfig,
)
from provisioner.devcluster.images import build_pause_image
from provisioner.devcluster.node import COMPONENTS as NODE_COMPONENTS
from provisioner.devcluster.node import (
    KUBELET_CLIENT,
    NODE_IP,
    PROCESS_PREFIX,
    Node,
    NodeEndpoints,
    check_prerequisites,
    egress_selector_config,
    node_egress_socket,
)
from provisioner.devcluster.node_services import stop_node_services, workspace_settings
from provisioner.devcluster.processes import (
    Process,
    free_port,
    load_processes,
    save_processes,
    spawn,
    stop_with_children,
    wait_until_ready,
)
from provisioner.devcluster.s3server import (
    AirlockScope,
    S3Endpoint,
    s3_status,
    start_s3,
    stop_s3,
)
from provisioner.devcluster.state_dir import check_state_dir, ensure_state_dir
from provisioner.errors import DevClusterError
from provisioner.models.settings import Settings

Progress = Callable[[str], None]

# The processes `up` starts; the hub (devcluster/hub.py) adds its own to processes.json.
CONTROL_PLANE = ("etcd", "kube-apiserver", "kube-controller-manager")
SERVICE_CIDR = "10.0.0.0/24"  # virtual ClusterIPs only; nothing routes there without nodes
START_TIMEOUT = 120.0  # seconds; a cold apiserver on 2 busy cores needs ~15 s


def default_state_dir() -> Path:
    if env := os.environ.get("TRE_DEV_DIR"):
        return Path(env)
    return Path(tempfile.gettempdir()) / f"ucloud-tre-dev-{os.getuid()}"


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    running: bool
    pid: int | None
    detail: str


class DevCluster:
    """One local platform, identified by its state directory."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.pki = PkiPaths(state_dir / "pki")
        self.kubeconfig = state_dir / "kubeconfig"
        self._processes_file = state_dir / "processes.json"
        self._ports_file = state_dir / "ports.json"

    @property
    def audit_signing_key_file(self) -> Path:
        """The controller's audit signing key, made by `up`. For the controller process only
        (TRE_AUDIT_SIGNING_KEY_FILE, see `controller_env`); `env` does not export it."""
        return self.state_dir / "audit-signing.key"

    # --- queries ----------------------------------------------------------------------------

    def processes(self) -> list[Process]:
        return load_processes(self._processes_file)

    def api_url(self) -> str:
        ports = json.loads(self._ports_file.read_text())
        return f"https://127.0.0.1:{ports['kube-apiserver']}"

    def is_ready(self) -> bool:
        """The control plane and S3 answer, and its processes run; with a node, every node
        component runs too (extra processes, the hub's for one, may come and go)."""
        procs = {p.name: p for p in self.processes()}
        if not all(name in procs and procs[name].alive() for name in CONTROL_PLANE):
            return False
        node = [p for name, p in procs.items() if name in NODE_COMPONENTS]
        if node and (len(node) != len(NODE_COMPONENTS) or not all(p.alive() for p in node)):
            return False
        return self._get("/readyz") == 200 and s3_status(self.state_dir / "s3") is not None

    def has_node(self) -> bool:
        return any(p.name.startswith(PROCESS_PREFIX) for p in self.processes())

    def node(self) -> Node:
        """The platform's node (its holder pid, `enter_argv`, `import_image`, ...)."""
        return Node(self.state_dir)

    @property
    def service_cidr(self) -> str:
        """The range of the platform's Service ClusterIPs."""
        return SERVICE_CIDR

    def _node_endpoints(self) -> NodeEndpoints:
        ports = json.loads(self._ports_file.read_text())
        return NodeEndpoints(
            state_dir=self.state_dir,
            pki=self.pki,
            api_port=int(ports["kube-apiserver"]),
            s3_port=int(self.s3().url.rsplit(":", 1)[1].rstrip("/")),
            service_cidr=SERVICE_CIDR,
        )

    def status(self) -> list[ComponentStatus]:
        result = []
        for proc in self.processes():
            result.append(ComponentStatus(proc.name, proc.alive(), proc.pid, f"log {proc.log}"))
        s3 = s3_status(self.state_dir / "s3")
        result.append(ComponentStatus("s3", s3 is not None, None, s3.url if s3 else "not running"))
        return result

    def s3(self) -> S3Endpoint:
        endpoint = s3_status(self.state_dir / "s3")
        if endpoint is None:
            raise DevClusterError(
                f"the S3 server of {self.state_dir} is not running; run 'tre dev up'"
            )
        return endpoint

    def env(self) -> dict[str, str]:
        """Variables that point the CLI, the controller and boto3 at this platform.

        Not the audit signing key: people's shells get this (`tre dev env`), and only the
        controller may sign audit entries. In a cluster only the controller's pod mounts the
        key's Secret; locally `controller_env` adds it for the controller process.
        """
        check_state_dir(self.state_dir)  # its kubeconfig and S3 keys go into people's shells
        s3 = self.s3()
        return {
            "KUBECONFIG": str(self.kubeconfig),
            "TRE_S3_ENDPOINT_URL": s3.url,
            "TRE_S3_REGION": s3.region,
            "TRE_S3_ACCESS_KEY_ID": s3.access_key,
            "TRE_S3_SECRET_ACCESS_KEY": s3.secret_key,
            # With a node that serves workspaces, plan for it: its resolver, its CSI driver,
            # the platform's services on its host.
            **workspace_settings(self),
        }

    def controller_env(self) -> dict[str, str]:
        """`env` plus the audit signing key: for the controller process only."""
        return {**self.env(), "TRE_AUDIT_SIGNING_KEY_FILE": str(self.audit_signing_key_file)}

    def add_processes(self, started: list[Process]) -> None:
        """Record processes started beside the control plane (the hub), so `down` stops them
        (first: the newest are stopped first)."""
        save_processes(self._processes_file, [*self.processes(), *started])

    def remove_processes(self, stopped: list[Process]) -> None:
        gone = {p.pid for p in stopped}
        save_processes(self._processes_file, [p for p in self.processes() if p.pid not in gone])

    # --- lifecycle --------------------------------------------------------------------------

    def up(self, progress: Progress, *, node: bool = False) -> bool:
        """Start everything and wait until ready; with `node`, add a node (to a running
        platform too). Returns False if it was already running as asked."""
        if node:
            check_prerequisites()  # before anything starts: root, packages, commands
        # Before anything in it is read: a directory someone else made is never adopted.
        ensure_state_dir(self.state_dir)
        if self.is_ready():
            if node and not self.has_node():
                self.add_node(progress)
                return True
            progress(f"already running (state in {self.state_dir})")
            return False
        if self.processes():
            progress("found a partly running platform; stopping it first")
            self.down(progress, purge=True)
        binaries = ensure_binaries(progress)
        ensure_state_dir(self.state_dir)  # again: the partly running one was purged
        # Pods on a node reach the apiserver at the kubernetes Service's ClusterIP (the first
        # address of the range) and at the node IP it advertises: both must be in its cert.
        ensure_pki(self.pki, (str(ipaddress.IPv4Network(SERVICE_CIDR)[1]), NODE_IP))
        _ensure_audit_signing_key(self.audit_signing_key_file)
        ports = {
            name: free_port()
            for name in ("etcd", "etcd-peer", "kube-apiserver", "kube-controller-manager")
        }
        self._ports_file.write_text(json.dumps(ports))
        started: list[Process] = []
        try:
            progress("starting etcd")
            started.append(self._start_etcd(binaries, ports))
            self._wait(
                started[-1],
                lambda: _http_ok(f"https://127.0.0.1:{ports['etcd']}/health", self._etcd_context()),
            )
            progress("starting kube-apiserver")
            started.append(self._start_apiserver(binaries, ports))
            self._write_kubeconfigs(ports)
            self._wait(started[-1], lambda: self._get("/readyz") == 200)
            progress("starting kube-controller-manager")
            started.append(self._start_controller_manager(binaries, ports))
            # The ServiceAccount controller creating `default` proves the manager works.
            self._wait(
                started[-1],
                lambda: self._get("/api/v1/namespaces/default/serviceaccounts/default") == 200,
            )
            progress("starting the S3 server")
            # The airlock's key reaches the buckets these settings name (`tre dev up`'s
            # environment), and no other.
            start_s3(self.state_dir / "s3", airlock_scope=AirlockScope.of(Settings()))
        except BaseException:
            # Nothing half-running: stop what did start, keep the logs for the error message.
            for proc in reversed(started):
                proc.stop()
            stop_s3(self.state_dir / "s3")
            save_processes(self._processes_file, [])
            raise
        save_processes(self._processes_file, started)
        progress(f"ready: kubeconfig {self.kubeconfig}")
        if node:
            self.add_node(progress)
        return True

    def add_node(self, progress: Progress) -> None:
        """Start a node (see node.py) beside the running control plane. On failure the node
        is torn down again and the control plane keeps running."""
        check_prerequisites()
        node_binaries = ensure_node_binaries(progress)
        pause = build_pause_image(cache_dir())
        node = self.node()
        try:
            node.start(
                self._node_endpoints(),
                node_binaries,
                ensure_binaries(progress).kubectl,
                [pause],
                self._record,
                progress,
            )
        except BaseException:
            self._stop_node(progress)
            raise
        progress("node: Ready")

    def start_in_node(
        self, name: str, argv: list[str], env: dict[str, str] | None = None
    ) -> Process:
        """Run an extra process inside the node's namespaces, recorded so `down` stops it."""
        proc = self.node().start_in_node(name, argv, env=env)
        self._record(proc)
        return proc

    def expose_from_node(self, name: str, host_port: int, address: str, port: int) -> Process:
        """Show ADDRESS:PORT inside the node (e.g. the hub's proxy) on the host's
        127.0.0.1:HOST_PORT through a relay, recorded so `down` stops it."""
        node = self.node()
        proc = node.start_relay(
            name, node.holder_pid, ["--out-of-node", f"{host_port}={address}:{port}"]
        )
        self._record(proc)
        return proc

    def _record(self, proc: Process) -> None:
        save_processes(self._processes_file, [*self.processes(), proc])

    def _stop_node(self, progress: Progress) -> None:
        procs = self.processes()
        if (
            not any(p.name.startswith(PROCESS_PREFIX) for p in procs)
            and self.node().state() is None
        ):
            return
        stop_node_services(self)  # the CSI driver unmounts while the node still runs
        procs = self.processes()
        self.node().stop(procs, progress)
        save_processes(
            self._processes_file, [p for p in procs if not p.name.startswith(PROCESS_PREFIX)]
        )

    def down(self, progress: Progress, *, purge: bool = True) -> bool:
        """Stop what we started (newest first). Returns False if nothing was running."""
        check_state_dir(self.state_dir)  # its processes.json names the pids to signal
        procs = self.processes()
        was_running = any(p.alive() for p in procs) or s3_status(self.state_dir / "s3") is not None
        # The node first: its kubelet and relay need the apiserver and S3 to stop cleanly.
        self._stop_node(progress)
        stop_s3(self.state_dir / "s3")
        for proc in reversed(procs):
            if proc.alive():
                progress(f"stopping {proc.name} (pid {proc.pid})")
            # and what it started: the hub's services run in sessions of their own
            stop_with_children(proc)
        if purge and self.state_dir.exists():
            shutil.rmtree(self.state_dir)
        return was_running

    # --- components -------------------------------------------------------------------------

    def _start_etcd(self, b: Binaries, ports: dict[str, int]) -> Process:
        p = self.pki
        client = f"https://127.0.0.1:{ports['etcd']}"
        peer = f"https://127.0.0.1:{ports['etcd-peer']}"
        return spawn(
            "etcd",
            [
                str(b.etcd),
                "--name=dev",
                f"--data-dir={self.state_dir / 'etcd'}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                # Whoever writes to etcd is cluster-admin (and root, with a node), and any
                # local user can reach 127.0.0.1: TLS, and only certificates of etcd's own CA
                # (certs.py: the apiserver's is the one client certificate it signs).
                f"--cert-file={p.etcd_cert}",
                f"--key-file={p.etcd_key}",
                "--client-cert-auth",
                f"--trusted-ca-file={p.etcd_ca_cert}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=dev={peer}",
                f"--peer-cert-file={p.etcd_cert}",
                f"--peer-key-file={p.etcd_key}",
                "--peer-client-cert-auth",
                f"--peer-trusted-ca-file={p.etcd_ca_cert}",
                "--unsafe-no-fsync",  # throwaway data: durability is not worth the latency here
                "--log-level=warn",
            ],
            self.state_dir / "etcd.log",
        )

    def _start_apiserver(self, b: Binaries, ports: dict[str, int]) -> Process:
        p = self.pki
        # Reaching kubelets (exec, logs, port-forward): through the node's CONNECT proxy
        # (relay.py), because the host has no route into the node. Without a node the socket
        # does not exist and there is no kubelet to reach either.
        egress = self.state_dir / "egress-selector.yaml"
        egress.write_text(
            yaml.safe_dump(egress_selector_config(node_egress_socket(self.state_dir)))
        )
        ensure_client_cert(p, KUBELET_CLIENT[0], KUBELET_CLIENT[1], KUBELET_CLIENT[2])
        return spawn(
            "kube-apiserver",
            [
                str(b.kube_apiserver),
                f"--etcd-servers=https://127.0.0.1:{ports['etcd']}",
                f"--etcd-cafile={p.etcd_ca_cert}",
                f"--etcd-certfile={p.client_cert(ETCD_CLIENT)}",
                f"--etcd-keyfile={p.client_key(ETCD_CLIENT)}",
                "--bind-address=127.0.0.1",
                # The endpoint of Service default/kubernetes: where pods on the node reach the
                # apiserver (the relay listens there). A loopback address would give the Service
                # no endpoint at all, and a pod's loopback is its own.
                f"--advertise-address={NODE_IP}",
                f"--secure-port={ports['kube-apiserver']}",
                f"--tls-cert-file={p.serving_cert}",
                f"--tls-private-key-file={p.serving_key}",
                f"--client-ca-file={p.ca_cert}",
                "--service-account-issuer=https://kubernetes.default.svc",
                f"--service-account-key-file={p.sa_public}",
                f"--service-account-signing-key-file={p.sa_private}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--authorization-mode=Node,RBAC",
                # On by default in 1.36; named so that a default change cannot silently drop them.
                "--enable-admission-plugins=NamespaceLifecycle,ServiceAccount,PodSecurity,"
                "ValidatingAdmissionPolicy,ResourceQuota,LimitRanger,NodeRestriction",
                # Privileged pods must be refused by PodSecurity, not by this switch, so that the
                # PSA tests prove what they claim.
                "--allow-privileged=true",
                f"--egress-selector-config-file={egress}",
                f"--kubelet-client-certificate={p.client_cert(KUBELET_CLIENT[0])}",
                f"--kubelet-client-key={p.client_key(KUBELET_CLIENT[0])}",
                # The proxy connects to addresses only (the node's name resolves nowhere).
                "--kubelet-preferred-address-types=InternalIP",
                "--profiling=false",
                "--v=1",
            ],
            self.state_dir / "kube-apiserver.log",
        )

    def _start_controller_manager(self, b: Binaries, ports: dict[str, int]) -> Process:
        p = self.pki
        kubeconfig = self.state_dir / "controller-manager.kubeconfig"
        return spawn(
            "kube-controller-manager",
            [
                str(b.kube_controller_manager),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={ports['kube-controller-manager']}",
                f"--cert-dir={self.state_dir / 'controller-manager-certs'}",
                f"--service-account-private-key-file={p.sa_private}",
                f"--root-ca-file={p.ca_cert}",
                "--use-service-account-credentials=true",
                f"--cluster-signing-cert-file={p.ca_cert}",
                f"--cluster-signing-key-file={p.ca_key}",
                "--leader-elect=false",  # one replica; no need to wait for a lease
                "--profiling=false",
                "--v=1",
            ],
            self.state_dir / "kube-controller-manager.log",
        )

    def _write_kubeconfigs(self, ports: dict[str, int]) -> None:
        server = f"https://127.0.0.1:{ports['kube-apiserver']}"
        write_kubeconfig(self.kubeconfig, server, self.pki, "admin", "tre-admin")
        write_kubeconfig(
            self.state_dir / "controller-manager.kubeconfig",
            server,
            self.pki,
            "controller-manager",
            "kube-controller-manager",
        )

    # --- helpers ----------------------------------------------------------------------------

    def _ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        ctx.load_cert_chain(str(self.pki.client_cert("admin")), str(self.pki.client_key("admin")))
        return ctx

    def _etcd_context(self) -> ssl.SSLContext:
        """TLS to etcd as the apiserver (the one client etcd accepts)."""
        ctx = ssl.create_default_context(cafile=str(self.pki.etcd_ca_cert))
        ctx.load_cert_chain(
            str(self.pki.client_cert(ETCD_CLIENT)), str(self.pki.client_key(ETCD_CLIENT))
        )
        return ctx

    def _get(self, path: str) -> int:
        """HTTP status of an admin GET against the apiserver; 0 when it does not answer."""
        try:
            with urllib.request.urlopen(  # noqa: S310 - fixed https URL on 127.0.0.1
                self.api_url() + path, context=self._ssl_context(), timeout=5
            ) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return exc.code
        except (OSError, ValueError):
            return 0

    def _wait(self, proc: Process, ready: Callable[[], bool]) -> None:
        wait_until_ready([proc], ready, proc.name, START_TIMEOUT)


def _ensure_audit_signing_key(path: Path) -> None:
    """A new Ed25519 key as PEM (PKCS#8), mode 0600 from the start; an existing one is kept
    (a new key would make the entries signed with the old one unverifiable)."""
    if path.exists():
        return
    pem = Ed25519PrivateKey.generate().private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)


def _http_ok(url: str, context: ssl.SSLContext) -> bool:
    try:
        with urllib.request.urlopen(  # noqa: S310 - loopback
            url, timeout=2, context=context
        ) as response:
            return bool(response.status == 200)
    except (OSError, ValueError):
        return False
