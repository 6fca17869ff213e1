#!/usr/bin/env bash
# Prints where cargo puts what it builds for the package in DIR (default: the repository):
# DIR/target, or CARGO_TARGET_DIR (or build.target-dir) when set.
set -euo pipefail
cd "${1:-$(dirname "$0")/..}"
cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])'
