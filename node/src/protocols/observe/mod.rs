//! Address consensus over `/ledgermesh/observe/1`.
//!
//! ```text
//!   asker ──ObserveRequest{dial_back}──► observer
//!                                         │ reads the connection's real remote address
//!                                         │ (dial_back: dials it on a fresh port, ≤5 s;
//!                                         │  global IPs only, ≤64 at once, 1 per asker
//!                                         │  and per IP per 30 s)
//!   asker ◄─ObserveResponse{observed, reachable, quic_listen, also_observed}─┘
//! ```
//!
//! A TCP verdict is followed by a QUIC round ([`quic`]) over the QUIC
//! addresses the observers told, for the hard-NAT path.
//!
//! [`Behaviour`] is both sides in the swarm: it answers askers and owns the
//! capped dial-back table; [`client`] runs the rounds (the decisions are
//! `ledgermesh_protocol::consensus`'s `Round` and `Rechecks`).

mod behaviour;
pub mod client;
mod codec;
mod quic;

pub use behaviour::{Behaviour, ObserveError};
pub use client::{check, start, RECHECK_EVERY};
pub use codec::{ObserveCodec, OBSERVE_PROTOCOL};

use libp2p::swarm::ConnectionId;
use libp2p::{Multiaddr, PeerId};
use std::future::Future;

/// What address consensus asks of the node beyond [`crate::net::Net`]:
/// observations, extra connections to observe on, and where to record the
/// verdicts.
pub trait ObserveNet: crate::net::Net {
    /// Asks a connected `peer` which address it sees us at (and to dial
    /// it back).
    fn observe(
        &self,
        peer: PeerId,
        dial_back: bool,
    ) -> impl Future<Output = Result<ledgermesh_proto::v1::ObserveResponse, ObserveError>> + Send;
    /// Opens a connection to `peer` over `addr` even when one is open
    /// already; returns its id.
    fn dial_also(
        &self,
        peer: PeerId,
        addr: Multiaddr,
    ) -> impl Future<Output = Result<ConnectionId, crate::net::DialError>> + Send;
    /// Closes the connection `id` (and nothing else).
    fn close_connection(&self, id: ConnectionId) -> impl Future<Output = ()> + Send;
    /// Records an address-consensus verdict.
    fn set_public(
        &self,
        verdict: ledgermesh_protocol::consensus::Verdict,
        udp: bool,
    ) -> impl Future<Output = ()> + Send;
    /// Records the public QUIC address decided by a QUIC round.
    fn set_public_quic(&self, addr: Option<Multiaddr>) -> impl Future<Output = ()> + Send;
}
