//! The consumer's side of a live stream: subscribe (at the live edge or an
//! offset still held), verify every chunk against the provider's key, write
//! only verified bytes, and stay subscribed: after a broken path resubscribe
//! from the offset reached, or from the live edge when it is gone (a `gap`
//! event says how much was skipped).

use super::super::{read_frame, StreamError};
use crate::events::{Event, LiveSummary};
use crate::protocols::stream::client::{
    attempt_end, failed, redial_after, renew_with, report_resumed, FetchPolicy, Fetched, Output,
    Renew, Sink,
};
use crate::protocols::stream::StreamNet;
use futures::{AsyncReadExt, AsyncWriteExt};
use ledgermesh_protocol::framing::{FrameError, StreamHeader, StreamRequest};
use ledgermesh_protocol::live::{split_live_frame, Accepted, Chunk, Follower};
use ledgermesh_protocol::stream::client::{AttemptEnd, FetchState, Next};
use ledgermesh_protocol::{RejectReason, StreamRejection};
use libp2p::{Multiaddr, PeerId};
use sha2::{Digest, Sha256};
use std::time::Instant;
use tokio_util::sync::CancellationToken;

/// Where a live subscription starts (`--from`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum From {
    /// At the live edge: the next chunk the source yields.
    #[default]
    Live,
    /// At this offset, if the provider still holds it.
    Offset(u64),
}

impl std::str::FromStr for From {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "live" {
            return Ok(From::Live);
        }
        s.parse()
            .map(From::Offset)
            .map_err(|_| format!("{s:?} is neither `live` nor an offset"))
    }
}

/// How a consumer follows live streams.
#[derive(Debug, Clone, Default)]
pub struct LivePolicy {
    /// Where to join.
    pub from: From,
    /// Stop after writing this many bytes of the stream.
    pub until_bytes: Option<u64>,
    /// When this buyer falls behind the provider's buffer, skip to the
    /// live edge (a `gap` event) instead of being cut.
    pub skip_ahead: bool,
    /// Ends the subscription (Ctrl-C, `--until DURATION`).
    pub stop: CancellationToken,
}

/// Lags (µs) kept for the percentiles (a reservoir past this).
const LAG_SAMPLES: usize = 65_536;

#[derive(Default)]
struct Stats {
    bytes: u64,
    chunks: u64,
    gaps: u32,
    gap_bytes: u64,
    lags: Vec<u64>,
    seen: u64,
    from_offset: Option<u64>,
    to_offset: u64,
    ended: bool,
}

impl Stats {
    fn lag(&mut self, ms: u64) {
        self.seen += 1;
        if self.lags.len() < LAG_SAMPLES {
            self.lags.push(ms);
        } else {
            let i = rand::random_range(0..self.seen);
            if let Some(slot) = self.lags.get_mut(i as usize) {
                *slot = ms;
            }
        }
    }

    fn summary(&mut self) -> LiveSummary {
        let to_offset = self.to_offset;
        self.lags.sort_unstable();
        let ms = |us: u64| us as f64 / 1000.0;
        let pct = |p: usize| {
            if self.lags.is_empty() {
                0.0
            } else {
                ms(self.lags[(self.lags.len() - 1) * p / 100])
            }
        };
        LiveSummary {
            from_offset: self.from_offset.unwrap_or(to_offset),
            to_offset,
            chunks: self.chunks,
            gap_bytes: self.gap_bytes,
            gaps: self.gaps,
            source_ended: self.ended,
            lag_ms_p50: pct(50),
            lag_ms_p99: pct(99),
            lag_ms_max: self.lags.last().copied().map_or(0.0, ms),
        }
    }
}

/// How one attempt ended, beyond what [`AttemptEnd`] knows.
enum Outcome {
    /// Asked to stop, or `--until` reached.
    Stopped,
    /// The stream refused our offset as gone or us as too slow.
    Behind(StreamRejection),
    /// The usual ends.
    End(AttemptEnd),
}

/// Follows live stream `name` of `peer` into `out` (see the module docs).
#[allow(clippy::too_many_arguments)]
pub async fn fetch_live(
    handle: &impl StreamNet,
    peer: PeerId,
    addrs: &[Multiaddr],
    name: &str,
    out: &Output,
    policy: &FetchPolicy,
    live: &LivePolicy,
    renew: Option<&Renew>,
) -> Result<Fetched, StreamError> {
    if !crate::source::valid_stream_name(name) {
        return Err(FrameError::Malformed(format!("{name:?} is not a valid stream name")).into());
    }
    let key = ledgermesh_protocol::keys::public_key_of(&peer).map_err(|e| {
        StreamError::Protocol(FrameError::Malformed(format!(
            "cannot verify chunks of {peer}: {e}"
        )))
    })?;
    let mut sink = Sink::open(out, true).await?;
    let started = Instant::now();
    let mut state = FetchState::new(policy.retry_policy(renew.is_some()));
    let mut follower: Option<Follower> = None;
    // The next request: from the live edge, or an offset.
    let mut want_edge = live.from == From::Live;
    let mut want_offset = match live.from {
        From::Live => 0,
        From::Offset(o) => o,
    };
    // Why the next subscription jumps, when it does.
    let mut jump_reason: Option<&'static str> = None;
    let mut stats = Stats::default();
    let mut hasher = Sha256::new();
    let mut resumes = 0u32;
    let mut first_byte_ts_ms = None;
    // When the subscription last broke, until chunks flow again.
    let mut broke_at: Option<Instant> = None;
    let meter = handle.stream_meter(peer);
    let mut control = handle.stream_control();
    let deliver_until = live.until_bytes;
    let tracked = (handle.ops().traffic).track(crate::ops::Dir::In, peer, name);
    loop {
        state.start_attempt();
        let before = stats.bytes;
        let attempt = async {
            let mut watch = super::super::client::PathWatch::new(handle, peer).await?;
            let mut stream =
                tracked.wrap(super::super::client::open(&mut control, peer, policy.stall).await?);
            let req = StreamRequest {
                name: name.into(),
                offset: want_offset,
                live_edge: want_edge,
                send: false,
            };
            handle.emit(Event::StreamOpened {
                peer_id: peer.to_string(),
                stream: name.into(),
                offset: want_offset,
            });
            stream.write_all(&req.encode()).await?;
            let (body, rest) = watch.guard(policy.stall, read_frame(&mut stream)).await??;
            let (info, offset) = match StreamHeader::decode(&body)? {
                StreamHeader::Rejected(r)
                    if matches!(r.reason, RejectReason::Gone | RejectReason::TooSlow)
                        || (r.reason == RejectReason::BadOffset && follower.is_some()) =>
                {
                    return Ok(Outcome::Behind(r));
                }
                StreamHeader::Rejected(r) => return Err(StreamError::Rejected(r)),
                StreamHeader::Accepted { info, offset } => (info, offset),
            };
            if info.name != name {
                return Err(FrameError::Malformed(format!(
                    "asked for {name:?}, got {:?}",
                    info.name
                ))
                .into());
            }
            let Some(epoch) = info.live else {
                return Err(FrameError::Malformed(format!("{name} is not a live stream")).into());
            };
            match &mut follower {
                None => {
                    follower = Some(Follower::new(key.clone(), name, epoch, offset));
                }
                Some(f) if f.epoch() != epoch || offset != f.offset() => {
                    let reason = if f.epoch() != epoch {
                        "restarted"
                    } else {
                        jump_reason.unwrap_or("gone")
                    };
                    let bytes = if f.epoch() == epoch {
                        offset.saturating_sub(f.offset())
                    } else {
                        0
                    };
                    stats.gaps += 1;
                    stats.gap_bytes += bytes;
                    handle.emit(Event::Gap {
                        peer_id: peer.to_string(),
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
            jump_reason = None;
            let f = follower.as_mut().expect("set above");
            let mut pending = rest;
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                while let Some((body, used)) = split_live_frame(&pending)? {
                    let chunk = Chunk::decode(body)?;
                    pending.drain(..used);
                    let skip = match f.accept(&chunk) {
                        Ok(Accepted::Write { skip }) => skip,
                        // The path is alive; the read already reset the stall.
                        Ok(Accepted::Heartbeat) => continue,
                        Ok(Accepted::End) => {
                            stats.ended = true;
                            return Ok(Outcome::End(AttemptEnd::Complete));
                        }
                        Err(e) => {
                            // Never written: reported with its offset, and
                            // the subscription starts again from ours.
                            handle.emit(Event::Error {
                                what: "live_chunk".into(),
                                detail: format!("{name}: {e}; nothing of it was written"),
                                reason: Some("bad_chunk".into()),
                                peer_id: Some(peer.to_string()),
                            });
                            return Ok(Outcome::End(AttemptEnd::Broken(e.to_string())));
                        }
                    };
                    let mut data = &chunk.data[skip..];
                    if let Some(until) = deliver_until {
                        let left = until.saturating_sub(stats.bytes);
                        data = &data[..data.len().min(left as usize)];
                    }
                    if let Some(at) = broke_at.take() {
                        report_resumed(handle, peer, name, chunk.offset + skip as u64, at);
                    }
                    stats.from_offset.get_or_insert(chunk.offset + skip as u64);
                    stats.to_offset = chunk.offset + (skip + data.len()) as u64;
                    first_byte_ts_ms.get_or_insert_with(crate::clock::now_ms);
                    sink.write(data).await?;
                    sink.flush().await?;
                    hasher.update(data);
                    meter.fetch_add(
                        chunk.data.len() as u64,
                        std::sync::atomic::Ordering::Relaxed,
                    );
                    stats.bytes += data.len() as u64;
                    stats.chunks += 1;
                    stats.lag(crate::clock::now_us().saturating_sub(chunk.ts_us));
                    if deliver_until.is_some_and(|u| stats.bytes >= u) {
                        return Ok(Outcome::Stopped);
                    }
                }
                let read = tokio::select! {
                    r = watch.guard(policy.stall, stream.read(&mut buf)) => r??,
                    () = live.stop.cancelled() => return Ok(Outcome::Stopped),
                };
                if read == 0 {
                    return Ok(Outcome::End(AttemptEnd::Broken(
                        "the provider closed the stream".into(),
                    )));
                }
                pending.extend_from_slice(&buf[..read]);
            }
        };
        let outcome = tokio::select! {
            r = attempt => r,
            () = live.stop.cancelled() => Ok(Outcome::Stopped),
        };
        let mut fatal = None;
        let end = match outcome {
            Ok(Outcome::Stopped) => break,
            Ok(Outcome::Behind(r)) => {
                match ledgermesh_protocol::live::on_behind(
                    r.reason,
                    follower.is_none(),
                    live.skip_ahead,
                ) {
                    None => AttemptEnd::Refused(r),
                    Some(reason) => {
                        jump_reason = Some(reason);
                        want_edge = true;
                        resumes += 1;
                        continue;
                    }
                }
            }
            Ok(Outcome::End(end)) => end,
            Err(e) => attempt_end(e, &mut fatal),
        };
        let delivered = stats.bytes > before;
        if delivered {
            state.delivered();
        }
        // Resume from where we are.
        if let Some(f) = &follower {
            want_offset = f.offset();
            want_edge = false;
        }
        match state.end_attempt(end, delivered) {
            Next::Done => break,
            Next::Retry { .. } | Next::Renew(_) if live.stop.is_cancelled() => break,
            Next::Retry { after_ms } => {
                resumes += 1;
                broke_at.get_or_insert_with(Instant::now);
                tracing::info!(%peer, stream = name, offset = want_offset, "live stream broke; resubscribing");
                redial_after(handle, peer, addrs, after_ms).await;
            }
            Next::Confirm => {}
            Next::Renew(reason) => {
                renew_with(renew, name, reason).await?;
                resumes += 1;
            }
            Next::Fail(failure) => return Err(failed(failure, fatal, want_offset)),
        }
    }
    let path = out.path();
    Ok(Fetched {
        bytes: stats.bytes,
        sha256: hasher.finalize().into(),
        // Every byte written was in a chunk whose signature verified.
        verified: true,
        elapsed: started.elapsed(),
        resumes,
        path,
        first_byte_ts_ms,
        live: Some(stats.summary()),
    })
}
