#!/usr/bin/env bash
# Build the local control plane's binaries from upstream Go modules, cached by version.
#
#   kube-apiserver, kube-controller-manager, kubectl  <- k8s.io/kubernetes  $K8S_VERSION
#   etcd                                             <- go.etcd.io/etcd/server/v3 $ETCD_VERSION
#
# With NODE=1 also the node's binaries (only when a node is asked for: they cost ~10 min cold):
#   kubelet, kube-scheduler, kube-proxy <- k8s.io/kubernetes $K8S_VERSION (the same wrapper module)
#   containerd, containerd-shim-runc-v2, ctr <- github.com/containerd/containerd/v2 $CONTAINERD_VERSION
#   runc                             <- github.com/opencontainers/runc $RUNC_VERSION (cgo + libseccomp)
#   kube-router                      <- github.com/cloudnativelabs/kube-router/v2 $KUBE_ROUTER_VERSION
#
# With HELM=1 only the chart tool (make helm; the chart tests use it, nothing at run time does):
#   helm                             <- helm.sh/helm/v4 $HELM_VERSION
#
# Neither module can be `go install`ed directly: their go.mod files replace sibling modules
# with local paths (./staging/src/k8s.io/..., ../api, ...) and replaces in a dependency are
# ignored. So we write a throwaway wrapper module with one `replace` per sibling, derived
# from the release's own go.mod (never hard-coded: the list changes between releases).
#
# Output: $TRE_CACHE_DIR/bin/k8s-$K8S_VERSION/{kube-apiserver,kube-controller-manager,kubectl}
#         $TRE_CACHE_DIR/bin/etcd-$ETCD_VERSION/etcd
#   NODE=1: $TRE_CACHE_DIR/bin/k8s-node-$K8S_VERSION/{kubelet,kube-scheduler,kube-proxy}
#           $TRE_CACHE_DIR/bin/containerd-$CONTAINERD_VERSION/{containerd,containerd-shim-runc-v2,ctr}
#           $TRE_CACHE_DIR/bin/runc-$RUNC_VERSION/runc
#           $TRE_CACHE_DIR/bin/kube-router-$KUBE_ROUTER_VERSION/kube-router
#   HELM=1: $TRE_CACHE_DIR/bin/helm-$HELM_VERSION/helm
# A second run finds the binaries and returns at once.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:?pinned in provisioner/devcluster/binaries.py}"
ETCD_VERSION="${ETCD_VERSION:?pinned in provisioner/devcluster/binaries.py}"
CACHE="${TRE_CACHE_DIR:-$HOME/.cache/ucloud-tre}"
export CGO_ENABLED=0          # static binaries, no host C libraries
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"

log() { printf '[build-binaries %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# fail_go_fetch LOGFILE WHAT: the module proxy here refuses some module versions with
# "403 Forbidden" (kube-router v2.11.x, a netlink pseudo-version). Say so plainly: the fix
# is to pin a version it serves, never to fall back silently to another one.
fail_go_fetch() {
  local logfile="$1" what="$2"
  tail -30 "$logfile" >&2
  if grep -q '403 Forbidden' "$logfile"; then
    log "$what: the Go module proxy refused a module version (403 Forbidden, above)."
    log "Pin a version it serves (see 'go list -m -versions MODULE') in provisioner/devcluster/binaries.py,"
    log "or for a dependency add a 'replace' to the wrapper module in build-binaries.sh."
  fi
  exit 1
}

# replaces_for MODULE@VERSION PREFIX_REGEX SIBLING_VERSION
# Prints one "replace M => M V" line per local-path replace in the module's own go.mod.
replaces_for() {
  local modver="$1" sibling_version="$2" gomod
  gomod="$(cd / && GOFLAGS=-mod=mod go mod download -json "$modver" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
  python3 - "$gomod" "$sibling_version" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
version = sys.argv[2]
major = int(version.lstrip("v").split(".")[0])
# Collect "A => ./path" or "A => ../path" in both block and single-line replace forms.
for mod in re.findall(r'^\s*(?:replace\s+)?(\S+)\s+=>\s+\.\.?/\S+\s*$', text, re.M):
    # A v2+ tag is only valid for a module path with the /vN suffix (etcd also replaces its
    # unversioned umbrella module, which nothing in the server imports).
    if major >= 2 and not mod.endswith(f"/v{major}"):
        continue
    print(f"replace {mod} => {mod} {version}")
PY
}

# build_wrapper name module version sibling_version outdir ldflags expected_s pkg...
# Extra lines for the wrapper's go.mod (e.g. a `replace` for a refused dependency) come from
# $EXTRA_GOMOD.
build_wrapper() {
  local name="$1" module="$2" version="$3" sibling_version="$4" outdir="$5" ldflags="$6"
  local expected="$7"
  shift 7
  local work="$CACHE/build/$name-$version"
  mkdir -p "$work" "$outdir"
  cd "$work"
  log "$name $version: preparing wrapper module in $work"
  {
    echo "module tre.local/build/$name"
    echo
    echo "go $(go env GOVERSION | sed -E 's/^go([0-9]+\.[0-9]+).*/\1/')"
    echo
    echo "require $module $version"
    echo
    [[ -z "$sibling_version" ]] || replaces_for "$module@$version" "$sibling_version"
    echo "${EXTRA_GOMOD:-}"
  } > go.mod
  log "$name $version: resolving dependencies (first run downloads ~1 GB of modules)"
  # Pin every package to the release: a bare `go get pkg` would upgrade to the newest tag.
  go get "${@/%/@$version}" >/dev/null 2>go-get.log || fail_go_fetch go-get.log "$name $version"
  go_build "$name" "$version" "$outdir" "$ldflags" "$expected" "$@"
}

# go_build name version outdir ldflags expected_s pkg...  (in the current module)
go_build() {
  local name="$1" version="$2" outdir="$3" ldflags="$4" expected="$5"
  shift 5
  log "$name $version: compiling $* (first run on 2 cores: ~${expected}s)"
  local start=$SECONDS
  # go build prints nothing while it compiles: a heartbeat with the elapsed time against the
  # measured cold time (docs/development.md) tells a person it is still working.
  ( while sleep 30 >/dev/null 2>&1; do   # sleep must not hold our stderr pipe open
      log "$name $version: still compiling, $((SECONDS - start))s elapsed (cold: ~${expected}s)"
    done ) &
  local heartbeat=$!
  local status=0
  go build -p "${BUILD_JOBS:-2}" -trimpath ${BUILD_TAGS:+-tags "$BUILD_TAGS"} \
    -ldflags="-s -w $ldflags" -o "$outdir/" "$@" 2>go-build.log || status=$?
  kill "$heartbeat" 2>/dev/null; wait "$heartbeat" 2>/dev/null || true
  [[ $status -eq 0 ]] || { log "$name $version: go build failed (exit $status)"; fail_go_fetch go-build.log "$name $version"; }
  log "$name $version: built in $((SECONDS - start))s -> $outdir"
}

if [[ "${HELM:-0}" == 1 ]]; then
  HELM_VERSION="${HELM_VERSION:?pinned in provisioner/devcluster/binaries.py}"
  helm_dir="$CACHE/bin/helm-$HELM_VERSION"
  if [[ -x "$helm_dir/helm" ]]; then
    log "helm $HELM_VERSION: cached at $helm_dir"
  else
    # helm's go.mod has no local replaces. The version is stamped the way its Makefile does
    # for a tag (empty metadata), or `helm version` would report "v4.3" without the patch.
    build_wrapper helm helm.sh/helm/v4 "$HELM_VERSION" "" "$helm_dir.tmp" \
      "-X helm.sh/helm/v4/internal/version.version=$HELM_VERSION -X helm.sh/helm/v4/internal/version.metadata= -X helm.sh/helm/v4/internal/version.gitTreeState=clean" \
      250 helm.sh/helm/v4/cmd/helm
    rm -rf "$helm_dir"; mv "$helm_dir.tmp" "$helm_dir"
  fi
  echo "$helm_dir"
  exit 0
fi

k8s_dir="$CACHE/bin/k8s-$K8S_VERSION"
etcd_dir="$CACHE/bin/etcd-$ETCD_VERSION"

if [[ -x "$etcd_dir/etcd" ]]; then
  log "etcd $ETCD_VERSION: cached at $etcd_dir"
else
  # etcd's server module is package main; its siblings (api, client/pkg, client/v3, pkg,
  # raft...) are released at the same tag.
  build_wrapper etcd go.etcd.io/etcd/server/v3 "$ETCD_VERSION" "$ETCD_VERSION" "$etcd_dir.tmp" "" 120 \
    go.etcd.io/etcd/server/v3
  mv "$etcd_dir.tmp/server" "$etcd_dir.tmp/etcd"   # go names it after the package dir
  rm -rf "$etcd_dir"; mv "$etcd_dir.tmp" "$etcd_dir"
fi

# Staging modules are released as v0.<minor>.<patch> for kubernetes v1.<minor>.<patch>.
# A module build is not stamped with its version (it would report v0.0.0-master, and
# kubectl would warn about version skew), so stamp it the way the upstream Makefile does.
minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
stamp=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  stamp+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  stamp+=" -X $pkg.gitTreeState=clean"
done

if [[ -x "$k8s_dir/kube-apiserver" && -x "$k8s_dir/kube-controller-manager" && -x "$k8s_dir/kubectl" ]]; then
  log "kubernetes $K8S_VERSION: cached at $k8s_dir"
else
  build_wrapper k8s k8s.io/kubernetes "$K8S_VERSION" "v0.${K8S_VERSION#v1.}" "$k8s_dir.tmp" "$stamp" 570 \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kubectl
  rm -rf "$k8s_dir"; mv "$k8s_dir.tmp" "$k8s_dir"
fi

echo "$k8s_dir"
echo "$etcd_dir"

[[ "${NODE:-0}" == 1 ]] || exit 0

CONTAINERD_VERSION="${CONTAINERD_VERSION:?pinned in provisioner/devcluster/binaries.py}"
RUNC_VERSION="${RUNC_VERSION:?pinned in provisioner/devcluster/binaries.py}"
KUBE_ROUTER_VERSION="${KUBE_ROUTER_VERSION:?pinned in provisioner/devcluster/binaries.py}"
node_dir="$CACHE/bin/k8s-node-$K8S_VERSION"
containerd_dir="$CACHE/bin/containerd-$CONTAINERD_VERSION"
runc_dir="$CACHE/bin/runc-$RUNC_VERSION"
router_dir="$CACHE/bin/kube-router-$KUBE_ROUTER_VERSION"

if [[ -x "$node_dir/kubelet" && -x "$node_dir/kube-scheduler" && -x "$node_dir/kube-proxy" ]]; then
  log "kubelet, kube-scheduler, kube-proxy $K8S_VERSION: cached at $node_dir"
else
  # The same wrapper as the control plane: `go get` of these commands only adds requirements
  # (the replace list already covers every staging module, cri-streaming included).
  build_wrapper k8s k8s.io/kubernetes "$K8S_VERSION" "v0.${K8S_VERSION#v1.}" "$node_dir.tmp" "$stamp" 350 \
    k8s.io/kubernetes/cmd/kubelet \
    k8s.io/kubernetes/cmd/kube-scheduler \
    k8s.io/kubernetes/cmd/kube-proxy
  rm -rf "$node_dir"; mv "$node_dir.tmp" "$node_dir"
fi

if [[ -x "$containerd_dir/containerd" && -x "$containerd_dir/containerd-shim-runc-v2" && -x "$containerd_dir/ctr" ]]; then
  log "containerd $CONTAINERD_VERSION: cached at $containerd_dir"
else
  # containerd's go.mod has no local replaces: its own module is the build module.
  build_wrapper containerd github.com/containerd/containerd/v2 "$CONTAINERD_VERSION" "" "$containerd_dir.tmp" \
    "-X github.com/containerd/containerd/v2/version.Version=$CONTAINERD_VERSION" 160 \
    github.com/containerd/containerd/v2/cmd/containerd \
    github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2 \
    github.com/containerd/containerd/v2/cmd/ctr
  rm -rf "$containerd_dir"; mv "$containerd_dir.tmp" "$containerd_dir"
fi

if [[ -x "$runc_dir/runc" ]]; then
  log "runc $RUNC_VERSION: cached at $runc_dir"
else
  # The runc containerd pins (its script/setup/runc-version). cgo + libseccomp: without the
  # seccomp tag runc cannot apply RuntimeDefault profiles, which the PSA restricted level demands.
  command -v gcc >/dev/null && [[ -e /usr/include/seccomp.h ]] || {
    log "runc needs gcc and libseccomp-dev: apt-get install -y gcc libseccomp-dev"; exit 1; }
  CGO_ENABLED=1 BUILD_TAGS=seccomp build_wrapper runc github.com/opencontainers/runc "$RUNC_VERSION" "" \
    "$runc_dir.tmp" "-X main.version=${RUNC_VERSION#v}" 20 github.com/opencontainers/runc
  rm -rf "$runc_dir"; mv "$runc_dir.tmp" "$runc_dir"
fi

if [[ -x "$router_dir/kube-router" ]]; then
  log "kube-router $KUBE_ROUTER_VERSION: cached at $router_dir"
else
  # kube-router pins a netlink pseudo-version the module proxy here refuses (403); v1.3.1 is
  # served and kube-router compiles against it.
  EXTRA_GOMOD="replace github.com/vishvananda/netlink => github.com/vishvananda/netlink ${NETLINK_VERSION:?}" \
    build_wrapper kube-router github.com/cloudnativelabs/kube-router/v2 "$KUBE_ROUTER_VERSION" "" \
    "$router_dir.tmp" "-X github.com/cloudnativelabs/kube-router/v2/pkg/version.Version=$KUBE_ROUTER_VERSION" 205 \
    github.com/cloudnativelabs/kube-router/v2/cmd/kube-router
  rm -rf "$router_dir"; mv "$router_dir.tmp" "$router_dir"
fi

echo "$node_dir"
echo "$containerd_dir"
echo "$runc_dir"
echo "$router_dir"
