#!/usr/bin/env bash
# Benchmarks (docs/benchmarks.md). Usage:
#   bash scripts/bench.sh store [--size-mb 2048] [--rounds 3]   # ossc cp vs s5cmd vs raw ceiling
#   bash scripts/bench.sh load  [--size-mb 2048] [--rounds 3]   # preload vs s5cmd+tmpfs vs tmpfs floor
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-env.sh
cargo build --release -p ossc-peer -p ossc-preload -p ossc-cluster-tests
exec .venv/bin/python scripts/bench.py "$@"
