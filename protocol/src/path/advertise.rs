//! What a node advertises in its service responses: which of its addresses
//! a peer should dial, given what address consensus decided.

use super::scope::ip_of;
use crate::consensus::Mapping;
use multiaddr::Multiaddr;
use std::net::IpAddr;

/// What address consensus decided, as the node uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicView {
    /// The accepted public address, when the mapping lets peers reach it.
    pub addr: Option<Multiaddr>,
    /// The accepted public IP.
    pub ip: Option<IpAddr>,
    /// The NAT mapping.
    pub mapping: Mapping,
    /// The public QUIC address, when it was decided apart from `addr` (the
    /// observers written by TCP address and asked over QUIC as well).
    pub quic: Option<Multiaddr>,
}

/// The addresses to advertise, best first. With a consensus verdict the
/// direct part follows it: an endpoint-independent mapping advertises the
/// consensus address (and any listen address on the public IP itself); an
/// endpoint-dependent one advertises no direct address at all (only relays
/// can help). Without a verdict every listen address is offered. Relay
/// circuits always follow; `relay_only` advertises nothing else. Without
/// `allow_private`, only globally routable addresses are advertised.
pub fn advertise(
    direct: &[Multiaddr],
    circuits: &[Multiaddr],
    public: Option<&PublicView>,
    relay_only: bool,
    allow_private: bool,
) -> Vec<Multiaddr> {
    let mut addrs = Vec::new();
    if !relay_only {
        match public {
            Some(p) if p.mapping == Mapping::EndpointIndependent => {
                addrs.extend(p.addr.iter().cloned());
                addrs.extend(
                    p.quic
                        .iter()
                        .filter(|q| p.addr.as_ref() != Some(*q))
                        .cloned(),
                );
                for a in direct.iter().filter(|a| p.ip.is_some() && ip_of(a) == p.ip) {
                    if !addrs.contains(a) {
                        addrs.push(a.clone());
                    }
                }
            }
            Some(p) if p.mapping == Mapping::EndpointDependent => {}
            _ => addrs.extend(direct.iter().cloned()),
        }
    }
    addrs.extend(circuits.iter().cloned());
    // Never hand out an address a peer would refuse to dial.
    addrs.retain(|a| super::scope::dialable(a, allow_private));
    addrs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_advertised_follows_the_consensus_verdict() {
        let direct: Vec<Multiaddr> = vec![
            "/ip4/192.0.2.2/tcp/4001".parse().unwrap(),
            "/ip4/203.0.113.30/tcp/4001".parse().unwrap(),
        ];
        let circuit: Multiaddr = "/ip4/203.0.113.10/tcp/4001/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN/p2p-circuit"
            .parse()
            .unwrap();
        let circuits = [circuit.clone()];
        let ad =
            |p: Option<&PublicView>, relay_only| advertise(&direct, &circuits, p, relay_only, true);
        // No verdict: every listen address and the circuits.
        assert_eq!(ad(None, false).len(), 3);
        // Relay-only: circuits only.
        assert_eq!(ad(None, true), vec![circuit.clone()]);
        // Endpoint-dependent NAT: no direct address helps; relays only.
        let edm = PublicView {
            addr: None,
            ip: Some("203.0.113.102".parse().unwrap()),
            mapping: Mapping::EndpointDependent,
            quic: None,
        };
        assert_eq!(ad(Some(&edm), false), vec![circuit.clone()]);
        // Endpoint-independent NAT: the consensus address, not the private one.
        let nat: Multiaddr = "/ip4/203.0.113.101/tcp/4001".parse().unwrap();
        let eim = PublicView {
            addr: Some(nat.clone()),
            ip: Some("203.0.113.101".parse().unwrap()),
            mapping: Mapping::EndpointIndependent,
            quic: None,
        };
        assert_eq!(ad(Some(&eim), false), vec![nat, circuit.clone()]);
        // A public host: its own listen address on the public IP, once.
        let public: Multiaddr = "/ip4/203.0.113.30/tcp/4001".parse().unwrap();
        let host = PublicView {
            addr: Some(public.clone()),
            ip: Some("203.0.113.30".parse().unwrap()),
            mapping: Mapping::EndpointIndependent,
            quic: None,
        };
        assert_eq!(ad(Some(&host), false), vec![public, circuit.clone()]);
        // Unknown mapping: like no verdict.
        let unknown = PublicView {
            addr: None,
            ip: None,
            mapping: Mapping::Unknown,
            quic: None,
        };
        assert_eq!(ad(Some(&unknown), false).len(), 3);
        // Private and documentation addresses are not advertised by default.
        let global: Multiaddr = "/ip4/8.8.8.8/tcp/4001".parse().unwrap();
        let mixed = [direct[0].clone(), global.clone()];
        assert_eq!(
            advertise(&mixed, &circuits, None, false, false),
            vec![global]
        );
    }
}
