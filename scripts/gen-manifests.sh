#!/usr/bin/env bash
# Generates manifests/base (the kustomize base) from the Helm chart with its default values, so
# the operator's objects are written once: `make manifests` runs this; a test fails when the
# committed base differs from what this writes. With --check, compares instead of writing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

HELM="${HELM:-${CARGO_TARGET_DIR:-target}/tools/helm}"
[ -x "$HELM" ] || scripts/install-helm.sh >/dev/null
OUT=manifests/base
if [ "${1:-}" = "--check" ]; then
  OUT=$(mktemp -d)
  trap 'rm -rf "$OUT"' EXIT
fi
mkdir -p "$OUT/crds"
# HOME: helm must not read or write the user's own Helm configuration.
HOME=$(mktemp -d) "$HELM" template maos charts/maos --namespace maos-system >"$OUT/.rendered.yaml"
python3 - "$OUT" <<'PY'
import pathlib, re, sys
out = pathlib.Path(sys.argv[1])
rendered = (out / ".rendered.yaml").read_text()
(out / ".rendered.yaml").unlink()
# Helm's own labels do not belong to a kustomize install.
rendered = re.sub(r"^\s*helm\.sh/chart: .*\n", "", rendered, flags=re.M)
rendered = rendered.replace("app.kubernetes.io/managed-by: Helm", "app.kubernetes.io/managed-by: kustomize")
rendered = re.sub(r"^# Source: .*\n", "", rendered, flags=re.M)
header = "# Generated from charts/maos by scripts/gen-manifests.sh (`make manifests`); do not edit.\n"
(out / "maos.yaml").write_text(header + rendered.lstrip("-\n"))
(out / "namespace.yaml").write_text(header + "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: maos-system\n")
crds = sorted(pathlib.Path("crds").glob("*.yaml"))
for crd in crds:
    (out / "crds" / crd.name).write_text(crd.read_text())
resources = ["namespace.yaml"] + [f"crds/{c.name}" for c in crds] + ["maos.yaml"]
(out / "kustomization.yaml").write_text(
    header
    + "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n"
    + "".join(f"  - {r}\n" for r in resources)
)
PY
if [ "${1:-}" = "--check" ]; then
  if ! diff -ru manifests/base "$OUT" >/dev/null; then
    diff -ru manifests/base "$OUT" || true
    echo "manifests/base is out of date with charts/maos: run make manifests" >&2
    exit 1
  fi
  echo "manifests/base matches charts/maos"
fi
