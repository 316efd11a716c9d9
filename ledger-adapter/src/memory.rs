//! An in-memory ledger shared by the nodes of one process.

use crate::{BoxFuture, Cursor, Ledger, LedgerError, LedgerMessage, PostReceipt, TopicId};
use futures::stream::{self, BoxStream, StreamExt};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// Default payload cap, the same order as the EVM contract's.
pub const DEFAULT_MAX_PAYLOAD: usize = 8 * 1024;

/// One stored message: sequence number, sender, payload.
type Stored = (u64, String, Arc<Vec<u8>>);

#[derive(Debug, Default)]
struct State {
    /// Per topic, in order.
    topics: HashMap<TopicId, Vec<Stored>>,
    seq: u64,
}

/// The shared board. Clone it freely; [`MemoryLedger::account`] gives each
/// node a handle that posts under its own account name.
#[derive(Debug, Clone)]
pub struct MemoryLedger {
    state: Arc<Mutex<State>>,
    latest: Arc<watch::Sender<u64>>,
    account: String,
    max_payload: usize,
}

impl Default for MemoryLedger {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryLedger {
    /// An empty board with the default payload cap.
    pub fn new() -> Self {
        Self {
            state: Arc::default(),
            latest: Arc::new(watch::channel(0).0),
            account: "memory:anonymous".into(),
            max_payload: DEFAULT_MAX_PAYLOAD,
        }
    }

    /// A handle on the same board that posts as `account`.
    pub fn account(&self, account: impl Into<String>) -> Self {
        Self {
            account: account.into(),
            ..self.clone()
        }
    }

    /// Sets the payload cap of this handle.
    pub fn with_max_payload(mut self, max: usize) -> Self {
        self.max_payload = max;
        self
    }

    /// Number of messages posted to `topic` so far.
    pub fn len(&self, topic: &TopicId) -> usize {
        self.lock().topics.get(topic).map_or(0, Vec::len)
    }

    /// Whether nothing was ever posted.
    pub fn is_empty(&self) -> bool {
        self.lock().seq == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the log half-written
        // (every mutation is a single push), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn next_after(&self, topic: &TopicId, from: Cursor) -> Option<LedgerMessage> {
        let state = self.lock();
        let msgs = state.topics.get(topic)?;
        let i = msgs.partition_point(|(seq, _, _)| *seq <= from.block);
        msgs.get(i).map(|(seq, sender, payload)| LedgerMessage {
            topic: *topic,
            sender: sender.clone(),
            payload: payload.as_ref().clone(),
            cursor: Cursor {
                block: *seq,
                index: 0,
            },
            block_hash: None,
        })
    }
}

impl Ledger for MemoryLedger {
    fn describe(&self) -> String {
        "memory".into()
    }

    fn max_payload(&self) -> usize {
        self.max_payload
    }

    fn post(
        &self,
        topic: TopicId,
        payload: Vec<u8>,
    ) -> BoxFuture<'_, Result<PostReceipt, LedgerError>> {
        Box::pin(async move {
            if payload.len() > self.max_payload {
                return Err(LedgerError::PayloadTooLarge {
                    len: payload.len(),
                    max: self.max_payload,
                });
            }
            let seq = {
                let mut state = self.lock();
                state.seq += 1;
                let seq = state.seq;
                state.topics.entry(topic).or_default().push((
                    seq,
                    self.account.clone(),
                    Arc::new(payload),
                ));
                seq
            };
            self.latest.send_replace(seq);
            Ok(PostReceipt {
                cursor: Some(Cursor {
                    block: seq,
                    index: 0,
                }),
                tx: None,
                gas_used: None,
            })
        })
    }

    fn follow(
        &self,
        topic: TopicId,
        from: Cursor,
    ) -> BoxStream<'static, Result<LedgerMessage, LedgerError>> {
        let ledger = self.clone();
        let rx = self.latest.subscribe();
        stream::unfold(
            (ledger, rx, from),
            move |(ledger, mut rx, cursor)| async move {
                loop {
                    // Mark the current value seen before looking, so a post that
                    // lands between the look and the wait still wakes us.
                    rx.borrow_and_update();
                    if let Some(msg) = ledger.next_after(&topic, cursor) {
                        let next = msg.cursor;
                        return Some((Ok(msg), (ledger, rx, next)));
                    }
                    if rx.changed().await.is_err() {
                        return None;
                    }
                }
            },
        )
        .boxed()
    }
}
