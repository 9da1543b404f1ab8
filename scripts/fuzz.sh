#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets) with cargo fuzz on the nightly
# toolchain, each for SECONDS (default 60), starting from the committed seed
# corpus in fuzz/corpus/<target>. New inputs go to a scratch directory, so the
# committed corpora stay small; a crash leaves its input in
# fuzz/artifacts/<target>/ and fails the run (add it to fuzz/corpus/<target>
# once fixed: the crates' tests replay those corpora on stable).
#
#   bash scripts/fuzz.sh [SECONDS] [TARGET...]
#   FUZZ_SANITIZER=none bash scripts/fuzz.sh 20     # CI's smoke run (faster build)
#
# Prints one line per target: executions, seconds, executions per second.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
sanitizer=${FUZZ_SANITIZER:-address}

nightly=$(rustup toolchain list | awk '/^nightly/ {print $1; exit}')
if [ -z "$nightly" ]; then
  echo "fuzz: no nightly toolchain (rustup toolchain list); the crates' tests still replay fuzz/corpus on stable" >&2
  exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo +"$nightly" fuzz list --fuzz-dir fuzz)
fi
# One build of all targets first, so the per-target time is fuzzing time.
cargo +"$nightly" fuzz build --fuzz-dir fuzz -s "$sanitizer"

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
failed=0
printf '%-22s %14s %8s %12s\n' target executions seconds exec/s
for t in "${targets[@]}"; do
  mkdir -p "$scratch/$t"
  log="$scratch/$t.log"
  rc=0
  cargo +"$nightly" fuzz run --fuzz-dir fuzz -s "$sanitizer" "$t" "$scratch/$t" "fuzz/corpus/$t" -- \
    -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1 || rc=$?
  execs=$(awk -F: '/stat::number_of_executed_units/ {gsub(/ /, "", $2); print $2}' "$log" | tail -n 1)
  took=$(awk '/^Done [0-9]+ runs in/ {print $5}' "$log" | tail -n 1)
  execs=${execs:-0}
  took=${took:-$seconds}
  printf '%-22s %14s %8s %12s\n' "$t" "$execs" "$took" "$(( execs / (took > 0 ? took : 1) ))"
  if [ "$rc" != 0 ]; then
    failed=1
    echo "fuzz: target $t FAILED (exit $rc); its log:" >&2
    tail -n 40 "$log" >&2
  fi
done
[ "$failed" = 0 ]
