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
LUPA_VERSION=2.8
PYYAML_VERSION=6.0.3
venv_versions() {
  [ -x "$VENV/bin/python" ] || return 1
  "$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("lupa"), m.version("PyYAML"))' 2>/dev/null
}
if versions=$(venv_versions) && [ "$versions" = "$LUPA_VERSION $PYYAML_VERSION" ]; then
  echo "argocd: $VENV already has lupa $LUPA_VERSION and PyYAML $PYYAML_VERSION"
else
  mkdir -p "$(dirname "$VENV")"
  # --clear: a half-made or other-version venv is rebuilt rather than patched.
  python3 -m venv --clear "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    "lupa==$LUPA_VERSION" "PyYAML==$PYYAML_VERSION"
  if ! versions=$(venv_versions) || [ "$versions" != "$LUPA_VERSION $PYYAML_VERSION" ]; then
    echo "argocd: installing lupa $LUPA_VERSION and PyYAML $PYYAML_VERSION into $VENV failed" >&2
    exit 1
  fi
  echo "argocd: installed lupa $LUPA_VERSION and PyYAML $PYYAML_VERSION into $VENV"
fi

# The runner prints how long the whole check took (venv included) just before its closing
# `N passed, M failed` line.
ARGOCD_CHECK_STARTED_NS=$started_ns exec "$VENV/bin/python" scripts/argocd-lua-test.py "$@"
