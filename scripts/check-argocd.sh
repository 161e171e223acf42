#!/usr/bin/env bash
# Tests MAOS's Argo CD health checks and resource actions (argocd/): runs every health_test.yaml
# and action_test.yaml with Lua 5.1 in a sandbox like Argo CD's, checks the fixtures against
# crds/, that the generated argocd-cm patch and Helm values are current, and that
# `kubectl kustomize argocd/test-overlay` merges them into argocd-cm (scripts/argocd-lua-test.py).
# The runner's Python packages live in a virtualenv under the build directory, made on the first
# run; a venv that already has the pinned versions is left alone. Arguments go to the runner
# (-v names every passing test). Needs python3 with venv, and kubectl (or kustomize).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
started_ns=$(date +%s%N)

# lupa brings Lua 5.1 (lupa.lua51), the Lua of Argo CD's gopher-lua; PyYAML reads the tests.
VENV="${CARGO_TARGET_DIR:-target}/argocd-venv"
# shellcheck source=scripts/lib/pip-venv.sh
. scripts/lib/pip-venv.sh
pip_venv "$VENV" argocd lupa==2.8 PyYAML==6.0.3

# The runner prints how long the whole check took (venv included) just before its closing
# `N passed, M failed` line.
ARGOCD_CHECK_STARTED_NS=$started_ns exec "$VENV/bin/python" scripts/argocd-lua-test.py "$@"
