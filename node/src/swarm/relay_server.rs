//! What the relay server decided, reported: a `relay_reservation` or
//! `relay_circuit` event and, with an audit log, one line per decision.

use crate::access::audit_log::{AuditLine, AuditLog};
use crate::events::{now_ms, Emitter, Event};
use libp2p::{relay, PeerId};
use std::collections::HashSet;

/// The audit `event`, the JSON event, and the peer it concerns.
fn describe(event: relay::Event) -> Option<(&'static str, Event, String)> {
    use relay::Event as E;
    let reservation =
        |peer: libp2p::PeerId, outcome: &str, reason: Option<String>| Event::RelayReservation {
            peer_id: peer.to_string(),
            outcome: outcome.into(),
            reason,
        };
    let circuit =
        |src: libp2p::PeerId, dst: libp2p::PeerId, outcome: &str, reason: Option<String>| {
            Event::RelayCircuit {
                src: src.to_string(),
                dst: dst.to_string(),
                outcome: outcome.into(),
                reason,
            }
        };
    Some(match event {
        E::ReservationReqAccepted {
            src_peer_id,
            renewed,
        } => {
            let outcome = if renewed { "renewed" } else { "accepted" };
            let audit = if renewed {
                "reservation_renew"
            } else {
                "reservation"
            };
            (
                audit,
                reservation(src_peer_id, outcome, None),
                src_peer_id.to_string(),
            )
        }
        E::ReservationReqDenied {
            src_peer_id,
            status,
        } => (
            "reservation_refused",
            reservation(src_peer_id, "refused", Some(format!("{status:?}"))),
            src_peer_id.to_string(),
        ),
        E::ReservationClosed { src_peer_id } => (
            "reservation_end",
            reservation(src_peer_id, "closed", None),
            src_peer_id.to_string(),
        ),
        E::ReservationTimedOut { src_peer_id } => (
            "reservation_end",
            reservation(src_peer_id, "timed_out", None),
            src_peer_id.to_string(),
        ),
        E::CircuitReqAccepted {
            src_peer_id,
            dst_peer_id,
        } => (
            "circuit_open",
            circuit(src_peer_id, dst_peer_id, "opened", None),
            src_peer_id.to_string(),
        ),
        E::CircuitReqDenied {
            src_peer_id,
            dst_peer_id,
            status,
        } => (
            "circuit_refused",
            circuit(
                src_peer_id,
                dst_peer_id,
                "refused",
                Some(format!("{status:?}")),
            ),
            src_peer_id.to_string(),
        ),
        E::CircuitClosed {
            src_peer_id,
            dst_peer_id,
            error,
        } => (
            "circuit_close",
            circuit(
                src_peer_id,
                dst_peer_id,
                "closed",
                error.map(|e| e.to_string()),
            ),
            src_peer_id.to_string(),
        ),
        _ => return None,
    })
}

/// The peers holding a reservation on us (libp2p-relay reports a
/// "reservation closed" for every closed connection; only real ones count).
/// Bounded by the relay's reservation limit: entries leave when they close.
#[derive(Debug, Default)]
pub(super) struct Reserved(HashSet<PeerId>);

impl Reserved {
    /// Whether `event` is worth reporting, keeping the set up to date.
    fn admits(&mut self, event: &relay::Event) -> bool {
        use relay::Event as E;
        match event {
            E::ReservationReqAccepted { src_peer_id, .. } => {
                self.0.insert(*src_peer_id);
                true
            }
            E::ReservationClosed { src_peer_id } | E::ReservationTimedOut { src_peer_id } => {
                self.0.remove(src_peer_id)
            }
            _ => true,
        }
    }
}

/// Reports one relay server event.
pub(super) fn report(
    event: relay::Event,
    limits: Option<&super::RelayLimits>,
    reserved: &mut Reserved,
    emitter: &Emitter,
    audit: Option<&AuditLog>,
) {
    if !reserved.admits(&event) {
        return;
    }
    if let Some(limits) = limits {
        let mut caps = limits.ip_caps.lock().unwrap_or_else(|p| p.into_inner());
        use relay::Event as E;
        match &event {
            E::ReservationReqAccepted { src_peer_id, .. } => caps.reserved(*src_peer_id),
            E::ReservationClosed { src_peer_id } | E::ReservationTimedOut { src_peer_id } => {
                caps.unreserved(*src_peer_id)
            }
            E::CircuitReqAccepted {
                src_peer_id,
                dst_peer_id,
            } => caps.circuit_opened(*src_peer_id, *dst_peer_id),
            E::CircuitClosed {
                src_peer_id,
                dst_peer_id,
                ..
            } => caps.circuit_closed(*src_peer_id, *dst_peer_id),
            _ => {}
        }
    }

    let Some((kind, ev, peer)) = describe(event) else {
        return;
    };
    if let Some(log) = audit {
        let (reason, detail) = match &ev {
            Event::RelayReservation { reason, .. } => (reason.clone(), None),
            Event::RelayCircuit { reason, dst, .. } => (reason.clone(), Some(format!("to {dst}"))),
            _ => (None, None),
        };
        let line = AuditLine {
            ts_ms: now_ms(),
            event: kind,
            node: emitter.node(),
            peer_id: Some(peer),
            stream: None,
            reason: reason.as_deref(),
            bytes: None,
            offset: None,
            expires_ms: None,
            detail: detail.as_deref(),
        };
        if let Err(e) = log.append(&line) {
            tracing::warn!(error = %e, "audit log write failed");
            emitter.emit(Event::error("audit", e));
        }
    }
    emitter.emit(ev);
}
