#!/usr/bin/env bash
# Build the local control plane's binaries from upstream Go modules, cached by version.
#
#   kube-apiserver, kube-controller-manager, kubectl  <- k8s.io/kubernetes  $K8S_VERSION
#   etcd                                             <- go.etcd.io/etcd/server/v3 $ETCD_VERSION
#
# Neither module can be `go install`ed directly: their go.mod files replace sibling modules
# with local paths (./staging/src/k8s.io/..., ../api, ...) and replaces in a dependency are
# ignored. So we write a throwaway wrapper module with one `replace` per sibling, derived
# from the release's own go.mod (never hard-coded: the list changes between releases).
#
# Output: $TRE_CACHE_DIR/bin/k8s-$K8S_VERSION/{kube-apiserver,kube-controller-manager,kubectl}
#         $TRE_CACHE_DIR/bin/etcd-$ETCD_VERSION/etcd
# A second run finds the binaries and returns at once.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:?pinned in provisioner/devcluster/binaries.py}"
ETCD_VERSION="${ETCD_VERSION:?pinned in provisioner/devcluster/binaries.py}"
CACHE="${TRE_CACHE_DIR:-$HOME/.cache/ucloud-tre}"
export CGO_ENABLED=0          # static binaries, no host C libraries
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"

log() { printf '[build-binaries %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

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

build_wrapper() {  # name module version sibling_version outdir ldflags expected_s pkg...
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
    replaces_for "$module@$version" "$sibling_version"
  } > go.mod
  log "$name $version: resolving dependencies (first run downloads ~1 GB of modules)"
  # Pin every package to the release: a bare `go get pkg` would upgrade to the newest tag.
  go get "${@/%/@$version}" >/dev/null 2>go-get.log || { tail -30 go-get.log >&2; exit 1; }
  log "$name $version: compiling $* (first run on 2 cores: ~${expected}s)"
  local start=$SECONDS
  # go build prints nothing while it compiles: a heartbeat with the elapsed time against the
  # measured cold time (docs/development.md) tells a person it is still working.
  ( while sleep 30 >/dev/null 2>&1; do   # sleep must not hold our stderr pipe open
      log "$name $version: still compiling, $((SECONDS - start))s elapsed (cold: ~${expected}s)"
    done ) &
  local heartbeat=$!
  local status=0
  go build -p "${BUILD_JOBS:-2}" -trimpath -ldflags="-s -w $ldflags" -o "$outdir/" "$@" \
    || status=$?
  kill "$heartbeat" 2>/dev/null; wait "$heartbeat" 2>/dev/null || true
  [[ $status -eq 0 ]] || { log "$name $version: go build failed (exit $status)"; exit "$status"; }
  log "$name $version: built in $((SECONDS - start))s -> $outdir"
}

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

if [[ -x "$k8s_dir/kube-apiserver" && -x "$k8s_dir/kube-controller-manager" && -x "$k8s_dir/kubectl" ]]; then
  log "kubernetes $K8S_VERSION: cached at $k8s_dir"
else
  # Staging modules are released as v0.<minor>.<patch> for kubernetes v1.<minor>.<patch>.
  # A module build is not stamped with its version (it would report v0.0.0-master, and
  # kubectl would warn about version skew), so stamp it the way the upstream Makefile does.
  minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
  stamp=""
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    stamp+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    stamp+=" -X $pkg.gitTreeState=clean"
  done
  build_wrapper k8s k8s.io/kubernetes "$K8S_VERSION" "v0.${K8S_VERSION#v1.}" "$k8s_dir.tmp" "$stamp" 570 \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kubectl
  rm -rf "$k8s_dir"; mv "$k8s_dir.tmp" "$k8s_dir"
fi

echo "$k8s_dir"
echo "$etcd_dir"
