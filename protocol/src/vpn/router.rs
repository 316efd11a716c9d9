//! Which peer a packet goes to, and whether a peer's packet may come in.
//!
//! Each allowed peer owns its key-derived address (always) and the
//! networks it is allowed (`allowed_ips`, as in WireGuard: `10.7.0.2/32`,
//! or `0.0.0.0/0` for an exit). A packet from our device goes to the peer
//! owning the longest prefix that holds its destination; a packet from a
//! peer is delivered only if that peer is allowed, its source is one the
//! peer owns and its destination is ours. Everything else is a [`Drop`],
//! counted by reason.

use super::address::address_of;
use super::packet::header;
use super::Drop;
use ipnet::{IpNet, Ipv6Net};
use libp2p_identity::PeerId;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use thiserror::Error;

/// Peers a router holds at most.
pub const MAX_PEERS: usize = 4096;
/// Networks one peer may own besides its own address.
pub const MAX_ALLOWED_IPS: usize = 64;

/// An allowed peer and the networks it owns besides its own address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The peer.
    pub id: PeerId,
    /// Networks it may send from and is sent to (`allowed_ips`).
    pub allowed_ips: Vec<IpNet>,
}

impl Peer {
    /// A peer that owns its own address only.
    pub fn new(id: PeerId) -> Self {
        Self {
            id,
            allowed_ips: vec![],
        }
    }
}

/// Why a peer was not allowed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RouterError {
    /// The router holds [`MAX_PEERS`] already.
    #[error("too many peers (at most {MAX_PEERS})")]
    TooManyPeers,
    /// More than [`MAX_ALLOWED_IPS`] networks.
    #[error("{peer}: too many allowed_ips (at most {MAX_ALLOWED_IPS})")]
    TooManyNetworks {
        /// The peer.
        peer: PeerId,
    },
    /// Another peer owns exactly this network.
    #[error("{net} is already {owner}'s")]
    Taken {
        /// The network.
        net: IpNet,
        /// Who owns it.
        owner: PeerId,
    },
    /// The network holds one of our own addresses.
    #[error("{net} holds our own address")]
    Ours {
        /// The network.
        net: IpNet,
    },
}

/// The routing table and its counters (see the module docs).
#[derive(Debug)]
pub struct Router {
    /// Our addresses (the key-derived one first).
    own: Vec<IpAddr>,
    mtu: usize,
    /// Every owned network, longest prefix first.
    routes: Vec<(IpNet, PeerId)>,
    peers: HashMap<PeerId, Vec<IpNet>>,
    dropped: BTreeMap<Drop, u64>,
}

impl Router {
    /// The router of `me` (with `also`, more addresses of ours, such as a
    /// mapped IPv4 one) for packets of at most `mtu` bytes.
    pub fn new(me: &PeerId, also: &[IpAddr], mtu: usize) -> Self {
        let mut own = vec![IpAddr::V6(address_of(me))];
        for a in also {
            if !own.contains(a) {
                own.push(*a);
            }
        }
        Self {
            own,
            mtu,
            routes: vec![],
            peers: HashMap::new(),
            dropped: BTreeMap::new(),
        }
    }

    /// Our addresses, the key-derived one first.
    pub fn own(&self) -> &[IpAddr] {
        &self.own
    }

    /// Allows `peer` (again: its networks are replaced).
    pub fn allow(&mut self, peer: Peer) -> Result<(), RouterError> {
        if !self.peers.contains_key(&peer.id) && self.peers.len() >= MAX_PEERS {
            return Err(RouterError::TooManyPeers);
        }
        if peer.allowed_ips.len() > MAX_ALLOWED_IPS {
            return Err(RouterError::TooManyNetworks { peer: peer.id });
        }
        let own_net = IpNet::V6(Ipv6Net::new(address_of(&peer.id), 128).expect("a /128"));
        let mut nets = vec![own_net];
        for net in peer.allowed_ips.iter().map(IpNet::trunc) {
            if let Some((_, owner)) = (self.routes.iter()).find(|(n, o)| *n == net && *o != peer.id)
            {
                return Err(RouterError::Taken { net, owner: *owner });
            }
            // An exit's 0.0.0.0/0 holds our addresses too: that is a
            // default route, not a claim on them; a narrower one is.
            if net.prefix_len() > 0 && self.own.iter().any(|a| net.contains(a)) {
                return Err(RouterError::Ours { net });
            }
            if !nets.contains(&net) {
                nets.push(net);
            }
        }
        self.forbid(&peer.id);
        self.routes.extend(nets.iter().map(|n| (*n, peer.id)));
        self.routes
            .sort_by_key(|(n, _)| std::cmp::Reverse(n.prefix_len()));
        self.peers.insert(peer.id, nets);
        Ok(())
    }

    /// `peer` is no longer allowed.
    pub fn forbid(&mut self, peer: &PeerId) {
        if self.peers.remove(peer).is_some() {
            self.routes.retain(|(_, p)| p != peer);
        }
    }

    /// Whether `peer` is allowed.
    pub fn is_allowed(&self, peer: &PeerId) -> bool {
        self.peers.contains_key(peer)
    }

    /// The networks `peer` owns (its own address first).
    pub fn networks(&self, peer: &PeerId) -> Option<&[IpNet]> {
        self.peers.get(peer).map(Vec::as_slice)
    }

    fn drop(&mut self, why: Drop) -> Drop {
        *self.dropped.entry(why).or_default() += 1;
        why
    }

    /// A stream from `peer`: refused (and counted as its first packet
    /// would be) unless the peer is allowed.
    pub fn admit(&mut self, peer: &PeerId) -> Result<(), Drop> {
        match self.peers.contains_key(peer) {
            true => Ok(()),
            false => Err(self.drop(Drop::NotAllowed)),
        }
    }

    /// A packet from our device: the peer to send it to.
    pub fn outbound(&mut self, packet: &[u8]) -> Result<PeerId, Drop> {
        let verdict = self.judge_outbound(packet);
        verdict.map_err(|why| self.drop(why))
    }

    fn judge_outbound(&self, packet: &[u8]) -> Result<PeerId, Drop> {
        if packet.len() > self.mtu {
            return Err(Drop::TooBig);
        }
        let h = header(packet)?;
        if is_link_chatter(&h) {
            return Err(Drop::Local);
        }
        if !self.own.contains(&h.src) {
            return Err(Drop::NotFromUs);
        }
        (self.routes.iter())
            .find(|(net, _)| net.contains(&h.dst))
            .map(|(_, peer)| *peer)
            .ok_or(Drop::NoRoute)
    }

    /// A packet from `from`: whether to deliver it to our device.
    pub fn inbound(&mut self, from: &PeerId, packet: &[u8]) -> Result<(), Drop> {
        let verdict = self.judge_inbound(from, packet);
        verdict.map_err(|why| self.drop(why))
    }

    fn judge_inbound(&self, from: &PeerId, packet: &[u8]) -> Result<(), Drop> {
        let nets = self.peers.get(from).ok_or(Drop::NotAllowed)?;
        if packet.len() > self.mtu {
            return Err(Drop::TooBig);
        }
        let h = header(packet)?;
        if !nets.iter().any(|n| n.contains(&h.src)) {
            return Err(Drop::SpoofedSource);
        }
        if !self.own.contains(&h.dst) {
            return Err(Drop::NotForUs);
        }
        Ok(())
    }

    /// Packets dropped so far, by reason.
    pub fn dropped(&self) -> impl Iterator<Item = (Drop, u64)> + '_ {
        self.dropped.iter().map(|(d, n)| (*d, *n))
    }
}

/// A packet the host sends on every link (from a link-local or
/// unspecified address, or to a multicast one): not for any peer.
fn is_link_chatter(h: &super::packet::Header) -> bool {
    let local_src = match h.src {
        IpAddr::V6(a) => a.is_unspecified() || a.is_unicast_link_local(),
        IpAddr::V4(a) => a.is_unspecified() || a.is_link_local(),
    };
    let multicast = match h.dst {
        IpAddr::V6(a) => a.is_multicast(),
        IpAddr::V4(a) => a.is_multicast() || a.is_broadcast(),
    };
    local_src || multicast
}

#[cfg(test)]
mod tests {
    use super::super::packet::build;
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn v6(peer: &PeerId) -> Ipv6Addr {
        address_of(peer)
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn packets_go_to_the_peer_that_owns_the_destination_longest_prefix_first() {
        let (me, a, b, exit) = (
            PeerId::random(),
            PeerId::random(),
            PeerId::random(),
            PeerId::random(),
        );
        let my4 = Ipv4Addr::new(10, 7, 0, 1);
        let mut r = Router::new(&me, &[my4.into()], 1280);
        r.allow(Peer::new(a)).unwrap();
        r.allow(Peer {
            id: b,
            allowed_ips: vec![net("10.7.0.2/32")],
        })
        .unwrap();
        r.allow(Peer {
            id: exit,
            allowed_ips: vec![net("0.0.0.0/0")],
        })
        .unwrap();
        let out6 = build::v6(v6(&me), v6(&a), 10);
        assert_eq!(r.outbound(&out6), Ok(a));
        let to_b = build::v4(my4, Ipv4Addr::new(10, 7, 0, 2), 10);
        assert_eq!(r.outbound(&to_b), Ok(b), "the /32 before the exit's /0");
        let to_web = build::v4(my4, Ipv4Addr::new(198, 51, 100, 7), 10);
        assert_eq!(r.outbound(&to_web), Ok(exit));
        let nowhere = build::v6(v6(&me), v6(&PeerId::random()), 10);
        assert_eq!(r.outbound(&nowhere), Err(Drop::NoRoute));
        // Gone: its address goes nowhere, the exit still takes the rest.
        r.forbid(&b);
        assert_eq!(r.outbound(&to_b), Ok(exit));
        r.forbid(&exit);
        assert_eq!(r.outbound(&to_web), Err(Drop::NoRoute));
    }

    #[test]
    fn a_peer_is_delivered_only_its_own_sources_to_our_addresses() {
        let (me, a, stranger) = (PeerId::random(), PeerId::random(), PeerId::random());
        let mut r = Router::new(&me, &[], 1280);
        r.allow(Peer::new(a)).unwrap();
        assert_eq!(r.inbound(&a, &build::v6(v6(&a), v6(&me), 100)), Ok(()));
        assert_eq!(
            r.inbound(&stranger, &build::v6(v6(&stranger), v6(&me), 100)),
            Err(Drop::NotAllowed)
        );
        let spoofed = build::v6(v6(&PeerId::random()), v6(&me), 100);
        assert_eq!(r.inbound(&a, &spoofed), Err(Drop::SpoofedSource));
        let elsewhere = build::v6(v6(&a), v6(&PeerId::random()), 100);
        assert_eq!(r.inbound(&a, &elsewhere), Err(Drop::NotForUs));
        assert_eq!(r.inbound(&a, &[0x60, 0, 0]), Err(Drop::Malformed));
        assert_eq!(
            r.inbound(&a, &build::v6(v6(&a), v6(&me), 1300)),
            Err(Drop::TooBig)
        );
        // The host's own link chatter (a router solicitation) is no peer's.
        let fe80: Ipv6Addr = "fe80::1".parse().unwrap();
        let all_routers: Ipv6Addr = "ff02::2".parse().unwrap();
        assert_eq!(
            r.outbound(&build::v6(fe80, all_routers, 8)),
            Err(Drop::Local)
        );
        assert_eq!(
            r.outbound(&build::v6(v6(&me), all_routers, 8)),
            Err(Drop::Local)
        );
        // Our device sending from an address not ours is refused too.
        assert_eq!(
            r.outbound(&build::v6(v6(&a), v6(&a), 1)),
            Err(Drop::NotFromUs)
        );
        let counted: Vec<(Drop, u64)> = r.dropped().collect();
        assert_eq!(
            counted,
            [
                (Drop::Malformed, 1),
                (Drop::TooBig, 1),
                (Drop::NotAllowed, 1),
                (Drop::SpoofedSource, 1),
                (Drop::NotForUs, 1),
                (Drop::NotFromUs, 1),
                (Drop::Local, 2),
            ]
        );
    }

    #[test]
    fn claims_on_taken_or_own_networks_and_too_many_are_refused() {
        let (me, a, b) = (PeerId::random(), PeerId::random(), PeerId::random());
        let my4 = Ipv4Addr::new(10, 7, 0, 1);
        let mut r = Router::new(&me, &[my4.into()], 1280);
        let claim = |id, s: &str| Peer {
            id,
            allowed_ips: vec![net(s)],
        };
        r.allow(claim(a, "10.7.0.2/32")).unwrap();
        assert_eq!(
            r.allow(claim(b, "10.7.0.2/32")),
            Err(RouterError::Taken {
                net: net("10.7.0.2/32"),
                owner: a
            })
        );
        assert_eq!(
            r.allow(claim(b, "10.7.0.0/24")),
            Err(RouterError::Ours {
                net: net("10.7.0.0/24")
            })
        );
        // Allowing again replaces: a may move to another address.
        r.allow(claim(a, "10.7.0.3/32")).unwrap();
        r.allow(claim(b, "10.7.0.2/32")).unwrap();
        let too_many = Peer {
            id: b,
            allowed_ips: (0..=MAX_ALLOWED_IPS as u32)
                .map(|i| IpNet::from(IpAddr::V4(Ipv4Addr::from(0x0a08_0000 + i))))
                .collect(),
        };
        assert_eq!(
            r.allow(too_many),
            Err(RouterError::TooManyNetworks { peer: b })
        );
        for _ in 2..MAX_PEERS {
            r.allow(Peer::new(PeerId::random())).unwrap();
        }
        assert_eq!(
            r.allow(Peer::new(PeerId::random())),
            Err(RouterError::TooManyPeers)
        );
        r.allow(Peer::new(a))
            .expect("a known peer may be allowed again");
    }
}
