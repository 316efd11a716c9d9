//! The provider side of `/ledgermesh/stream/1`: one task per inbound stream,
//! access decided by `ledgermesh_protocol::stream::server::decide`, bytes
//! sent until the end, or until the grant that allowed them runs out.

use super::fair::FairGate;
use super::live::serve::LiveEnd;
use super::source::Source;
use super::{read_frame, Catalog, StreamError, CHUNK, REQUEST_TIMEOUT, STREAM_PROTOCOL};
use crate::access::Access;
use crate::events::Event;
use crate::protocols::pay::payee::Room;
use crate::protocols::pay::Payees;
use crate::swarm::NodeHandle;
use futures::AsyncWriteExt;
use ledgermesh_protocol::access::Denial;
use ledgermesh_protocol::framing::{StreamHeader, StreamRequest};
use ledgermesh_protocol::stream::fair::FairConfig;
use ledgermesh_protocol::stream::priced;
use ledgermesh_protocol::stream::server::{decide, LiveWindow, ServeDecision, StreamKind};
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
pub async fn serve(handle: NodeHandle, shop: Shop, limits: ServeLimits) {
    let Some(mut incoming) = handle.take_stream_inbox() else {
        handle.emit(Event::error(
            "stream",
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
                let served = serve_one(&handle, &shop, peer, stream, serving, limits, &fair);
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
    stream: &mut (impl futures::AsyncRead + futures::AsyncWrite + Unpin),
    buf: &[u8],
    stall: Duration,
) -> Result<(), StreamError> {
    tokio::time::timeout(stall, stream.write_all(buf))
        .await
        .map_err(|_| StreamError::Stalled(stall))??;
    Ok(())
}

/// Most bytes one echo stream carries.
pub const ECHO_MAX_BYTES: u64 = 64 << 20;

/// Reads what a sender sends next, at most `buf.len()`: 0 when it closed
/// its side; an error when it fell silent for `stall` or would pass
/// [`ECHO_MAX_BYTES`] in all (`taken` so far).
async fn take_some(
    stream: &mut (impl futures::AsyncRead + futures::AsyncWrite + Unpin),
    buf: &mut [u8],
    stall: Duration,
    taken: u64,
) -> Result<usize, StreamError> {
    use futures::AsyncReadExt;
    let n = tokio::time::timeout(stall, stream.read(buf))
        .await
        .map_err(|_| StreamError::Stalled(stall))??;
    if taken + n as u64 > ECHO_MAX_BYTES {
        return Err(std::io::Error::other(format!(
            "an inbound stream takes at most {ECHO_MAX_BYTES} bytes"
        ))
        .into());
    }
    Ok(n)
}

/// Sends back what arrives, until the sender closes its side (then closes
/// ours), falls silent for `stall`, or passes [`ECHO_MAX_BYTES`].
async fn echo(
    stream: &mut (impl futures::AsyncRead + futures::AsyncWrite + Unpin),
    stall: Duration,
    sent: &mut u64,
) -> Result<(), StreamError> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = take_some(stream, &mut buf, stall, *sent).await?;
        if n == 0 {
            return Ok(());
        }
        write_or_stall(stream, &buf[..n], stall).await?;
        stream.flush().await?;
        *sent += n as u64;
    }
}

/// Appends what arrives to `path` until the sender closes its side (then
/// closes ours), falls silent for `stall`, or passes [`ECHO_MAX_BYTES`].
async fn inbox(
    stream: &mut (impl futures::AsyncRead + futures::AsyncWrite + Unpin),
    path: &std::path::Path,
    stall: Duration,
    max: u64,
    got: &mut u64,
) -> Result<(), StreamError> {
    use tokio::io::AsyncWriteExt as _;
    // Never through a symbolic link someone put in the inbox's place.
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(path)
        .await?;
    let mut held = file.metadata().await?.len();
    let full = || {
        std::io::Error::other(format!(
            "the inbox is full ({max} bytes, --inbox-max-bytes)"
        ))
    };
    if held >= max {
        return Err(full().into());
    }
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match take_some(stream, &mut buf, stall, *got).await {
            Ok(n) => n,
            Err(e) => {
                file.sync_all().await?;
                return Err(e);
            }
        };
        if n == 0 {
            file.sync_all().await?;
            stream.close().await?;
            return Ok(());
        }
        if held + n as u64 > max {
            file.sync_all().await?;
            return Err(full().into());
        }
        file.write_all(&buf[..n]).await?;
        held += n as u64;
        *got += n as u64;
    }
}

/// How a served stream ended.
enum Ended {
    Complete,
    Cut(Denial),
    /// The buyer stopped paying.
    Unpaid,
    /// The node is shutting down.
    Stopping,
    /// A live buyer went away (it had what it wanted).
    Left,
    /// A live buyer fell a whole ring behind.
    TooSlow {
        /// The oldest offset held when it was cut.
        earliest: u64,
    },
}

async fn serve_one(
    handle: &NodeHandle,
    shop: &Shop,
    peer: PeerId,
    mut stream: libp2p::Stream,
    have_permit: bool,
    limits: ServeLimits,
    fair: &Arc<FairGate>,
) -> Result<(), StreamError> {
    let stall = limits.write_stall;
    let (access, catalog) = (&shop.access, &*shop.catalog);
    let (body, _) = tokio::time::timeout(REQUEST_TIMEOUT, read_frame(&mut stream))
        .await
        .map_err(|_| StreamError::Timeout)??;
    let req = StreamRequest::decode(&body)?;
    let entry = catalog.get(&req.name);
    let feed = catalog.feed(&req.name);
    let kind = match (feed, entry) {
        (Some(f), _) => StreamKind::Live(LiveWindow {
            earliest: f.earliest(),
            edge: f.edge(),
            cut_slow: f.was_cut_slow(&peer),
        }),
        (None, Some((s, _))) if s.is_inbound() => StreamKind::Inbound,
        _ => StreamKind::Finite,
    };
    let mut decision = access
        .record(|m, now| decide(now, m, peer, &req, entry.map(|(_, i)| i), have_permit, kind));
    // A priced stream is served to a buyer with a paid-up channel only.
    let budget = match (&decision, &shop.payees) {
        (ServeDecision::Serve { .. }, Some(payees)) => {
            if payees.wait_paying(&peer, PAY_WAIT).await {
                payees.budget(&peer)
            } else {
                decision = ServeDecision::Refuse(priced::unpaid(&req.name, &payees.terms()));
                None
            }
        }
        _ => None,
    };
    // A full inbox takes nobody's bytes: refused before it is accepted.
    if let (ServeDecision::Serve { .. }, Some((Source::Inbox(path), _))) = (&decision, entry) {
        let held = (tokio::fs::symlink_metadata(path).await).map_or(0, |m| m.len());
        if held >= limits.inbox_max_bytes {
            decision = ServeDecision::Refuse(ledgermesh_protocol::StreamRejection {
                name: req.name.clone(),
                reason: ledgermesh_protocol::RejectReason::Busy,
                detail: format!("the inbox is full ({} bytes)", limits.inbox_max_bytes),
                earliest: None,
            });
        }
    }
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
    // Counted from here on: the operator's status and metrics see it.
    let tracked = (handle.ops().traffic).track(crate::ops::Dir::Out, peer, &req.name);
    let mut stream = tracked.wrap(stream);
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
    let ended = if kind == StreamKind::Inbound {
        let take = async {
            match entry.map(|(s, _)| s) {
                Some(Source::Inbox(path)) => {
                    let lock = shop.catalog.inbox_lock(&req.name);
                    let _one_sender = lock.lock().await;
                    let max = limits.inbox_max_bytes;
                    inbox(&mut stream, path, stall, max, &mut sent).await
                }
                _ => echo(&mut stream, stall, &mut sent).await,
            }
        };
        tokio::select! {
            r = take => r.map(|()| Ended::Complete),
            d = access.until_denied(peer, &req.name) => Ok(Ended::Cut(d)),
            () = handle.stopping() => Ok(Ended::Stopping),
        }
    } else if let Some(feed) = feed {
        let send = super::live::serve::send(
            &mut stream,
            feed,
            offset,
            budget.as_ref(),
            stall,
            limits.live_heartbeat,
            &mut sent,
        );
        tokio::select! {
            r = send => match r {
                // A buyer leaving is how a live stream usually ends for it.
                Err(StreamError::Io(_)) => Ok(Ended::Left),
                r => r.map(|end| match end {
                LiveEnd::Ended => Ended::Complete,
                LiveEnd::Unpaid => Ended::Unpaid,
                LiveEnd::TooSlow { earliest } => {
                    feed.cut_slow(peer);
                    Ended::TooSlow { earliest }
                }
            }),
            },
            d = access.until_denied(peer, &req.name) => Ok(Ended::Cut(d)),
            () = handle.stopping() => Ok(Ended::Stopping),
        }
    } else {
        let send = async {
            let mut reader = source.open_at(offset, len).await?;
            // A paced (live) source sends ten slices a second at its rate.
            let chunk = source
                .rate()
                .map_or(CHUNK, |r| ((r / 10).max(1) as usize).min(CHUNK));
            let mut buf = vec![0u8; chunk];
            let started = tokio::time::Instant::now();
            // A paced source keeps its own rate and is not in the share.
            let turn = source.rate().is_none().then(|| fair.join());
            loop {
                // Paid: only as much as the credit allows; wait while paused
                // (out of the share: the others do not wait for it).
                let mut want = buf.len();
                if let Some(b) = &budget {
                    let mut ready = std::pin::pin!(futures::future::poll_fn(|cx| b.poll_ready(cx)));
                    let room = match futures::FutureExt::now_or_never(ready.as_mut()) {
                        Some(room) => room,
                        None => {
                            if let Some(t) = &turn {
                                t.pause();
                            }
                            ready.await
                        }
                    };
                    match room {
                        Room::Bytes(n) => want = want.min(usize::try_from(n).unwrap_or(usize::MAX)),
                        _ => return Ok::<_, StreamError>(false),
                    }
                }
                let n = reader.read(&mut buf[..want]).await?;
                if n == 0 {
                    return Ok::<_, StreamError>(true);
                }
                let write = write_or_stall(&mut stream, &buf[..n], stall);
                match &turn {
                    Some(t) => t.take(n, write, |r| if r.is_ok() { n } else { 0 }).await?,
                    None => write.await?,
                }
                if let Some(b) = &budget {
                    b.served(n as u64);
                }
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
            r = send => r.map(|whole| if whole { Ended::Complete } else { Ended::Unpaid }),
            d = access.until_denied(peer, &req.name) => Ok(Ended::Cut(d)),
            () = handle.stopping() => Ok(Ended::Stopping),
        }
    };
    let reason = match &ended {
        Ok(Ended::Complete) => "completed",
        Ok(Ended::Cut(d)) => d.reason().as_str(),
        Ok(Ended::Unpaid) => "unpaid",
        Ok(Ended::Stopping) => "shutdown",
        Ok(Ended::TooSlow { .. }) => "too_slow",
        Ok(Ended::Left) => "left",
        Err(StreamError::Stalled(_)) => "stalled",
        Err(_) => "failed",
    };
    access.record(|m, now| m.serve_ended(now, peer, &req.name, offset, sent, reason));
    if let Some(payees) = &shop.payees {
        // Ask for what the stream still owes.
        payees.invoice_now(&peer);
    }
    match ended? {
        Ended::Complete | Ended::Left => {
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
        Ended::TooSlow { earliest } => {
            tracing::info!(%peer, stream = %req.name, sent, earliest, "fell behind the live buffer; cut");
            handle.emit(Event::Error {
                what: "stream".into(),
                detail: format!(
                    "{}: the buyer fell behind the live buffer (it now starts at {earliest}) and was cut",
                    req.name
                ),
                reason: Some("too_slow".into()),
                peer_id: Some(peer.to_string()),
            });
            // A reset, not a clean end: the buyer hears `too_slow` when it
            // asks again.
            drop(stream);
        }
        Ended::Unpaid => {
            tracing::info!(%peer, stream = %req.name, sent, "unpaid past the grace; stream cut");
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
