//! One attempt's plumbing, shared by finite and live fetches: opening the
//! stream, watching its path, the back-off and re-dial, renewing, and the
//! error a fetch that gave up returns.

use super::output::{Output, Sink};
use super::Renew;
use crate::events::Event;
use crate::protocols::stream::{StreamError, StreamNet, STREAM_PROTOCOL};
use ledgermesh_protocol::stream::client::{AttemptEnd, Failure};
use ledgermesh_protocol::{RejectReason, StreamRejection};
use libp2p::{Multiaddr, PeerId};
use std::time::{Duration, Instant};

/// Waits out a back-off, then dials `peer` again (a resume needs a path).
pub(crate) async fn redial_after(
    handle: &impl StreamNet,
    peer: PeerId,
    addrs: &[Multiaddr],
    after_ms: u64,
) {
    tokio::time::sleep(Duration::from_millis(after_ms)).await;
    if let Err(e) = handle.dial(peer, addrs.to_vec()).await {
        tracing::info!(%peer, error = %e, "re-dial failed");
    }
}

/// Notices when a connection to one peer closes (from the swarm's per-peer
/// close watch, not the telemetry bus: a slow reader cannot fake a close).
pub(crate) struct PathWatch(pub(crate) crate::net::CloseWatch);

impl PathWatch {
    pub(crate) async fn new(handle: &impl StreamNet, peer: PeerId) -> Result<Self, StreamError> {
        let watch = handle.watch_closes(peer).await.map_err(|e| {
            StreamError::Io(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                e.to_string(),
            ))
        })?;
        Ok(Self(watch))
    }

    /// Runs `fut` unless a connection to the peer closes or it stalls first.
    /// `fut` is polled first: bytes that arrived before a close are still
    /// taken (a relay that cuts a circuit at its byte limit has delivered
    /// them), and only a read that would wait sees the close.
    pub(crate) async fn guard<T>(
        &mut self,
        stall: Duration,
        fut: impl std::future::Future<Output = T>,
    ) -> Result<T, StreamError> {
        tokio::select! {
            biased;
            r = fut => Ok(r),
            _ = self.0.closed() => Err(StreamError::PathClosed),
            _ = tokio::time::sleep(stall) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no data for {stall:?}"),
            ).into()),
        }
    }
}

/// Syncs what was written; a fetch that never got a byte leaves an empty
/// file, so the output exists whatever happened.
pub(crate) async fn finish(file: &mut Option<Sink>, output: &Output) -> Result<(), StreamError> {
    match file {
        Some(f) => f.sync().await,
        None => Ok(Sink::open(output, false).await.map(drop)?),
    }
}

/// Says that a stream broken at `at` delivers again from `offset`.
pub(crate) fn report_resumed(
    handle: &impl StreamNet,
    peer: PeerId,
    name: &str,
    offset: u64,
    at: Instant,
) {
    handle.emit(Event::StreamResumed {
        peer_id: peer.to_string(),
        stream: name.into(),
        offset,
        stalled_ms: at.elapsed().as_millis() as u64,
    });
}

/// How an attempt that failed with `e` ends; a protocol error or a peer
/// without the protocol is fatal (kept in `fatal` to be returned as is).
pub(crate) fn attempt_end(e: StreamError, fatal: &mut Option<StreamError>) -> AttemptEnd {
    match e {
        StreamError::Rejected(r) => AttemptEnd::Refused(r),
        e @ (StreamError::Unsupported | StreamError::Protocol(_) | StreamError::OutputClosed) => {
            let text = e.to_string();
            *fatal = Some(e);
            AttemptEnd::Fatal(text)
        }
        e @ StreamError::PathClosed => AttemptEnd::PathClosed(e.to_string()),
        e => AttemptEnd::Broken(e.to_string()),
    }
}

/// Renews a grant (or pays up) through the hook, or says why that failed.
pub(crate) async fn renew_with(
    renew: Option<&Renew>,
    name: &str,
    reason: RejectReason,
) -> Result<(), StreamError> {
    let renew = renew.expect("renewals are only allowed with a hook");
    renew(reason).await.map_err(|why| {
        StreamError::Rejected(StreamRejection {
            name: name.into(),
            reason,
            detail: format!("refused ({}) and renewing failed: {why}", reason.as_str()),
            earliest: None,
        })
    })
}

/// The error a fetch that gave up at `offset` returns.
pub(crate) fn failed(failure: Failure, fatal: Option<StreamError>, offset: u64) -> StreamError {
    match failure {
        Failure::Refused(r) => StreamError::Rejected(r),
        Failure::Fatal(text) => fatal.unwrap_or_else(|| std::io::Error::other(text).into()),
        Failure::GaveUp { attempts, last } => StreamError::GaveUp {
            attempts,
            offset,
            last,
        },
    }
}

/// Opens a data stream to `peer`, or says why not within `stall`.
pub(crate) async fn open(
    control: &mut libp2p_stream::Control,
    peer: PeerId,
    stall: Duration,
) -> Result<libp2p::Stream, StreamError> {
    // A provider that has just started may not serve the protocol for a
    // moment (its node is up before its stream server): asked again a few
    // times over two seconds before "does not support" is believed.
    let mut unsupported_left = UNSUPPORTED_RETRIES;
    loop {
        let opened = tokio::time::timeout(stall, control.open_stream(peer, STREAM_PROTOCOL)).await;
        return match opened {
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "opening the stream timed out",
            )
            .into()),
            Ok(Ok(s)) => Ok(s),
            Ok(Err(libp2p_stream::OpenStreamError::UnsupportedProtocol(_))) => {
                if unsupported_left > 0 {
                    unsupported_left -= 1;
                    tokio::time::sleep(UNSUPPORTED_PAUSE).await;
                    continue;
                }
                Err(StreamError::Unsupported)
            }
            Ok(Err(e)) => Err(std::io::Error::other(e.to_string()).into()),
        };
    }
}

/// How often, and how far apart, "does not support" is asked again.
const UNSUPPORTED_RETRIES: u32 = 8;
const UNSUPPORTED_PAUSE: Duration = Duration::from_millis(250);
