//! The consumer's side of a live stream: subscribe (at the live edge or an
//! offset still held), verify every chunk against the provider's key, write
//! only verified bytes, and stay subscribed: after a broken path resubscribe
//! from the offset reached, or from the live edge when it is gone (a `gap`
//! event says how much was skipped).

use super::subscription::{Outcome, Subscription};
use crate::protocols::stream::client::{
    attempt_end, failed, redial_after, renew_with, FetchPolicy, Fetched, Output, Renew,
};
use crate::protocols::stream::{StreamError, StreamNet};
use ledgermesh_protocol::stream::client::{AttemptEnd, FetchState, Next};
use libp2p::{Multiaddr, PeerId};
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

impl std::fmt::Display for From {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            From::Live => f.write_str("live"),
            From::Offset(n) => write!(f, "{n}"),
        }
    }
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
    let started = Instant::now();
    let mut state = FetchState::new(policy.retry_policy(renew.is_some()));
    let mut resumes = 0u32;
    let mut sub = Subscription::new(handle, peer, name, out, policy, live).await?;
    let mut control = handle.stream_control();
    loop {
        state.start_attempt();
        let before = sub.stats.bytes;
        let outcome = tokio::select! {
            r = sub.attempt(handle, &mut control, &live.stop) => r,
            () = live.stop.cancelled() => Ok(Outcome::Stopped),
        };
        let mut fatal = None;
        let end = match outcome {
            Ok(Outcome::Stopped) => break,
            Ok(Outcome::Behind(r)) => {
                let first = sub.follower.is_none();
                match ledgermesh_protocol::live::on_behind(r.reason, first, live.skip_ahead) {
                    None => AttemptEnd::Refused(r),
                    Some(reason) => {
                        sub.jump_reason = Some(reason);
                        sub.want_edge = true;
                        resumes += 1;
                        continue;
                    }
                }
            }
            Ok(Outcome::End(end)) => end,
            Err(e) => attempt_end(e, &mut fatal),
        };
        let delivered = sub.stats.bytes > before;
        if delivered {
            state.delivered();
        }
        // Resume from where we are.
        if let Some(f) = &sub.follower {
            sub.want_offset = f.offset();
            sub.want_edge = false;
        }
        match state.end_attempt(end, delivered) {
            Next::Done => break,
            Next::Retry { .. } | Next::Renew(_) if live.stop.is_cancelled() => break,
            Next::Retry { after_ms } => {
                resumes += 1;
                sub.broke_at.get_or_insert_with(Instant::now);
                tracing::info!(%peer, stream = name, offset = sub.want_offset, "live stream broke; resubscribing");
                redial_after(handle, peer, addrs, after_ms).await;
            }
            Next::Confirm => {}
            Next::Renew(reason) => {
                renew_with(renew, name, reason).await?;
                resumes += 1;
            }
            Next::Fail(failure) => return Err(failed(failure, fatal, sub.want_offset)),
        }
    }
    Ok(sub.fetched(started, resumes, out.path()))
}
