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
use libp2p::PeerId;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt as _;
use tokio::sync::Semaphore;
use tracing::Instrument;

/// Accepts data streams and serves them from `catalog` to peers `access`
/// allows, until the node stops. At most `max_streams` are served at once;
/// further requests get `busy`.
pub async fn serve(handle: NodeHandle, catalog: Arc<Catalog>, access: Access, max_streams: usize) {
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
    let permits = Arc::new(Semaphore::new(max_streams));
    while let Some((peer, stream)) = incoming.next().await {
        let handle = handle.clone();
        let catalog = catalog.clone();
        let access = access.clone();
        let permit = permits.clone().try_acquire_owned().ok();
        let span = tracing::info_span!("serve", %peer);
        handle.clone().spawn(
            async move {
                if let Err(e) =
                    serve_one(&handle, &access, peer, stream, &catalog, permit.is_some()).await
                {
                    tracing::info!(%peer, error = %e, "stream ended early");
                    handle.emit(Event::Error {
                        what: "stream".into(),
                        detail: e.to_string(),
                        reason: None,
                        peer_id: Some(peer.to_string()),
                    });
                }
                drop(permit);
            }
            .instrument(span),
        );
    }
}

/// How a served stream ended.
enum Ended {
    Complete,
    Cut(Denial),
}

async fn serve_one(
    handle: &NodeHandle,
    access: &Access,
    peer: PeerId,
    mut stream: libp2p::Stream,
    catalog: &Catalog,
    have_permit: bool,
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
            stream
                .write_all(&StreamHeader::Rejected(rejection).encode())
                .await?;
            stream.close().await?;
            return Ok(());
        }
        ServeDecision::Serve { info, offset, .. } => (info, offset),
    };
    let Some((source, _)) = entry else {
        unreachable!("decide serves only streams in the catalog");
    };
    stream
        .write_all(
            &StreamHeader::Accepted {
                info: info.clone(),
                offset,
            }
            .encode(),
        )
        .await?;
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
                stream.write_all(&buf[..n]).await?;
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
        }
    };
    let reason = match &ended {
        Ok(Ended::Complete) => "completed",
        Ok(Ended::Cut(d)) => d.reason().as_str(),
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
    }
    Ok(())
}
