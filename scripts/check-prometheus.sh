#!/usr/bin/env bash
# Checks the Helm chart's monitoring files: the alert rules (promtool check rules), their unit
# tests (promtool test rules), and that the rules and the Grafana dashboard use only metric
# names, labels and label values the code really exports (charts/maos/tests-prometheus/
# check_metric_names.py, which also parses the dashboard's queries with promtool).
#
#   scripts/check-prometheus.sh [SCRAPE_FILE...]   all checks; the name check also compares
#                                                  with real /metrics bodies: the files given,
#                                                  else $CARGO_TARGET_DIR/metrics-scrape/*.txt
#                                                  when tests/e2e/tests/metrics_lint.rs saved them
#   scripts/check-prometheus.sh --install-only     only make sure promtool is there (for deps)
#
# promtool: $PROMTOOL if set, else ${CARGO_TARGET_DIR:-target}/tools/promtool, else promtool on
# the PATH; if none, it is taken out of Debian's `prometheus` package without installing the
# package: `apt-get download` + `dpkg-deb --fsys-tarfile | tar`, promtool alone into
# target/tools/. Installing the package would pull a dozen JavaScript/font packages, create a
# system user and /var/lib/prometheus, and its postinst runs `invoke-rc.d prometheus start`:
# without systemd (as here) that starts a Prometheus server on :9090 unless a policy-rc.d
# forbids it. Extracting needs no root once apt's lists exist, changes nothing outside the build
# directory, starts nothing, and fetches one 19 MB file. Idempotent: a present promtool is used.
#
# Prints a closing `check-prometheus: N passed, M failed` line; exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

TARGET_DIR="${CARGO_TARGET_DIR:-target}"
TOOLS="$TARGET_DIR/tools"
RULES=charts/maos/files/prometheus-rules.yaml
RULE_TESTS=charts/maos/tests-prometheus/rules_test.yaml
NAME_CHECK=charts/maos/tests-prometheus/check_metric_names.py

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

find_promtool() {
  if [ -n "${PROMTOOL:-}" ]; then
    [ -x "$PROMTOOL" ] && { echo "$PROMTOOL"; return 0; }
    echo "PROMTOOL=$PROMTOOL is not an executable" >&2
    return 1
  fi
  if [ -x "$TOOLS/promtool" ]; then echo "$TOOLS/promtool"; return 0; fi
  command -v promtool 2>/dev/null
}

install_promtool() {
  mkdir -p "$TOOLS"
  export DEBIAN_FRONTEND=noninteractive
  # `apt-get download` needs the package lists; a fresh machine may have none yet.
  if ! apt-cache show prometheus >/dev/null 2>&1; then
    echo "promtool: updating apt's package lists"
    as_root apt-get update -qq
  fi
  local work
  work="$(mktemp -d "$TOOLS/.prometheus-deb.XXXXXX")"
  trap 'rm -rf "$work"' RETURN
  # apt downloads as its sandbox user _apt, which must be able to write here.
  if [ "$(id -u)" -eq 0 ] && id _apt >/dev/null 2>&1; then chown _apt "$work"; fi
  (cd "$work" && apt-get download -qq prometheus)
  local deb
  deb="$(ls "$work"/prometheus_*.deb)"
  dpkg-deb --fsys-tarfile "$deb" | tar -xf - -C "$work" ./usr/bin/promtool
  # Atomic: a concurrent run never sees half a binary.
  install -m 0755 "$work/usr/bin/promtool" "$TOOLS/.promtool.new"
  mv -f "$TOOLS/.promtool.new" "$TOOLS/promtool"
  echo "promtool: extracted from $(basename "$deb") into $TOOLS/promtool"
}

PROMTOOL_BIN="$(find_promtool || true)"
if [ -z "$PROMTOOL_BIN" ]; then
  install_promtool
  PROMTOOL_BIN="$TOOLS/promtool"
fi
echo "promtool: $PROMTOOL_BIN ($("$PROMTOOL_BIN" --version 2>&1 | head -n1))"
if [ "${1:-}" = "--install-only" ]; then
  exit 0
fi

scrapes=()
if [ $# -gt 0 ]; then
  scrapes=("$@")
else
  for f in "$TARGET_DIR"/metrics-scrape/operator.txt "$TARGET_DIR"/metrics-scrape/agent.txt; do
    [ -f "$f" ] && scrapes+=("$f")
  done
fi

passed=0
failed=0
step() {
  local title="$1"
  shift
  echo "=== $title"
  if "$@"; then
    passed=$((passed + 1))
    echo "--- ok: $title"
  else
    failed=$((failed + 1))
    echo "--- FAILED: $title"
  fi
}

step "promtool check rules $RULES" "$PROMTOOL_BIN" check rules "$RULES"
step "promtool test rules $RULE_TESTS" "$PROMTOOL_BIN" test rules "$RULE_TESTS"
scrape_args=()
for f in "${scrapes[@]}"; do scrape_args+=(--scrape "$f"); done
if [ ${#scrapes[@]} -eq 0 ]; then
  echo "note: no scrape files (run: cargo nextest run -p maos-e2e --test metrics_lint); names are checked against the code alone"
fi
step "metric names in the rules and the dashboard${scrapes:+ (and ${scrapes[*]})}" \
  python3 "$NAME_CHECK" --promtool "$PROMTOOL_BIN" "${scrape_args[@]}"

echo "check-prometheus: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
