//! The relay server: circuit relay v2 on the wire, so stock libp2p clients
//! (ours included) reserve and dial through it unchanged; our own server
//! half, so each circuit gets its own limits (stock for strangers, lifted
//! for listed peers), is counted per direction, and each refusal carries
//! its reason to the operator.
//!
//! ```text
//!   peer ──hop: RESERVE──► server ── Book (protocol crate): caps, per-IP, expiry
//!   src  ──hop: CONNECT──► server ──stop: CONNECT──► dst
//!   src  ◄════ Pump ════ counted bytes, per-direction cap, deadline ════► dst
//! ```
//!
//! Decisions are the protocol crate's [`Book`](ledgermesh_protocol::relay::Book);
//! [`behaviour`] is the swarm side (keep-alive, peer IPs, public addresses).

pub mod behaviour;
pub mod limits;
mod pump;
pub(crate) mod report;
pub(crate) mod server;

use libp2p::StreamProtocol;
pub use limits::{RelayLimits, RelayPay};

/// The hop protocol: peers ask the relay for reservations and circuits.
pub const HOP: StreamProtocol = StreamProtocol::new("/libp2p/circuit/relay/0.2.0/hop");

/// The stop protocol: the relay tells a destination who is calling.
pub const STOP: StreamProtocol = StreamProtocol::new("/libp2p/circuit/relay/0.2.0/stop");
