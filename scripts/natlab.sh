#!/usr/bin/env bash
# The NAT lab: Linux network namespaces with a fake internet on RFC 5737
# documentation ranges, public hosts, and NAT routers (nftables masquerade)
# with a private host behind each. Root only. Nothing it makes can reach any
# address outside the namespaces it made.
#
#   scripts/natlab.sh up LAB [--nat1 eim|edm] [--nat2 eim|edm] [--delay MS] [--loss PERCENT] [--switch]
#   scripts/natlab.sh impair LAB HOST MS LOSS   (HOST's link only, from now on; 0 0 heals it)
#   scripts/natlab.sh down LAB
#   scripts/natlab.sh status LAB
#   scripts/natlab.sh exec LAB HOST CMD...      (HOST: relay relay2 chain obs1 obs2 obs3 pub h1 h2 nat1 nat2 inet)
#   scripts/natlab.sh down-all                  (every lab left behind)
#
# Topology (every LAB is independent; addresses repeat across labs because
# each lab has its own namespaces):
#
#   internet 203.0.113.0/24 (bridge in LABinet)
#     relay 203.0.113.10  relay2 203.0.113.14  chain 203.0.113.20  obs1..3 203.0.113.11-13  pub 203.0.113.30
#     nat1  WAN 203.0.113.101 ─ LAN 192.0.2.1/28  ─ h1 192.0.2.2
#     nat2  WAN 203.0.113.102 ─ LAN 192.0.2.17/28 ─ h2 192.0.2.18
#
# eim: masquerade (endpoint-independent mapping: the source port is kept for
# every destination). edm: masquerade fully-random (a fresh port per
# destination). Both drop unsolicited inbound on the WAN side, like a home router.
# With --delay/--loss the internet is not a bridge but natlab-switch.py, a
# user-space switch that delays every frame by MS one way and drops PERCENT of
# them (this kernel has no netem); `up` checks the delay with ping. --switch
# uses that switch without delay or loss, so that `impair` can slow one host's
# link later (a relay going bad mid-stream).
set -euo pipefail

die() { echo "natlab: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root (network namespaces and nftables)"

ensure_tools() {
    local missing=()
    command -v ip >/dev/null || missing+=(iproute2)
    command -v nft >/dev/null || missing+=(nftables)
    command -v ethtool >/dev/null || missing+=(ethtool)
    command -v ping >/dev/null || missing+=(iputils-ping)
    # The VPN lab tests fetch over HTTP through the tunnel.
    command -v curl >/dev/null || missing+=(curl)
    if [ ${#missing[@]} -gt 0 ]; then
        echo "natlab: installing ${missing[*]}" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}" >/dev/null 2>&1 \
            || { apt-get update >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}" >/dev/null; }
    fi
}

ns() { echo "lm${LAB}$1"; }
nsx() { local n; n=$(ns "$1"); shift; ip netns exec "$n" "$@"; }

HOSTS_PUBLIC="relay:203.0.113.10 relay2:203.0.113.14 chain:203.0.113.20 obs1:203.0.113.11 obs2:203.0.113.12 obs3:203.0.113.13 pub:203.0.113.30"

mkns() {
    local n; n=$(ns "$1")
    ip netns add "$n"
    ip netns exec "$n" ip link set lo up
    ip netns exec "$n" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
    ip netns exec "$n" sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0
}

# A veth pair: $1 ns end named $2 in ns $1, other end plugged into the internet bridge.
plug_public() {
    local host=$1 ifname=$2 addr=$3 peer="v${LAB}${host}"
    ip link add "$peer" type veth peer name "$ifname" netns "$(ns "$host")"
    ip link set "$peer" netns "$(ns inet)"
    if [ -n "$SWITCH" ]; then
        nsx inet ip link set "$peer" up
        nsx inet ethtool -K "$peer" gro off tx off tso off gso off >/dev/null 2>&1 || true
        PORTS+=("$peer")
    else
        nsx inet ip link set "$peer" master br0 up
    fi
    nsx "$host" ip addr add "$addr/24" dev "$ifname"
    nsx "$host" ip link set "$ifname" up
    # Offloads off so frames arrive whole (the delaying switch forwards raw frames).
    nsx "$host" ethtool -K "$ifname" tx off tso off gso off >/dev/null 2>&1 || true
}

nat_rules() {
    local router=$1 flavour=$2 extra=""
    [ "$flavour" = edm ] && extra="fully-random"
    nsx "$router" nft -f - <<NFT
flush ruleset
table ip lmnat {
    chain postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        oifname "wan" masquerade $extra
    }
    chain forward {
        type filter hook forward priority filter; policy drop;
        ct state established,related accept
        iifname "lan" oifname "wan" accept
    }
    chain input {
        type filter hook input priority filter; policy accept;
        iifname "wan" ct state new drop
    }
}
NFT
    nsx "$router" conntrack -F >/dev/null 2>&1 || true
}

up() {
    ensure_tools
    local nat1=eim nat2=eim delay=0 loss=0 switch=""
    while [ $# -gt 0 ]; do
        case "$1" in
            --nat1) nat1=$2; shift 2 ;;
            --nat2) nat2=$2; shift 2 ;;
            --delay) delay=${2%ms}; shift 2 ;;
            --loss) loss=${2%\%}; shift 2 ;;
            --switch) switch=1; shift ;;
            *) die "unknown option $1" ;;
        esac
    done
    for f in "$nat1" "$nat2"; do [[ "$f" =~ ^(eim|edm)$ ]] || die "NAT flavour must be eim or edm, not $f"; done
    ip netns list | grep -q "^$(ns inet)\b" && die "lab $LAB exists; run: natlab.sh down $LAB"
    trap 'echo "natlab: set-up failed; cleaning up" >&2; down >/dev/null 2>&1 || true' ERR

    SWITCH=""; PORTS=()
    if [ "$delay" != 0 ] || [ "$loss" != 0 ] || [ -n "$switch" ]; then SWITCH=1; fi
    mkns inet
    if [ -z "$SWITCH" ]; then
        nsx inet ip link add br0 type bridge
        nsx inet ip link set br0 up
    fi
    for hp in $HOSTS_PUBLIC; do
        local host=${hp%%:*} addr=${hp##*:}
        mkns "$host"
        plug_public "$host" eth0 "$addr"
        nsx "$host" ip route add default dev eth0
    done
    local i
    for i in 1 2; do
        local router="nat$i" host="h$i" wan="203.0.113.10$i" base=$(( (i - 1) * 16 ))
        local gw="192.0.2.$((base + 1))" haddr="192.0.2.$((base + 2))"
        local flavour; [ "$i" = 1 ] && flavour=$nat1 || flavour=$nat2
        mkns "$router"
        mkns "$host"
        plug_public "$router" wan "$wan"
        nsx "$router" ip route add default dev wan
        nsx "$router" sysctl -qw net.ipv4.ip_forward=1
        ip link add "l${LAB}${i}" type veth peer name eth0 netns "$(ns "$host")"
        ip link set "l${LAB}${i}" netns "$(ns "$router")"
        nsx "$router" ip link set "l${LAB}${i}" name lan
        nsx "$router" ip addr add "$gw/28" dev lan
        nsx "$router" ip link set lan up
        nsx "$host" ip addr add "$haddr/28" dev eth0
        nsx "$host" ip link set eth0 up
        nsx "$host" ip route add default via "$gw"
        nsx "$host" ethtool -K eth0 tx off tso off gso off >/dev/null 2>&1 || true
        nat_rules "$router" "$flavour"
        echo "$flavour" > "/run/natlab-${LAB}-nat$i"
    done
    if [ -n "$SWITCH" ]; then
        local here; here=$(cd "$(dirname "$0")" && pwd)
        : > "/run/natlab-${LAB}-impair"
        nsx inet setsid python3 "$here/natlab-switch.py" --delay "$delay" --loss "$loss" \
            --control "/run/natlab-${LAB}-impair" "${PORTS[@]}" \
            >"/run/natlab-${LAB}-switch.log" 2>&1 < /dev/null &
        echo "delay ${delay}ms loss ${loss}%" > "/run/natlab-${LAB}-link"
        # Check the delay is in effect before anyone relies on it: RTT is about 2 x delay.
        local rtt=""
        for _ in 1 2 3 4 5 6 7 8 9 10; do
            rtt=$(nsx h1 ping -c 3 -i 0.2 -W 2 203.0.113.10 2>/dev/null | sed -n 's|.*= [0-9.]*/\([0-9.]*\)/.*|\1|p')
            [ -n "$rtt" ] && break
            sleep 0.3
        done
        [ -n "$rtt" ] || die "no ping through the switch"
        awk -v r="$rtt" -v d="$delay" 'BEGIN { exit !(r >= 1.8 * d) }' || die "RTT ${rtt} ms is below 2 x ${delay} ms: delay not in effect"
        echo "rtt h1 to relay ${rtt} ms" >> "/run/natlab-${LAB}-link"
    fi
    trap - ERR
    status
}

down() {
    local n
    for n in $(ip netns list | awk '{print $1}' | grep "^lm${LAB}" || true); do
        # Processes still inside would keep the namespace's devices alive.
        for pid in $(ip netns pids "$n" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
        ip netns del "$n" 2>/dev/null || true
    done
    rm -f /run/natlab-"${LAB}"-nat* /run/natlab-"${LAB}"-impair /run/natlab-"${LAB}"-link
}

# impair LAB HOST MS LOSS: from now on, HOST's link to the internet adds MS
# one way and drops LOSS percent (a lab built with --switch, --delay or
# --loss). MS=0 LOSS=0 heals it.
impair() {
    local host=$1 ms=$2 loss=$3 file="/run/natlab-${LAB}-impair"
    [ -f "$file" ] || die "lab $LAB has no switch (build it with --switch)"
    grep -v "^v${LAB}${host} " "$file" > "$file.new" || true
    echo "v${LAB}${host} $ms $loss" >> "$file.new"
    mv "$file.new" "$file"
}

status() {
    echo "lab $LAB:"
    ip netns list | awk '{print $1}' | grep "^lm${LAB}" | sed 's/^/  /' || echo "  (down)"
    for i in 1 2; do
        [ -f "/run/natlab-${LAB}-nat$i" ] && echo "  nat$i: $(cat "/run/natlab-${LAB}-nat$i")"
    done
    [ -f "/run/natlab-${LAB}-link" ] && sed 's/^/  /' "/run/natlab-${LAB}-link"
    return 0
}

cmd=${1:-}; shift || true
case "$cmd" in
    up|down|status|exec|impair)
        LAB=${1:-}; [ -n "$LAB" ] || die "usage: natlab.sh $cmd LAB"
        [[ "$LAB" =~ ^[a-z0-9]{1,6}$ ]] || die "LAB is 1-6 characters of [a-z0-9]"
        shift
        case "$cmd" in
            up) up "$@" ;;
            down) down ;;
            status) status ;;
            exec) host=$1; shift; nsx "$host" "$@" ;;
            impair) impair "$@" ;;
        esac ;;
    down-all)
        for n in $(ip netns list | awk '{print $1}' | grep '^lm' || true); do
            for pid in $(ip netns pids "$n" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
            ip netns del "$n" 2>/dev/null || true
        done
        rm -f /run/natlab-* ;;
    *) sed -n '2,26p' "$0"; exit 2 ;;
esac
