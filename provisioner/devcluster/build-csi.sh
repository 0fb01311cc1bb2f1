#!/usr/bin/env bash
# Build the dataset CSI driver's node binaries from upstream Go modules, cached by version.
#
#   s3driver  <- github.com/yandex-cloud/k8s-csi-s3 $CSI_S3_VERSION  (CSI plugin, ru.yandex.s3.csi)
#   geesefs   <- github.com/yandex-cloud/geesefs    $GEESEFS_VERSION (the FUSE process it starts)
#
# Kept apart from build-binaries.sh (control plane, node) so the two evolve without conflicts;
# binaries.py pins the versions (docs/architecture.md, "Datasets", says why this driver).
#
# Each module is built inside its own module directory as the Go module proxy serves it, not
# with `go install`: geesefs's go.mod replaces aws-sdk-go with a directory inside the module
# (./s3ext) and `go install` refuses modules with replace directives. The module cache copy is
# read-only and checksum-verified (go.sum), so we copy it to a scratch directory and build there.
#
# Output: $TRE_CACHE_DIR/bin/csi-s3-$CSI_S3_VERSION/s3driver
#         $TRE_CACHE_DIR/bin/geesefs-$GEESEFS_VERSION/geesefs
# A second run finds the binaries and returns at once.
set -euo pipefail

CSI_S3_VERSION="${CSI_S3_VERSION:?pinned in provisioner/devcluster/binaries.py}"
GEESEFS_VERSION="${GEESEFS_VERSION:?pinned in provisioner/devcluster/binaries.py}"
CACHE="${TRE_CACHE_DIR:-$HOME/.cache/ucloud-tre}"
export CGO_ENABLED=0          # static binaries: they run inside the node's mount namespace
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"

log() { printf '[build-csi %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# build_module NAME MODULE VERSION OUTFILE PACKAGE
build_module() {
  local name="$1" module="$2" version="$3" out="$4" package="$5"
  local work="$CACHE/build/$name-$version" dir start
  log "$name $version: downloading $module@$version"
  dir="$(cd / && GOFLAGS=-mod=mod go mod download -json "$module@$version" \
    | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d.get("Dir") or sys.exit(d.get("Error")))')"
  rm -rf "$work"; mkdir -p "$work" "$(dirname "$out")"
  cp -r "$dir/." "$work/"; chmod -R u+w "$work"
  start=$SECONDS
  log "$name $version: compiling $package"
  (cd "$work" && go build -p "${BUILD_JOBS:-2}" -trimpath -ldflags="-s -w" -o "$out.tmp" "$package")
  mv "$out.tmp" "$out"
  rm -rf "$work"
  log "$name $version: built in $((SECONDS - start))s -> $out"
}

driver="$CACHE/bin/csi-s3-$CSI_S3_VERSION/s3driver"
geesefs="$CACHE/bin/geesefs-$GEESEFS_VERSION/geesefs"

if [[ -x "$driver" ]]; then
  log "k8s-csi-s3 $CSI_S3_VERSION: cached at $driver"
else
  build_module csi-s3 github.com/yandex-cloud/k8s-csi-s3 "$CSI_S3_VERSION" "$driver" ./cmd/s3driver
fi

if [[ -x "$geesefs" ]]; then
  log "geesefs $GEESEFS_VERSION: cached at $geesefs"
else
  build_module geesefs github.com/yandex-cloud/geesefs "$GEESEFS_VERSION" "$geesefs" .
fi

echo "$driver"
echo "$geesefs"
