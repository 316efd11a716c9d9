//! The consumer side of `/ledgermesh/stream/1`: fetch one stream into a
//! file, resuming from its offset whenever the stream breaks, renewing the
//! grant when it runs out (if allowed). What to do after each attempt is
//! decided by `ledgermesh_protocol::stream::client::FetchState`.

use super::{read_frame, StreamError, CHUNK, STREAM_PROTOCOL};
use crate::events::Event;
use crate::protocols::stream::StreamNet;
use futures::future::BoxFuture;
use futures::{AsyncReadExt, AsyncWriteExt};
use ledgermesh_protocol::framing::{FrameError, StreamHeader, StreamRequest};
use ledgermesh_protocol::stream::client::{AttemptEnd, Failure, FetchState, Next, RetryPolicy};
use ledgermesh_protocol::{RejectReason, StreamInfo, StreamRejection};
use libp2p::{Multiaddr, PeerId};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt as _;

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
pub(crate) struct PathWatch(crate::net::CloseWatch);

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
async fn finish(file: &mut Option<Sink>, output: &Output) -> Result<(), StreamError> {
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

/// Where a stream's bytes go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// A file (created, or appended to for a live stream).
    File(PathBuf),
    /// Standard output, raw (`--out -`).
    Stdout,
    /// Local TCP clients (`--listen-local`).
    Local(super::local::Fanout),
}

impl Output {
    /// Stream `name` of `peer` under `out_dir`, or stdout when `out_dir` is `-`.
    pub fn for_stream(out_dir: &Path, peer: &PeerId, name: &str) -> Self {
        if out_dir == Path::new("-") {
            Output::Stdout
        } else {
            Output::File(output_path(out_dir, peer, name))
        }
    }

    /// The path reported in events (`-` for stdout).
    pub fn path(&self) -> PathBuf {
        match self {
            Output::File(p) => p.clone(),
            Output::Stdout => PathBuf::from("-"),
            Output::Local(f) => PathBuf::from(format!("tcp://{}", f.addr())),
        }
    }
}

/// An open [`Output`].
pub(crate) enum Sink {
    File(tokio::fs::File),
    Stdout(tokio::io::Stdout),
    Local(super::local::Fanout),
}

impl Sink {
    /// Opens `out`: a file is created (truncated), or appended to with `append`.
    pub(crate) async fn open(out: &Output, append: bool) -> std::io::Result<Self> {
        Ok(match out {
            Output::File(path) => {
                if let Some(parent) = path.parent() {
                    tokio::fs::create_dir_all(parent).await?;
                }
                let f = tokio::fs::OpenOptions::new()
                    .create(true)
                    .write(true)
                    .append(append)
                    .truncate(!append)
                    .open(path)
                    .await?;
                Sink::File(f)
            }
            Output::Stdout => Sink::Stdout(tokio::io::stdout()),
            Output::Local(f) => Sink::Local(f.clone()),
        })
    }

    pub(crate) async fn write(&mut self, data: &[u8]) -> Result<(), StreamError> {
        match self {
            Sink::File(f) => Ok(f.write_all(data).await?),
            Sink::Stdout(s) => s.write_all(data).await.map_err(closed_pipe),
            Sink::Local(f) => {
                f.send(data);
                Ok(())
            }
        }
    }

    pub(crate) async fn flush(&mut self) -> Result<(), StreamError> {
        match self {
            Sink::File(f) => Ok(f.flush().await?),
            Sink::Stdout(s) => s.flush().await.map_err(closed_pipe),
            Sink::Local(_) => Ok(()),
        }
    }

    /// Flushes, and for a file waits until it is on disk.
    pub(crate) async fn sync(&mut self) -> Result<(), StreamError> {
        self.flush().await?;
        match self {
            Sink::File(f) => Ok(f.sync_all().await?),
            Sink::Stdout(_) | Sink::Local(_) => Ok(()),
        }
    }
}

/// Standard output into a pipe whose reader left is the end of the fetch,
/// not a broken stream to resume.
fn closed_pipe(e: std::io::Error) -> StreamError {
    match e.kind() {
        std::io::ErrorKind::BrokenPipe => StreamError::OutputClosed,
        _ => StreamError::Io(e),
    }
}

/// Where stream `name` of `peer` is written under `out_dir`.
pub fn output_path(out_dir: &Path, peer: &PeerId, name: &str) -> PathBuf {
    out_dir.join(peer.to_string()).join(name)
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
    // The name becomes a file name: only names that cannot leave `out_dir`.
    if !crate::source::valid_stream_name(name) {
        return Err(FrameError::Malformed(format!("{name:?} is not a valid stream name")).into());
    }
    let output = Output::for_stream(out_dir, &peer, name);
    fetch_to(handle, peer, addrs, name, &output, policy, renew).await
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
    if !crate::source::valid_stream_name(name) {
        return Err(FrameError::Malformed(format!("{name:?} is not a valid stream name")).into());
    }
    let path = output.path();
    // Opened at the first accepted header: a live stream (which appends)
    // is handed back untouched.
    let mut file: Option<Sink> = None;
    let mut hasher = Sha256::new();
    let mut offset = 0u64;
    let mut info: Option<StreamInfo> = None;
    let started = Instant::now();
    let mut state = FetchState::new(policy.retry_policy(renew.is_some()));
    let mut resumes = 0u32;
    // Payload bytes received from the provider (a priced one bills them).
    let meter = handle.stream_meter(peer);
    let mut control = handle.stream_control();
    let mut buf = vec![0u8; CHUNK];
    // This stream's share of the node's receiving (it leaves when done).
    let fair = handle.fair_in().join();
    let mut first_byte_ts_ms = None;
    // When the stream last broke, until bytes flow again.
    let mut broke_at: Option<Instant> = None;
    let told_expired = |offset: u64| {
        handle.emit(Event::GrantExpired {
            peer_id: peer.to_string(),
            stream: name.into(),
            offset: Some(offset),
            path: Some(path.display().to_string()),
        })
    };
    let tracked = (handle.ops().traffic).track(crate::ops::Dir::In, peer, name);
    loop {
        state.start_attempt();
        let before = offset;
        // Watch for connections to this peer closing: a stream on a closed
        // connection may never see an error, so any disconnect from the peer
        // makes us resume from our offset on whatever connection remains.
        let result: Result<AttemptEnd, StreamError> = async {
            let mut watch = PathWatch::new(handle, peer).await?;
            let mut stream = tracked.wrap(open(&mut control, peer, policy.stall).await?);
            handle.emit(Event::StreamOpened {
                peer_id: peer.to_string(),
                stream: name.into(),
                offset,
            });
            stream
                .write_all(
                    &StreamRequest {
                        name: name.into(),
                        offset,
                        live_edge: false,
                        send: false,
                    }
                    .encode(),
                )
                .await?;
            let (body, rest) = watch.guard(policy.stall, read_frame(&mut stream)).await??;
            match StreamHeader::decode(&body)? {
                StreamHeader::Rejected(r) => return Err(StreamError::Rejected(r)),
                StreamHeader::Accepted { info: i, .. } if i.live.is_some() => {
                    return Err(StreamError::Live);
                }
                StreamHeader::Accepted { info: i, offset: o } => {
                    if o != offset {
                        return Err(FrameError::Malformed(format!(
                            "asked offset {offset}, got {o}"
                        ))
                        .into());
                    }
                    if i.name != name {
                        return Err(FrameError::Malformed(format!(
                            "asked for {name:?}, got {:?}",
                            i.name
                        ))
                        .into());
                    }
                    if info.as_ref().is_some_and(|prev| prev != &i) {
                        return Err(FrameError::Malformed(
                            "stream changed between attempts".into(),
                        )
                        .into());
                    }
                    info = Some(i);
                    if file.is_none() {
                        file = Some(Sink::open(output, false).await?);
                    }
                }
            }
            let total = info.as_ref().and_then(|i| i.length);
            tracked.progress(offset, total);
            let mut pending = rest;
            if !pending.is_empty() {
                first_byte_ts_ms.get_or_insert_with(crate::clock::now_ms);
            }
            loop {
                // File writes are never raced against anything, so a resume
                // can only happen between whole chunks: no byte is written twice.
                if !pending.is_empty() {
                    let end = total.unwrap_or(policy.max_bytes);
                    if offset + pending.len() as u64 > end {
                        return Err(match total {
                            Some(_) => FrameError::Malformed("provider sent past the end".into()),
                            None => FrameError::Malformed(format!(
                                "an open-ended stream passed the {} byte bound (--max-bytes)",
                                policy.max_bytes
                            )),
                        }
                        .into());
                    }
                    if let Some(at) = broke_at.take() {
                        report_resumed(handle, peer, name, offset, at);
                    }
                    let Some(file) = file.as_mut() else {
                        unreachable!("opened at the header");
                    };
                    file.write(&pending).await?;
                    meter.fetch_add(pending.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    hasher.update(&pending);
                    offset += pending.len() as u64;
                    tracked.progress(offset, total);
                    pending.clear();
                }
                let read = watch.guard(policy.stall, stream.read(&mut buf));
                let n = fair
                    .take(CHUNK, read, |r| match r {
                        Ok(Ok(n)) => *n,
                        _ => 0,
                    })
                    .await??;
                if n == 0 {
                    return Ok(match total {
                        None => AttemptEnd::ClosedWithoutLength,
                        Some(t) if offset == t => AttemptEnd::Complete,
                        Some(_) => AttemptEnd::Broken(format!("stream ended early at {offset}")),
                    });
                }
                first_byte_ts_ms.get_or_insert_with(crate::clock::now_ms);
                pending.extend_from_slice(&buf[..n]);
            }
        }
        .await;
        let mut fatal = None;
        let end = match result {
            Ok(end) => end,
            Err(StreamError::Live) => return Err(StreamError::Live),
            Err(e) => attempt_end(e, &mut fatal),
        };
        match state.end_attempt(end, offset > before) {
            Next::Done => break,
            Next::Retry { after_ms } => {
                fair.pause();
                resumes += 1;
                broke_at.get_or_insert_with(Instant::now);
                tracing::info!(%peer, stream = name, offset, "stream broke; resuming");
                redial_after(handle, peer, addrs, after_ms).await;
            }
            Next::Confirm => {
                tracing::debug!(%peer, stream = name, offset, "open-ended stream closed; confirming its end");
            }
            Next::Renew(reason) => {
                fair.pause();
                if let Some(f) = file.as_mut() {
                    f.flush().await?;
                }
                if reason == RejectReason::GrantExpired {
                    told_expired(offset);
                }
                tracing::info!(%peer, stream = name, offset, reason = reason.as_str(), "renewing");
                renew_with(renew, name, reason).await?;
                resumes += 1;
            }
            Next::Fail(failure) => {
                finish(&mut file, output).await?;
                if let Failure::Refused(r) = &failure {
                    if r.reason == RejectReason::GrantExpired {
                        told_expired(offset);
                    }
                }
                return Err(failed(failure, fatal, offset));
            }
        }
    }
    finish(&mut file, output).await?;
    let sha256: [u8; 32] = hasher.finalize().into();
    let verified = info
        .as_ref()
        .is_some_and(|i| i.sha256 == Some(sha256) && i.length.is_none_or(|l| l == offset));
    Ok(Fetched {
        bytes: offset,
        sha256,
        verified,
        elapsed: started.elapsed(),
        resumes,
        path,
        first_byte_ts_ms,
        live: None,
    })
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
