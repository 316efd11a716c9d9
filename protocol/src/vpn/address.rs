//! A node's VPN address, from its key: `fda2:12b9:3212::/48` and 80 bits
//! of a hash of its PeerId.
//!
//! The prefix is a unique local one (RFC 4193, `fd00::/8`), so it is never
//! routed on the internet and never collides with Yggdrasil's `0200::/7`
//! (global unicast space those nodes take for themselves). Its 40-bit
//! global ID is not picked by hand: it is the first five bytes of
//! SHA-256(`ledgermesh vpn v1`), as RFC 4193 asks for an ID nobody chose.
//! Every node computes every peer's address from its PeerId alone: no
//! registry, no configuration, and a peer cannot claim another's address
//! without its key. With 80 bits, two of a million nodes share an address
//! with a chance of about 4 in 10^13.

use libp2p_identity::PeerId;
use sha2::{Digest, Sha256};
use std::net::{Ipv4Addr, Ipv6Addr};

/// The prefix of every node's address.
pub const PREFIX: Ipv6Addr = Ipv6Addr::new(0xfda2, 0x12b9, 0x3212, 0, 0, 0, 0, 0);
/// Its length in bits.
pub const PREFIX_LEN: u8 = 48;

/// The VPN address of `peer`.
pub fn address_of(peer: &PeerId) -> Ipv6Addr {
    let hash = key_hash(peer);
    let mut octets = PREFIX.octets();
    octets[6..].copy_from_slice(&hash[..10]);
    Ipv6Addr::from(octets)
}

/// The network of the IPv4 addresses derived from keys: shared address
/// space (RFC 6598, `100.64.0.0/10`), which no internet host has and no
/// home network hands out, as Tailscale uses it.
pub const V4_NET: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 0);
/// Its length in bits.
pub const V4_NET_LEN: u8 = 10;

/// The IPv4 address of `peer` inside the tunnel when no other is given:
/// [`V4_NET`] and 22 bits of the same hash as its IPv6 address (the bits
/// after those). The network's first and last addresses are never given.
/// 22 bits are few: two of 100 peers of one exit share one with a chance
/// of about 1 in 840, and the second is then refused its IPv4 route
/// there (its IPv6 one is its own).
pub fn address_v4_of(peer: &PeerId) -> Ipv4Addr {
    let hash = key_hash(peer);
    let host = u32::from_be_bytes([0, hash[10], hash[11], hash[12]]) & 0x003f_ffff;
    let host = host.clamp(1, 0x003f_fffe);
    Ipv4Addr::from(u32::from(V4_NET) | host)
}

fn key_hash(peer: &PeerId) -> [u8; 32] {
    Sha256::new()
        .chain_update(b"ledgermesh vpn address v1")
        .chain_update(peer.to_bytes())
        .finalize()
        .into()
}

/// Whether `addr` is inside [`PREFIX`].
pub fn is_mesh(addr: &Ipv6Addr) -> bool {
    addr.octets()[..6] == PREFIX.octets()[..6]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefix_is_the_one_nobody_chose() {
        let id = Sha256::digest(b"ledgermesh vpn v1");
        let mut want = [0u8; 16];
        want[0] = 0xfd;
        want[1..6].copy_from_slice(&id[..5]);
        assert_eq!(PREFIX.octets(), want);
        // A unique local address, nowhere near Yggdrasil's 0200::/7.
        assert_eq!(PREFIX.octets()[0] & 0xfe, 0xfc);
        assert_ne!(PREFIX.octets()[0] & 0xfe, 0x02);
    }

    #[test]
    fn an_address_is_the_keys_alone_and_stable() {
        let key = libp2p_identity::Keypair::ed25519_from_bytes([7u8; 32]).unwrap();
        let peer = key.public().to_peer_id();
        let a = address_of(&peer);
        assert!(is_mesh(&a));
        assert_eq!(a, address_of(&peer), "the same key, the same address");
        // A known answer: a change here breaks every deployed tunnel.
        assert_eq!(
            peer.to_string(),
            "12D3KooWRawPbxPtP1eZaJpumGnyWX2DcUyd3RQnydr3eAto4Az7"
        );
        assert_eq!(a.to_string(), "fda2:12b9:3212:88b2:7717:7a8f:aeef:43c3");
        assert_eq!(address_v4_of(&peer).to_string(), "100.119.178.17");
        let other = PeerId::random();
        assert_ne!(address_of(&other), a);
        let v4 = address_v4_of(&other);
        let net = ipnet::Ipv4Net::new(V4_NET, V4_NET_LEN).unwrap();
        assert!(net.contains(&v4) && v4 != net.network() && v4 != net.broadcast());
        assert!(!is_mesh(&"fd00::1".parse().unwrap()));
    }
}
