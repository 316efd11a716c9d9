//! A finite stream being received: each attempt opened from our offset,
//! its header checked against what we asked and what came before, its
//! bytes bounded, written, hashed and counted.

use super::output::{Output, Sink};
use super::{open, report_resumed, FetchPolicy, Fetched, PathWatch};
use crate::events::Event;
use crate::protocols::stream::{read_frame, StreamError, StreamNet, CHUNK};
use futures::{AsyncReadExt, AsyncWriteExt};
use ledgermesh_protocol::framing::{FrameError, StreamHeader, StreamRequest};
use ledgermesh_protocol::stream::client::AttemptEnd;
use ledgermesh_protocol::StreamInfo;
use libp2p::PeerId;
use sha2::{Digest, Sha256};
use std::time::Instant;

/// A finite stream being received, across its attempts.
pub(super) struct Download<'a> {
    pub(super) peer: PeerId,
    pub(super) name: &'a str,
    pub(super) output: &'a Output,
    pub(super) policy: &'a FetchPolicy,
    /// Opened at the first accepted header: a live stream (which appends)
    /// is handed back untouched.
    pub(super) file: Option<Sink>,
    pub(super) hasher: Sha256,
    pub(super) offset: u64,
    pub(super) info: Option<StreamInfo>,
    pub(super) first_byte_ts_ms: Option<u64>,
    /// When the stream last broke, until bytes flow again.
    pub(super) broke_at: Option<Instant>,
    pub(super) meter: std::sync::Arc<std::sync::atomic::AtomicU64>,
    pub(super) tracked: crate::ops::Tracked,
    pub(super) fair: crate::protocols::stream::fair::FairTurn,
}

impl Download<'_> {
    /// One attempt: a stream opened from our offset, its header checked,
    /// its bytes taken until it ends, breaks or stalls. Any connection to
    /// the peer closing ends it too: a stream on a closed connection may
    /// never see an error, so we resume from our offset on whatever
    /// connection remains.
    pub(super) async fn attempt(
        &mut self,
        handle: &impl StreamNet,
        control: &mut libp2p_stream::Control,
    ) -> Result<AttemptEnd, StreamError> {
        let (peer, stall) = (self.peer, self.policy.stall);
        let mut watch = PathWatch::new(handle, peer).await?;
        let mut stream = self.tracked.wrap(open(control, peer, stall).await?);
        handle.emit(Event::StreamOpened {
            peer_id: peer.to_string(),
            stream: self.name.into(),
            offset: self.offset,
        });
        let request = StreamRequest {
            name: self.name.into(),
            offset: self.offset,
            live_edge: false,
            send: false,
        };
        stream.write_all(&request.encode()).await?;
        let (body, rest) = watch.guard(stall, read_frame(&mut stream)).await??;
        self.accept(StreamHeader::decode(&body)?).await?;
        let total = self.info.as_ref().and_then(|i| i.length);
        self.tracked.progress(self.offset, total);
        let mut pending = rest;
        let mut buf = vec![0u8; CHUNK];
        loop {
            // File writes are never raced against anything, so a resume
            // can only happen between whole chunks: no byte is written twice.
            if !pending.is_empty() {
                self.first_byte_ts_ms
                    .get_or_insert_with(crate::clock::now_ms);
                self.take(handle, &pending, total).await?;
                pending.clear();
            }
            let read = watch.guard(stall, stream.read(&mut buf));
            let n = (self.fair)
                .take(CHUNK, read, |r| match r {
                    Ok(Ok(n)) => *n,
                    _ => 0,
                })
                .await??;
            if n == 0 {
                let offset = self.offset;
                return Ok(match total {
                    None => AttemptEnd::ClosedWithoutLength,
                    Some(t) if offset == t => AttemptEnd::Complete,
                    Some(_) => AttemptEnd::Broken(format!("stream ended early at {offset}")),
                });
            }
            pending.extend_from_slice(&buf[..n]);
        }
    }

    /// The provider's header: a refusal, a live stream (fetched elsewhere),
    /// or the stream we asked for, from our offset, the same as before.
    async fn accept(&mut self, header: StreamHeader) -> Result<(), StreamError> {
        let (name, offset) = (self.name, self.offset);
        let malformed = |what: String| Err(FrameError::Malformed(what).into());
        match header {
            StreamHeader::Rejected(r) => Err(StreamError::Rejected(r)),
            StreamHeader::Accepted { info, .. } if info.live.is_some() => Err(StreamError::Live),
            StreamHeader::Accepted { offset: o, .. } if o != offset => {
                malformed(format!("asked offset {offset}, got {o}"))
            }
            StreamHeader::Accepted { info, .. } if info.name != name => {
                malformed(format!("asked for {name:?}, got {:?}", info.name))
            }
            StreamHeader::Accepted { info, .. }
                if self.info.as_ref().is_some_and(|prev| prev != &info) =>
            {
                malformed("stream changed between attempts".into())
            }
            StreamHeader::Accepted { info, .. } => {
                self.info = Some(info);
                if self.file.is_none() {
                    self.file = Some(Sink::open(self.output, false).await?);
                }
                Ok(())
            }
        }
    }

    /// Bytes received: within the stream's length (or the bound on an
    /// open-ended one), written, hashed and counted.
    async fn take(
        &mut self,
        handle: &impl StreamNet,
        bytes: &[u8],
        total: Option<u64>,
    ) -> Result<(), StreamError> {
        let end = total.unwrap_or(self.policy.max_bytes);
        if self.offset + bytes.len() as u64 > end {
            return Err(match total {
                Some(_) => FrameError::Malformed("provider sent past the end".into()),
                None => FrameError::Malformed(format!(
                    "an open-ended stream passed the {} byte bound (--max-bytes)",
                    self.policy.max_bytes
                )),
            }
            .into());
        }
        if let Some(at) = self.broke_at.take() {
            report_resumed(handle, self.peer, self.name, self.offset, at);
        }
        let Some(file) = self.file.as_mut() else {
            unreachable!("opened at the header");
        };
        file.write(bytes).await?;
        (self.meter).fetch_add(bytes.len() as u64, std::sync::atomic::Ordering::Relaxed);
        self.hasher.update(bytes);
        self.offset += bytes.len() as u64;
        self.tracked.progress(self.offset, total);
        Ok(())
    }

    /// Says that the grant ran out, and how far the stream got.
    pub(super) fn told_expired(&self, handle: &impl StreamNet) {
        handle.emit(Event::GrantExpired {
            peer_id: self.peer.to_string(),
            stream: self.name.into(),
            offset: Some(self.offset),
            path: Some(self.output.path().display().to_string()),
        })
    }

    pub(super) fn fetched(self, started: Instant, resumes: u32) -> Fetched {
        let sha256: [u8; 32] = self.hasher.finalize().into();
        let offset = self.offset;
        let verified = (self.info.as_ref())
            .is_some_and(|i| i.sha256 == Some(sha256) && i.length.is_none_or(|l| l == offset));
        Fetched {
            bytes: offset,
            sha256,
            verified,
            elapsed: started.elapsed(),
            resumes,
            path: self.output.path(),
            first_byte_ts_ms: self.first_byte_ts_ms,
            live: None,
        }
    }
}
