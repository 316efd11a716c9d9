//! Small questions asked of multiaddrs all over the node, answered once.

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use std::net::{IpAddr, SocketAddr};

/// Whether `a` goes through a relay (`/p2p-circuit`).
pub fn is_circuit(a: &Multiaddr) -> bool {
    a.iter().any(|p| p == Protocol::P2pCircuit)
}

/// Whether `a` is a QUIC address.
pub fn is_quic(a: &Multiaddr) -> bool {
    a.iter().any(|p| matches!(p, Protocol::QuicV1))
}

/// Whether `a` is a TCP address.
pub fn is_tcp(a: &Multiaddr) -> bool {
    a.iter().any(|p| matches!(p, Protocol::Tcp(_)))
}

/// The last `/p2p/<id>` of an address (for a circuit address before
/// `/p2p-circuit`, that is the relay).
pub fn peer_of(a: &Multiaddr) -> Option<PeerId> {
    a.iter().fold(None, |acc, p| match p {
        Protocol::P2p(id) => Some(id),
        _ => acc,
    })
}

/// The IP and port of a direct address, and whether it is UDP (QUIC).
pub fn socket_of(a: &Multiaddr) -> Option<(SocketAddr, bool)> {
    let mut ip: Option<IpAddr> = None;
    for p in a.iter() {
        match p {
            Protocol::Ip4(v4) => ip = Some(v4.into()),
            Protocol::Ip6(v6) => ip = Some(v6.into()),
            Protocol::Tcp(port) => return ip.map(|ip| (SocketAddr::new(ip, port), false)),
            Protocol::Udp(port) => return ip.map(|ip| (SocketAddr::new(ip, port), true)),
            Protocol::P2pCircuit => return None,
            _ => {}
        }
    }
    None
}

/// `/ip4|ip6/IP/tcp/PORT` or `/ip4|ip6/IP/udp/PORT/quic-v1`.
pub fn socket_to_multiaddr(a: SocketAddr, udp: bool) -> Multiaddr {
    let mut m = Multiaddr::empty();
    match a.ip() {
        IpAddr::V4(v4) => m.push(Protocol::Ip4(v4)),
        IpAddr::V6(v6) => m.push(Protocol::Ip6(v6)),
    }
    if udp {
        m.push(Protocol::Udp(a.port()));
        m.push(Protocol::QuicV1);
    } else {
        m.push(Protocol::Tcp(a.port()));
    }
    m
}

/// The UDP socket address of `/ip4|ip6/IP/udp/PORT/quic-v1[/p2p/ID]`.
pub fn quic_socket(addr: &Multiaddr) -> Option<SocketAddr> {
    let mut it = addr.iter();
    let ip: IpAddr = match it.next()? {
        Protocol::Ip4(a) => a.into(),
        Protocol::Ip6(a) => a.into(),
        _ => return None,
    };
    let Protocol::Udp(port) = it.next()? else {
        return None;
    };
    let Protocol::QuicV1 = it.next()? else {
        return None;
    };
    match it.next() {
        None | Some(Protocol::P2p(_)) if it.next().is_none() => Some(SocketAddr::new(ip, port)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_match_the_address() {
        let relay = PeerId::random();
        let circuit: Multiaddr = format!("/ip4/203.0.113.10/tcp/4001/p2p/{relay}/p2p-circuit")
            .parse()
            .unwrap();
        assert!(is_circuit(&circuit) && is_tcp(&circuit) && !is_quic(&circuit));
        assert_eq!(peer_of(&circuit), Some(relay));
        assert_eq!(
            socket_of(&circuit),
            Some(("203.0.113.10:4001".parse().unwrap(), false))
        );
        let quic: Multiaddr = "/ip6/2001:db8::1/udp/9/quic-v1".parse().unwrap();
        let (sock, udp) = socket_of(&quic).unwrap();
        assert!(udp && is_quic(&quic));
        assert_eq!(socket_to_multiaddr(sock, udp), quic);
    }
}
