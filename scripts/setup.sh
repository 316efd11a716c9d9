#!/usr/bin/env bash
# Installs what the build and the tests need, idempotently. Safe to run often:
# every step checks before it installs.
#
# The Rust toolchain pieces (rustfmt, clippy, cargo-nextest); anvil and solc
# from npm into ./.tools (git-ignored); iproute2 and nftables from Debian for
# the NAT lab (as root).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'setup: %s\n' "$*" >&2; }

need_cmd() { command -v "$1" >/dev/null 2>&1; }

if ! need_cmd cargo; then
    say "cargo is missing; install a Rust toolchain (rustup) first"
    exit 1
fi

for comp in rustfmt clippy; do
    if ! cargo "${comp/rustfmt/fmt}" --version >/dev/null 2>&1; then
        say "installing $comp"
        rustup component add "$comp"
    fi
done

if ! cargo nextest --version >/dev/null 2>&1; then
    say "installing cargo-nextest"
    cargo install cargo-nextest --locked
fi

# cargo-fuzz for the bounded fuzzing smoke run (it needs a nightly toolchain;
# scripts/fuzz.sh says so when one is missing).
if rustup toolchain list 2>/dev/null | grep -q '^nightly' && ! cargo fuzz --version >/dev/null 2>&1; then
    say "installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

# anvil (the local chain) and solc (the Solidity compiler) from npm, into the
# project-local, git-ignored ./.tools folder, at the versions pinned in
# scripts/tools-package.json.
if ! need_cmd npm; then
    say "npm is missing; install Node.js 20+ (it brings npm)"
    exit 1
fi
mkdir -p .tools
if ! cmp -s scripts/tools-package.json .tools/package.json \
    || [ ! -x .tools/node_modules/.bin/anvil ] || [ ! -x .tools/node_modules/.bin/solcjs ] \
    || [ ! -d .tools/node_modules/playwright-core ]; then
    say "installing anvil, solc and playwright-core into .tools"
    cp scripts/tools-package.json .tools/package.json
    (cd .tools && npm install --no-audit --no-fund --loglevel=error)
fi
.tools/node_modules/.bin/anvil --version >/dev/null

# The NAT lab needs iproute2 and nftables (Debian packages); only root can
# install them, and only root can run the lab.
if [ "$(id -u)" = 0 ] && { ! need_cmd ip || ! need_cmd nft || ! need_cmd ethtool || ! need_cmd ping; }; then
    say "installing iproute2, nftables, ethtool and iputils-ping"
    export DEBIAN_FRONTEND=noninteractive
    pkgs="iproute2 nftables ethtool iputils-ping"
    # shellcheck disable=SC2086
    apt-get install -y $pkgs >/dev/null 2>&1 \
        || { apt-get update >/dev/null && apt-get install -y $pkgs >/dev/null; }
fi

# Headless Chromium for the dashboard test (playwright-core drives Debian's
# chromium; it downloads no browser), docker-compose to validate the compose
# file and jq (the compose entrypoint uses it). Debian packages: root only.
if [ "$(id -u)" = 0 ] && { ! need_cmd chromium || ! need_cmd docker-compose || ! need_cmd jq; }; then
    say "installing chromium, docker-compose and jq"
    export DEBIAN_FRONTEND=noninteractive
    pkgs="chromium docker-compose jq"
    # shellcheck disable=SC2086
    apt-get install -y --no-install-recommends $pkgs >/dev/null 2>&1 \
        || { apt-get update >/dev/null && apt-get install -y --no-install-recommends $pkgs >/dev/null; }
fi

say "ok"
