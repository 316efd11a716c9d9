//! Our reservations on relays: which relay to ask and when is
//! `ledgermesh_protocol::path::relays::RelayPlan`; here, one circuit
//! listener per ask, what each reservation's state is, and who waits for
//! the first round to settle.

use crate::events::{Emitter, Event};
use ledgermesh_protocol::path::relays::{RelayAction, RelayPlan};
use ledgermesh_protocol::Machine;
use libp2p::core::transport::ListenerId;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use std::collections::HashMap;
use std::time::Instant;
use tokio::sync::oneshot;

#[derive(Debug)]
enum State {
    Idle,
    Pending,
    Accepted(Multiaddr),
}

/// Reservations by relay.
#[derive(Debug)]
pub(super) struct Reservations {
    relays: HashMap<PeerId, (Multiaddr, State)>,
    plan: RelayPlan<PeerId>,
    listeners: HashMap<ListenerId, PeerId>,
    waiters: Vec<oneshot::Sender<()>>,
    /// Failures in a row, by relay (reported on the first, and on a loss).
    failures: HashMap<PeerId, u32>,
}

/// Whether a reservation failure (the relay client's error with its
/// sources) is the relay saying no: policy, payment or capacity.
/// The likely reason a relay at `addr` refuses, when its address tells:
/// one on a loopback or private address has no public address to offer
/// unless it was started with `--local`.
fn likely_why(addr: &Multiaddr) -> &'static str {
    use ledgermesh_protocol::path::scope::{ip_of, is_global};
    match ip_of(addr) {
        Some(ip) if !is_global(ip) => {
            " (likely: a relay on a private address has no public address to offer \
             unless it was started with --local)"
        }
        _ => "",
    }
}

fn is_refusal(detail: &str) -> bool {
    let lower = detail.to_lowercase();
    lower.contains("refused") || lower.contains("resource limit")
}

impl Reservations {
    /// `relays` in order of preference; reservations on up to `target` at
    /// once; with `deferred`, each waits for [`Self::allow`].
    pub(super) fn new(relays: &[(PeerId, Multiaddr)], target: usize, deferred: bool) -> Self {
        Self {
            relays: (relays.iter())
                .map(|(p, a)| (*p, (a.clone(), State::Idle)))
                .collect(),
            plan: RelayPlan::new(relays.iter().map(|(p, _)| *p), target, deferred),
            listeners: HashMap::new(),
            waiters: Vec::new(),
            failures: HashMap::new(),
        }
    }

    /// Asks the relays the plan says to ask now.
    pub(super) fn drive<B: libp2p::swarm::NetworkBehaviour>(
        &mut self,
        swarm: &mut libp2p::Swarm<B>,
        now: Instant,
        emitter: &Emitter,
    ) {
        self.plan.handle_timeout(now);
        while let Some(RelayAction::Reserve(relay)) = self.plan.poll_action() {
            let Some((addr, state)) = self.relays.get_mut(&relay) else {
                continue;
            };
            *state = State::Pending;
            let addr = addr.clone();
            match swarm.listen_on(addr.clone().with(Protocol::P2pCircuit)) {
                Ok(id) => {
                    self.listeners.insert(id, relay);
                }
                Err(e) => self.failed(relay, e.to_string(), now, emitter),
            }
        }
        self.wake();
    }

    /// When the plan next wants to look again.
    pub(super) fn next_wake(&self) -> Option<Instant> {
        self.plan.poll_timeout()
    }

    /// A deferred relay may be asked now (its channel is attached).
    pub(super) fn allow(&mut self, relay: PeerId, now: Instant) {
        self.plan.allow(relay, now);
    }

    /// Whether `peer` is a relay we are asking.
    pub(super) fn is_pending(&self, peer: &PeerId) -> bool {
        matches!(self.relays.get(peer), Some((_, State::Pending)))
    }

    /// `relay` accepted (or renewed) our reservation.
    pub(super) fn accepted(
        &mut self,
        relay: PeerId,
        renewal: bool,
        local: PeerId,
        emitter: &Emitter,
    ) {
        if let Some((addr, state)) = self.relays.get_mut(&relay) {
            let circuit = addr
                .clone()
                .with(Protocol::P2pCircuit)
                .with(Protocol::P2p(local));
            if !renewal || !matches!(state, State::Accepted(_)) {
                emitter.emit(Event::ReservationAccepted {
                    relay: relay.to_string(),
                    addr: circuit.to_string(),
                });
            }
            *state = State::Accepted(circuit);
            self.plan.on_accepted(relay);
            self.failures.remove(&relay);
        }
        self.wake();
    }

    /// The node is stopping: its reservations end with its connections,
    /// which is neither a loss nor a failure to report.
    pub(super) fn stop(&mut self) {
        self.listeners.clear();
        for (_, state) in self.relays.values_mut() {
            *state = State::Idle;
        }
    }

    /// The circuit listener `id` closed with `detail`: the reservation it
    /// asked for failed, or the one it held was lost.
    pub(super) fn listener_closed(
        &mut self,
        id: ListenerId,
        detail: String,
        now: Instant,
        emitter: &Emitter,
    ) {
        if let Some(relay) = self.listeners.remove(&id) {
            self.failed(relay, detail, now, emitter);
        }
    }

    /// `relay` refused, could not be reached, or dropped our reservation
    /// (counted once: the dial error and the listener's close both say so).
    pub(super) fn failed(
        &mut self,
        relay: PeerId,
        detail: String,
        now: Instant,
        emitter: &Emitter,
    ) {
        let Some((addr, state)) = self.relays.get_mut(&relay) else {
            return;
        };
        if matches!(state, State::Idle) {
            return;
        }
        let refused = is_refusal(&detail);
        let lost = matches!(state, State::Accepted(_));
        *state = State::Idle;
        let n = self.failures.entry(relay).or_default();
        *n += 1;
        if lost {
            self.plan.on_lost(relay, now);
        } else {
            self.plan.on_failed(relay, refused, now);
        }
        let (reason, what) = if lost {
            ("reservation_lost", "lost the reservation on relay")
        } else {
            ("unreachable", "no reservation on relay")
        };
        if refused && !lost {
            // The relay said no (policy, payment, or capacity). The relay
            // protocol carries no reason; where the likely one shows in the
            // relay's address, it is said.
            emitter.emit(Event::ReservationRefused {
                relay: relay.to_string(),
                reason: format!("{detail}{}", likely_why(addr)),
            });
        }
        // Each loss, and the first failure of a run: later retries go to the log.
        if lost || *n == 1 {
            emitter.emit(Event::Error {
                what: crate::events::ErrorPart::Relay,
                detail: format!("{what} {addr}: {detail}; asking again with back-off"),
                reason: Some(reason),
                peer_id: Some(relay.to_string()),
            });
        } else {
            tracing::info!(%relay, failures = *n, %detail, "reservation failed again");
        }
        self.wake();
    }

    /// `reply` once the first round has settled (see `RelayPlan::settled`).
    pub(super) fn wait(&mut self, reply: oneshot::Sender<()>) {
        self.waiters.push(reply);
        self.wake();
    }

    /// Circuit addresses of the accepted reservations.
    pub(super) fn circuit_addrs(&self) -> Vec<Multiaddr> {
        self.relays
            .values()
            .filter_map(|(_, s)| match s {
                State::Accepted(circuit) => Some(circuit.clone()),
                _ => None,
            })
            .collect()
    }

    fn wake(&mut self) {
        if self.plan.settled() {
            for w in self.waiters.drain(..) {
                let _ = w.send(());
            }
        }
    }
}
