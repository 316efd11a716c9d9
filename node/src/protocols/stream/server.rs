//! The provider side of `/ledgermesh/stream/1`: one task per inbound stream,
//! access decided by `ledgermesh_protocol::stream::server::decide`, bytes
//! sent until the end, or until the grant that allowed them runs out.

use super::{read_frame, Catalog, StreamError, CHUNK, REQUEST_TIMEOUT, STREAM_PROTOCOL};
use crate::access::Access;
use crate::events::Event;
use crate::swarm::NodeHandle;
use futures::{AsyncWriteExt, StreamExt};
use ledgermesh_protocol::access::Denial;
use ledgermesh_protocol::framing::{StreamHeader, StreamRequest};
use ledgermesh_protocol::stream::server::{decide, ServeDecision};
use ledgermesh_protocol::stream::slots::{Admit, SlotLimits, Slots};
use libp2p::PeerId;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncReadExt as _;
use tracing::Instrument;

/// Bounds of the stream server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeLimits {
    /// Streams served at once, in total and per peer, and busy refusals.
    pub slots: SlotLimits,
    /// A stream whose buyer takes nothing for this long is ended, and its
    /// slot freed.
    pub write_stall: Duration,
}

impl Default for ServeLimits {
    fn default() -> Self {
        Self {
            slots: SlotLimits::default(),
            write_stall: Duration::from_secs(30),
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

/// Accepts data streams and serves them from `catalog` to peers `access`
/// allows, until the node stops. A slot is taken before any task is
/// spawned: over the caps a stream is refused `busy` (itself bounded) or
/// dropped unanswered.
pub async fn serve(handle: NodeHandle, catalog: Arc<Catalog>, access: Access, limits: ServeLimits) {
    let mut control = handle.stream_control();
    let mut incoming = match control.accept(STREAM_PROTOCOL) {
        Ok(i) => i,
        Err(e) => {
            handle.emit(Event::error(
                "stream",
                format!("cannot accept streams: {e}"),
            ));
            return;
        }
    };
    let slots = Arc::new(Mutex::new(Slots::new(limits.slots)));
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
        let catalog = catalog.clone();
        let access = access.clone();
        let span = tracing::info_span!("serve", %peer);
        // Tracked, not cancelled: a stream being served ends itself cleanly
        // when the node stops (it watches `stopping`).
        handle.clone().spawn_tracked(
            async move {
                let _slot = slot;
                let served = serve_one(
                    &handle,
                    &access,
                    peer,
                    stream,
                    &catalog,
                    serving,
                    limits.write_stall,
                );
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
                        what: "stream".into(),
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
    stream: &mut libp2p::Stream,
    buf: &[u8],
    stall: Duration,
) -> Result<(), StreamError> {
    tokio::time::timeout(stall, stream.write_all(buf))
        .await
        .map_err(|_| StreamError::Stalled(stall))??;
    Ok(())
}

/// How a served stream ended.
enum Ended {
    Complete,
    Cut(Denial),
    /// The node is shutting down.
    Stopping,
}

async fn serve_one(
    handle: &NodeHandle,
    access: &Access,
    peer: PeerId,
    mut stream: libp2p::Stream,
    catalog: &Catalog,
    have_permit: bool,
    stall: Duration,
) -> Result<(), StreamError> {
    let (body, _) = tokio::time::timeout(REQUEST_TIMEOUT, read_frame(&mut stream))
        .await
        .map_err(|_| StreamError::Timeout)??;
    let req = StreamRequest::decode(&body)?;
    let entry = catalog.get(&req.name);
    let decision =
        access.record(|m, now| decide(now, m, peer, &req, entry.map(|(_, i)| i), have_permit));
    let (info, offset) = match decision {
        ServeDecision::Refuse(rejection) => {
            tracing::info!(%peer, stream = %req.name, reason = rejection.reason.as_str(), "refused");
            write_or_stall(
                &mut stream,
                &StreamHeader::Rejected(rejection).encode(),
                stall,
            )
            .await?;
            stream.close().await?;
            return Ok(());
        }
        ServeDecision::Serve { info, offset, .. } => (info, offset),
    };
    let Some((source, _)) = entry else {
        unreachable!("decide serves only streams in the catalog");
    };
    let header = StreamHeader::Accepted {
        info: info.clone(),
        offset,
    };
    write_or_stall(&mut stream, &header.encode(), stall).await?;
    let len = info.length.unwrap_or(0);
    let mut sent = 0u64;
    let ended = {
        let send = async {
            let mut reader = source.open_at(offset, len).await?;
            // A paced (live) source sends ten slices a second at its rate.
            let chunk = source
                .rate()
                .map_or(CHUNK, |r| ((r / 10).max(1) as usize).min(CHUNK));
            let mut buf = vec![0u8; chunk];
            let started = tokio::time::Instant::now();
            loop {
                let n = reader.read(&mut buf).await?;
                if n == 0 {
                    return Ok::<_, StreamError>(());
                }
                write_or_stall(&mut stream, &buf[..n], stall).await?;
                sent += n as u64;
                if let Some(rate) = source.rate() {
                    stream.flush().await?;
                    let due = started + Duration::from_secs_f64(sent as f64 / rate as f64);
                    tokio::time::sleep_until(due).await;
                }
            }
        };
        // Bytes go out only while access lasts: when the grant runs out (or the
        // ACL entry is removed) the stream is closed where it stands; the
        // consumer keeps what it has and hears why when it asks again.
        tokio::select! {
            r = send => r.map(|()| Ended::Complete),
            d = access.until_denied(peer, &req.name) => Ok(Ended::Cut(d)),
            () = handle.stopping() => Ok(Ended::Stopping),
        }
    };
    let reason = match &ended {
        Ok(Ended::Complete) => "completed",
        Ok(Ended::Cut(d)) => d.reason().as_str(),
        Ok(Ended::Stopping) => "shutdown",
        Err(StreamError::Stalled(_)) => "stalled",
        Err(_) => "failed",
    };
    access.record(|m, now| m.serve_ended(now, peer, &req.name, offset, sent, reason));
    match ended? {
        Ended::Complete => {
            stream.close().await?;
            handle.emit(Event::StreamServed {
                peer_id: peer.to_string(),
                stream: req.name,
                offset,
                bytes: sent,
            });
        }
        Ended::Cut(d) => {
            tracing::info!(%peer, stream = %req.name, sent, reason = d.reason().as_str(), "access ended; stream cut");
            let _ = stream.close().await;
        }
        Ended::Stopping => {
            // A clean end (FIN), not a reset: the buyer keeps what it has
            // and resumes from its offset elsewhere or later.
            let _ = tokio::time::timeout(Duration::from_secs(1), stream.close()).await;
        }
    }
    Ok(())
}
