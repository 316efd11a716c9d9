#!/usr/bin/env bash
# Fuzzes every decoder of untrusted bytes (targets in fuzz/fuzz_targets/),
# each for a bounded time, starting from the committed seed corpus in
# fuzz/corpus/TARGET; fails on the first crash (libFuzzer saves the input
# under fuzz/artifacts/TARGET and prints how to reproduce it).
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]     (default 15; CI's smoke run)
#
# New inputs found go to a temporary directory, so a run never changes the
# committed corpus; copy interesting ones over by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-15}"

skip() {
    echo "fuzz: SKIPPED: $*" >&2
    if [ "${CI:-}" = "true" ]; then
        echo "fuzz: a skip is a failure under CI=true" >&2
        exit 1
    fi
    exit 0
}

rustup toolchain list 2>/dev/null | grep -q '^nightly' \
    || skip "no nightly toolchain (rustup toolchain install nightly); cargo-fuzz needs one"
cargo fuzz --version >/dev/null 2>&1 \
    || skip "cargo-fuzz is missing (scripts/setup.sh installs it)"

cd fuzz
cargo +nightly fuzz build -O
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
for target in $(cargo +nightly fuzz list); do
    mkdir -p "$scratch/$target" "corpus/$target"
    echo "fuzz: $target for ${secs}s" >&2
    log="$scratch/$target.log"
    if ! cargo +nightly fuzz run -O "$target" "$scratch/$target" "corpus/$target" -- \
        -max_total_time="$secs" -max_len=8192 -print_final_stats=1 >"$log" 2>&1; then
        tail -n 60 "$log" >&2
        echo "fuzz: $target FAILED; the input is under fuzz/artifacts/$target" >&2
        exit 1
    fi
    grep -E "^stat::(number_of_executed_units|new_units_added)" "$log" | sed "s/^/fuzz: $target /" >&2 || true
done
echo "fuzz: ok" >&2
