#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets, libFuzzer through libfuzzer-sys)
# on the nightly toolchain, each for SECONDS (default 60), starting from the
# committed seed corpus in fuzz/corpus/<target>. New inputs go to a scratch
# directory, so the committed corpora stay small; a crash leaves its input in
# fuzz/artifacts/<target>/ and fails the run (add it to fuzz/corpus/<target>
# once fixed: the crates' tests replay those corpora on stable).
#
#   bash scripts/fuzz.sh [SECONDS] [TARGET...]
#   FUZZ_SANITIZER=address  AddressSanitizer (default: none)
#   FUZZ_PROFILE=release    optimised build for long campaigns (default: dev,
#                           which builds in a fraction of the time: CI's smoke run)
#
# The build uses the same instrumentation as `cargo fuzz` (sancov with 8-bit
# counters, PC table and comparison tracing, `--cfg fuzzing`), invoked through
# cargo directly so that no extra tool has to be installed. Prints one line per
# target: executions, seconds, executions per second.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
sanitizer=${FUZZ_SANITIZER:-none}
profile=${FUZZ_PROFILE:-dev}

nightly=$(rustup toolchain list | awk '/^nightly/ {print $1; exit}')
if [ -z "$nightly" ]; then
  echo "fuzz: no nightly toolchain (rustup toolchain list); the crates' tests still replay fuzz/corpus on stable" >&2
  exit 1
fi
triple=$(rustc +"$nightly" -vV | awk '/^host:/ {print $2}')
flags="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4"
flags+=" -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table"
flags+=" -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
[ "$sanitizer" = address ] && flags+=" -Zsanitizer=address"

if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -v '^ossc-fuzz$')
fi
# Instrumented builds go beside cargo's own (wherever it builds), never into them.
target_base=$(bash scripts/cargo-target-dir.sh)
export CARGO_TARGET_DIR="$target_base/fuzz"
build_start=$(date +%s)
# --target keeps the instrumentation off build scripts and proc macros.
RUSTFLAGS="$flags" cargo +"$nightly" build --manifest-path fuzz/Cargo.toml \
  --target "$triple" --profile "$profile" --bins
echo "fuzz: built ${#targets[@]} targets in $(( $(date +%s) - build_start )) s ($profile, sanitizer $sanitizer)"
outdir="$CARGO_TARGET_DIR/$triple/$([ "$profile" = dev ] && echo debug || echo "$profile")"

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
mkdir -p fuzz/artifacts
failed=0
printf '%-20s %14s %8s %12s\n' target executions seconds exec/s
for t in "${targets[@]}"; do
  mkdir -p "$scratch/$t" "fuzz/artifacts/$t"
  log="$scratch/$t.log"
  rc=0
  "$outdir/$t" "$scratch/$t" "fuzz/corpus/$t" -max_total_time="$seconds" -print_final_stats=1 \
    -artifact_prefix="fuzz/artifacts/$t/" -rss_limit_mb=2048 >"$log" 2>&1 || rc=$?
  execs=$(awk '/stat::number_of_executed_units/ {print $NF}' "$log" | tail -n 1)
  took=$(awk '/^Done [0-9]+ runs in/ {print $5}' "$log" | tail -n 1)
  execs=${execs:-0}
  took=${took:-$seconds}
  printf '%-20s %14s %8s %12s\n' "$t" "$execs" "$took" "$(( execs / (took > 0 ? took : 1) ))"
  if [ "$rc" != 0 ]; then
    failed=1
    echo "fuzz: target $t FAILED (exit $rc); its log:" >&2
    tail -n 40 "$log" >&2
  fi
done
[ "$failed" = 0 ]
