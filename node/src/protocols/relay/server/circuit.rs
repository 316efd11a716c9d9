//! A circuit: its payment gate and limits, its place in the book, the
//! stop stream to its destination, and its bytes carried both ways.

use super::{read_msg, send, Server, HANDSHAKE};
use crate::protocols::pay::{Budget, CircuitPay};
use crate::protocols::relay::behaviour::Shared;
use crate::protocols::relay::pump::{End, Pump};
use crate::protocols::relay::report::Carried;
use crate::protocols::relay::STOP;
use futures::AsyncReadExt;
use ledgermesh_protocol::payment::wire::RefusalCode;
use ledgermesh_protocol::relay::gate::Gate;
use ledgermesh_protocol::relay::wire;
use ledgermesh_protocol::relay::{CircuitId, CircuitLimit, Status};
use libp2p::{PeerId, Stream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::OwnedSemaphorePermit;

/// How a circuit runs: its limits, and who pays for it.
struct CircuitTerms {
    limit: CircuitLimit,
    /// The billed peer's budget (a priced relay).
    budget: Option<Budget>,
    billed: Option<PeerId>,
    /// Why it runs free on a priced relay.
    unbilled: Option<&'static str>,
}

/// Carries a circuit's bytes both ways within `limit` (and, paid, within
/// `budget`); what it carried and why it ended.
async fn carry(near: Stream, far: Stream, limit: CircuitLimit, budget: Option<Budget>) -> Carried {
    let (to_dst, to_src) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let counters = (to_dst.clone(), to_src.clone());
    let bridged = bridge(near, far, limit.bytes, counters, budget);
    let reason = match tokio::time::timeout(limit.duration, bridged).await {
        Ok(reason) => reason,
        Err(_) => Some(format!(
            "duration limit ({} s) reached",
            limit.duration.as_secs()
        )),
    };
    Carried {
        to_dst: to_dst.load(Ordering::Relaxed),
        to_src: to_src.load(Ordering::Relaxed),
        reason,
    }
}

/// Gives a circuit's slot back however its task ends.
struct Slot<'a> {
    shared: &'a Shared,
    id: CircuitId,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut st = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        st.book.circuit_closed(self.id);
    }
}

impl Server {
    pub(super) async fn connect(
        &self,
        src: PeerId,
        dst: PeerId,
        mut stream: Stream,
        permit: OwnedSemaphorePermit,
    ) {
        let terms = match self.circuit_terms(src, dst) {
            Ok(terms) => terms,
            Err((status, reason)) => {
                self.reporter.circuit_refused(src, dst, status, reason);
                let _ = send(&mut stream, &wire::connect_answer(Err(status))).await;
                return;
            }
        };
        let booked = {
            let mut st = self.state();
            let ip = st.ip_of(&src);
            st.book.connect(src, ip, dst, Instant::now())
        };
        let id = match booked {
            Ok(id) => id,
            Err(refusal) => {
                let status = refusal.circuit_status();
                self.reporter
                    .circuit_refused(src, dst, status, refusal.to_string());
                let _ = send(&mut stream, &wire::connect_answer(Err(status))).await;
                return;
            }
        };
        let _slot = Slot {
            shared: &self.shared,
            id,
        };
        let limit = terms.limit;
        let far = match tokio::time::timeout(HANDSHAKE, self.stop(src, dst, &limit)).await {
            Ok(Ok(far)) => far,
            Ok(Err(why)) => return self.failed(src, dst, stream, why).await,
            Err(_) => {
                let why = "the destination did not answer in time".to_string();
                return self.failed(src, dst, stream, why).await;
            }
        };
        if let Err(e) = send(&mut stream, &wire::connect_answer(Ok(&limit))).await {
            tracing::debug!(%src, error = %e, "circuit answer not delivered");
            return;
        }
        drop(permit);
        self.reporter.circuit_opened(src, dst, terms.unbilled);
        let carried = carry(stream, far, limit, terms.budget).await;
        if let (Some(pay), Some(billed)) = (&self.limits.pay, terms.billed) {
            // The circuit is over: ask for what it still owes.
            pay.payees.invoice_now(&billed);
        }
        self.reporter.circuit_closed(src, dst, carried);
    }

    /// How a circuit from `src` to `dst` runs: at what limits, and who
    /// pays (a priced relay's gate); or its refusal, with the billed peer
    /// told why over the payment protocol.
    fn circuit_terms(&self, src: PeerId, dst: PeerId) -> Result<CircuitTerms, (Status, String)> {
        let mut terms = CircuitTerms {
            limit: self.limits.circuit_limit(&src, &dst),
            budget: None,
            billed: None,
            unbilled: None,
        };
        let Some(pay) = &self.limits.pay else {
            return Ok(terms);
        };
        match pay.payees.circuit_pay(pay.bill, src, dst) {
            CircuitPay::Refused(refusal) => {
                let (billed, status) = (refusal.billed(), refusal.status());
                let reason = refusal.to_string();
                pay.payees.refuse(&billed, RefusalCode::NoChannel, &reason);
                self.reporter.refused_for_payment(billed, &reason);
                Err((status, reason))
            }
            CircuitPay::Billed { billed, budget } => {
                terms.budget = Some(budget);
                terms.billed = Some(billed);
                Ok(terms)
            }
            CircuitPay::Unbilled => {
                terms.limit = self.limits.free_circuit_limit(&src, &dst);
                terms.unbilled = Some(Gate::UNBILLED);
                Ok(terms)
            }
        }
    }

    async fn failed(&self, src: PeerId, dst: PeerId, mut stream: Stream, why: String) {
        let status = Status::ConnectionFailed;
        self.reporter.circuit_refused(src, dst, status, why);
        let _ = send(&mut stream, &wire::connect_answer(Err(status))).await;
    }

    /// Tells `dst` that `src` is calling; its stream once it accepts.
    async fn stop(&self, src: PeerId, dst: PeerId, limit: &CircuitLimit) -> Result<Stream, String> {
        let mut far = (self.control.clone())
            .open_stream(dst, STOP)
            .await
            .map_err(|e| format!("no stop stream to the destination: {e}"))?;
        send(&mut far, &wire::stop_connect(&src, limit))
            .await
            .map_err(|e| format!("stop request not delivered: {e}"))?;
        let body = read_msg(&mut far)
            .await
            .map_err(|e| format!("no answer from the destination: {e}"))?
            .map_err(|e| format!("the destination's answer: {e}"))?;
        match wire::decode_stop_status(&body) {
            Ok(100) => Ok(far),
            Ok(code) => Err(format!("the destination refused (status {code})")),
            Err(e) => Err(format!("the destination's answer: {e}")),
        }
    }
}

/// Carries bytes both ways until both ends finish, a direction reaches
/// `cap`, or an end fails; why it stopped, when not a clean finish.
async fn bridge(
    a: Stream,
    b: Stream,
    cap: u64,
    (to_b, to_a): (Arc<AtomicU64>, Arc<AtomicU64>),
    budget: Option<Budget>,
) -> Option<String> {
    use futures::future::{select, Either};
    let (ar, aw) = a.split();
    let (br, bw) = b.split();
    let up = Pump::new(ar, bw, cap, to_b).billed(budget.clone());
    let down = Pump::new(br, aw, cap, to_a).billed(budget);
    let why = |r: std::io::Result<End>| match r {
        Ok(End::Eof) => None,
        Ok(End::Limit) => Some(format!("data limit ({cap} bytes per direction) reached")),
        Ok(End::Unpaid) => Some("unpaid: the billed peer was cut".to_string()),
        Err(e) => Some(format!("stream error: {e}")),
    };
    let (first, other) = match select(up, down).await {
        Either::Left((r, other)) => (r, Either::Left(other)),
        Either::Right((r, other)) => (r, Either::Right(other)),
    };
    if let Some(reason) = why(first) {
        return Some(reason);
    }
    // One side finished; the other may still be sending.
    match other {
        Either::Left(down) => why(down.await),
        Either::Right(up) => why(up.await),
    }
}
