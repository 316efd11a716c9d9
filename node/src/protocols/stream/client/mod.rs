//! The consumer side of `/ledgermesh/stream/1`: fetch one stream into a
//! file, resuming from its offset whenever the stream breaks, renewing the
//! grant when it runs out (if allowed). What to do after each attempt is
//! decided by `ledgermesh_protocol::stream::client::FetchState`.

mod attempt;
mod download;
mod output;

use download::Download;

pub(crate) use attempt::{
    attempt_end, failed, finish, open, redial_after, renew_with, report_resumed, PathWatch,
};
pub(crate) use output::Sink;
pub use output::{output_path, Output};

use super::StreamError;
use crate::protocols::stream::StreamNet;
use futures::future::BoxFuture;
use ledgermesh_protocol::framing::FrameError;
use ledgermesh_protocol::stream::client::{Failure, FetchState, Next, RetryPolicy};
use ledgermesh_protocol::RejectReason;
use libp2p::{Multiaddr, PeerId};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Renews a grant: posts a new service request for the stream and resolves
/// once the provider accepted it (or says why not).
pub type Renew = dyn Fn(ledgermesh_protocol::RejectReason) -> BoxFuture<'static, Result<(), RenewError>>
    + Send
    + Sync;

/// Why a renewal failed (the hook's own error).
pub type RenewError = Box<dyn std::error::Error + Send + Sync>;

/// The result of a completed fetch.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// Bytes received.
    pub bytes: u64,
    /// SHA-256 of the bytes.
    pub sha256: [u8; 32],
    /// Whether it matches the provider's digest.
    pub verified: bool,
    /// Time taken.
    pub elapsed: Duration,
    /// Resumptions on a new stream.
    pub resumes: u32,
    /// File written.
    pub path: PathBuf,
    /// When the first data byte arrived (unix ms).
    pub first_byte_ts_ms: Option<u64>,
    /// A live stream: how the subscription went.
    pub live: Option<crate::events::LiveSummary>,
}

/// The default bound on a stream of unknown length: 16 GiB.
pub const DEFAULT_MAX_BYTES: u64 = 16 << 30;

/// How hard [`fetch`] tries.
#[derive(Debug, Clone)]
pub struct FetchPolicy {
    /// Attempts (first one included) before giving up.
    pub max_attempts: u32,
    /// First back-off; doubles up to `max_backoff`.
    pub backoff: Duration,
    /// Largest back-off.
    pub max_backoff: Duration,
    /// A stream that delivers nothing for this long is treated as broken.
    pub stall: Duration,
    /// Grant renewals per stream when a renewal hook is given.
    pub max_renewals: u32,
    /// Bytes accepted of a stream of unknown length (a live feed): past
    /// this the fetch stops, so a provider cannot fill the disk. A stream of
    /// declared length is held to that length.
    pub max_bytes: u64,
}

impl Default for FetchPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 12,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(3),
            stall: Duration::from_secs(20),
            max_renewals: 16,
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }
}

impl FetchPolicy {
    /// The retry machine's policy; renewals only with a hook (`renewing`).
    pub(crate) fn retry_policy(&self, renewing: bool) -> RetryPolicy {
        RetryPolicy {
            max_attempts: self.max_attempts,
            backoff_ms: self.backoff.as_millis() as u64,
            max_backoff_ms: self.max_backoff.as_millis() as u64,
            max_renewals: if renewing { self.max_renewals } else { 0 },
        }
    }
}

/// Receives stream `name` from `peer` into `out_dir`, resuming from its offset
/// whenever the stream breaks, re-dialing `addrs` when disconnected.
pub async fn fetch(
    handle: &impl StreamNet,
    peer: PeerId,
    addrs: &[Multiaddr],
    name: &str,
    out_dir: &Path,
    policy: &FetchPolicy,
) -> Result<Fetched, StreamError> {
    fetch_with(handle, peer, addrs, name, out_dir, policy, None).await
}

/// [`fetch`], and when the provider says the grant expired, `renew` (if
/// given) is called and the stream resumes from its offset. Without it, an
/// expired grant ends the fetch with [`StreamError::Rejected`]; either way
/// the bytes received so far stay in the file and a `grant_expired` event
/// says how many.
pub async fn fetch_with(
    handle: &impl StreamNet,
    peer: PeerId,
    addrs: &[Multiaddr],
    name: &str,
    out_dir: &Path,
    policy: &FetchPolicy,
    renew: Option<&Renew>,
) -> Result<Fetched, StreamError> {
    let output = Output::for_stream(out_dir, &peer, name);
    fetch_to(handle, peer, addrs, name, &output, policy, renew).await
}

/// A stream name we ask for: one that cannot leave an output directory.
pub(crate) fn check_name(name: &str) -> Result<(), StreamError> {
    match crate::source::valid_stream_name(name) {
        true => Ok(()),
        false => Err(FrameError::Malformed(format!("{name:?} is not a valid stream name")).into()),
    }
}

/// [`fetch_with`] into any [`Output`].
pub async fn fetch_to(
    handle: &impl StreamNet,
    peer: PeerId,
    addrs: &[Multiaddr],
    name: &str,
    output: &Output,
    policy: &FetchPolicy,
    renew: Option<&Renew>,
) -> Result<Fetched, StreamError> {
    // The name becomes a file name: only names that cannot leave the
    // output directory (checked before the path is used).
    check_name(name)?;
    let started = Instant::now();
    let mut state = FetchState::new(policy.retry_policy(renew.is_some()));
    let mut resumes = 0u32;
    let mut got = Download {
        peer,
        name,
        output,
        policy,
        file: None,
        hasher: Sha256::new(),
        offset: 0,
        info: None,
        first_byte_ts_ms: None,
        broke_at: None,
        // Payload bytes received from the provider (a priced one bills them).
        meter: handle.stream_meter(peer),
        tracked: (handle.ops().traffic).track(crate::ops::Dir::In, peer, name),
        // This stream's share of the node's receiving (it leaves when done).
        fair: handle.fair_in().join(),
    };
    let mut control = handle.stream_control();
    loop {
        state.start_attempt();
        let before = got.offset;
        let mut fatal = None;
        let end = match got.attempt(handle, &mut control).await {
            Ok(end) => end,
            Err(StreamError::Live) => return Err(StreamError::Live),
            Err(e) => attempt_end(e, &mut fatal),
        };
        match state.end_attempt(end, got.offset > before) {
            Next::Done => break,
            Next::Retry { after_ms } => {
                got.fair.pause();
                resumes += 1;
                got.broke_at.get_or_insert_with(Instant::now);
                tracing::info!(%peer, stream = name, offset = got.offset, "stream broke; resuming");
                redial_after(handle, peer, addrs, after_ms).await;
            }
            Next::Confirm => {
                tracing::debug!(%peer, stream = name, offset = got.offset, "open-ended stream closed; confirming its end");
            }
            Next::Renew(reason) => {
                got.fair.pause();
                if let Some(f) = got.file.as_mut() {
                    f.flush().await?;
                }
                if reason == RejectReason::GrantExpired {
                    got.told_expired(handle);
                }
                tracing::info!(%peer, stream = name, offset = got.offset, reason = reason.as_str(), "renewing");
                renew_with(renew, name, reason).await?;
                resumes += 1;
            }
            Next::Fail(failure) => {
                finish(&mut got.file, output).await?;
                if let Failure::Refused(r) = &failure {
                    if r.reason == RejectReason::GrantExpired {
                        got.told_expired(handle);
                    }
                }
                return Err(failed(failure, fatal, got.offset));
            }
        }
    }
    finish(&mut got.file, output).await?;
    Ok(got.fetched(started, resumes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_read_that_is_ready_wins_over_a_close_and_one_that_waits_sees_it() {
        // Many times: an unbiased select would pick the close about half
        // the time and drop bytes that had already arrived.
        for _ in 0..32 {
            let (closes, watch) = crate::net::CloseWatch::by_hand();
            let mut watch = PathWatch(watch);
            closes.send(()).await.unwrap();
            let stall = Duration::from_secs(30);
            let ready = watch.guard(stall, async { 7u8 }).await;
            assert_eq!(ready.unwrap(), 7, "bytes already there are taken");
            let waiting = watch.guard(stall, std::future::pending::<u8>()).await;
            assert!(
                matches!(waiting, Err(StreamError::PathClosed)),
                "a read that would wait sees the close: {waiting:?}"
            );
        }
    }
}
