#!/usr/bin/env bash
# Fuzzing (libFuzzer through cargo-fuzz, on the stable toolchain with RUSTC_BOOTSTRAP=1).
#   scripts/fuzz.sh build           build every target (fuzz/fuzz_targets/), optimized
#   scripts/fuzz.sh smoke           build unoptimized, then run each target for 10 s (scripts/test.sh
#                                   does): ten seconds of fuzzing need no optimizer, and the
#                                   optimized build of the whole crate with the sanitizer is most
#                                   of a cold CI run; debug assertions and overflow checks are on
#   scripts/fuzz.sh run SECONDS     build optimized, then run each target for SECONDS, one after another
# Seeds live in fuzz/seeds/<target>; what libFuzzer finds goes to target/fuzz/corpus/<target>,
# crashes to target/fuzz/artifacts/. cargo-fuzz is installed from crates.io into target/tools.
set -euo pipefail
cd "$(dirname "$0")/.."
tools="$PWD/target/tools"
if [ ! -x "$tools/bin/cargo-fuzz" ]; then
    cargo install --quiet --locked --root "$tools" cargo-fuzz@0.13.2 >&2
fi
export PATH="$tools/bin:$PATH" RUSTC_BOOTSTRAP=1
targets=(ingest subscription mapping insert_function queue_records)
if [ "${1:-build}" = smoke ]; then
    profile=(--dev) built=debug
else
    profile=(-O) built=release
fi
(cd fuzz && cargo fuzz build "${profile[@]}" >&2)
# Wherever cargo put them: fuzz/target, or CARGO_TARGET_DIR (or build.target-dir) if set.
bin="$(scripts/target-dir.sh fuzz)/x86_64-unknown-linux-gnu/$built"

run() {
    local seconds="$1"
    for t in "${targets[@]}"; do
        local corpus="target/fuzz/corpus/$t"
        mkdir -p "$corpus" target/fuzz/artifacts
        echo "fuzz: $t for ${seconds}s" >&2
        # queue_records opens a queue per input, whose writer thread ends on its own after the
        # input is done: LeakSanitizer reports that thread's exit bookkeeping as a leak.
        local leaks=1
        [ "$t" = queue_records ] && leaks=0
        "$bin/$t" "$corpus" "fuzz/seeds/$t" -max_total_time="$seconds" -rss_limit_mb=1536 \
            -timeout=10 -detect_leaks="$leaks" -artifact_prefix="target/fuzz/artifacts/$t-" -print_final_stats=1 \
            2>"target/fuzz/$t.log" || { tail -40 "target/fuzz/$t.log" >&2; exit 1; }
        grep -E '^stat::(number_of_executed_units|new_units_added|peak_rss_mb)' "target/fuzz/$t.log" >&2 || true
    done
}

case "${1:-build}" in
    build) ;;
    smoke) run 10 ;;
    run) run "${2:?seconds}" ;;
    *) echo "usage: scripts/fuzz.sh build|smoke|run SECONDS" >&2; exit 2 ;;
esac
