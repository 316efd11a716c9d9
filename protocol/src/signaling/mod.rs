//! Signaling state without I/O: the requests a node has posted and is
//! waiting on ([`Outbox`]).

mod outbox;

pub use outbox::{Outbox, OutboxError, MAX_PENDING};
