//! One inbound stream: its request admitted or refused (access, then the
//! payment gate, then a full inbox), its bytes sent until the end, until
//! access or payment ends, or until the node stops; then recorded, and
//! closed as its end says.

use super::sending::{send, Job};
use super::{write_or_stall, ServeLimits, Shop, PAY_WAIT};
use crate::events::Event;
use crate::protocols::pay::payee::Budget;
use crate::protocols::stream::fair::FairGate;
use crate::protocols::stream::live::LiveFeed;
use crate::protocols::stream::source::Source;
use crate::protocols::stream::StreamNet;
use crate::protocols::stream::{read_frame, StreamError, REQUEST_TIMEOUT};
use futures::AsyncWriteExt;
use ledgermesh_protocol::access::Denial;
use ledgermesh_protocol::framing::{StreamHeader, StreamRequest};
use ledgermesh_protocol::stream::priced;
use ledgermesh_protocol::stream::server::{decide, LiveWindow, ServeDecision, StreamKind};
use ledgermesh_protocol::{RejectReason, StreamInfo, StreamRejection};
use libp2p::PeerId;
use std::sync::Arc;
use std::time::Duration;

/// How a served stream ended.
pub(super) enum Ended {
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

/// A request and what it names in the catalog.
pub(super) struct Asked<'a> {
    pub(super) req: StreamRequest,
    pub(super) entry: Option<&'a (Source, StreamInfo)>,
    pub(super) feed: Option<&'a Arc<LiveFeed>>,
    pub(super) kind: StreamKind,
}

impl<'a> Asked<'a> {
    fn of(shop: &'a Shop, peer: PeerId, req: StreamRequest) -> Self {
        let entry = shop.catalog.get(&req.name);
        let feed = shop.catalog.feed(&req.name);
        let kind = match (feed, entry) {
            (Some(f), _) => StreamKind::Live(LiveWindow {
                earliest: f.earliest(),
                edge: f.edge(),
                cut_slow: f.was_cut_slow(&peer),
            }),
            (None, Some((s, _))) if s.is_inbound() => StreamKind::Inbound,
            _ => StreamKind::Finite,
        };
        Self {
            req,
            entry,
            feed,
            kind,
        }
    }

    pub(super) fn name(&self) -> &str {
        &self.req.name
    }
}

pub(super) async fn serve_one(
    handle: &impl StreamNet,
    shop: &Shop,
    peer: PeerId,
    mut stream: libp2p::Stream,
    have_permit: bool,
    limits: ServeLimits,
    fair: &Arc<FairGate>,
) -> Result<(), StreamError> {
    let stall = limits.write_stall;
    let (body, _) = tokio::time::timeout(REQUEST_TIMEOUT, read_frame(&mut stream))
        .await
        .map_err(|_| StreamError::Timeout)??;
    let asked = Asked::of(shop, peer, StreamRequest::decode(&body)?);
    let (info, offset, budget) = match admit(shop, peer, &asked, have_permit, &limits).await {
        Ok(admitted) => admitted,
        Err(rejection) => {
            tracing::info!(%peer, stream = %asked.name(), reason = rejection.reason.as_str(), "refused");
            let header = StreamHeader::Rejected(rejection).encode();
            write_or_stall(&mut stream, &header, stall).await?;
            stream.close().await?;
            return Ok(());
        }
    };
    // Counted from here on: the operator's status and metrics see it.
    let tracked = (handle.ops().traffic).track(crate::ops::Dir::Out, peer, asked.name());
    let mut stream = tracked.wrap(stream);
    let length = info.length.unwrap_or(0);
    let header = StreamHeader::Accepted { info, offset };
    write_or_stall(&mut stream, &header.encode(), stall).await?;
    let mut sent = 0u64;
    // Bytes go out only while access lasts: when the grant runs out (or the
    // ACL entry is removed) the stream is closed where it stands; the
    // consumer keeps what it has and hears why when it asks again.
    let job = Job {
        shop,
        asked: &asked,
        peer,
        offset,
        length,
        limits: &limits,
        fair,
    };
    let ended = {
        let send = send(&mut stream, &job, budget, &mut sent);
        tokio::select! {
            r = send => r,
            d = shop.access.until_denied(peer, asked.name()) => Ok(Ended::Cut(d)),
            () = handle.stopping() => Ok(Ended::Stopping),
        }
    };
    let reason = reason_of(&ended);
    (shop.access).record(|m, now| m.serve_ended(now, peer, asked.name(), offset, sent, reason));
    if let Some(payees) = &shop.payees {
        // Ask for what the stream still owes.
        payees.invoice_now(&peer);
    }
    finish(handle, peer, asked.req.name, offset, sent, ended?, stream).await
}

/// The gates before any byte: access (`decide`), then a priced stream's
/// paid-up channel, then an inbox with room. Yields what is served, from
/// where, and the buyer's budget on a priced stream.
async fn admit(
    shop: &Shop,
    peer: PeerId,
    asked: &Asked<'_>,
    have_permit: bool,
    limits: &ServeLimits,
) -> Result<(StreamInfo, u64, Option<Budget>), StreamRejection> {
    let info = asked.entry.map(|(_, i)| i);
    let decision = (shop.access)
        .record(|m, now| decide(now, m, peer, &asked.req, info, have_permit, asked.kind));
    let (info, offset) = match decision {
        ServeDecision::Refuse(rejection) => return Err(rejection),
        ServeDecision::Serve { info, offset, .. } => (info, offset),
    };
    // A priced stream is served to a buyer with a paid-up channel only.
    let budget = match &shop.payees {
        // Its budget is taken at once: an account gone since the wait is
        // refused, never served unmetered (a budget whose account goes
        // later finds no room and stops the stream).
        Some(payees) if payees.wait_paying(&peer, PAY_WAIT).await => match payees.budget(&peer) {
            Some(budget) => Some(budget),
            None => return Err(priced::unpaid(asked.name(), &payees.terms())),
        },
        Some(payees) => return Err(priced::unpaid(asked.name(), &payees.terms())),
        None => None,
    };
    // A full inbox takes nobody's bytes: refused before it is accepted.
    if let Some((Source::Inbox(path), _)) = asked.entry {
        let held = (tokio::fs::symlink_metadata(path).await).map_or(0, |m| m.len());
        if held >= limits.inbox_max_bytes {
            return Err(StreamRejection {
                name: asked.req.name.clone(),
                reason: RejectReason::Busy,
                detail: format!("the inbox is full ({} bytes)", limits.inbox_max_bytes),
                earliest: None,
            });
        }
    }
    Ok((info, offset, budget))
}

/// The audit record's reason for how a stream ended.
fn reason_of(ended: &Result<Ended, StreamError>) -> &'static str {
    match ended {
        Ok(Ended::Complete) => "completed",
        Ok(Ended::Cut(d)) => d.reason().as_str(),
        Ok(Ended::Unpaid) => "unpaid",
        Ok(Ended::Stopping) => "shutdown",
        Ok(Ended::TooSlow { .. }) => "too_slow",
        Ok(Ended::Left) => "left",
        Err(StreamError::Stalled(_)) => "stalled",
        Err(_) => "failed",
    }
}

/// Closes the stream as its end says, and tells the operator.
async fn finish(
    handle: &impl StreamNet,
    peer: PeerId,
    name: String,
    offset: u64,
    sent: u64,
    ended: Ended,
    mut stream: impl futures::AsyncWrite + Unpin,
) -> Result<(), StreamError> {
    match ended {
        Ended::Complete | Ended::Left => {
            stream.close().await?;
            handle.emit(Event::StreamServed {
                peer_id: peer.to_string(),
                stream: name,
                offset,
                bytes: sent,
            });
        }
        Ended::Cut(d) => {
            tracing::info!(%peer, stream = %name, sent, reason = d.reason().as_str(), "access ended; stream cut");
            let _ = stream.close().await;
        }
        Ended::TooSlow { earliest } => {
            tracing::info!(%peer, stream = %name, sent, earliest, "fell behind the live buffer; cut");
            handle.emit(Event::Error {
                what: crate::events::ErrorPart::Stream,
                detail: format!(
                    "{name}: the buyer fell behind the live buffer (it now starts at {earliest}) and was cut"
                ),
                reason: Some("too_slow"),
                peer_id: Some(peer.to_string()),
            });
            // A reset, not a clean end: the buyer hears `too_slow` when it
            // asks again.
            drop(stream);
        }
        Ended::Unpaid => {
            tracing::info!(%peer, stream = %name, sent, "unpaid past the grace; stream cut");
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
