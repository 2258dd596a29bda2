#!/usr/bin/env bash
# Fuzzes every parser for a bounded time: volume handles, configuration files, tool output,
# mount tables and mount options (the cargo-fuzz targets in fuzz/).
#
#   scripts/fuzz.sh [seconds-per-target] [target...]     (default: 20 s, every target)
#
# Installs cargo-fuzz when it is missing, builds every target once, then runs each one from
# its committed seeds (fuzz/corpus/<target>/seed-*) plus what earlier runs on this machine
# found (fuzz/target/corpus/<target>, not committed). Exits non-zero when any target finds a
# crash, a failed property or an input that takes more than 10 s; the input is kept in
# fuzz/artifacts/<target>/ and the summary says how to replay it.
#
# cargo-fuzz needs unstable compiler flags (sanitizers, coverage instrumentation); the stable
# toolchain accepts them with RUSTC_BOOTSTRAP=1, set here for these builds only.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds="${1:-20}"
[ $# -gt 0 ] && shift
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -lt 1 ]; then
    echo "usage: scripts/fuzz.sh [seconds-per-target] [target...]" >&2
    exit 2
fi

export RUSTC_BOOTSTRAP=1
# Optimised build (opt-level 1, fuzz/Cargo.toml) with overflow checks and debug assertions.
# The parsers are safe Rust, where a bug is a panic the fuzzer sees without a sanitizer;
# AddressSanitizer adds a third to the build and divides the executions per second by 4 to 6,
# so it is left to deeper runs: FUZZ_SANITIZER=address scripts/fuzz.sh 600.
sanitizer="${FUZZ_SANITIZER:-none}"
build_flags=(-O --debug-assertions --sanitizer "$sanitizer")

if ! command -v cargo-fuzz >/dev/null; then
    echo "== installing cargo-fuzz"
    cargo install --locked cargo-fuzz
fi

if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

cargo fmt -- --check

echo "== building ${#targets[@]} fuzz targets"
start=$SECONDS
cargo fuzz build "${build_flags[@]}"
echo "built in $((SECONDS - start)) s"

failed=()
summary=()
for t in "${targets[@]}"; do
    echo "== fuzzing $t for ${seconds} s"
    work="target/corpus/$t"
    log="target/logs/$t.log"
    mkdir -p "$work" "$(dirname "$log")" "artifacts/$t"
    set +e
    cargo fuzz run "${build_flags[@]}" "$t" "$work" "corpus/$t" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$log" 2>&1
    rc=$?
    set -e
    runs=$(grep -Eo 'stat::number_of_executed_units: [0-9]+' "$log" | grep -Eo '[0-9]+$' | tail -1)
    cov=$(grep -Eo 'cov: [0-9]+' "$log" | tail -1 | grep -Eo '[0-9]+' || true)
    corpus=$(find "$work" -type f | wc -l)
    if [ "$rc" -eq 0 ]; then
        summary+=("fuzz $t: ok, ${runs:-?} runs in ${seconds} s, coverage ${cov:-?}, corpus $corpus")
    else
        artifact=$(grep -Eo 'artifacts/[^ ]+' "$log" | tail -1 || true)
        grep -E "panicked at|assertion|ERROR: libFuzzer|SUMMARY" "$log" | head -5 >&2 || true
        summary+=("fuzz $t: FAILED (exit $rc) after ${runs:-?} runs; input ${artifact:-see $log}; replay: (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run ${build_flags[*]} $t ${artifact:-artifacts/$t/<input>})")
        failed+=("$t")
    fi
done

echo "== fuzz summary"
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: ${#failed[@]} target(s) failed: ${failed[*]} (logs in fuzz/target/logs/)" >&2
    exit 1
fi
