//! Signaling without I/O: the provider's answer to a verified request
//! ([`inbox`]) and the requests a node has posted and is waiting on
//! ([`Outbox`]).

pub mod inbox;
pub mod limiter;
mod outbox;
pub mod progress;

pub use inbox::{requested_names, response, MAX_NAMES_PER_REQUEST};
pub use limiter::{RateLimits, SenderLimiter};
pub use outbox::{Done, Outbox, OutboxError, Settled, MAX_PENDING};
pub use progress::Progress;
