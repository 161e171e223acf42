#!/usr/bin/env bash
# Installs the system packages MAOS's tests need, when they are missing. Idempotent; needs root
# (or sudo) only when something must be installed.
set -euo pipefail

# command the tests run -> Debian package that provides it.
declare -A NEEDED=(
  # Filled in as tests start to need services: redis-server, postgresql, an S3 server.
)

missing=()
for command in "${!NEEDED[@]}"; do
  command -v "$command" >/dev/null 2>&1 || missing+=("${NEEDED[$command]}")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "system packages: all present"
  exit 0
fi

echo "system packages: installing ${missing[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
