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
    audit: Option<&AuditWriter>,
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
    let Some(writer) = audit else {
        emitter.emit(ev);
        return;
    };
    let (reason, detail) = match &ev {
        Event::RelayReservation { reason, .. } => (reason.clone(), None),
        Event::RelayCircuit { reason, dst, .. } => (reason.clone(), Some(format!("to {dst}"))),
        _ => (None, None),
    };
    writer.write(Pending {
        ts_ms: now_ms(),
        kind,
        peer,
        reason,
        detail,
        event: ev,
    });
}

/// One relay decision on its way to the audit log, then to the event bus.
struct Pending {
    ts_ms: u64,
    kind: &'static str,
    peer: String,
    reason: Option<String>,
    detail: Option<String>,
    event: Event,
}

/// The relay's audit log, written by its own thread so the swarm's loop
/// never waits on the disk. Each decision's event is published after its
/// line is written, so a reader that saw the event finds the line.
pub(super) struct AuditWriter {
    tx: std::sync::mpsc::SyncSender<Pending>,
    log: AuditLog,
    emitter: Emitter,
}

impl AuditWriter {
    /// Lines waiting for the writer; past it the loop writes itself.
    const QUEUE: usize = 1_024;

    pub(super) fn start(log: AuditLog, emitter: Emitter) -> Self {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Pending>(Self::QUEUE);
        let (thread_log, thread_emitter) = (log.clone(), emitter.clone());
        let spawned = std::thread::Builder::new()
            .name("relay-audit".into())
            .spawn(move || {
                while let Ok(p) = rx.recv() {
                    write_line(&thread_log, &thread_emitter, p);
                }
            });
        if let Err(e) = spawned {
            emitter.emit(Event::error(
                "audit",
                format!("no audit writer thread: {e}"),
            ));
        }
        Self { tx, log, emitter }
    }

    fn write(&self, p: Pending) {
        use std::sync::mpsc::TrySendError;
        if let Err(TrySendError::Full(p) | TrySendError::Disconnected(p)) = self.tx.try_send(p) {
            // The writer is behind (or gone): write here; nothing is dropped.
            tracing::debug!("relay audit writer behind; writing inline");
            write_line(&self.log, &self.emitter, p);
        }
    }
}

fn write_line(log: &AuditLog, emitter: &Emitter, p: Pending) {
    let line = AuditLine {
        ts_ms: p.ts_ms,
        event: p.kind,
        node: emitter.node(),
        peer_id: Some(p.peer.clone()),
        stream: None,
        reason: p.reason.as_deref(),
        bytes: None,
        offset: None,
        expires_ms: None,
        detail: p.detail.as_deref(),
    };
    if let Err(e) = log.append(&line) {
        tracing::warn!(error = %e, "audit log write failed");
        emitter.emit(Event::error("audit", e));
    }
    emitter.emit(p.event);
}
