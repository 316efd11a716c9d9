//! Our reservations on relays: one circuit listener per configured relay,
//! its state, and who waits for all of them to settle.

use crate::events::{Emitter, Event};
use libp2p::core::transport::ListenerId;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use std::collections::HashMap;
use tokio::sync::oneshot;

#[derive(Debug)]
enum State {
    Pending,
    Accepted(Multiaddr),
    Failed,
}

/// Reservations by relay.
#[derive(Debug, Default)]
pub(super) struct Reservations {
    relays: HashMap<PeerId, (Multiaddr, State)>,
    listeners: HashMap<ListenerId, PeerId>,
    waiters: Vec<oneshot::Sender<()>>,
}

impl Reservations {
    /// A reservation on `relay` at `addr` was asked for with `listener`
    /// (`Err`: the listener could not even be opened).
    pub(super) fn asked(
        &mut self,
        relay: PeerId,
        addr: Multiaddr,
        listener: Result<ListenerId, libp2p::TransportError<std::io::Error>>,
        emitter: &Emitter,
    ) {
        self.relays.insert(relay, (addr, State::Pending));
        match listener {
            Ok(id) => {
                self.listeners.insert(id, relay);
            }
            Err(e) => self.failed(relay, e.to_string(), emitter),
        }
    }

    /// Whether `peer` is a relay we still wait on.
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
        }
        self.wake();
    }

    /// `relay` refused, could not be reached, or dropped our reservation.
    pub(super) fn failed(&mut self, relay: PeerId, detail: String, emitter: &Emitter) {
        if let Some((addr, state)) = self.relays.get_mut(&relay) {
            let (reason, what) = match state {
                State::Pending => ("unreachable", "no reservation on relay"),
                State::Accepted(_) => ("reservation_lost", "lost the reservation on relay"),
                State::Failed => return self.wake(),
            };
            *state = State::Failed;
            emitter.emit(Event::Error {
                what: "relay".into(),
                detail: format!("{what} {addr}: {detail}"),
                reason: Some(reason.into()),
                peer_id: Some(relay.to_string()),
            });
        }
        self.wake();
    }

    /// A listener closed; the relay it reserved on, if it was a circuit one.
    pub(super) fn listener_closed(&mut self, id: ListenerId) -> Option<PeerId> {
        self.listeners.remove(&id)
    }

    /// `reply` once every relay accepted or failed.
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
        if self
            .relays
            .values()
            .all(|(_, s)| !matches!(s, State::Pending))
        {
            for w in self.waiters.drain(..) {
                let _ = w.send(());
            }
        }
    }
}
