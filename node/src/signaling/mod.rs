//! Posting sealed envelopes to a peer's `stdin` topic and reading our own;
//! [`requests`] matches the responses to the requests we posted.

pub mod journal;
pub mod requests;

use crate::cursor_store::{CursorStore, Saved};
use crate::events::{now_ms, Event};
use crate::swarm::NodeHandle;
use futures::StreamExt;
use ledgermesh_ledger::{Cursor, Ledger, LedgerError};
use ledgermesh_protocol::envelope::{seal, OpenPolicy, Opened, Opener, Sealed};
use ledgermesh_protocol::signaling::Progress;
use ledgermesh_protocol::{Signal, Topic};
use libp2p::PeerId;
use std::sync::Arc;
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
pub struct Ack {
    at: At,
    tx: mpsc::UnboundedSender<At>,
}

/// A message's place: its cursor, then its block's hash (ordered by the
/// cursor; the hash goes into the cursor file with it).
type At = (Cursor, Option<[u8; 32]>);

impl Ack {
    /// The message is handled: the cursor may pass it.
    pub fn done(self) {
        let _ = self.tx.send(self.at);
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
        let mut failing = false;
        let mut progress = Progress::default();
        loop {
            let item = tokio::select! {
                Some(done) = acks.recv() => {
                    if let Some(save) = progress.handled(done) {
                        save_cursor(&handle, store.as_ref(), save).await;
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
            let ack = Ack {
                at,
                tx: ack_tx.clone(),
            };
            match opener.open(&msg.payload, now_ms()) {
                Ok(opened) => {
                    handle.emit(Event::LedgerMessage {
                        topic: topic.to_hex(),
                        kind: opened.signal.kind().into(),
                        from: opened.sender.to_string(),
                        bytes: msg.payload.len(),
                    });
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
