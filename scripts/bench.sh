#!/usr/bin/env bash
# Runs the benchmarks of tests/e2e/benches (release builds) and writes BENCHMARKS.md: the
# machine, the date, then each benchmark's own Markdown section. Nothing here asserts a
# timing; the numbers are for people to compare against the targets and earlier runs.
#
#   scripts/bench.sh               every benchmark (what `make bench` runs)
#   scripts/bench.sh operator ...  only the named ones; the other sections are kept from the
#                                  BENCHMARKS.md already there (and say which run they are from)
#
# The operator bench runs the release `maos-operator` and `maos-agent` binaries: `cargo bench`
# runs from target/release/deps, and maos_e2e::binaries::find looks beside it, in target/release.
set -euo pipefail
cd "$(dirname "$0")/.."

all=()
for source in tests/e2e/benches/*.rs; do
  all+=("$(basename "$source" .rs)")
done
if [ $# -gt 0 ]; then
  selected=("$@")
  for bench in "${selected[@]}"; do
    [ -f "tests/e2e/benches/$bench.rs" ] || { echo "no benchmark $bench (have: ${all[*]})" >&2; exit 2; }
  done
else
  selected=("${all[@]}")
fi

scripts/install-deps.sh
cargo build --release --locked \
  -p maos-agent-runner --bin maos-agent \
  -p maos-operator --bin maos-operator \
  -p maos-e2e --bin maos-testbed
# Binaries named by the environment would win over the release ones; the numbers must be theirs.
unset MAOS_AGENT_BIN MAOS_OPERATOR_BIN

out=target/bench
mkdir -p "$out"
now=$(date -u '+%Y-%m-%d %H:%M UTC')
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

# Sections of the benchmarks not run now come from the current BENCHMARKS.md: between the
# `<!-- bench: NAME` markers this script writes, or, in a file written before the markers
# existed, its `## ` sections taken in file-name order of the benchmarks.
keep_section() {
  local bench=$1 dest=$2
  [ -f BENCHMARKS.md ] || return 1
  if grep -q '^<!-- bench: ' BENCHMARKS.md; then
    # Without the note a kept section got last time (it is written again below).
    awk -v name="$bench" '
      /^<!-- bench: / { on = ($3 == name); next }
      on && /^_Section kept from the run of .*\._$/ { skip = 1; next }
      on && skip && /^$/ { skip = 0; next }
      on { skip = 0; print }' BENCHMARKS.md > "$dest"
  else
    local index=0 i
    for i in "${!all[@]}"; do [ "${all[$i]}" = "$bench" ] && index=$((i + 1)); done
    awk -v want="$index" '
      /^## / { n++ }
      n == want && n > 0 { print }' BENCHMARKS.md > "$dest"
  fi
  [ -s "$dest" ]
}

previous_date=$(sed -n 's/^- date: \([^(]*[^ (]\).*/\1/p' BENCHMARKS.md 2>/dev/null | head -1)
kept=()
for bench in "${all[@]}"; do
  if [[ " ${selected[*]} " == *" $bench "* ]]; then
    continue
  fi
  # A section kept from an earlier partial run carries its own date in its marker.
  date_of=$(sed -n "s/^<!-- bench: $bench ran \(.*\) -->\$/\1/p" BENCHMARKS.md 2>/dev/null | head -1)
  if keep_section "$bench" "$out/$bench.md"; then
    echo "${date_of:-$previous_date}" > "$out/$bench.date"
    kept+=("$bench")
  else
    rm -f "$out/$bench.md" "$out/$bench.date"
    echo "no earlier section for $bench: run scripts/bench.sh without arguments" >&2
  fi
done

for bench in "${selected[@]}"; do
  echo "benchmark: $bench" >&2
  started=$(date +%s)
  cargo bench --locked -q -p maos-e2e --bench "$bench" > "$out/$bench.md.new"
  mv "$out/$bench.md.new" "$out/$bench.md"
  echo "$now" > "$out/$bench.date"
  echo "benchmark: $bench took $(( $(date +%s) - started )) s" >&2
done

{
  echo "# Benchmarks"
  echo
  echo "Written by \`make bench\` (scripts/bench.sh); numbers from one run, never asserted in tests."
  echo "These machines are shared: compare against a baseline measured in the same run."
  echo
  if [ ${#kept[@]} -eq 0 ]; then
    echo "- date: $now"
  else
    echo "- date: $now (sections run: ${selected[*]}; kept from earlier runs: ${kept[*]})"
  fi
  echo "- machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), Linux $(uname -r)"
  echo "- load average before the run: $load_before"
  echo "- $(rustc --version)"
  for bench in "${all[@]}"; do
    [ -s "$out/$bench.md" ] || continue
    echo
    echo "<!-- bench: $bench ran $(cat "$out/$bench.date") -->"
    if [[ " ${kept[*]} " == *" $bench "* ]]; then
      echo "_Section kept from the run of $(cat "$out/$bench.date")._"
      echo
    fi
    # Sections end with blank lines of their own; one separates them.
    sed -e :a -e '/^\n*$/{$d;N;ba' -e '}' "$out/$bench.md"
  done
} > BENCHMARKS.md.new
mv BENCHMARKS.md.new BENCHMARKS.md
echo "wrote BENCHMARKS.md" >&2
