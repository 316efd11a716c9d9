//! Which addresses are globally routable. A node dials, dials back and
//! announces only those unless told otherwise (`--allow-private-addrs`, for
//! labs and loopback): a stranger must not make it probe a LAN.

use multiaddr::{Multiaddr, Protocol};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Whether `ip` is globally routable: not loopback, private, link-local,
/// shared (CGNAT), documentation, benchmarking, reserved, multicast or
/// unspecified.
pub fn is_global(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_global_v4(v4),
        IpAddr::V6(v6) => is_global_v6(v6),
    }
}

fn is_global_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || a >= 240
        || (a == 100 && (64..128).contains(&b))
        || (a == 198 && (18..20).contains(&b))
        || (a == 192 && b == 0 && c == 0))
}

fn is_global_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_global_v4(v4);
    }
    let s = ip.segments();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00
        || (s[0] & 0xffc0) == 0xfe80
        || (s[0] == 0x2001 && s[1] == 0x0db8)
        || (s[0] == 0x0100 && s[1] == 0 && s[2] == 0 && s[3] == 0))
}

/// The IP an address dials, if it names one (DNS names and circuits have none).
pub fn ip_of(a: &Multiaddr) -> Option<IpAddr> {
    match a.iter().next()? {
        Protocol::Ip4(v4) => Some(v4.into()),
        Protocol::Ip6(v6) => Some(v6.into()),
        _ => None,
    }
}

/// Whether `a` may be dialed under the policy: with `allow_private` any
/// address; otherwise one starting with a global IP, a DNS name, or a relay
/// circuit through such an address.
pub fn dialable(a: &Multiaddr, allow_private: bool) -> bool {
    allow_private
        || match a.iter().next() {
            Some(Protocol::Ip4(v4)) => is_global_v4(v4),
            Some(Protocol::Ip6(v6)) => is_global_v6(v6),
            Some(Protocol::Dns(_) | Protocol::Dns4(_) | Protocol::Dns6(_)) => true,
            _ => false,
        }
}

/// The dialable candidates among `addrs`, deduplicated, at most `max`.
pub fn dial_candidates(addrs: &[Multiaddr], allow_private: bool, max: usize) -> Vec<Multiaddr> {
    let mut out: Vec<Multiaddr> = Vec::new();
    for a in addrs {
        if out.len() >= max {
            break;
        }
        if dialable(a, allow_private) && !out.contains(a) {
            out.push(a.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_globally_routable_addresses_are_global() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.1.1",
            "100.64.0.1",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.10",
            "198.18.0.1",
            "0.1.2.3",
            "240.0.0.1",
            "255.255.255.255",
            "224.0.0.1",
            "192.0.0.8",
            "::1",
            "::",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "2001:db8::1",
            "ff02::1",
            "::ffff:10.0.0.1",
            "100::1",
        ] {
            assert!(!is_global(ip.parse().unwrap()), "{ip} is not global");
        }
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "100.128.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(is_global(ip.parse().unwrap()), "{ip} is global");
        }
    }

    #[test]
    fn candidates_are_filtered_deduplicated_and_capped() {
        let a = |s: &str| s.parse::<Multiaddr>().unwrap();
        let addrs = vec![
            a("/ip4/127.0.0.1/tcp/1"),
            a("/ip4/8.8.8.8/tcp/1"),
            a("/ip4/8.8.8.8/tcp/1"),
            a("/ip4/192.168.0.2/tcp/22"),
            a("/dns4/example.invalid/tcp/1"),
            a("/ip6/fe80::1/tcp/1"),
            a("/p2p-circuit"),
            a("/ip4/1.1.1.1/udp/1/quic-v1"),
        ];
        assert_eq!(
            dial_candidates(&addrs, false, 8),
            vec![
                a("/ip4/8.8.8.8/tcp/1"),
                a("/dns4/example.invalid/tcp/1"),
                a("/ip4/1.1.1.1/udp/1/quic-v1")
            ]
        );
        assert_eq!(dial_candidates(&addrs, true, 3).len(), 3);
        assert_eq!(
            dial_candidates(&addrs, true, 100).len(),
            7,
            "one duplicate dropped"
        );
    }
}
