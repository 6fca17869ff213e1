#!/usr/bin/env bash
# The benchmark: installs wrk (Debian) and nats-server (scripts/tools.sh) when missing, builds
# the release binaries and runs hookline-bench. Arguments go to hookline-bench (seconds per
# scenario, default 6; then, optionally, text that picks the scenarios whose name holds it).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v wrk >/dev/null; then
    sudo_if_needed=""
    [ "$(id -u)" = 0 ] || sudo_if_needed="sudo"
    $sudo_if_needed apt-get install -y wrk >/dev/null 2>&1 \
        || { $sudo_if_needed apt-get update >/dev/null && $sudo_if_needed apt-get install -y wrk >/dev/null; }
fi
tools=$(scripts/tools.sh)
export HOOKLINE_NATS_SERVER="${HOOKLINE_NATS_SERVER:-$tools/venv/bin/nats-server}"
cargo build --release --locked --bin hookline --bin hookline-bench
exec "$(scripts/target-dir.sh)/release/hookline-bench" "$@"
