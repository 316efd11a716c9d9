//! The mesh VPN's decisions, without I/O: a node's address comes from its
//! key ([`address`]); IP packets travel between peers as frames on a stream
//! ([`frame`]); and the [`router`] says which peer a packet from the TUN
//! device goes to, and whether a packet from a peer may be delivered — a
//! packet nobody allowed owns, from a peer nobody allowed, or with a source
//! address its sender does not own is dropped, with a [`Drop`] reason that
//! is counted and reported.
//!
//! ```text
//!   TUN ──packet──► Router::outbound ──peer──► frames on the peer's stream ──►
//!   ◄──packet── Router::inbound(from) ◄──────── frames from a peer's stream ◄──
//!                  └── Drop(reason): counted, reported, the tunnel runs on
//! ```

pub mod address;
pub mod flows;
pub mod frame;
pub mod packet;
pub mod router;

pub use address::{address_of, address_v4_of, is_mesh, PREFIX, PREFIX_LEN, V4_NET, V4_NET_LEN};
pub use ipnet::{IpNet, Ipv4Net};
pub use router::{ExitPolicy, Peer, PeerParseError, Router, RouterError};

/// Why a packet was not carried. A closed set: each is counted and named
/// in the `vpn_dropped` event by [`Drop::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Drop {
    /// Not an IPv4 or IPv6 packet, or its header lies about its length.
    Malformed,
    /// Larger than the tunnel's MTU.
    TooBig,
    /// To an address no allowed peer owns.
    NoRoute,
    /// From a peer that is not allowed.
    NotAllowed,
    /// From a peer, with a source address that peer does not own.
    SpoofedSource,
    /// From a peer, to an address that is not ours.
    NotForUs,
    /// From our own device, with a source address that is not ours.
    NotFromUs,
    /// The host's own link chatter on the device (router solicitations,
    /// multicast listener reports: from a link-local or unspecified
    /// address, or to a multicast one): never for the mesh, counted but
    /// not told.
    Local,
    /// The queue to or from a peer was full (the node's, not the router's
    /// decision: it carries packets no faster than the path takes them).
    Congested,
    /// From a peer, through an exit, to a private network the exit does
    /// not open to its peers (its own LAN).
    PrivateDestination,
    /// Through a priced exit, for a peer with no paid room: no channel
    /// attached, or its credit spent until it pays.
    Unpaid,
}

impl Drop {
    /// Every reason, in order.
    pub const ALL: [Drop; 11] = [
        Drop::Malformed,
        Drop::TooBig,
        Drop::NoRoute,
        Drop::NotAllowed,
        Drop::SpoofedSource,
        Drop::NotForUs,
        Drop::NotFromUs,
        Drop::Local,
        Drop::Congested,
        Drop::PrivateDestination,
        Drop::Unpaid,
    ];

    /// The reason's name in events and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Drop::Malformed => "malformed",
            Drop::TooBig => "too_big",
            Drop::NoRoute => "no_route",
            Drop::NotAllowed => "not_allowed",
            Drop::SpoofedSource => "spoofed_source",
            Drop::NotForUs => "not_for_us",
            Drop::NotFromUs => "not_from_us",
            Drop::Local => "local",
            Drop::Congested => "congested",
            Drop::PrivateDestination => "private_destination",
            Drop::Unpaid => "unpaid",
        }
    }
}

impl std::fmt::Display for Drop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
