//! The data-stream protocol `/ledgermesh/stream/1` over `libp2p-stream`.
//!
//! One libp2p (yamux or QUIC) stream per data stream: the consumer sends a
//! [`StreamRequest`] (name, offset), the provider answers a [`StreamHeader`]
//! and the bytes from that offset to the end, then closes. A consumer whose
//! stream breaks (the relayed connection was replaced by a direct one, or a
//! path died) opens a new stream from the offset it has: no byte is lost and
//! none is written twice.

use crate::events::Event;
use crate::net::NodeHandle;
use crate::source::Source;
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use ledgermesh_protocol::framing::{
    split_frame, FrameError, StreamHeader, StreamRequest, MAX_FRAME,
};
use ledgermesh_protocol::{RejectReason, StreamInfo, StreamRejection};
use libp2p::{Multiaddr, PeerId, StreamProtocol};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt as _;
use tokio::io::AsyncWriteExt as _;
use tokio::sync::Semaphore;

/// The protocol name.
pub const STREAM_PROTOCOL: StreamProtocol = StreamProtocol::new("/ledgermesh/stream/1");

/// Size of the copy buffer on both sides.
pub const CHUNK: usize = 256 * 1024;

/// How long a provider waits for a request on a fresh stream.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The streams a provider sells, with their length and digest computed once.
#[derive(Debug, Default)]
pub struct Catalog {
    streams: HashMap<String, (Source, StreamInfo)>,
}

impl Catalog {
    /// Describes every source (reads each once to hash it).
    pub async fn build(sources: Vec<(String, Source)>) -> std::io::Result<Self> {
        let mut streams = HashMap::new();
        for (name, source) in sources {
            let (len, sha) = source
                .digest()
                .await
                .map_err(|e| std::io::Error::new(e.kind(), format!("stream {name}: {e}")))?;
            let info = StreamInfo {
                name: name.clone(),
                length: Some(len),
                sha256: Some(sha),
            };
            streams.insert(name, (source, info));
        }
        Ok(Self { streams })
    }

    /// Adds a stream without reading it first: its digest is unknown, so
    /// consumers cannot verify it (for benchmarks and live sources).
    pub async fn insert_undigested(&mut self, name: &str, source: Source) -> std::io::Result<()> {
        let info = StreamInfo {
            name: name.into(),
            length: Some(source.len().await?),
            sha256: None,
        };
        self.streams.insert(name.into(), (source, info));
        Ok(())
    }

    /// The stream called `name`.
    pub fn get(&self, name: &str) -> Option<&(Source, StreamInfo)> {
        self.streams.get(name)
    }

    /// Every stream, sorted by name.
    pub fn infos(&self) -> Vec<StreamInfo> {
        let mut v: Vec<StreamInfo> = self.streams.values().map(|(_, i)| i.clone()).collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Answer for a wanted name: its info, or why not.
    pub fn lookup(&self, name: &str) -> Result<StreamInfo, StreamRejection> {
        self.get(name)
            .map(|(_, i)| i.clone())
            .ok_or_else(|| StreamRejection {
                name: name.into(),
                reason: RejectReason::UnknownStream,
                detail: format!(
                    "no stream named {name:?}; this provider sells: {}",
                    self.names().join(", ")
                ),
            })
    }

    fn names(&self) -> Vec<String> {
        self.infos().into_iter().map(|i| i.name).collect()
    }
}

/// Accepts data streams and serves them from `catalog` until the node stops.
/// At most `max_streams` are served at once; further requests get `busy`.
pub async fn serve(handle: NodeHandle, catalog: Arc<Catalog>, max_streams: usize) {
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
        let permit = permits.clone().try_acquire_owned().ok();
        tokio::spawn(async move {
            if let Err(e) = serve_one(&handle, peer, stream, &catalog, permit.is_some()).await {
                tracing::info!(%peer, error = %e, "stream ended early");
                handle.emit(Event::Error {
                    what: "stream".into(),
                    detail: e.to_string(),
                    reason: None,
                    peer_id: Some(peer.to_string()),
                });
            }
            drop(permit);
        });
    }
}

/// Errors while serving or fetching one stream.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// The remote broke the protocol.
    #[error("protocol violation: {0}")]
    Protocol(#[from] FrameError),
    /// The provider refused the stream.
    #[error("refused: {} ({})", .0.detail, .0.reason.as_str())]
    Rejected(StreamRejection),
    /// Transport or file I/O failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The remote does not speak the stream protocol.
    #[error("peer does not support {STREAM_PROTOCOL}")]
    Unsupported,
    /// No request arrived in time.
    #[error("no request within {REQUEST_TIMEOUT:?}")]
    Timeout,
    /// Retries exhausted.
    #[error("gave up after {attempts} attempts at offset {offset}: {last}")]
    GaveUp {
        /// Attempts made.
        attempts: u32,
        /// Bytes received.
        offset: u64,
        /// Last error.
        last: String,
    },
}

/// Reads one control frame; returns its body and any bytes read past it.
pub(crate) async fn read_frame<S: futures::AsyncRead + Unpin>(
    s: &mut S,
) -> Result<(Vec<u8>, Vec<u8>), StreamError> {
    let mut buf = Vec::with_capacity(512);
    let mut tmp = [0u8; 4096];
    loop {
        if let Some((body, used)) = split_frame(&buf)? {
            let body = body.to_vec();
            return Ok((body, buf[used..].to_vec()));
        }
        let n = s.read(&mut tmp).await?;
        if n == 0 {
            return Err(StreamError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        buf.extend_from_slice(&tmp[..n]);
        if buf.len() > MAX_FRAME + 4 + CHUNK {
            return Err(FrameError::TooLarge(buf.len()).into());
        }
    }
}

async fn serve_one(
    handle: &NodeHandle,
    peer: PeerId,
    mut stream: libp2p::Stream,
    catalog: &Catalog,
    have_permit: bool,
) -> Result<(), StreamError> {
    let (body, _) = tokio::time::timeout(REQUEST_TIMEOUT, read_frame(&mut stream))
        .await
        .map_err(|_| StreamError::Timeout)??;
    let req = StreamRequest::decode(&body)?;
    let reject = |reason, detail: String| {
        StreamHeader::Rejected(StreamRejection {
            name: req.name.clone(),
            reason,
            detail,
        })
    };
    let (source, info) = match catalog.get(&req.name) {
        Some(s) => s,
        None => {
            let rejection = catalog.lookup(&req.name).expect_err("missing");
            stream
                .write_all(&StreamHeader::Rejected(rejection.clone()).encode())
                .await?;
            stream.close().await?;
            handle.emit(Event::Error {
                what: "stream_request".into(),
                detail: rejection.detail,
                reason: Some(rejection.reason.as_str().into()),
                peer_id: Some(peer.to_string()),
            });
            return Ok(());
        }
    };
    let len = info.length.unwrap_or(0);
    let header = if !have_permit {
        reject(
            RejectReason::Busy,
            "provider is serving its maximum number of streams".into(),
        )
    } else if req.offset > len {
        reject(
            RejectReason::BadOffset,
            format!("offset {} is past the end ({len})", req.offset),
        )
    } else {
        StreamHeader::Accepted {
            info: info.clone(),
            offset: req.offset,
        }
    };
    stream.write_all(&header.encode()).await?;
    if matches!(header, StreamHeader::Rejected(_)) {
        stream.close().await?;
        return Ok(());
    }
    let mut reader = source.open_at(req.offset, len).await?;
    // A paced (live) source sends ten slices a second at its rate.
    let chunk = source
        .rate()
        .map_or(CHUNK, |r| ((r / 10).max(1) as usize).min(CHUNK));
    let mut buf = vec![0u8; chunk];
    let mut sent = 0u64;
    let started = tokio::time::Instant::now();
    loop {
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        stream.write_all(&buf[..n]).await?;
        sent += n as u64;
        if let Some(rate) = source.rate() {
            stream.flush().await?;
            let due = started + Duration::from_secs_f64(sent as f64 / rate as f64);
            tokio::time::sleep_until(due).await;
        }
    }
    stream.close().await?;
    handle.emit(Event::StreamServed {
        peer_id: peer.to_string(),
        stream: req.name,
        offset: req.offset,
        bytes: sent,
    });
    Ok(())
}

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
}

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
}

impl Default for FetchPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 12,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(3),
            stall: Duration::from_secs(20),
        }
    }
}

/// Notices when a connection to one peer closes.
struct PathWatch {
    rx: tokio::sync::broadcast::Receiver<crate::events::Record>,
    peer: String,
}

impl PathWatch {
    fn new(handle: &NodeHandle, peer: PeerId) -> Self {
        Self {
            rx: handle.emitter().subscribe(),
            peer: peer.to_string(),
        }
    }

    /// Resolves when a connection to the peer closed (or events were missed).
    async fn disconnected(&mut self) {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            match self.rx.recv().await {
                Ok(rec) => {
                    if let Event::Disconnected { peer_id, .. } = &rec.event {
                        if *peer_id == self.peer {
                            return;
                        }
                    }
                }
                Err(RecvError::Lagged(_)) => return,
                Err(RecvError::Closed) => std::future::pending::<()>().await,
            }
        }
    }

    /// Runs `fut` unless a connection to the peer closes or it stalls first.
    async fn guard<T>(
        &mut self,
        stall: Duration,
        fut: impl std::future::Future<Output = T>,
    ) -> Result<T, StreamError> {
        tokio::select! {
            r = fut => Ok(r),
            _ = self.disconnected() => Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "a connection to the peer closed; resuming on the remaining path",
            ).into()),
            _ = tokio::time::sleep(stall) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no data for {stall:?}"),
            ).into()),
        }
    }
}

/// Where stream `name` of `peer` is written under `out_dir`.
pub fn output_path(out_dir: &Path, peer: &PeerId, name: &str) -> PathBuf {
    out_dir.join(peer.to_string()).join(name)
}

/// Receives stream `name` from `peer` into `out_dir`, resuming from its offset
/// whenever the stream breaks, re-dialing `addrs` when disconnected.
pub async fn fetch(
    handle: &NodeHandle,
    peer: PeerId,
    addrs: &[Multiaddr],
    name: &str,
    out_dir: &Path,
    policy: &FetchPolicy,
) -> Result<Fetched, StreamError> {
    let path = output_path(out_dir, &peer, name);
    if let Some(parent) = path.parent() {
        tokio::fs::create_dir_all(parent).await?;
    }
    let mut file = tokio::fs::File::create(&path).await?;
    let mut hasher = Sha256::new();
    let mut offset = 0u64;
    let mut info: Option<StreamInfo> = None;
    let started = Instant::now();
    let mut attempts = 0u32;
    let mut backoff = policy.backoff;
    let mut control = handle.stream_control();
    let mut buf = vec![0u8; CHUNK];
    let mut first_byte_ts_ms = None;
    loop {
        attempts += 1;
        // Watch for connections to this peer closing: a stream on a closed
        // connection may never see an error, so any disconnect from the peer
        // makes us resume from our offset on whatever connection remains.
        let mut watch = PathWatch::new(handle, peer);
        let result: Result<bool, StreamError> = async {
            let opened =
                tokio::time::timeout(policy.stall, control.open_stream(peer, STREAM_PROTOCOL))
                    .await;
            let mut stream = match opened {
                Err(_) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "opening the stream timed out",
                    )
                    .into())
                }
                Ok(Ok(s)) => s,
                Ok(Err(libp2p_stream::OpenStreamError::UnsupportedProtocol(_))) => {
                    return Err(StreamError::Unsupported)
                }
                Ok(Err(e)) => return Err(std::io::Error::other(e.to_string()).into()),
            };
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
                    }
                    .encode(),
                )
                .await?;
            let (body, rest) = watch.guard(policy.stall, read_frame(&mut stream)).await??;
            match StreamHeader::decode(&body)? {
                StreamHeader::Rejected(r) => return Err(StreamError::Rejected(r)),
                StreamHeader::Accepted { info: i, offset: o } => {
                    if o != offset {
                        return Err(FrameError::Malformed(format!(
                            "asked offset {offset}, got {o}"
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
                }
            }
            let total = info.as_ref().and_then(|i| i.length);
            let mut pending = rest;
            if !pending.is_empty() {
                first_byte_ts_ms.get_or_insert_with(crate::events::now_ms);
            }
            loop {
                // File writes are never raced against anything, so a resume
                // can only happen between whole chunks: no byte is written twice.
                if !pending.is_empty() {
                    if let Some(t) = total {
                        if offset + pending.len() as u64 > t {
                            return Err(
                                FrameError::Malformed("provider sent past the end".into()).into()
                            );
                        }
                    }
                    file.write_all(&pending).await?;
                    hasher.update(&pending);
                    offset += pending.len() as u64;
                    pending.clear();
                }
                let n = watch.guard(policy.stall, stream.read(&mut buf)).await??;
                if n == 0 {
                    return Ok(total.is_none_or(|t| offset == t));
                }
                first_byte_ts_ms.get_or_insert_with(crate::events::now_ms);
                pending.extend_from_slice(&buf[..n]);
            }
        }
        .await;
        let last = match result {
            Ok(true) => break,
            Ok(false) => format!("stream ended early at {offset}"),
            Err(
                e
                @ (StreamError::Rejected(_) | StreamError::Unsupported | StreamError::Protocol(_)),
            ) => return Err(e),
            Err(e) => e.to_string(),
        };
        if attempts >= policy.max_attempts {
            return Err(StreamError::GaveUp {
                attempts,
                offset,
                last,
            });
        }
        tracing::info!(%peer, stream = name, offset, error = %last, "stream broke; resuming");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(policy.max_backoff);
        if let Err(e) = handle.dial(peer, addrs.to_vec()).await {
            tracing::info!(%peer, error = %e, "re-dial failed");
        }
    }
    file.flush().await?;
    file.sync_all().await?;
    let sha256: [u8; 32] = hasher.finalize().into();
    let verified = info
        .as_ref()
        .is_some_and(|i| i.sha256 == Some(sha256) && i.length.is_none_or(|l| l == offset));
    Ok(Fetched {
        bytes: offset,
        sha256,
        verified,
        elapsed: started.elapsed(),
        resumes: attempts - 1,
        path,
        first_byte_ts_ms,
    })
}
