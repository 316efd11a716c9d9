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
