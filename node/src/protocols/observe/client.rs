//! The asking side: one consensus round over the configured observers, and
//! the rounds that follow (every [`RECHECK_EVERY`], after a failed hole
//! punch, after the direct addresses change). The decisions are the
//! protocol crate's `Round` and `Rechecks`; this file carries them out.

use super::ObserveNet;
use crate::addr::{peer_of, socket_of, socket_to_multiaddr};
use crate::events::Event;
use ledgermesh_proto::v1 as pb;
use ledgermesh_protocol::consensus::{
    ConsensusPolicy, Group, Mapping, Outcome, RecheckDue, Rechecks, Round, RoundAction, Verdict,
};
use ledgermesh_protocol::Machine;
use libp2p::{Multiaddr, PeerId};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How often address consensus is re-checked without a reason.
pub const RECHECK_EVERY: Duration = Duration::from_secs(300);

/// How long one round waits for its observers (dial, ask, dial-back).
pub(super) const ROUND_TIMEOUT: Duration = Duration::from_secs(30);

/// What one observer answered.
struct Seen {
    addr: SocketAddr,
    udp: bool,
    reachable: Option<bool>,
    /// Its QUIC listen addresses (to ask over QUIC as well).
    quic_listen: Vec<Multiaddr>,
}

/// Dials `observer` and asks it where it sees us, with a dial-back.
async fn ask(handle: &impl ObserveNet, observer: PeerId, addr: Multiaddr) -> Option<Seen> {
    handle.dial(observer, vec![addr]).await.ok()?;
    let resp = handle.observe(observer, true).await.ok()?;
    let observed = Multiaddr::try_from(resp.observed).ok()?;
    let (addr, udp) = socket_of(&observed)?;
    let reachable = match pb::DialBack::try_from(resp.dial_back) {
        Ok(pb::DialBack::Reachable) => Some(true),
        Ok(pb::DialBack::Unreachable) => Some(false),
        _ => None,
    };
    let quic_listen = (resp.quic_listen.into_iter())
        .filter_map(|b| Multiaddr::try_from(b).ok())
        .filter(crate::addr::is_quic)
        .take(4)
        .collect();
    Some(Seen {
        addr,
        udp,
        reachable,
        quic_listen,
    })
}

/// An observer's answer as a round takes it: the address, whether over
/// UDP, and the dial-back's result.
pub(super) type Answered = (SocketAddr, bool, Option<bool>);

/// Plays `round` out: `asks` answer it until they are all in or its deadline.
pub(super) async fn play(
    round: &mut Round,
    mut asks: tokio::task::JoinSet<(PeerId, Option<Answered>)>,
) {
    while let Some(deadline) = round.poll_timeout() {
        tokio::select! {
            joined = asks.join_next() => match joined {
                Some(Ok((observer, Some((addr, udp, reachable))))) => {
                    round.on_answer(observer, addr, udp, reachable)
                }
                Some(Ok((observer, None))) => round.on_failure(observer),
                // A panicked ask: the deadline settles it.
                Some(Err(_)) | None => round.handle_timeout(deadline),
            },
            _ = tokio::time::sleep_until(deadline.into()) => round.handle_timeout(Instant::now()),
        }
    }
    asks.abort_all();
}

/// Publishes a round's outcome as a `public_address` event.
pub(super) fn report(handle: &impl ObserveNet, outcome: &Outcome, observers: usize) {
    let verdict = &outcome.verdict;
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
            Some(_) => observers,
            None => verdict.observers,
        },
        agreeing: verdict.agreeing,
        answered: verdict.answered,
        answers,
    });
}

/// Asks every observer (dialing it first) what address it sees us at, with a
/// dial-back, decides by quorum, publishes a `public_address` event and
/// stores the verdict in the node (which then advertises accordingly).
/// When the verdict is on TCP and we listen on QUIC too, the observers that
/// told us their QUIC addresses are asked over QUIC as well, so a node
/// given its observers and relays by TCP address still learns its public
/// QUIC address (the hard-NAT path needs it).
pub async fn check(
    handle: &impl ObserveNet,
    observers: &[Multiaddr],
    policy: ConsensusPolicy,
) -> Verdict {
    check_with(handle, observers, policy, true).await
}

/// [`check`], with the QUIC round only when `with_quic`.
async fn check_with(
    handle: &impl ObserveNet,
    observers: &[Multiaddr],
    policy: ConsensusPolicy,
    with_quic: bool,
) -> Verdict {
    let addrs: HashMap<PeerId, Multiaddr> = observers
        .iter()
        .filter_map(|a| Some((peer_of(a)?, a.clone())))
        .collect();
    let mut round = Round::new(
        Instant::now(),
        handle.peer_id(),
        observers.len(),
        observers
            .iter()
            .filter_map(|a| Some((peer_of(a)?, Group::of(a)))),
        policy,
        ROUND_TIMEOUT,
    );
    // The QUIC addresses the observers told, by observer.
    let told = std::sync::Arc::new(std::sync::Mutex::new(
        HashMap::<PeerId, Vec<Multiaddr>>::new(),
    ));
    let mut asks = tokio::task::JoinSet::new();
    while let Some(RoundAction::Ask { observer }) = round.poll_action() {
        let (handle, addr, told) = (handle.clone(), addrs[&observer].clone(), told.clone());
        asks.spawn(async move {
            let seen = ask(&handle, observer, addr).await;
            let seen = seen.map(|s| {
                if !s.quic_listen.is_empty() {
                    let mut t = told.lock().unwrap_or_else(|p| p.into_inner());
                    t.insert(observer, s.quic_listen);
                }
                (s.addr, s.udp, s.reachable)
            });
            (observer, seen)
        });
    }
    play(&mut round, asks).await;
    let outcome = round.outcome();
    report(handle, &outcome, observers.len());
    if outcome.note.is_some() {
        return outcome.verdict;
    }
    handle
        .set_public(outcome.verdict.clone(), outcome.udp)
        .await;
    let told = std::mem::take(&mut *told.lock().unwrap_or_else(|p| p.into_inner()));
    // Only an endpoint-independent TCP verdict needs a QUIC one beside it
    // (the easy side of a hard-NAT attempt offers it).
    let eim =
        outcome.verdict.mapping == Mapping::EndpointIndependent && outcome.verdict.addr.is_some();
    if with_quic && eim && !outcome.udp && listens_on_quic(handle).await {
        let quic =
            super::quic::check_quic(handle, observers, told, policy, outcome.verdict.ip).await;
        handle.set_public_quic(quic).await;
    }
    outcome.verdict
}

/// Whether the node has a QUIC listener.
async fn listens_on_quic(handle: &impl ObserveNet) -> bool {
    (handle.snapshot().await).is_ok_and(|s| s.direct_addrs.iter().any(crate::addr::is_quic))
}

/// Runs [`check`] again when [`Rechecks`] says so, until the node stops
/// (the first check is the caller's). Driven by the swarm's signals, never
/// by the telemetry bus.
fn spawn_rechecks(
    handle: impl ObserveNet,
    observers: Vec<Multiaddr>,
    policy: ConsensusPolicy,
    every: Duration,
) {
    handle.clone().spawn(async move {
        let mut signals = handle.signals();
        let mut schedule = Rechecks::new(Instant::now(), every);
        let mut failures = {
            let s = signals.borrow_and_update();
            schedule.on_direct_addrs(Instant::now(), s.direct_addrs.iter().map(|a| a.to_string()));
            s.hole_punch_failures
        };
        loop {
            let at = (schedule.poll_timeout()).unwrap_or_else(|| Instant::now() + every);
            tokio::select! {
                _ = tokio::time::sleep_until(at.into()) => {}
                changed = signals.changed() => {
                    if changed.is_err() {
                        return; // the node stopped
                    }
                    let s = signals.borrow_and_update();
                    if s.hole_punch_failures != failures {
                        failures = s.hole_punch_failures;
                        schedule.on_hole_punch_failed(Instant::now());
                    }
                    let addrs = s.direct_addrs.iter().map(|a| a.to_string());
                    schedule.on_direct_addrs(Instant::now(), addrs);
                }
            }
            schedule.handle_timeout(Instant::now());
            while let Some(RecheckDue { with_quic }) = schedule.poll_action() {
                check_with(&handle, &observers, policy, with_quic).await;
                schedule.checked(Instant::now());
            }
        }
    });
}

/// The first consensus round, then the re-checks; no-op without observers.
pub async fn start(handle: &impl ObserveNet, observers: &[Multiaddr], quorum: Option<usize>) {
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
