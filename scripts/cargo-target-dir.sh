#!/usr/bin/env bash
# Prints the directory cargo builds into, as cargo itself resolves it ($CARGO_TARGET_DIR,
# build.target-dir in a .cargo/config.toml, or <workspace>/target). Every script that reads a
# build output asks this instead of assuming ./target.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo metadata --format-version 1 --no-deps \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])'
