#!/usr/bin/env bash
# The main job on an embedded default: the README's first command.
# Builds ossc and libossc_preload.so (release), generates a sharded safetensors
# model, serves it from the embedded object store on loopback, loads it through
# the preload library and prints a verified throughput summary.
# With OSS_ENDPOINT/OSS_PATH/credentials set, `ossc demo` loads from that store instead.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p ossc-peer -p ossc-preload
exec "$(bash scripts/cargo-target-dir.sh)/release/ossc" demo "$@"
