#!/usr/bin/env bash
# Builds the release binary and runs every benchmark on loopback.
#   scripts/bench.sh            full run (a few minutes)
#   scripts/bench.sh --quick    under a minute
#   scripts/bench.sh --json     one JSON object with every figure
# The set-up phase over a real chain needs anvil (scripts/setup.sh installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p ledgermesh >&2
RUST_LOG="${RUST_LOG:-error}" exec target/release/ledgermesh bench "$@"
