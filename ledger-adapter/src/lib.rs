//! The `Ledger` trait: the public bulletin board ledgermesh signals through.
//!
//! A ledger does two things: it appends a payload to a 32-byte topic, and it
//! lets anyone follow a topic from a [`Cursor`]. Every message carries the
//! cursor just past it, so a follower that persists the last cursor it handled
//! can re-subscribe after a restart or an outage and get every later message
//! exactly once.
//!
//! Implementations: [`memory::MemoryLedger`] (one process; the embedded default
//! and a test tool). The EVM ledger (the `SignalBoard` contract over JSON-RPC)
//! implements the same trait; [`conformance`] is the suite every
//! implementation must pass.
#![warn(missing_docs)]

pub mod conformance;
pub mod evm;
pub mod memory;
pub mod payments;

use futures::stream::BoxStream;
use std::future::Future;
use std::pin::Pin;

pub use evm::EvmLedger;
pub use memory::MemoryLedger;

/// A 32-byte topic identifier.
pub type TopicId = [u8; 32];

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A position in a topic's history; a follow from a cursor yields only the
/// messages after it. Ordered: block first, then index within the block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Cursor {
    /// Block number (the sequence number for the memory ledger).
    pub block: u64,
    /// Index within the block.
    pub index: u64,
}

impl Cursor {
    /// The cursor before every message.
    pub const START: Cursor = Cursor { block: 0, index: 0 };
}

/// One message read from a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerMessage {
    /// Topic it was posted to.
    pub topic: TopicId,
    /// Ledger account that posted it (an address for EVM).
    pub sender: String,
    /// The payload, as posted.
    pub payload: Vec<u8>,
    /// The cursor just past this message: follow from it to continue.
    pub cursor: Cursor,
    /// The hash of the block it is in, where the ledger has blocks that a
    /// reorganisation can replace (EVM): saved with the cursor, it tells a
    /// restarted follower whether the history it read still stands.
    pub block_hash: Option<[u8; 32]>,
}

/// A message seen in the ledger's pending pool: not in a block yet, so it has
/// no cursor, may never land, and is read again (with its cursor) by
/// [`Ledger::follow`] if it does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingMessage {
    /// Topic it was posted to.
    pub topic: TopicId,
    /// Ledger account that sent it.
    pub sender: String,
    /// The payload, as posted.
    pub payload: Vec<u8>,
}

/// What posting produced.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PostReceipt {
    /// Where the message landed, when known.
    pub cursor: Option<Cursor>,
    /// Transaction hash (EVM).
    pub tx: Option<String>,
    /// Gas the transaction used (EVM).
    pub gas_used: Option<u64>,
}

/// Errors of ledger operations.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum LedgerError {
    /// The payload is over the ledger's cap.
    #[error("payload of {len} bytes exceeds the ledger's {max}-byte cap")]
    PayloadTooLarge {
        /// Payload size.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// The ledger cannot be reached right now; retrying later may work.
    #[error("ledger unavailable: {0}")]
    Unavailable(String),
    /// The ledger refused the operation; retrying will not help.
    #[error("ledger refused: {0}")]
    Rejected(String),
    /// The ledger was shut down.
    #[error("ledger closed")]
    Closed,
}

/// A public ledger with topics.
pub trait Ledger: Send + Sync + 'static {
    /// Short description for logs and events (e.g. `memory`).
    fn describe(&self) -> String;

    /// Largest payload accepted by [`Ledger::post`].
    fn max_payload(&self) -> usize;

    /// Appends `payload` to `topic`.
    fn post(
        &self,
        topic: TopicId,
        payload: Vec<u8>,
    ) -> BoxFuture<'_, Result<PostReceipt, LedgerError>>;

    /// Where a follower with no saved cursor starts: far enough back to see
    /// every message that can still be fresh, without replaying all history.
    fn initial_cursor(&self) -> BoxFuture<'_, Result<Cursor, LedgerError>> {
        Box::pin(async { Ok(Cursor::START) })
    }

    /// The hash of block `block` on the ledger's current history (`None`
    /// where the ledger has no such block, or no replaceable blocks).
    fn block_hash(&self, _block: u64) -> BoxFuture<'_, Result<Option<[u8; 32]>, LedgerError>> {
        Box::pin(async { Ok(None) })
    }

    /// How far back a follower restarts when the block of its saved cursor
    /// was replaced while it was away (a reorg deeper than this is beyond
    /// what `--confirmations` is meant to absorb).
    fn reorg_rewind(&self) -> u64 {
        0
    }

    /// Every message of `topic` after `from`, in order, then new ones as they
    /// arrive. Transient failures appear as `Err` items; the stream goes on.
    fn follow(
        &self,
        topic: TopicId,
        from: Cursor,
    ) -> BoxStream<'static, Result<LedgerMessage, LedgerError>>;

    /// Messages of `topic` as they enter the ledger's pending pool, before
    /// any block holds them: an early look at what [`Ledger::follow`] reads
    /// later. Best effort: the pool may not show every message, shows some
    /// that never land, and may show one again; failures are retried
    /// quietly. `None` where the ledger has no pending view or it is off.
    fn follow_pending(&self, _topic: TopicId) -> Option<BoxStream<'static, PendingMessage>> {
        None
    }
}
