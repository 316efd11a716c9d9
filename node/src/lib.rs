//! The ledgermesh node: a libp2p swarm and the roles built on it.
//!
//! ```text
//!   consumer ──sealed request──► ledger (provider's stdin topic) ──► provider
//!   consumer ◄──sealed response── ledger (consumer's stdin topic) ◄── provider
//!   consumer ══ relay circuit ══► relay ══► provider   (DCUtR upgrades to direct)
//!   consumer ◄═══════ /ledgermesh/stream/1 over yamux / QUIC ═══════ provider
//! ```
//!
//! [`swarm`] owns the swarm in one event loop; [`provider`], [`consumer`] and
//! [`relay`] are the roles; [`streams`] is the data-stream protocol;
//! [`signaling`] posts and reads sealed envelopes. The demo, the benchmark
//! and the development chain are in `ledgermesh-dev`; the command line is
//! the `ledgermesh` binary's own crate.
#![warn(missing_docs)]

pub mod access;
pub mod addr;
pub mod api;
pub mod clock;
pub mod cursor_store;
pub mod events;
pub mod identity;
pub mod ledger_spec;
pub mod logs;
pub mod net;
pub mod ops;
pub mod protocols;
pub mod roles;
pub mod scratch;
pub mod signaling;
pub mod swarm;
pub mod tasks;
pub use protocols::observe;
pub use protocols::stream as streams;
pub use protocols::stream::source;
pub use roles::{consumer, provider, relay};
pub use swarm::mux;
