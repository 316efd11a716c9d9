#!/usr/bin/env bash
# Compiles the Solidity contracts with the npm `solc` (solcjs) that setup.sh
# installed, and writes the ABI + bytecode artifacts that are committed.
#   scripts/compile-contracts.sh            rewrite the committed artifacts
#   scripts/compile-contracts.sh --out DIR  write them to DIR instead (the
#                                           staleness test compares the two)
set -euo pipefail
cd "$(dirname "$0")/.."
out=ledger-adapter/contracts
if [ "${1:-}" = "--out" ]; then out="$2"; fi
solcjs=.tools/node_modules/.bin/solcjs
if [ ! -x "$solcjs" ]; then
    echo "compile-contracts: $solcjs missing; run scripts/setup.sh" >&2
    exit 1
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for name in PaymentChannels SignalBoard; do
    src=ledger-adapter/contracts/$name.sol
    "$solcjs" --bin --abi --optimize --optimize-runs 200 --base-path . -o "$tmp" "$src" >/dev/null
    base="$tmp/ledger-adapter_contracts_${name}_sol_${name}"
    node -e '
        const fs = require("fs");
        const [abi, bin, name, version, out] = process.argv.slice(1);
        const artifact = {
            contractName: name,
            compiler: "solc " + version,
            abi: JSON.parse(fs.readFileSync(abi, "utf8")),
            bytecode: "0x" + fs.readFileSync(bin, "utf8").trim(),
        };
        fs.writeFileSync(out, JSON.stringify(artifact, null, 2) + "\n");
    ' "$base.abi" "$base.bin" "$name" "$("$solcjs" --version)" "$out/$name.json"
    echo "compile-contracts: wrote $out/$name.json" >&2
done
