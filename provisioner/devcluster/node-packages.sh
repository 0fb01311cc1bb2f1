#!/usr/bin/env bash
# Install the Debian packages a local node needs (node-packages.txt beside this script).
# Idempotent: asks dpkg first and only runs apt-get when something is missing.
# Called by .ci/run before the tests; by hand: sudo provisioner/devcluster/node-packages.sh
set -euo pipefail
list="$(dirname "$0")/node-packages.txt"
mapfile -t packages < <(grep -vE '^\s*(#|$)' "$list")
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
