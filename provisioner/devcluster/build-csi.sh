#!/usr/bin/env bash
# Build the dataset CSI driver's node binaries, cached by version.
#
#   s3driver           <- github.com/yandex-cloud/k8s-csi-s3 $CSI_S3_VERSION (ru.yandex.s3.csi)
#   tre-csi-registrar  <- ./csi-registrar beside this script (our registrar: main.go says why)
#
# The driver mounts with `rclone mount` (Debian package rclone; fuse3 for fusermount3).
# Kept apart from build-binaries.sh (control plane, node) so the two evolve without conflicts;
# binaries.py pins the versions (docs/architecture.md, "Datasets reach the pod", says why
# this driver and not geesefs or Mountpoint).
#
# The driver is built inside its module directory as the Go module proxy serves it (checksum-
# verified by go.sum), copied out of the read-only module cache.
#
# Output: $TRE_CACHE_DIR/bin/csi-s3-$CSI_S3_VERSION/
#   s3driver, tre-csi-registrar, and for clients such as the tests the protocols they speak:
#   csi.proto (the CSI spec the driver was built against), pluginregistration.proto (kubelet).
# A second run finds the binaries and returns at once.
set -euo pipefail

CSI_S3_VERSION="${CSI_S3_VERSION:?pinned in provisioner/devcluster/binaries.py}"
CACHE="${TRE_CACHE_DIR:-$HOME/.cache/ucloud-tre}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export CGO_ENABLED=0          # static binaries: they run inside the node's mount namespace
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"

log() { printf '[build-csi %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

module_dir() {  # MODULE@VERSION -> its directory in the module cache (downloaded if needed)
  (cd / && GOFLAGS=-mod=mod go mod download -json "$1") \
    | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d.get("Dir") or sys.exit(d.get("Error")))'
}

out="$CACHE/bin/csi-s3-$CSI_S3_VERSION"
if [[ -x "$out/s3driver" && -x "$out/tre-csi-registrar" && -f "$out/csi.proto" &&
      -f "$out/pluginregistration.proto" ]]; then
  log "k8s-csi-s3 $CSI_S3_VERSION: cached at $out"
  echo "$out"
  exit 0
fi

start=$SECONDS
work="$CACHE/build/csi-s3-$CSI_S3_VERSION"
rm -rf "$work" "$out.tmp"; mkdir -p "$work" "$out.tmp"
log "k8s-csi-s3 $CSI_S3_VERSION: downloading"
cp -r "$(module_dir "github.com/yandex-cloud/k8s-csi-s3@$CSI_S3_VERSION")/." "$work/"
chmod -R u+w "$work"
log "k8s-csi-s3 $CSI_S3_VERSION: compiling ./cmd/s3driver"
(cd "$work" && go build -p "${BUILD_JOBS:-2}" -trimpath -ldflags="-s -w" -o "$out.tmp/s3driver" ./cmd/s3driver)
# The CSI spec version the driver requires, so a client speaks exactly its protocol.
spec="$(cd "$work" && go list -m -f '{{.Path}}@{{.Version}}' github.com/container-storage-interface/spec)"
cp "$(module_dir "$spec")/csi.proto" "$out.tmp/csi.proto"
# The kubelet's plugin registration API the registrar serves (its version is in its go.mod).
kubelet="$(cd "$HERE/csi-registrar" && go list -m -f '{{.Path}}@{{.Version}}' k8s.io/kubelet)"
cp "$(module_dir "$kubelet")/pkg/apis/pluginregistration/v1/api.proto" "$out.tmp/pluginregistration.proto"
rm -rf "$work"
log "tre-csi-registrar: compiling"
(cd "$HERE/csi-registrar" && go build -p "${BUILD_JOBS:-2}" -trimpath -ldflags="-s -w" -o "$out.tmp/tre-csi-registrar" .)
rm -rf "$out"; mv "$out.tmp" "$out"
log "k8s-csi-s3 $CSI_S3_VERSION and the registrar: built in $((SECONDS - start))s -> $out"
echo "$out"
