//! What the relay server decided, reported: a `relay_reservation` or
//! `relay_circuit` event and, with an audit log, one line per decision.

use crate::access::audit_log::{AuditLine, AuditLog};
use crate::clock::now_ms;
use crate::events::{CircuitOutcome, Emitter, Event, ReservationOutcome};
use ledgermesh_protocol::relay::Status;
use libp2p::PeerId;
use std::sync::Arc;

/// Reports the relay's decisions: events, and audit lines when it keeps a log.
#[derive(Clone)]
pub(crate) struct Reporter {
    emitter: Emitter,
    audit: Option<Arc<AuditWriter>>,
}

/// A circuit's end: bytes each way and why, if not a clean close.
pub(crate) struct Carried {
    pub(crate) to_dst: u64,
    pub(crate) to_src: u64,
    pub(crate) reason: Option<String>,
}

impl Reporter {
    pub(crate) fn new(emitter: Emitter, audit: Option<AuditLog>) -> Self {
        let audit = audit.map(|log| Arc::new(AuditWriter::start(log, emitter.clone())));
        Self { emitter, audit }
    }

    /// A reservation `accepted`, `renewed`, `closed` or `timed_out`.
    pub(crate) fn reservation(&self, peer: PeerId, outcome: ReservationOutcome) {
        let kind = match outcome {
            ReservationOutcome::Accepted => "reservation",
            ReservationOutcome::Renewed => "reservation_renew",
            _ => "reservation_end",
        };
        self.send(Pending {
            ts_ms: now_ms(),
            kind,
            peer: peer.to_string(),
            reason: (kind == "reservation_end").then(|| outcome.as_str().to_string()),
            detail: None,
            event: Event::RelayReservation {
                peer_id: peer.to_string(),
                outcome,
                reason: None,
                status: None,
            },
        });
    }

    /// A reservation refused, with the status it was answered with.
    pub(crate) fn reservation_refused(&self, peer: PeerId, status: Status, reason: String) {
        self.send(Pending {
            ts_ms: now_ms(),
            kind: "reservation_refused",
            peer: peer.to_string(),
            reason: Some(reason.clone()),
            detail: Some(status.name().into()),
            event: Event::RelayReservation {
                peer_id: peer.to_string(),
                outcome: ReservationOutcome::Refused,
                reason: Some(reason),
                status: Some(status.name().into()),
            },
        });
    }

    fn circuit(
        &self,
        src: PeerId,
        dst: PeerId,
        outcome: CircuitOutcome,
        f: impl FnOnce(&mut Event),
    ) {
        let kind = match outcome {
            CircuitOutcome::Opened => "circuit_open",
            CircuitOutcome::Refused => "circuit_refused",
            CircuitOutcome::Closed => "circuit_close",
        };
        let mut event = Event::RelayCircuit {
            src: src.to_string(),
            dst: dst.to_string(),
            outcome,
            reason: None,
            status: None,
            bytes_to_dst: None,
            bytes_to_src: None,
        };
        f(&mut event);
        let Event::RelayCircuit {
            reason,
            bytes_to_dst,
            bytes_to_src,
            ..
        } = &event
        else {
            unreachable!("built above")
        };
        let detail = match (bytes_to_dst, bytes_to_src) {
            (Some(d), Some(s)) => format!("to {dst}; {d} bytes to it, {s} back"),
            _ => format!("to {dst}"),
        };
        self.send(Pending {
            ts_ms: now_ms(),
            kind,
            peer: src.to_string(),
            reason: reason.clone(),
            detail: Some(detail),
            event,
        });
    }

    /// A peer refused for want of payment (the reason also goes to it
    /// over the payment protocol).
    pub(crate) fn refused_for_payment(&self, peer: PeerId, reason: &str) {
        self.emitter.emit(Event::RelayRefused {
            peer_id: peer.to_string(),
            reason: reason.into(),
        });
    }

    /// A circuit opened.
    pub(crate) fn circuit_opened(&self, src: PeerId, dst: PeerId, note: Option<&str>) {
        self.circuit(src, dst, CircuitOutcome::Opened, |e| {
            if let (Event::RelayCircuit { reason, .. }, Some(n)) = (e, note) {
                *reason = Some(n.into());
            }
        });
    }

    /// A circuit refused, with the status it was answered with.
    pub(crate) fn circuit_refused(&self, src: PeerId, dst: PeerId, status: Status, why: String) {
        self.circuit(src, dst, CircuitOutcome::Refused, |e| {
            if let Event::RelayCircuit {
                reason, status: s, ..
            } = e
            {
                *reason = Some(why);
                *s = Some(status.name().into());
            }
        });
    }

    /// A circuit closed, with what it carried.
    pub(crate) fn circuit_closed(&self, src: PeerId, dst: PeerId, carried: Carried) {
        self.circuit(src, dst, CircuitOutcome::Closed, |e| {
            if let Event::RelayCircuit {
                reason,
                bytes_to_dst,
                bytes_to_src,
                ..
            } = e
            {
                *reason = carried.reason;
                *bytes_to_dst = Some(carried.to_dst);
                *bytes_to_src = Some(carried.to_src);
            }
        });
    }

    fn send(&self, p: Pending) {
        match &self.audit {
            Some(writer) => writer.write(p),
            None => self.emitter.emit(p.event),
        }
    }
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
pub(crate) struct AuditWriter {
    tx: std::sync::mpsc::SyncSender<Pending>,
    log: AuditLog,
    emitter: Emitter,
}

impl AuditWriter {
    /// Lines waiting for the writer; past it the loop writes itself.
    const QUEUE: usize = 1_024;

    pub(crate) fn start(log: AuditLog, emitter: Emitter) -> Self {
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
                crate::events::ErrorPart::Audit,
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
        emitter.emit(Event::error(crate::events::ErrorPart::Audit, e));
    }
    emitter.emit(p.event);
}
