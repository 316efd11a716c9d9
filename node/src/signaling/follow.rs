//! Following our own `stdin` topic: every message opened (bounded work
//! each), the bad ones reported, the good ones handed on with their
//! [`Ack`]; the cursor saved as they are handled, so a restart neither
//! misses nor repeats one, and checked against a reorganised chain.

use super::ack::{Ack, AckOf, At, EarlyCopies, Inbound};
use super::SignalingError;
use crate::clock::now_ms;
use crate::cursor_store::{CursorStore, Saved};
use crate::events::Event;
use crate::swarm::NodeHandle;
use futures::StreamExt;
use ledgermesh_ledger::{Cursor, Ledger};
use ledgermesh_protocol::envelope::{OpenPolicy, Opened, Opener};
use ledgermesh_protocol::signaling::Progress;
use ledgermesh_protocol::Topic;
use std::sync::Arc;
use tokio::sync::mpsc;

/// [`follow_inbox`] with the cursor kept under `data_dir` (when given).
pub async fn follow_own_inbox(
    handle: &NodeHandle,
    ledger: &Arc<dyn Ledger>,
    data_dir: Option<&std::path::Path>,
) -> Result<mpsc::Receiver<Inbound>, SignalingError> {
    let topic = Topic::stdin(&handle.peer_id()).to_hex();
    let store = data_dir.map(|d| CursorStore::new(d, &ledger.describe(), &topic));
    follow_inbox(handle.clone(), ledger.clone(), store, OpenPolicy::default()).await
}

/// Saves `cursor` (a write, an fsync and a rename: off the runtime's workers).
async fn save_cursor(handle: &NodeHandle, store: Option<&CursorStore>, at: At) {
    let Some(store) = store.cloned() else { return };
    let (cursor, block_hash) = at;
    let saved = Saved { cursor, block_hash };
    let saved = tokio::task::spawn_blocking(move || store.save(saved)).await;
    if let Err(e) = saved.unwrap_or_else(|e| Err(std::io::Error::other(e))) {
        handle.emit(Event::error(
            crate::events::ErrorPart::Cursor,
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
) -> Result<mpsc::Receiver<Inbound>, SignalingError> {
    let opener = Opener::new(handle.keypair(), policy)?;
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
    let (ack_tx, acks) = mpsc::unbounded_channel::<At>();
    let follower = Follower {
        handle: handle.clone(),
        ledger,
        topic,
        store,
        opener,
        tx,
        ack_tx,
        early: EarlyCopies::default(),
        progress: Progress::default(),
        failing: false,
    };
    handle.spawn(follower.run(from, acks));
    Ok(rx)
}

/// The task that reads the topic (mined and pending) and hands on what it
/// opens.
struct Follower {
    handle: NodeHandle,
    ledger: Arc<dyn Ledger>,
    topic: Topic,
    store: Option<CursorStore>,
    opener: Opener,
    tx: mpsc::Sender<Inbound>,
    ack_tx: mpsc::UnboundedSender<At>,
    early: EarlyCopies,
    progress: Progress<At>,
    /// The last read failed (reachable again is said once).
    failing: bool,
}

/// Whether the follower goes on after a message (`Stop`: nobody reads).
enum Go {
    On,
    Stop,
}

impl Follower {
    async fn run(mut self, from: Cursor, mut acks: mpsc::UnboundedReceiver<At>) {
        let ledger = self.ledger.clone();
        let mut messages = ledger.follow(self.topic.0, from);
        let mut pending = match ledger.follow_pending(self.topic.0) {
            Some(p) => p.fuse(),
            None => futures::stream::empty().boxed().fuse(),
        };
        loop {
            let go = tokio::select! {
                Some(done) = acks.recv() => {
                    if let Some(save) = self.progress.handled(done) {
                        save_cursor(&self.handle, self.store.as_ref(), save).await;
                    }
                    Go::On
                }
                Some(p) = pending.next() => self.on_pending(&p.payload, p.sender).await,
                item = messages.next() => match item {
                    Some(item) => self.on_mined(item).await,
                    None => Go::Stop,
                },
            };
            if let Go::Stop = go {
                return;
            }
        }
    }

    fn report(&self, opened: &Opened, bytes: usize, pending: bool) {
        self.handle.emit(Event::LedgerMessage {
            topic: self.topic.to_hex(),
            kind: opened.signal.kind().into(),
            from: opened.sender.to_string(),
            bytes,
            pending,
        });
    }

    /// A message seen in the pending pool: handled now, its mined copy
    /// passed over later. Not reported when refused: its mined copy will
    /// be, if it lands.
    async fn on_pending(&mut self, payload: &[u8], sender: impl std::fmt::Display) -> Go {
        match self.opener.open(payload, now_ms()) {
            Ok(opened) => {
                self.report(&opened, payload.len(), true);
                let ack = self.early.insert(payload);
                self.hand_on(opened, payload.len(), ack).await
            }
            Err(e) => {
                tracing::debug!(account = %sender, error = %e, "pending envelope refused");
                Go::On
            }
        }
    }

    /// A message read from a block (or the ledger's failure to read one).
    async fn on_mined(
        &mut self,
        item: Result<ledgermesh_ledger::LedgerMessage, ledgermesh_ledger::LedgerError>,
    ) -> Go {
        let msg = match item {
            Ok(m) => m,
            Err(e) => {
                self.failing = true;
                self.handle.emit(Event::Error {
                    what: crate::events::ErrorPart::Ledger,
                    detail: format!("following {} failed: {e}", self.ledger.describe()),
                    reason: Some("unavailable"),
                    peer_id: None,
                });
                return Go::On;
            }
        };
        if std::mem::take(&mut self.failing) {
            tracing::info!("ledger reachable again");
        }
        let at = (msg.cursor, msg.block_hash);
        self.progress.read(at);
        let tx = self.ack_tx.clone();
        let ack = Ack(AckOf::Mined { at, tx });
        // Read before from the pending pool: handled already.
        let Err(ack) = self.early.mined(&msg.payload, ack) else {
            tracing::debug!(
                block = msg.cursor.block,
                "message landed; read earlier from the pending pool"
            );
            return Go::On;
        };
        match self.opener.open(&msg.payload, now_ms()) {
            Ok(opened) => {
                self.report(&opened, msg.payload.len(), false);
                self.hand_on(opened, msg.payload.len(), ack).await
            }
            Err(e) => {
                tracing::info!(account = %msg.sender, error = %e, "rejected envelope");
                self.handle.emit(Event::Error {
                    what: crate::events::ErrorPart::Envelope,
                    detail: format!("message from ledger account {} rejected: {e}", msg.sender),
                    reason: Some(e.reason()),
                    peer_id: None,
                });
                ack.done(); // nothing more to do with it
                Go::On
            }
        }
    }

    async fn hand_on(&self, opened: Opened, bytes: usize, ack: Ack) -> Go {
        match self.tx.send((opened, bytes, ack)).await {
            Ok(()) => Go::On,
            Err(_) => Go::Stop,
        }
    }
}
