#!/bin/sh
# The entrypoint of every docker-compose.yml service: it fills in what
# compose cannot know before the services start (the chain's contract, the
# PeerIds of the relay and the providers), then runs `ledgermesh "$@"`.
# The services share what they learn through one volume, /shared.
#
#   LM_NAME        this node's name; its identity key is /shared/NAME.key
#                  (made on first start, mode 0600) and its PeerId is
#                  written to /shared/NAME.id for the others
#   LM_CHAIN       the chain service's name (it runs `devchain --ready-file
#                  /shared/NAME.json`): its board becomes the ledger
#                  (LEDGERMESH_LEDGER), its RPC reached at http://NAME:8545
#   LM_LEDGER_KEY  the funded devchain key this node pays gas with (ledger-N)
#   LM_RELAY       a relay's name: its address becomes LEDGERMESH_RELAY
#   LM_WANT        "NAME/STREAM ..." to buy, provider names made PeerIds
#                  (LEDGERMESH_WANT)
set -eu
S=${LM_SHARED:-/shared}

say() { printf 'entrypoint: %s\n' "$*" >&2; }

# Waits (up to 5 minutes) for another service to write a file.
wait_for() {
    n=0
    while [ ! -s "$1" ]; do
        n=$((n + 1))
        if [ "$n" -gt 300 ]; then
            say "$1 never appeared; is the service that writes it running?"
            exit 1
        fi
        sleep 1
    done
}

if [ -n "${LM_NAME:-}" ]; then
    key="$S/$LM_NAME.key"
    if [ ! -s "$key" ]; then
        ledgermesh keygen --out "$key" >"$S/$LM_NAME.id.tmp"
        mv "$S/$LM_NAME.id.tmp" "$S/$LM_NAME.id"
    fi
    export LEDGERMESH_KEY="$key"
fi

if [ -n "${LM_CHAIN:-}" ]; then
    wait_for "$S/$LM_CHAIN.json"
    contract=$(jq -r .contract "$S/$LM_CHAIN.json")
    export LEDGERMESH_LEDGER="evm:http://$LM_CHAIN:8545@$contract"
fi

if [ -n "${LM_LEDGER_KEY:-}" ]; then
    wait_for "$S/chain/$LM_LEDGER_KEY.key"
    set -- "$@" --ledger-key "$S/chain/$LM_LEDGER_KEY.key"
fi

if [ -n "${LM_RELAY:-}" ]; then
    wait_for "$S/$LM_RELAY.id"
    export LEDGERMESH_RELAY="/dns4/$LM_RELAY/tcp/4001/p2p/$(cat "$S/$LM_RELAY.id")"
fi

if [ -n "${LM_WANT:-}" ]; then
    want=""
    for w in $LM_WANT; do
        name=${w%%/*}
        wait_for "$S/$name.id"
        want="$want${want:+,}$(cat "$S/$name.id")/${w#*/}"
    done
    export LEDGERMESH_WANT="$want"
fi

exec ledgermesh "$@"
