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
#![warn(missing_docs)]

pub mod access;
pub mod consensus;
pub mod envelope;
pub mod framing;
#[cfg(fuzzing)]
pub mod fuzzing;
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

pub use envelope::{seal, OpenError, OpenPolicy, Opened, Opener, SealError, Sealed};
pub use signal::{
    RejectReason, ServiceRequest, ServiceResponse, Signal, StreamInfo, StreamRejection,
};
pub use topic::Topic;
