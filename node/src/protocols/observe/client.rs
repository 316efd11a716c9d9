//! The asking side: one consensus round over the configured observers, and
//! the rounds that follow (every [`RECHECK_EVERY`], after a failed hole
//! punch, after the direct addresses change). The decisions are the
//! protocol crate's `Round` and `Rechecks`; this file carries them out.

use crate::addr::{peer_of, socket_of, socket_to_multiaddr};
use crate::events::Event;
use crate::swarm::NodeHandle;
use ledgermesh_proto::v1 as pb;
use ledgermesh_protocol::consensus::{
    ConsensusPolicy, Group, Rechecks, Round, RoundAction, Verdict,
};
use libp2p::{Multiaddr, PeerId};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How often address consensus is re-checked without a reason.
pub const RECHECK_EVERY: Duration = Duration::from_secs(300);

/// How long one round waits for its observers (dial, ask, dial-back).
const ROUND_TIMEOUT: Duration = Duration::from_secs(30);

/// Dials `observer` and asks it where it sees us, with a dial-back.
async fn ask(
    handle: &NodeHandle,
    observer: PeerId,
    addr: Multiaddr,
) -> Option<(SocketAddr, bool, Option<bool>)> {
    handle.dial(observer, vec![addr]).await.ok()?;
    let resp = handle.observe(observer, true).await.ok()?;
    let observed = Multiaddr::try_from(resp.observed).ok()?;
    let (sock, udp) = socket_of(&observed)?;
    let reachable = match pb::DialBack::try_from(resp.dial_back) {
        Ok(pb::DialBack::Reachable) => Some(true),
        Ok(pb::DialBack::Unreachable) => Some(false),
        _ => None,
    };
    Some((sock, udp, reachable))
}

/// Asks every observer (dialing it first) what address it sees us at, with a
/// dial-back, decides by quorum, publishes a `public_address` event and
/// stores the verdict in the node (which then advertises accordingly).
pub async fn check(
    handle: &NodeHandle,
    observers: &[Multiaddr],
    policy: ConsensusPolicy,
) -> Verdict {
    let epoch = Instant::now();
    let now_ms = || epoch.elapsed().as_millis() as u64;
    let addrs: HashMap<PeerId, Multiaddr> = observers
        .iter()
        .filter_map(|a| Some((peer_of(a)?, a.clone())))
        .collect();
    let mut round = Round::new(
        now_ms(),
        handle.peer_id(),
        observers.len(),
        observers
            .iter()
            .filter_map(|a| Some((peer_of(a)?, Group::of(a)))),
        policy,
        ROUND_TIMEOUT.as_millis() as u64,
    );
    let mut asks = tokio::task::JoinSet::new();
    while let Some(RoundAction::Ask { observer }) = round.poll_action() {
        let (handle, addr) = (handle.clone(), addrs[&observer].clone());
        asks.spawn(async move { (observer, ask(&handle, observer, addr).await) });
    }
    while let Some(deadline) = round.poll_timeout() {
        let at = tokio::time::Instant::from_std(epoch + Duration::from_millis(deadline));
        tokio::select! {
            joined = asks.join_next() => match joined {
                Some(Ok((observer, Some((addr, udp, reachable))))) => {
                    round.on_answer(observer, addr, udp, reachable)
                }
                Some(Ok((observer, None))) => round.on_failure(observer),
                // A panicked ask: the deadline settles it.
                Some(Err(_)) | None => round.handle_timeout(deadline),
            },
            _ = tokio::time::sleep_until(at) => round.handle_timeout(now_ms()),
        }
    }
    asks.abort_all();
    let outcome = round.outcome();
    let verdict = outcome.verdict.clone();
    let answers = match &outcome.note {
        Some(note) => vec![note.clone()],
        None => outcome
            .answers
            .iter()
            .map(|o| format!("{} saw {}", o.observer, o.addr))
            .collect(),
    };
    handle.emit(Event::PublicAddress {
        addr: verdict
            .addr
            .map(|a| socket_to_multiaddr(a, outcome.udp).to_string()),
        ip: verdict.ip.map(|ip| ip.to_string()),
        mapping: verdict.mapping.as_str().into(),
        reachable: verdict.reachable,
        observers: match outcome.note {
            Some(_) => observers.len(),
            None => verdict.observers,
        },
        agreeing: verdict.agreeing,
        answered: verdict.answered,
        answers,
    });
    if outcome.note.is_none() {
        handle.set_public(verdict.clone(), outcome.udp).await;
    }
    verdict
}

/// Runs [`check`] again when [`Rechecks`] says so, until the node stops
/// (the first check is the caller's). Driven by the swarm's signals, never
/// by the telemetry bus.
fn spawn_rechecks(
    handle: NodeHandle,
    observers: Vec<Multiaddr>,
    policy: ConsensusPolicy,
    every: Duration,
) {
    handle.clone().spawn(async move {
        let mut signals = handle.signals();
        let epoch = Instant::now();
        let now_ms = || epoch.elapsed().as_millis() as u64;
        let mut schedule = Rechecks::new(now_ms(), every.as_millis() as u64);
        let mut failures = {
            let s = signals.borrow_and_update();
            schedule.on_direct_addrs(now_ms(), s.direct_addrs.iter().map(|a| a.to_string()));
            s.hole_punch_failures
        };
        loop {
            let at = epoch + Duration::from_millis(schedule.poll_timeout());
            tokio::select! {
                _ = tokio::time::sleep_until(at.into()) => {}
                changed = signals.changed() => {
                    if changed.is_err() {
                        return; // the node stopped
                    }
                    let s = signals.borrow_and_update();
                    if s.hole_punch_failures != failures {
                        failures = s.hole_punch_failures;
                        schedule.on_hole_punch_failed(now_ms());
                    }
                    schedule.on_direct_addrs(now_ms(), s.direct_addrs.iter().map(|a| a.to_string()));
                }
            }
            if schedule.is_due(now_ms()) {
                check(&handle, &observers, policy).await;
                schedule.checked(now_ms());
            }
        }
    });
}

/// The first consensus round, then the re-checks; no-op without observers.
pub async fn start(handle: &NodeHandle, observers: &[Multiaddr], quorum: Option<usize>) {
    if observers.is_empty() {
        return;
    }
    let policy = ConsensusPolicy {
        quorum,
        ..ConsensusPolicy::default()
    };
    check(handle, observers, policy).await;
    spawn_rechecks(handle.clone(), observers.to_vec(), policy, RECHECK_EVERY);
}
