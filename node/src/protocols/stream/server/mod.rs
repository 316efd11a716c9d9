//! The provider side of `/ledgermesh/stream/1`: one task per inbound stream,
//! access decided by `ledgermesh_protocol::stream::server::decide`, bytes
//! sent until the end, or until the grant that allowed them runs out.

mod inbound;
mod one;
mod sending;

pub use inbound::ECHO_MAX_BYTES;

use super::fair::FairGate;
use super::{Catalog, StreamError, STREAM_PROTOCOL};
use crate::access::Access;
use crate::events::Event;
use crate::protocols::pay::Payees;
use crate::protocols::stream::StreamNet;
use futures::AsyncWriteExt;
use ledgermesh_protocol::stream::fair::FairConfig;
use ledgermesh_protocol::stream::slots::{Admit, SlotLimits, Slots};
use libp2p::PeerId;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::Instrument;

/// Bounds of the stream server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeLimits {
    /// Streams served at once, in total and per peer, and busy refusals.
    pub slots: SlotLimits,
    /// A stream whose buyer takes nothing for this long is ended, and its
    /// slot freed.
    pub write_stall: Duration,
    /// A live stream whose source is quiet this long gets a heartbeat (below
    /// the buyers' 20 s stall, so a silent feed is not taken for a dead path).
    pub live_heartbeat: Duration,
    /// The most an `inbox:` file may hold (`--inbox-max-bytes`).
    pub inbox_max_bytes: u64,
}

impl Default for ServeLimits {
    fn default() -> Self {
        Self {
            slots: SlotLimits::default(),
            write_stall: Duration::from_secs(30),
            live_heartbeat: Duration::from_secs(8),
            inbox_max_bytes: 1 << 30,
        }
    }
}

/// A taken slot, given back when the stream's task ends (or is cancelled).
struct Slot {
    slots: Arc<Mutex<Slots>>,
    /// The peer served; `None` for a refusal.
    peer: Option<PeerId>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        match self.peer {
            Some(peer) => slots.release(peer),
            None => slots.refused(),
        }
    }
}

/// What a provider sells and to whom: its streams, who may fetch them, and
/// (priced streams) the accounts of its paying buyers.
#[derive(Clone)]
pub struct Shop {
    /// The streams.
    pub catalog: Arc<Catalog>,
    /// Grants and the ACL.
    pub access: Access,
    /// Buyers' accounts when the streams are priced.
    pub payees: Option<Payees>,
}

/// How long a priced stream's request waits for its buyer's channel.
const PAY_WAIT: Duration = Duration::from_secs(5);

/// Accepts data streams and serves them from `catalog` to peers `access`
/// allows, until the node stops. A slot is taken before any task is
/// spawned: over the caps a stream is refused `busy` (itself bounded) or
/// dropped unanswered.
pub async fn serve(handle: impl StreamNet, shop: Shop, limits: ServeLimits) {
    let Some(mut incoming) = handle.take_stream_inbox() else {
        handle.emit(Event::error(
            crate::events::ErrorPart::Stream,
            format!("cannot accept streams: {STREAM_PROTOCOL} is already served"),
        ));
        return;
    };
    let slots = Arc::new(Mutex::new(Slots::new(limits.slots)));
    // The streams being sent share this node's CPU by bytes.
    let fair = FairGate::new(FairConfig::default());
    while let Some((peer, stream)) = incoming.next().await {
        let admit = slots.lock().unwrap_or_else(|p| p.into_inner()).admit(peer);
        let slot = match admit {
            Admit::Serve => Slot {
                slots: slots.clone(),
                peer: Some(peer),
            },
            Admit::Refuse { .. } => Slot {
                slots: slots.clone(),
                peer: None,
            },
            Admit::Drop => {
                tracing::debug!(%peer, "stream dropped: every slot and every refusal slot taken");
                continue;
            }
        };
        let serving = slot.peer.is_some();
        let handle = handle.clone();
        let shop = shop.clone();
        let fair = fair.clone();
        let span = tracing::info_span!("serve", %peer);
        // Tracked, not cancelled: a stream being served ends itself cleanly
        // when the node stops (it watches `stopping`).
        handle.clone().spawn_tracked(
            async move {
                let _slot = slot;
                let served = one::serve_one(&handle, &shop, peer, stream, serving, limits, &fair);
                // A stream still starting (reading its request, writing its
                // header) when the node stops gets a moment, then is dropped.
                let grace = async {
                    handle.stopping().await;
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    Ok(())
                };
                let served = async {
                    tokio::select! {
                        r = served => r,
                        r = grace => r,
                    }
                };
                if let Err(e) = served.await {
                    tracing::info!(%peer, error = %e, "stream ended early");
                    handle.emit(Event::Error {
                        what: crate::events::ErrorPart::Stream,
                        detail: e.to_string(),
                        reason: None,
                        peer_id: Some(peer.to_string()),
                    });
                }
            }
            .instrument(span),
        );
    }
}

/// Writes all of `buf`, or fails if the buyer takes nothing for `stall`.
async fn write_or_stall(
    stream: &mut (impl futures::AsyncRead + futures::AsyncWrite + Unpin),
    buf: &[u8],
    stall: Duration,
) -> Result<(), StreamError> {
    tokio::time::timeout(stall, stream.write_all(buf))
        .await
        .map_err(|_| StreamError::Stalled(stall))??;
    Ok(())
}
