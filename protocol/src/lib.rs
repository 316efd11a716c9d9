//! Protocol logic of ledgermesh, with no I/O.
//!
//! Everything here is a pure function or a state machine that takes the
//! current time and its inputs as arguments: the node feeds it bytes from the
//! ledger and the network and carries out what it returns. That is what lets
//! the tests cover forged, expired and replayed envelopes without sockets.
//!
//! ```text
//!            ┌──────────── ledgermesh-protocol (this crate) ────────────┐
//!  ledger ──►│ topic::Topic   envelope::{seal, Opener}   replay cache   │
//!  network ─►│ framing::{StreamRequest, StreamHeader}   signal types   │
//!            └──────────────────────────────────────────────────────────┘
//! ```
//!
//! # The machine contract
//!
//! Every decision machine here has the same shape (the one quinn's
//! `Connection` has), written down once as [`Machine`]:
//! - **inputs** are its own `handle_*`/`on_*` methods, each handed the
//!   current time as an [`Instant`] when time matters to it;
//! - **outputs** are drained with [`Machine::poll_action`] after every
//!   input, until it returns `None`;
//! - **timers**: [`Machine::poll_timeout`] says when it next wants to be
//!   woken, and [`Machine::handle_timeout`] wakes it. A driver sleeps until
//!   the earliest deadline or the next input, whichever comes first.
//!
//! One time type inside the machines: [`Instant`], handed in, never read.
//! The wall clock (Unix milliseconds) is data at the edge: timestamps in
//! envelopes, grants and ledger entries, compared as values. That is why
//! [`access::AccessControl`] runs on Unix milliseconds: every deadline it
//! holds is a grant's or an ACL entry's wall-clock end (signed into a
//! ledger message, kept in the grant log across restarts, dated in the ACL
//! file), and its timers are those ends. Because no
//! machine reads a clock, a test runs it on virtual time:
//! [`harness::Pair`] joins two machines by a link with a delay and
//! advances time straight to the next delivery or deadline.
#![warn(missing_docs)]

use std::time::Instant;

/// The contract of a sans-IO decision machine (see the crate docs).
pub trait Machine {
    /// What the machine asks its driver to do.
    type Action;
    /// The next thing to do, if any; drained after every input.
    fn poll_action(&mut self) -> Option<Self::Action>;
    /// When the machine next wants [`Machine::handle_timeout`] (`None`: it
    /// waits for input only). A deadline at or before now is due at once.
    fn poll_timeout(&self) -> Option<Instant>;
    /// Time has reached `now`; deadlines at or before it fire.
    fn handle_timeout(&mut self, now: Instant);
}

pub mod access;
pub mod consensus;
pub mod envelope;
pub mod framing;
#[cfg(fuzzing)]
pub mod fuzzing;
pub mod harness;
pub mod keys;
pub mod live;
pub mod noise;
pub mod path;
pub mod payment;
pub mod relay;
pub mod relay_caps;
pub mod replay;
pub mod signal;
pub mod signaling;
pub mod stream;
pub mod topic;
pub mod vpn;

pub use envelope::{seal, OpenError, OpenPolicy, Opened, Opener, SealError, Sealed};
pub use signal::{
    RejectReason, ServiceRequest, ServiceResponse, Signal, StreamInfo, StreamRejection,
};
pub use topic::Topic;
