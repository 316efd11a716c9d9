#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it: set-up, formatting, lints, then
# every test (unit, property, swarm end-to-end, CLI) with cargo-nextest, then
# a bounded fuzzing run of every decoder of untrusted bytes.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

echo "== cargo fmt --check" >&2
cargo fmt --all -- --check

echo "== cargo clippy -D warnings" >&2
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo nextest" >&2
profile=default
if [ "${CI:-}" = "true" ]; then profile=ci; fi
cargo nextest run --workspace --locked --profile "$profile"

echo "== fuzzing smoke run (15 s per target)" >&2
bash scripts/fuzz.sh 15
