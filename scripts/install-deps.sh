#!/usr/bin/env bash
# Installs the system packages MAOS's tests need, when they are missing. Idempotent; needs root
# (or sudo) only when something must be installed.
set -euo pipefail

# command the tests run -> Debian package that provides it.
declare -A NEEDED=(
  [redis-server]=redis-server
  [redis-cli]=redis-tools
  [redis-benchmark]=redis-tools
)

missing=()
for command in "${!NEEDED[@]}"; do
  command -v "$command" >/dev/null 2>&1 || missing+=("${NEEDED[$command]}")
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "system packages: installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The end-to-end tests drive the real kubectl. Debian's own archive has no kubectl package, so
# it cannot be installed from here: it comes with the machine image (Google Cloud's `kubectl`
# package) or from the Kubernetes project's releases.
if ! command -v kubectl >/dev/null 2>&1; then
  echo "kubectl not found: the end-to-end tests need kubectl 1.32 or newer on the PATH" >&2
  exit 1
fi

echo "system packages: all present"
