//! Posting sealed envelopes to a peer's `stdin` topic and reading our own;
//! [`requests`] matches the responses to the requests we posted.

pub mod journal;
pub mod requests;

use crate::clock::now_ms;
use crate::cursor_store::{CursorStore, Saved};
use crate::events::Event;
use crate::swarm::NodeHandle;
use futures::StreamExt;
use ledgermesh_ledger::{Cursor, Ledger, LedgerError};
use ledgermesh_protocol::envelope::{seal, OpenPolicy, Opened, Opener, Sealed};
use ledgermesh_protocol::signaling::Progress;
use ledgermesh_protocol::{Signal, Topic};
use libp2p::PeerId;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// Default lifetime of a service request or response.
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);

/// Seals `signal` to `to` and posts it on `to`'s `stdin` topic. Returns the nonce.
pub async fn post_sealed(
    handle: &NodeHandle,
    ledger: &dyn Ledger,
    to: PeerId,
    signal: &Signal,
    ttl: Duration,
) -> anyhow::Result<[u8; 16]> {
    let sealed = seal_to(handle, to, signal, ttl)?;
    let nonce = sealed.nonce;
    post_prepared(handle, ledger, to, signal.kind(), sealed).await?;
    Ok(nonce)
}

/// Seals `signal` to `to` (the nonce is known before anything is posted).
pub fn seal_to(
    handle: &NodeHandle,
    to: PeerId,
    signal: &Signal,
    ttl: Duration,
) -> Result<Sealed, ledgermesh_protocol::SealError> {
    seal(
        handle.keypair(),
        &to,
        signal,
        now_ms(),
        ttl.as_millis() as u64,
        &mut rand::rng(),
    )
}

/// Posts a sealed envelope on `to`'s `stdin` topic (retrying while the
/// ledger is unreachable) and reports it.
pub async fn post_prepared(
    handle: &NodeHandle,
    ledger: &dyn Ledger,
    to: PeerId,
    kind: &str,
    sealed: Sealed,
) -> Result<(), LedgerError> {
    let topic = Topic::stdin(&to);
    let bytes = sealed.bytes.len();
    let receipt = post_with_retry(handle, ledger, topic, sealed.bytes).await?;
    handle.emit(Event::LedgerPost {
        topic: topic.to_hex(),
        kind: kind.into(),
        bytes,
        tx: receipt.tx,
        gas_used: receipt.gas_used,
    });
    Ok(())
}

/// [`follow_inbox`] with the cursor kept under `data_dir` (when given).
pub async fn follow_own_inbox(
    handle: &NodeHandle,
    ledger: &Arc<dyn Ledger>,
    data_dir: Option<&std::path::Path>,
) -> anyhow::Result<mpsc::Receiver<Inbound>> {
    let topic = Topic::stdin(&handle.peer_id()).to_hex();
    let store = data_dir.map(|d| CursorStore::new(d, &ledger.describe(), &topic));
    follow_inbox(handle.clone(), ledger.clone(), store, OpenPolicy::default()).await
}

/// Attempts before a post that fails with `Unavailable` is given up.
const POST_ATTEMPTS: u32 = 6;

/// Posts, retrying while the ledger is unreachable. A retry after a lost
/// receipt may post twice; the recipient's replay cache drops the copy.
async fn post_with_retry(
    handle: &NodeHandle,
    ledger: &dyn Ledger,
    topic: Topic,
    payload: Vec<u8>,
) -> Result<ledgermesh_ledger::PostReceipt, LedgerError> {
    let mut wait = Duration::from_millis(250);
    let mut attempt = 1;
    loop {
        match ledger.post(topic.0, payload.clone()).await {
            Err(LedgerError::Unavailable(e)) if attempt < POST_ATTEMPTS => {
                handle.emit(Event::Error {
                    what: "ledger".into(),
                    detail: format!("post failed, retrying in {wait:?}: {e}"),
                    reason: Some("unavailable".into()),
                    peer_id: None,
                });
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// A message from our `stdin` topic: what it says, its size, and the
/// [`Ack`] to drop once it is fully handled.
pub type Inbound = (Opened, usize, Ack);

/// Says a followed message was fully handled ([`Ack::done`]). The saved
/// cursor never passes a message that was not: one dropped undone (its task
/// cancelled, its answer failed) is read again after a restart.
#[derive(Debug)]
pub struct Ack(AckOf);

#[derive(Debug)]
enum AckOf {
    /// A message read from a block: its place goes back to the follower.
    Mined {
        at: At,
        tx: mpsc::UnboundedSender<At>,
    },
    /// A message read from the pending pool: it has no place yet; the
    /// mined copy's ack waits in the slot until this one is done.
    Early(Arc<Mutex<EarlySlot>>),
}

/// A message handled from the pending pool, as its mined copy finds it.
#[derive(Debug, Default)]
struct EarlySlot {
    done: bool,
    mined: Option<Ack>,
}

/// A message's place: its cursor, then its block's hash (ordered by the
/// cursor; the hash goes into the cursor file with it).
type At = (Cursor, Option<[u8; 32]>);

impl Ack {
    /// The message is handled: the cursor may pass it.
    pub fn done(self) {
        match self.0 {
            AckOf::Mined { at, tx } => {
                let _ = tx.send(at);
            }
            AckOf::Early(slot) => {
                let mined = {
                    let mut s = slot.lock().unwrap_or_else(|p| p.into_inner());
                    s.done = true;
                    s.mined.take()
                };
                if let Some(mined) = mined {
                    mined.done();
                }
            }
        }
    }
}

/// Messages opened from the pending pool whose mined copy has not been read
/// yet, by payload hash: the mined copy is then passed over quietly (the
/// replay cache would refuse it), and the cursor passes it only once the
/// early copy is handled. At most [`EARLY_MAX`]; past that the oldest is
/// forgotten, and its mined copy is reported as a replay.
#[derive(Default)]
struct EarlyCopies {
    slots: HashMap<[u8; 32], Arc<Mutex<EarlySlot>>>,
    order: VecDeque<[u8; 32]>,
}

/// Early copies remembered (a few blocks' worth of messages to one node).
const EARLY_MAX: usize = 4_096;

impl EarlyCopies {
    fn key(payload: &[u8]) -> [u8; 32] {
        Sha256::digest(payload).into()
    }

    /// Remembers an early copy; returns the ack for its handler.
    fn insert(&mut self, payload: &[u8]) -> Ack {
        let key = Self::key(payload);
        let slot = Arc::new(Mutex::new(EarlySlot::default()));
        if self.slots.insert(key, slot.clone()).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > EARLY_MAX {
            if let Some(old) = self.order.pop_front() {
                self.slots.remove(&old);
            }
        }
        Ack(AckOf::Early(slot))
    }

    /// The mined copy of an early one: hands its ack to the early copy's
    /// slot (done at once if that one is handled). `Err` gives the ack back
    /// when no early copy is known.
    fn mined(&mut self, payload: &[u8], ack: Ack) -> Result<(), Ack> {
        let key = Self::key(payload);
        let Some(slot) = self.slots.remove(&key) else {
            return Err(ack);
        };
        self.order.retain(|k| *k != key);
        let mut s = slot.lock().unwrap_or_else(|p| p.into_inner());
        if s.done {
            drop(s);
            ack.done();
        } else {
            s.mined = Some(ack);
        }
        Ok(())
    }
}

/// Saves `cursor` (a write, an fsync and a rename: off the runtime's workers).
async fn save_cursor(handle: &NodeHandle, store: Option<&CursorStore>, at: At) {
    let Some(store) = store.cloned() else { return };
    let (cursor, block_hash) = at;
    let saved = Saved { cursor, block_hash };
    let saved = tokio::task::spawn_blocking(move || store.save(saved)).await;
    if let Err(e) = saved.unwrap_or_else(|e| Err(std::io::Error::other(e))) {
        handle.emit(Event::error(
            "cursor",
            format!("cannot save the ledger cursor: {e}"),
        ));
    }
}

/// Where to resume from `saved`: there, if its block still stands; else
/// (the chain reorganised while the node was away) far enough back to read
/// the replacing blocks again, reported as `ledger_reorg`. Requests read
/// again are answered once: the answer journal remembers those answered.
async fn still_standing(handle: &NodeHandle, ledger: &dyn Ledger, saved: Saved) -> Cursor {
    let Saved { cursor, block_hash } = saved;
    let Some(expected) = block_hash else {
        return cursor;
    };
    match ledger.block_hash(cursor.block).await {
        Ok(Some(now)) if now == expected => cursor,
        Ok(_) => {
            let back = cursor.block.saturating_sub(ledger.reorg_rewind() + 1);
            tracing::warn!(
                block = cursor.block,
                from = back,
                "saved block replaced; reading again"
            );
            handle.emit(Event::LedgerReorg {
                block: cursor.block,
                from_block: back,
            });
            Cursor {
                block: back,
                index: u64::MAX,
            }
        }
        Err(e) => {
            // Cannot check now: go on; the follower checks as it reads.
            tracing::warn!(error = %e, "cannot check the saved block; resuming there");
            cursor
        }
    }
}

/// Follows this node's `stdin` topic, opens every message, reports each
/// rejected one as an `error` event, and forwards the good ones. It starts
/// from the cursor saved in `store` (else the ledger's initial cursor) and
/// saves the cursor after each message, so a restart neither misses nor
/// repeats one. The channel is bounded: a slow consumer slows the follower,
/// not memory; each message costs at most one bounded-size open.
pub async fn follow_inbox(
    handle: NodeHandle,
    ledger: Arc<dyn Ledger>,
    store: Option<CursorStore>,
    policy: OpenPolicy,
) -> anyhow::Result<mpsc::Receiver<Inbound>> {
    let mut opener = Opener::new(handle.keypair(), policy)?;
    let (tx, rx) = mpsc::channel(64);
    let topic = Topic::stdin(&handle.peer_id());
    let from = match store.as_ref().and_then(CursorStore::load) {
        Some(saved) => still_standing(&handle, ledger.as_ref(), saved).await,
        None => ledger.initial_cursor().await?,
    };
    tracing::debug!(ledger = %ledger.describe(), block = from.block, index = from.index, "following stdin");
    handle.emit(Event::LedgerFollowing {
        topic: topic.to_hex(),
        ledger: ledger.describe(),
        from_block: from.block,
        from_index: from.index,
    });
    let (ack_tx, mut acks) = mpsc::unbounded_channel::<At>();
    handle.clone().spawn(async move {
        let mut messages = ledger.follow(topic.0, from);
        let mut pending = match ledger.follow_pending(topic.0) {
            Some(p) => p.fuse(),
            None => futures::stream::empty().boxed().fuse(),
        };
        let mut early = EarlyCopies::default();
        let mut failing = false;
        let mut progress = Progress::default();
        let report = |opened: &Opened, bytes: usize, pending: bool| {
            handle.emit(Event::LedgerMessage {
                topic: topic.to_hex(),
                kind: opened.signal.kind().into(),
                from: opened.sender.to_string(),
                bytes,
                pending,
            });
        };
        loop {
            let item = tokio::select! {
                Some(done) = acks.recv() => {
                    if let Some(save) = progress.handled(done) {
                        save_cursor(&handle, store.as_ref(), save).await;
                    }
                    continue;
                }
                Some(p) = pending.next() => {
                    // Not reported when refused: its mined copy will be,
                    // if it lands.
                    match opener.open(&p.payload, now_ms()) {
                        Ok(opened) => {
                            report(&opened, p.payload.len(), true);
                            let ack = early.insert(&p.payload);
                            if tx.send((opened, p.payload.len(), ack)).await.is_err() {
                                break;
                            }
                        }
                        Err(e) => {
                            tracing::debug!(account = %p.sender, error = %e, "pending envelope refused")
                        }
                    }
                    continue;
                }
                item = messages.next() => match item {
                    Some(item) => item,
                    None => break,
                },
            };
            let msg = match item {
                Ok(m) => m,
                Err(e) => {
                    failing = true;
                    handle.emit(Event::Error {
                        what: "ledger".into(),
                        detail: format!("following {} failed: {e}", ledger.describe()),
                        reason: Some("unavailable".into()),
                        peer_id: None,
                    });
                    continue;
                }
            };
            if std::mem::take(&mut failing) {
                tracing::info!("ledger reachable again");
            }
            let at = (msg.cursor, msg.block_hash);
            progress.read(at);
            let ack = Ack(AckOf::Mined {
                at,
                tx: ack_tx.clone(),
            });
            // Read before from the pending pool: handled already.
            let Err(ack) = early.mined(&msg.payload, ack) else {
                tracing::debug!(block = msg.cursor.block, "message landed; read earlier from the pending pool");
                continue;
            };
            match opener.open(&msg.payload, now_ms()) {
                Ok(opened) => {
                    report(&opened, msg.payload.len(), false);
                    if tx.send((opened, msg.payload.len(), ack)).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    tracing::info!(account = %msg.sender, error = %e, "rejected envelope");
                    handle.emit(Event::Error {
                        what: "envelope".into(),
                        detail: format!("message from ledger account {} rejected: {e}", msg.sender),
                        reason: Some(e.reason().into()),
                        peer_id: None,
                    });
                    ack.done(); // nothing more to do with it
                }
            }
        }
    });
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mined_ack(block: u64) -> (Ack, mpsc::UnboundedReceiver<At>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let at = (Cursor { block, index: 0 }, None);
        (Ack(AckOf::Mined { at, tx }), rx)
    }

    #[test]
    fn a_mined_copy_waits_for_its_early_copy_to_be_handled() {
        let mut early = EarlyCopies::default();
        let handler = early.insert(b"request");
        let (ack, mut cursor) = mined_ack(7);
        assert!(early.mined(b"request", ack).is_ok(), "known: passed over");
        assert!(
            cursor.try_recv().is_err(),
            "not handled yet: the cursor waits"
        );
        handler.done();
        assert_eq!(cursor.try_recv().unwrap().0.block, 7);
        // Each early copy covers one mined copy: another is opened normally.
        let (again, _rx) = mined_ack(8);
        assert!(early.mined(b"request", again).is_err());
    }

    #[test]
    fn a_mined_copy_after_its_early_copy_was_handled_moves_the_cursor_at_once() {
        let mut early = EarlyCopies::default();
        early.insert(b"response").done();
        let (ack, mut cursor) = mined_ack(3);
        assert!(early.mined(b"response", ack).is_ok());
        assert_eq!(cursor.try_recv().unwrap().0.block, 3);
        let (other, _rx) = mined_ack(4);
        assert!(early.mined(b"never seen pending", other).is_err());
    }

    #[test]
    fn early_copies_are_bounded_and_forget_the_oldest() {
        let mut early = EarlyCopies::default();
        for i in 0..EARLY_MAX + 10 {
            early.insert(&(i as u64).to_le_bytes()).done();
        }
        assert_eq!(early.slots.len(), EARLY_MAX);
        assert_eq!(early.order.len(), EARLY_MAX);
        let (oldest, _rx) = mined_ack(1);
        assert!(early.mined(&0u64.to_le_bytes(), oldest).is_err());
        let (newest, _rx2) = mined_ack(2);
        let last = (EARLY_MAX + 9) as u64;
        assert!(early.mined(&last.to_le_bytes(), newest).is_ok());
    }
}
