//! Posting sealed envelopes to a peer's `stdin` topic and reading our own;
//! [`requests`] matches the responses to the requests we posted.

mod ack;
mod follow;
pub mod journal;
pub mod requests;

pub use ack::{Ack, Inbound};
pub use follow::{follow_inbox, follow_own_inbox};

use crate::clock::now_ms;
use crate::events::Event;
use crate::swarm::NodeHandle;
use ledgermesh_ledger::{Ledger, LedgerError};
use ledgermesh_protocol::envelope::{seal, Sealed};
use ledgermesh_protocol::{Signal, Topic};
use libp2p::PeerId;
use std::time::Duration;

/// Why sealing, posting or following failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignalingError {
    /// The envelope could not be sealed.
    #[error("sealing the envelope: {0}")]
    Seal(#[from] ledgermesh_protocol::SealError),
    /// Our identity key cannot open envelopes sealed to it.
    #[error("our identity key cannot open envelopes: {0}")]
    Key(#[from] ledgermesh_protocol::keys::KeyError),
    /// The ledger failed.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// Default lifetime of a service request or response.
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);

/// Seals `signal` to `to` and posts it on `to`'s `stdin` topic. Returns the nonce.
pub async fn post_sealed(
    handle: &NodeHandle,
    ledger: &dyn Ledger,
    to: PeerId,
    signal: &Signal,
    ttl: Duration,
) -> Result<[u8; 16], SignalingError> {
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
                    what: crate::events::ErrorPart::Ledger,
                    detail: format!("post failed, retrying in {wait:?}: {e}"),
                    reason: Some("unavailable"),
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
