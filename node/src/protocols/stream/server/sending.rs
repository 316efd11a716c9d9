//! An admitted stream's bytes: a live feed from its ring, an inbound one
//! taken, a finite or paced one read from its source; paid ones only as far
//! as the buyer's credit allows, and every one in the node's fair share.

use super::inbound::{echo, inbox};
use super::one::{Asked, Ended};
use super::{write_or_stall, ServeLimits, Shop};
use crate::protocols::pay::payee::{Budget, Room};
use crate::protocols::stream::fair::FairGate;
use crate::protocols::stream::live::serve::LiveEnd;
use crate::protocols::stream::source::Source;
use crate::protocols::stream::{StreamError, CHUNK};
use futures::AsyncWriteExt;
use ledgermesh_protocol::stream::server::StreamKind;
use libp2p::PeerId;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt as _;

/// An admitted stream: what to send, to whom, from where.
pub(super) struct Job<'a> {
    pub(super) shop: &'a Shop,
    pub(super) asked: &'a Asked<'a>,
    pub(super) peer: PeerId,
    pub(super) offset: u64,
    /// The stream's length (0 when unknown).
    pub(super) length: u64,
    pub(super) limits: &'a ServeLimits,
    pub(super) fair: &'a Arc<FairGate>,
}

/// Sends (or, inbound, takes) the stream's bytes until it ends by itself.
pub(super) async fn send(
    stream: &mut (impl futures::AsyncRead + futures::AsyncWrite + Unpin),
    job: &Job<'_>,
    budget: Option<Budget>,
    sent: &mut u64,
) -> Result<Ended, StreamError> {
    let Job {
        shop,
        asked,
        peer,
        offset,
        limits,
        ..
    } = *job;
    let stall = limits.write_stall;
    let Some((source, _)) = asked.entry else {
        unreachable!("decide serves only streams in the catalog");
    };
    if let Some(feed) = asked.feed {
        let heartbeat = limits.live_heartbeat;
        let end = super::super::live::serve::send(
            stream,
            feed,
            offset,
            budget.as_ref(),
            stall,
            heartbeat,
            sent,
        );
        return match end.await {
            // A buyer leaving is how a live stream usually ends for it.
            Err(StreamError::Io(_)) => Ok(Ended::Left),
            Err(e) => Err(e),
            Ok(LiveEnd::Ended) => Ok(Ended::Complete),
            Ok(LiveEnd::Unpaid) => Ok(Ended::Unpaid),
            Ok(LiveEnd::TooSlow { earliest }) => {
                feed.cut_slow(peer);
                Ok(Ended::TooSlow { earliest })
            }
        };
    }
    if asked.kind == StreamKind::Inbound {
        let taken = match source {
            Source::Inbox(path) => {
                let lock = shop.catalog.inbox_lock(asked.name());
                let _one_sender = lock.lock().await;
                inbox(stream, path, stall, limits.inbox_max_bytes, sent).await
            }
            _ => echo(stream, stall, sent).await,
        };
        return taken.map(|()| Ended::Complete);
    }
    let whole = send_finite(stream, source, job, budget, sent).await?;
    Ok(if whole {
        Ended::Complete
    } else {
        Ended::Unpaid
    })
}

/// A finite (or paced) source from the job's offset: whether it was sent
/// whole (`false`: the buyer stopped paying).
async fn send_finite(
    stream: &mut (impl futures::AsyncRead + futures::AsyncWrite + Unpin),
    source: &Source,
    job: &Job<'_>,
    budget: Option<Budget>,
    sent: &mut u64,
) -> Result<bool, StreamError> {
    let stall = job.limits.write_stall;
    let mut reader = source.open_at(job.offset, job.length).await?;
    // A paced (live) source sends ten slices a second at its rate.
    let chunk = source
        .rate()
        .map_or(CHUNK, |r| ((r / 10).max(1) as usize).min(CHUNK));
    let mut buf = vec![0u8; chunk];
    let started = tokio::time::Instant::now();
    // A paced source keeps its own rate and is not in the share.
    let turn = source.rate().is_none().then(|| job.fair.join());
    loop {
        // Paid: only as much as the credit allows; wait while paused (out of
        // the share: the others do not wait for it).
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
                _ => return Ok(false),
            }
        }
        let n = reader.read(&mut buf[..want]).await?;
        if n == 0 {
            return Ok(true);
        }
        let write = write_or_stall(stream, &buf[..n], stall);
        match &turn {
            Some(t) => t.take(n, write, |r| if r.is_ok() { n } else { 0 }).await?,
            None => write.await?,
        }
        if let Some(b) = &budget {
            b.served(n as u64);
        }
        *sent += n as u64;
        if let Some(rate) = source.rate() {
            stream.flush().await?;
            let due = started + Duration::from_secs_f64(*sent as f64 / rate as f64);
            tokio::time::sleep_until(due).await;
        }
    }
}
