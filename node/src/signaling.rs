//! Posting sealed envelopes to a peer's `stdin` topic and reading our own.

use crate::events::{now_ms, Event};
use crate::net::NodeHandle;
use futures::StreamExt;
use ledgermesh_ledger::{Cursor, Ledger};
use ledgermesh_protocol::envelope::{seal, OpenPolicy, Opened, Opener};
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
    let sealed = seal(
        handle.keypair(),
        &to,
        signal,
        now_ms(),
        ttl.as_millis() as u64,
        &mut rand::rng(),
    )?;
    let topic = Topic::stdin(&to);
    let bytes = sealed.bytes.len();
    let receipt = ledger.post(topic.0, sealed.bytes).await?;
    handle.emit(Event::LedgerPost {
        topic: topic.to_hex(),
        kind: signal.kind().into(),
        bytes,
        tx: receipt.tx,
        gas_used: receipt.gas_used,
    });
    Ok(sealed.nonce)
}

/// Follows this node's `stdin` topic from `from`, opens every message, reports
/// each rejected one as an `error` event, and forwards the good ones. The
/// channel is bounded: a slow consumer slows the follower, not memory.
pub fn follow_inbox(
    handle: NodeHandle,
    ledger: Arc<dyn Ledger>,
    from: Cursor,
    policy: OpenPolicy,
) -> anyhow::Result<mpsc::Receiver<(Opened, usize)>> {
    let mut opener = Opener::new(handle.keypair(), policy)?;
    let (tx, rx) = mpsc::channel(64);
    let topic = Topic::stdin(&handle.peer_id());
    tokio::spawn(async move {
        let mut messages = ledger.follow(topic.0, from);
        while let Some(item) = messages.next().await {
            let msg = match item {
                Ok(m) => m,
                Err(e) => {
                    handle.emit(Event::Error {
                        what: "ledger".into(),
                        detail: e.to_string(),
                        reason: Some("follow".into()),
                        peer_id: None,
                    });
                    continue;
                }
            };
            match opener.open(&msg.payload, now_ms()) {
                Ok(opened) => {
                    handle.emit(Event::LedgerMessage {
                        topic: topic.to_hex(),
                        kind: opened.signal.kind().into(),
                        from: opened.sender.to_string(),
                        bytes: msg.payload.len(),
                    });
                    if tx.send((opened, msg.payload.len())).await.is_err() {
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
                }
            }
        }
    });
    Ok(rx)
}
