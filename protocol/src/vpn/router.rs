//! Which peer a packet goes to, and whether a peer's packet may come in.
//!
//! Each allowed peer owns its key-derived address (always) and the
//! networks it is allowed (`allowed_ips`, as in WireGuard: `10.7.0.2/32`,
//! or `0.0.0.0/0` for an exit). A packet from our device goes to the peer
//! owning the longest prefix that holds its destination; a packet from a
//! peer is delivered only if that peer is allowed, its source is one the
//! peer owns and its destination is ours. Everything else is a [`Drop`],
//! counted by reason.
//!
//! A router that serves as an exit ([`Router::serve_exit`]) also carries
//! its peers' packets to the world outside the mesh (the host forwards
//! them, behind its NAT) and the answers back: a peer's packet from its
//! own address to a public one is delivered to our device, and a packet
//! from a public address to a peer's is sent to that peer. Never to or
//! from the mesh's own addresses, never one peer to another through us,
//! and to private networks (the exit's own LAN) only where allowed.

use super::address::{address_of, is_mesh};
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

/// A peer as written on a command line or in a config file: `PEER_ID`,
/// or `PEER_ID=NET,NET…` with the networks it owns besides its own
/// address (`12D3…=10.7.0.2/32`).
impl std::str::FromStr for Peer {
    type Err = PeerParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (id, nets) = match s.split_once('=') {
            Some((id, nets)) => (id, Some(nets)),
            None => (s, None),
        };
        let id = id
            .trim()
            .parse()
            .map_err(|_| PeerParseError::Id(id.trim().to_string()))?;
        let allowed_ips = (nets.into_iter())
            .flat_map(|n| n.split(','))
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(|n| parse_net(n).ok_or_else(|| PeerParseError::Net(n.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        if allowed_ips.len() > MAX_ALLOWED_IPS {
            return Err(PeerParseError::TooMany);
        }
        Ok(Peer { id, allowed_ips })
    }
}

/// A network, or one address as its /32 or /128.
fn parse_net(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.id)?;
        for (i, net) in self.allowed_ips.iter().enumerate() {
            f.write_str(if i == 0 { "=" } else { "," })?;
            write!(f, "{net}")?;
        }
        Ok(())
    }
}

/// Why a written peer is not one.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PeerParseError {
    /// Not a PeerId.
    #[error("{0:?} is not a PeerId")]
    Id(String),
    /// Not a network.
    #[error("{0:?} is not a network (10.7.0.2/32, fd00::/64) or an address")]
    Net(String),
    /// More than [`MAX_ALLOWED_IPS`] networks.
    #[error("more than {MAX_ALLOWED_IPS} networks")]
    TooMany,
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
    /// The network lies inside the mesh's prefix, where every address is
    /// a key's own.
    #[error(
        "{net} is inside the mesh's {}/{}: its addresses are keys' own",
        super::PREFIX,
        super::PREFIX_LEN
    )]
    Mesh {
        /// The network.
        net: IpNet,
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
    /// Whether we forward peers' packets outside the mesh, and whether to
    /// private networks too.
    exit: Option<ExitPolicy>,
}

/// What an exit forwards (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExitPolicy {
    /// Whether peers may reach private networks (RFC 1918, shared address
    /// space, unique local IPv6, NAT64 and the IPv6 tunnels' prefixes) and
    /// `local` through us, and be answered from them: the exit's own LAN.
    pub lan: bool,
    /// The exit host's directly connected networks (its LAN, whatever its
    /// addresses: a LAN with public IPv6 prefixes too).
    pub local: Vec<IpNet>,
}

impl ExitPolicy {
    /// Whether `a` is the exit's LAN, closed to its peers.
    fn closed(&self, a: &IpAddr) -> bool {
        !self.lan && (is_private(a) || self.local.iter().any(|n| n.contains(a)))
    }
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
            exit: None,
        }
    }

    /// From now on, forward peers' packets outside the mesh as `policy`
    /// says (see the module docs).
    pub fn serve_exit(&mut self, policy: ExitPolicy) {
        self.exit = Some(policy);
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
            // Inside the mesh's prefix an address is its key's: a narrower
            // claim would tie with (and could take) another peer's own.
            if let IpNet::V6(v6) = net {
                if mesh_net().contains(&v6.network()) {
                    return Err(RouterError::Mesh { net });
                }
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

    /// The peers allowed, each with the networks it owns besides its own
    /// address.
    pub fn peers(&self) -> Vec<Peer> {
        (self.peers.iter())
            .map(|(id, nets)| Peer {
                id: *id,
                allowed_ips: nets[1..].to_vec(),
            })
            .collect()
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
        if !self.own.contains(&h.src) && !self.is_answer(&h.src) {
            return Err(Drop::NotFromUs);
        }
        // A mesh address is reached only through its own key's route,
        // never through a broader one (an exit's ::/0).
        let mesh = matches!(h.dst, IpAddr::V6(a) if is_mesh(&a));
        (self.routes.iter())
            .find(|(net, _)| net.contains(&h.dst) && (!mesh || net.prefix_len() == 128))
            .map(|(_, peer)| *peer)
            .ok_or(Drop::NoRoute)
    }

    /// Whether an exit may send a packet from `src` (not ours) to a peer:
    /// an answer from outside the mesh that no peer owns.
    fn is_answer(&self, src: &IpAddr) -> bool {
        let outside = match src {
            IpAddr::V6(a) => !is_mesh(a),
            IpAddr::V4(_) => true,
        };
        let open = self.exit.as_ref().is_some_and(|p| !p.closed(src));
        open && outside && is_source(src) && self.owner(src).is_none()
    }

    /// Whether an exit forwards a peer's packet to `dst` (not ours): a
    /// public address outside the mesh that no peer owns, or a private
    /// one where the policy allows.
    fn may_forward(&self, dst: &IpAddr) -> Result<(), Drop> {
        let Some(policy) = &self.exit else {
            return Err(Drop::NotForUs);
        };
        let mesh = matches!(dst, IpAddr::V6(a) if is_mesh(a));
        if mesh || !is_source(dst) || self.owner(dst).is_some() {
            return Err(Drop::NotForUs);
        }
        if policy.closed(dst) {
            return Err(Drop::PrivateDestination);
        }
        Ok(())
    }

    /// Who owns `addr`: the peer with the longest prefix that holds it.
    fn owner(&self, addr: &IpAddr) -> Option<&PeerId> {
        (self.routes.iter())
            .find(|(net, _)| net.contains(addr))
            .map(|(_, peer)| peer)
    }

    /// A packet from `from`: whether to deliver it to our device.
    pub fn inbound(&mut self, from: &PeerId, packet: &[u8]) -> Result<(), Drop> {
        let verdict = self.judge_inbound(from, packet);
        verdict.map_err(|why| self.drop(why))
    }

    fn judge_inbound(&self, from: &PeerId, packet: &[u8]) -> Result<(), Drop> {
        if !self.peers.contains_key(from) {
            return Err(Drop::NotAllowed);
        }
        if packet.len() > self.mtu {
            return Err(Drop::TooBig);
        }
        let h = header(packet)?;
        // The source must be the sender's: its own key's address inside
        // the mesh; elsewhere, the longest prefix holding it must be the
        // sender's (an exit's ::/0 does not let it speak for a peer with a
        // narrower claim); and never one of ours or one that is nobody's.
        let owned = match h.src {
            IpAddr::V6(a) if is_mesh(&a) => a == address_of(from),
            src => self.owner(&src) == Some(from),
        };
        if !owned || self.own.contains(&h.src) || !is_source(&h.src) {
            return Err(Drop::SpoofedSource);
        }
        if !self.own.contains(&h.dst) {
            return self.may_forward(&h.dst);
        }
        Ok(())
    }

    /// Packets dropped so far, by reason.
    pub fn dropped(&self) -> impl Iterator<Item = (Drop, u64)> + '_ {
        self.dropped.iter().map(|(d, n)| (*d, *n))
    }
}

/// The mesh's prefix as a network.
fn mesh_net() -> Ipv6Net {
    Ipv6Net::new(super::PREFIX, super::PREFIX_LEN).expect("a valid prefix")
}

/// Whether `a` can be anybody's source across the tunnel: not unspecified,
/// loopback, link-local, multicast, broadcast or an IPv4-mapped IPv6 one.
fn is_source(a: &IpAddr) -> bool {
    match a {
        IpAddr::V6(v6) => {
            !(v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_unicast_link_local()
                || v6.is_multicast()
                || v6.to_ipv4_mapped().is_some())
        }
        IpAddr::V4(v4) => {
            !(v4.is_unspecified()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast())
        }
    }
}

/// Whether `a` is in a private network: RFC 1918, shared address space
/// (RFC 6598: the tunnel's own IPv4 addresses), or unique local IPv6; or
/// may stand for one: NAT64's `64:ff9b::/96` and `64:ff9b:1::/48`, 6to4's
/// `2002::/16` and Teredo's `2001::/32` carry IPv4 addresses inside.
fn is_private(a: &IpAddr) -> bool {
    match a {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_private() || (o[0] == 100 && (o[1] & 0xc0) == 64)
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            (s[0] & 0xfe00) == 0xfc00
                || (s[0] == 0x64 && s[1] == 0xff9b && (s[2] == 0 || s[2] == 1))
                || s[0] == 0x2002
                || (s[0] == 0x2001 && s[1] == 0)
        }
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
    fn an_exit_cannot_speak_for_a_peer_nor_take_a_mesh_address() {
        let (me, b, exit) = (PeerId::random(), PeerId::random(), PeerId::random());
        let my4 = Ipv4Addr::new(10, 7, 0, 1);
        let mut r = Router::new(&me, &[my4.into()], 1280);
        let b4 = Ipv4Addr::new(10, 7, 0, 2);
        r.allow(Peer {
            id: b,
            allowed_ips: vec![net("10.7.0.2/32")],
        })
        .unwrap();
        r.allow(Peer {
            id: exit,
            allowed_ips: vec![net("0.0.0.0/0"), net("::/0")],
        })
        .unwrap();
        // The internet's packets come from the exit …
        let web = Ipv4Addr::new(198, 51, 100, 7);
        assert_eq!(r.inbound(&exit, &build::v4(web, my4, 10)), Ok(()));
        // … but not as b, nor as b's or a stranger's mesh address, nor as
        // a link-local, an IPv4-mapped or our own address.
        let stranger = PeerId::random();
        for src in [
            IpAddr::from(b4),
            v6(&b).into(),
            v6(&stranger).into(),
            "fe80::1".parse().unwrap(),
            "::ffff:198.51.100.7".parse().unwrap(),
            my4.into(),
        ] {
            let p = match src {
                IpAddr::V4(s) => build::v4(s, my4, 10),
                IpAddr::V6(s) => build::v6(s, v6(&me), 10),
            };
            assert_eq!(r.inbound(&exit, &p), Err(Drop::SpoofedSource), "{src}");
        }
        // Our packets to a mesh address the exit does not own go nowhere.
        let to_stranger = build::v6(v6(&me), v6(&stranger), 10);
        assert_eq!(r.outbound(&to_stranger), Err(Drop::NoRoute));
        assert_eq!(r.outbound(&build::v6(v6(&me), v6(&b), 10)), Ok(b));
        // Nobody may claim a network inside the mesh's prefix.
        let inside = net(&format!("{}/64", v6(&b)));
        assert_eq!(
            r.allow(Peer {
                id: stranger,
                allowed_ips: vec![inside],
            }),
            Err(RouterError::Mesh {
                net: inside.trunc()
            })
        );
    }

    #[test]
    fn a_peer_is_written_as_its_id_and_its_networks() {
        let id = PeerId::random();
        let p: Peer = format!("{id}=10.7.0.2, 10.8.0.0/24,fd00::/64")
            .parse()
            .unwrap();
        assert_eq!(p.id, id);
        assert_eq!(
            p.allowed_ips,
            [net("10.7.0.2/32"), net("10.8.0.0/24"), net("fd00::/64")]
        );
        assert_eq!(
            p.to_string(),
            format!("{id}=10.7.0.2/32,10.8.0.0/24,fd00::/64")
        );
        assert_eq!(p.to_string().parse::<Peer>(), Ok(p));
        assert_eq!(id.to_string().parse::<Peer>(), Ok(Peer::new(id)));
        assert!(matches!("nope".parse::<Peer>(), Err(PeerParseError::Id(_))));
        assert!(matches!(
            format!("{id}=10.7.0.300/32").parse::<Peer>(),
            Err(PeerParseError::Net(_))
        ));
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

    #[test]
    fn an_exit_forwards_its_peers_to_the_world_and_nothing_else() {
        use crate::vpn::address_v4_of;
        let (me, c, d) = (PeerId::random(), PeerId::random(), PeerId::random());
        let (c4, d4) = (address_v4_of(&c), address_v4_of(&d));
        let web = Ipv4Addr::new(198, 51, 100, 7);
        let web6: Ipv6Addr = "2001:db8::7".parse().unwrap();
        let mut r = Router::new(&me, &[address_v4_of(&me).into()], 1280);
        for (p, v4) in [(c, c4), (d, d4)] {
            let allowed_ips = vec![IpNet::from(IpAddr::V4(v4))];
            r.allow(Peer { id: p, allowed_ips }).unwrap();
        }
        // Not an exit: the world is not ours to reach or answer for.
        let out = build::v4(c4, web, 20);
        assert_eq!(r.inbound(&c, &out), Err(Drop::NotForUs));
        let back = build::v4(web, c4, 20);
        assert_eq!(r.outbound(&back), Err(Drop::NotFromUs));
        r.serve_exit(ExitPolicy::default());
        // A peer's own addresses to public ones, and the answers back.
        assert_eq!(r.inbound(&c, &out), Ok(()));
        assert_eq!(r.inbound(&c, &build::v6(v6(&c), web6, 20)), Ok(()));
        assert_eq!(r.outbound(&back), Ok(c));
        assert_eq!(r.outbound(&build::v6(web6, v6(&c), 20)), Ok(c));
        // Not for another: its source must be its own, as always …
        assert_eq!(
            r.inbound(&c, &build::v4(d4, web, 20)),
            Err(Drop::SpoofedSource)
        );
        // … and no peer reaches another through the exit, by either
        // address, nor answers as one.
        assert_eq!(r.inbound(&c, &build::v4(c4, d4, 20)), Err(Drop::NotForUs));
        let to_mesh = build::v6(v6(&c), address_of(&PeerId::random()), 20);
        assert_eq!(r.inbound(&c, &to_mesh), Err(Drop::NotForUs));
        assert_eq!(r.outbound(&build::v4(d4, c4, 20)), Err(Drop::NotFromUs));
        let from_mesh = build::v6(address_of(&PeerId::random()), v6(&c), 20);
        assert_eq!(r.outbound(&from_mesh), Err(Drop::NotFromUs));
        // Nowhere a host cannot be.
        let multicast = build::v4(c4, Ipv4Addr::new(224, 0, 0, 1), 20);
        assert_eq!(r.inbound(&c, &multicast), Err(Drop::NotForUs));
        let loopback = build::v4(c4, Ipv4Addr::LOCALHOST, 20);
        assert_eq!(r.inbound(&c, &loopback), Err(Drop::NotForUs));
        // The exit's own LAN only where it says so.
        for lan in ["10.1.2.3", "192.168.1.1", "172.16.0.9", "100.64.0.1"] {
            let p = build::v4(c4, lan.parse().unwrap(), 20);
            assert_eq!(r.inbound(&c, &p), Err(Drop::PrivateDestination), "{lan}");
        }
        for closed in [
            "fd00::1",
            "64:ff9b::a00:1",
            "2002:a00:1::1",
            "2001:0:4136::1",
        ] {
            let p = build::v6(v6(&c), closed.parse().unwrap(), 20);
            assert_eq!(r.inbound(&c, &p), Err(Drop::PrivateDestination), "{closed}");
        }
        // The exit's own LAN, whatever its addresses, neither reached nor
        // answering.
        let lan6: Ipv6Addr = "2001:db8:7::5".parse().unwrap();
        r.serve_exit(ExitPolicy {
            lan: false,
            local: vec![net("2001:db8:7::/64")],
        });
        let to_lan = build::v6(v6(&c), lan6, 20);
        assert_eq!(r.inbound(&c, &to_lan), Err(Drop::PrivateDestination));
        assert_eq!(
            r.outbound(&build::v6(lan6, v6(&c), 20)),
            Err(Drop::NotFromUs)
        );
        let from_private = build::v4(Ipv4Addr::new(10, 0, 0, 9), c4, 20);
        assert_eq!(r.outbound(&from_private), Err(Drop::NotFromUs));
        r.serve_exit(ExitPolicy {
            lan: true,
            local: vec![],
        });
        let lan = build::v4(c4, Ipv4Addr::new(192, 168, 1, 1), 20);
        assert_eq!(r.inbound(&c, &lan), Ok(()));
        // A stranger gets nothing through an exit either.
        let stranger = PeerId::random();
        let theirs = build::v6(v6(&stranger), web6, 20);
        assert_eq!(r.inbound(&stranger, &theirs), Err(Drop::NotAllowed));
    }
}
