#!/usr/bin/env bash
# Benchmarks (docs/benchmarks.md). Usage:
#   bash scripts/bench.sh store [--size-mb 2048] [--rounds 3]   # ossc cp vs s5cmd vs raw ceiling
#   bash scripts/bench.sh load  [--size-mb 2048] [--rounds 3]   # preload vs s5cmd+tmpfs vs tmpfs floor
#   bash scripts/bench.sh peers [--size-mb 256] [--rounds 1] [--nodes 1,2,4] [--link-mbit 300]
#                               # netns cluster, peers off vs on (needs root) + scaling model
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-env.sh
cargo build --release -p ossc-peer -p ossc-preload -p ossc-cluster-tests
exec .venv/bin/python scripts/bench.py "$@"
