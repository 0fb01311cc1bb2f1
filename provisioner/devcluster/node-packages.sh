#!/usr/bin/env bash
# Install the Debian packages a local node needs (node-packages.txt beside this script), and
# those of any further list given as an argument (.ci/run adds tests/test-packages.txt).
# Idempotent: asks dpkg first and only runs apt-get when something is missing.
# By hand: sudo provisioner/devcluster/node-packages.sh
set -euo pipefail
lists=("$(dirname "$0")/node-packages.txt" "$@")
mapfile -t packages < <(grep -hvE '^\s*(#|$)' "${lists[@]}")
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if [[ ${#missing[@]} -eq 0 ]]; then
  echo "node packages: all installed (${packages[*]})"
  exit 0
fi
echo "node packages: installing ${missing[*]}"
apt-get update
DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
