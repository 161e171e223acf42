#!/usr/bin/env bash
# Runs every benchmark of tests/e2e/benches (release builds) and writes BENCHMARKS.md: the
# machine, the date, then each benchmark's own Markdown section. Nothing here asserts a
# timing; the numbers are for people to compare against the targets and earlier runs.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
cargo build --release --locked -p maos-agent-runner --bin maos-agent -p maos-e2e --bin maos-testbed

out=target/bench
mkdir -p "$out"
rm -f "$out"/*.md
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
for source in tests/e2e/benches/*.rs; do
  bench=$(basename "$source" .rs)
  echo "benchmark: $bench" >&2
  cargo bench --locked -q -p maos-e2e --bench "$bench" > "$out/$bench.md"
done

{
  echo "# Benchmarks"
  echo
  echo "Written by \`make bench\` (scripts/bench.sh); numbers from one run, never asserted in tests."
  echo "These machines are shared: compare against a baseline measured in the same run."
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "- machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), Linux $(uname -r)"
  echo "- load average before the run: $load_before"
  echo "- $(rustc --version)"
  echo
  cat "$out"/*.md
} > BENCHMARKS.md
echo "wrote BENCHMARKS.md" >&2
