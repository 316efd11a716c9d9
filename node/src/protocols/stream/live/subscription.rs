//! One live subscription across its attempts: each request (from the
//! edge or our offset), the header and any gap it opens, and every chunk
//! verified against the provider's key before a byte of it is written.

use super::fetch::{From, LivePolicy};
pub(super) use super::stats::Stats;
use crate::events::Event;
use crate::protocols::stream::client::{
    open, report_resumed, FetchPolicy, Fetched, Output, PathWatch, Sink,
};
use crate::protocols::stream::{read_frame, StreamError, StreamNet};
use futures::{AsyncReadExt, AsyncWriteExt};
use ledgermesh_protocol::framing::{FrameError, StreamHeader, StreamRequest};
use ledgermesh_protocol::live::{split_live_frame, Accepted, Chunk, Follower};
use ledgermesh_protocol::stream::client::AttemptEnd;
use ledgermesh_protocol::{RejectReason, StreamRejection};
use libp2p::PeerId;
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How one attempt ended, beyond what [`AttemptEnd`] knows.
pub(super) enum Outcome {
    /// Asked to stop, or `--until` reached.
    Stopped,
    /// The stream refused our offset as gone or us as too slow.
    Behind(StreamRejection),
    /// The usual ends.
    End(AttemptEnd),
}

/// A live stream being followed.
pub(super) struct Subscription<'a> {
    pub(super) peer: PeerId,
    pub(super) name: &'a str,
    /// The provider's key: every chunk is signed with it.
    pub(super) key: libp2p::identity::PublicKey,
    pub(super) stall: Duration,
    /// Stop after writing this many bytes.
    pub(super) until_bytes: Option<u64>,
    pub(super) sink: Sink,
    /// Where we are in the stream, once a header said.
    pub(super) follower: Option<Follower>,
    /// The next request: from the live edge, or an offset.
    pub(super) want_edge: bool,
    pub(super) want_offset: u64,
    /// Why the next subscription jumps, when it does.
    pub(super) jump_reason: Option<&'static str>,
    pub(super) stats: Stats,
    pub(super) hasher: Sha256,
    pub(super) first_byte_ts_ms: Option<u64>,
    /// When the subscription last broke, until chunks flow again.
    pub(super) broke_at: Option<Instant>,
    pub(super) meter: std::sync::Arc<std::sync::atomic::AtomicU64>,
    pub(super) tracked: crate::ops::Tracked,
}

impl<'a> Subscription<'a> {
    /// A subscription to `name` of `peer`, written into `out` (appended).
    pub(super) async fn new(
        handle: &impl StreamNet,
        peer: PeerId,
        name: &'a str,
        out: &Output,
        policy: &FetchPolicy,
        live: &LivePolicy,
    ) -> Result<Self, StreamError> {
        crate::protocols::stream::client::check_name(name)?;
        let key = ledgermesh_protocol::keys::public_key_of(&peer).map_err(|e| {
            let why = format!("cannot verify chunks of {peer}: {e}");
            StreamError::Protocol(FrameError::Malformed(why))
        })?;
        Ok(Self {
            peer,
            name,
            key,
            stall: policy.stall,
            until_bytes: live.until_bytes,
            sink: Sink::open(out, true).await?,
            follower: None,
            want_edge: live.from == From::Live,
            want_offset: match live.from {
                From::Live => 0,
                From::Offset(o) => o,
            },
            jump_reason: None,
            stats: Stats::default(),
            hasher: Sha256::new(),
            first_byte_ts_ms: None,
            broke_at: None,
            meter: handle.stream_meter(peer),
            tracked: (handle.ops().traffic).track(crate::ops::Dir::In, peer, name),
        })
    }

    /// What the subscription delivered.
    pub(super) fn fetched(mut self, started: Instant, resumes: u32, path: PathBuf) -> Fetched {
        Fetched {
            bytes: self.stats.bytes,
            sha256: self.hasher.finalize().into(),
            // Every byte written was in a chunk whose signature verified.
            verified: true,
            elapsed: started.elapsed(),
            resumes,
            path,
            first_byte_ts_ms: self.first_byte_ts_ms,
            live: Some(self.stats.summary()),
        }
    }

    /// One attempt: a request, its header, then chunks until the stream
    /// ends, breaks, stalls or we are told to stop.
    pub(super) async fn attempt(
        &mut self,
        handle: &impl StreamNet,
        control: &mut libp2p_stream::Control,
        stop: &CancellationToken,
    ) -> Result<Outcome, StreamError> {
        let (peer, name) = (self.peer, self.name);
        let mut watch = PathWatch::new(handle, peer).await?;
        let mut stream = self.tracked.wrap(open(control, peer, self.stall).await?);
        let req = StreamRequest {
            name: name.into(),
            offset: self.want_offset,
            live_edge: self.want_edge,
            send: false,
        };
        handle.emit(Event::StreamOpened {
            peer_id: peer.to_string(),
            stream: name.into(),
            offset: self.want_offset,
        });
        stream.write_all(&req.encode()).await?;
        let (body, rest) = watch.guard(self.stall, read_frame(&mut stream)).await??;
        if let Some(behind) = self.join(handle, StreamHeader::decode(&body)?)? {
            return Ok(behind);
        }
        let mut pending = rest;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if let Some(end) = self.take_frames(handle, &mut pending).await? {
                return Ok(end);
            }
            let read = tokio::select! {
                r = watch.guard(self.stall, stream.read(&mut buf)) => r??,
                () = stop.cancelled() => return Ok(Outcome::Stopped),
            };
            if read == 0 {
                return Ok(Outcome::End(AttemptEnd::Broken(
                    "the provider closed the stream".into(),
                )));
            }
            pending.extend_from_slice(&buf[..read]);
        }
    }

    /// The provider's header: behind (our offset is gone, or we were too
    /// slow), refused, or accepted, where a jump from where we were is a gap.
    fn join(
        &mut self,
        handle: &impl StreamNet,
        header: StreamHeader,
    ) -> Result<Option<Outcome>, StreamError> {
        let name = self.name;
        let (info, offset) = match header {
            StreamHeader::Rejected(r)
                if matches!(r.reason, RejectReason::Gone | RejectReason::TooSlow)
                    || (r.reason == RejectReason::BadOffset && self.follower.is_some()) =>
            {
                return Ok(Some(Outcome::Behind(r)));
            }
            StreamHeader::Rejected(r) => return Err(StreamError::Rejected(r)),
            StreamHeader::Accepted { info, offset } => (info, offset),
        };
        if info.name != name {
            let got = &info.name;
            return Err(FrameError::Malformed(format!("asked for {name:?}, got {got:?}")).into());
        }
        let Some(epoch) = info.live else {
            return Err(FrameError::Malformed(format!("{name} is not a live stream")).into());
        };
        match &mut self.follower {
            None => self.follower = Some(Follower::new(self.key.clone(), name, epoch, offset)),
            Some(f) if f.epoch() != epoch || offset != f.offset() => {
                let restarted = f.epoch() != epoch;
                let reason = match restarted {
                    true => "restarted",
                    false => self.jump_reason.unwrap_or("gone"),
                };
                let bytes = match restarted {
                    true => 0,
                    false => offset.saturating_sub(f.offset()),
                };
                self.stats.gaps += 1;
                self.stats.gap_bytes += bytes;
                handle.emit(Event::Gap {
                    peer_id: self.peer.to_string(),
                    stream: name.into(),
                    from: f.offset(),
                    to: offset,
                    bytes,
                    reason: reason.into(),
                });
                f.resubscribe(epoch, offset);
            }
            Some(f) => f.resubscribe(epoch, offset),
        }
        self.jump_reason = None;
        Ok(None)
    }

    /// Every whole chunk in `pending`: verified, then written (within
    /// `--until`). `Some` when the attempt ends with it.
    async fn take_frames(
        &mut self,
        handle: &impl StreamNet,
        pending: &mut Vec<u8>,
    ) -> Result<Option<Outcome>, StreamError> {
        while let Some((body, used)) = split_live_frame(pending)? {
            let chunk = Chunk::decode(body)?;
            pending.drain(..used);
            let f = self.follower.as_mut().expect("set at the header");
            let skip = match f.accept(&chunk) {
                Ok(Accepted::Write { skip }) => skip,
                // The path is alive; the read already reset the stall.
                Ok(Accepted::Heartbeat) => continue,
                Ok(Accepted::End) => {
                    self.stats.ended = true;
                    return Ok(Some(Outcome::End(AttemptEnd::Complete)));
                }
                Err(e) => {
                    // Never written: reported with its offset, and the
                    // subscription starts again from ours.
                    handle.emit(Event::Error {
                        what: crate::events::ErrorPart::LiveChunk,
                        detail: format!("{}: {e}; nothing of it was written", self.name),
                        reason: Some("bad_chunk"),
                        peer_id: Some(self.peer.to_string()),
                    });
                    return Ok(Some(Outcome::End(AttemptEnd::Broken(e.to_string()))));
                }
            };
            self.write(handle, &chunk, skip).await?;
            if self.until_bytes.is_some_and(|u| self.stats.bytes >= u) {
                return Ok(Some(Outcome::Stopped));
            }
        }
        Ok(None)
    }

    /// A verified chunk's new bytes (from `skip`), within `--until`.
    async fn write(
        &mut self,
        handle: &impl StreamNet,
        chunk: &Chunk,
        skip: usize,
    ) -> Result<(), StreamError> {
        let mut data = &chunk.data[skip..];
        if let Some(until) = self.until_bytes {
            let left = until.saturating_sub(self.stats.bytes);
            data = &data[..data.len().min(left as usize)];
        }
        let at = chunk.offset + skip as u64;
        if let Some(broke) = self.broke_at.take() {
            report_resumed(handle, self.peer, self.name, at, broke);
        }
        self.stats.from_offset.get_or_insert(at);
        self.stats.to_offset = at + data.len() as u64;
        self.first_byte_ts_ms
            .get_or_insert_with(crate::clock::now_ms);
        self.sink.write(data).await?;
        self.sink.flush().await?;
        self.hasher.update(data);
        let carried = chunk.data.len() as u64;
        (self.meter).fetch_add(carried, std::sync::atomic::Ordering::Relaxed);
        self.stats.bytes += data.len() as u64;
        self.stats.chunks += 1;
        self.stats
            .lag(crate::clock::now_us().saturating_sub(chunk.ts_us));
        Ok(())
    }
}
