//! A payer's running session with one payee: pay each invoice our meter
//! agrees with, top up ahead of need (within `--max-deposit`), and when the
//! pay stream's connection goes away while the payee is still reachable
//! (a DCUtR upgrade closing the relayed one), attach again on what is left.

use super::handshake::closed;
use super::{attach, hello, hex_id, ConsentSet, PayStream, PayerConfig, PayerState};
use crate::events::Event;
use crate::swarm::{CloseWatch, NodeHandle};
use ledgermesh_ledger::payments::ChannelId;
use ledgermesh_protocol::payment::wire::{Offer, PayMsg, RefusalCode};
use ledgermesh_protocol::payment::PayerRefusal;
use libp2p::PeerId;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Attempts at attaching again after the pay stream's connection closed.
const REATTACH_TRIES: u32 = 5;

/// How long an invoice above our meter waits for the bytes it bills to
/// arrive: the payee counts what it sent, we count what we read, and a
/// transport's windows hold megabytes between the two. Refused
/// `overbilled` only if our meter has not caught up by then.
const IN_FLIGHT_WAIT: Duration = Duration::from_secs(10);

/// How often such an invoice is looked at again.
const RECHECK: Duration = Duration::from_millis(20);

/// An invoice above our meter stops waiting once our meter has not moved
/// for this long: nothing more is on its way.
const METER_STILL: Duration = Duration::from_secs(1);

/// An invoice above our meter, waiting for the bytes it bills.
#[derive(Debug, Clone, Copy)]
pub(super) struct Pending {
    owed: u128,
    until: Instant,
    meter: u64,
    moved: Instant,
}

/// How a run of invoices ended.
enum End {
    /// The stream went away under us: attach again if the payee is there.
    Lost,
    /// Refused, or we refused: nothing more to do.
    Done,
}

pub(super) struct Session {
    pub(super) h: NodeHandle,
    pub(super) peer: PeerId,
    pub(super) cfg: PayerConfig,
    pub(super) channel: ChannelId,
    pub(super) state: Arc<tokio::sync::Mutex<Option<PayerState>>>,
    pub(super) meter: Arc<AtomicU64>,
    pub(super) offer: Offer,
    /// Wakes when a connection to the payee closes: the pay stream may
    /// have been on it.
    pub(super) closes: Option<CloseWatch>,
    /// The sources we pay for as a circuit's destination (relays).
    pub(super) consent: Option<watch::Receiver<ConsentSet>>,
    /// An invoice above our meter, waiting for its bytes, and until when.
    pub(super) pending: Option<Pending>,
}

/// Resolves when the consent set changed (never without one).
async fn consent_changed(c: &mut Option<watch::Receiver<ConsentSet>>) {
    let Some(rx) = c else {
        return std::future::pending().await;
    };
    if rx.changed().await.is_err() {
        // The node dropped its consent: nothing more will change.
        *c = None;
        std::future::pending::<()>().await;
    }
}

impl Session {
    /// Tells the payee the consent set now.
    async fn send_consent(&mut self, s: &mut PayStream) -> bool {
        let Some(rx) = self.consent.as_mut() else {
            return true;
        };
        let msgs = rx.borrow_and_update().messages();
        for m in msgs {
            if s.send(&m).await.is_err() {
                return false;
            }
        }
        true
    }

    pub(super) async fn run(mut self, mut s: PayStream) {
        loop {
            if !self.send_consent(&mut s).await {
                s.close().await;
                match self.reattach().await {
                    Some(again) => s = again,
                    None => return,
                }
                continue;
            }
            let end = self.invoices(&mut s).await;
            s.close().await;
            if matches!(end, End::Done) {
                return;
            }
            match self.reattach().await {
                Some(again) => s = again,
                None => return,
            }
        }
    }

    async fn connected(&self) -> bool {
        let snap = self.h.snapshot().await;
        snap.is_ok_and(|s| s.connections.iter().any(|c| c.peer == self.peer))
    }

    /// A new pay stream on whatever connection to the payee is left, the
    /// same terms, the channel attached again.
    async fn reattach(&mut self) -> Option<PayStream> {
        for tries in 0..REATTACH_TRIES {
            tokio::time::sleep(Duration::from_millis(100 << tries)).await;
            if !self.connected().await {
                continue;
            }
            let caps = &self.cfg.caps;
            let (mut s, _) = match hello(&self.h, self.peer, caps, Some(self.offer)).await {
                Ok(x) => x,
                Err(super::PayFailure::Terms(e)) => {
                    self.refused(e.as_str(), e.to_string());
                    return None;
                }
                Err(e) => {
                    tracing::debug!(peer = %self.peer, error = %e, "attaching again failed");
                    continue;
                }
            };
            let mut guard = self.state.lock().await;
            let st = guard.as_mut().filter(|st| st.channel == self.channel)?;
            let closes = &mut self.closes;
            match attach(&self.h, &mut s, &self.cfg, self.channel, 0, st, closes).await {
                Ok(()) => {
                    tracing::info!(peer = %self.peer, "payment attached again on a new path");
                    return Some(s);
                }
                Err(e) => tracing::debug!(peer = %self.peer, error = %e, "attaching again failed"),
            }
        }
        None
    }

    fn refused(&self, reason: &str, detail: String) {
        self.h.emit(Event::PaymentRefused {
            peer_id: self.peer.to_string(),
            reason: reason.into(),
            detail,
        });
    }

    async fn invoices(&mut self, s: &mut PayStream) -> End {
        loop {
            let next = tokio::select! {
                m = s.recv() => m,
                // Perhaps the pay stream's: attach again (harmless if not).
                () = closed(&mut self.closes) => return End::Lost,
                () = tokio::time::sleep(RECHECK), if self.pending.is_some() => {
                    let Some(Pending { owed, .. }) = self.pending else { continue };
                    if let Some(end) = self.invoice(s, owed).await {
                        return end;
                    }
                    continue;
                }
                () = consent_changed(&mut self.consent) => {
                    if !self.send_consent(s).await {
                        return End::Lost;
                    }
                    continue;
                }
            };
            let msg = match next {
                Ok(Some(m)) => m,
                Ok(None) | Err(_) => return End::Lost,
            };
            match msg {
                PayMsg::Invoice { owed, .. } => {
                    if let Some(end) = self.invoice(s, owed).await {
                        return end;
                    }
                }
                PayMsg::Ack { paid, .. } => {
                    if let Some(st) = self.state.lock().await.as_mut() {
                        st.machine.acked(paid);
                    }
                }
                PayMsg::Refuse {
                    code: RefusalCode::NotIncreasing,
                    ..
                } => {
                    // A voucher sent again that the payee already held.
                    tracing::debug!(peer = %self.peer, "the payee already holds our voucher");
                }
                PayMsg::Refuse { code, reason } => {
                    self.refused(code.as_str(), reason);
                    if code == RefusalCode::Unpaid {
                        return End::Done;
                    }
                }
                _ => {}
            }
        }
    }

    /// Pays `owed` if our meter agrees; `Some` when the session ends.
    async fn invoice(&mut self, s: &mut PayStream, owed: u128) -> Option<End> {
        let cfg = &self.cfg;
        let mut guard = self.state.lock().await;
        let st = guard.as_mut()?;
        let now = self.meter.load(Ordering::Relaxed);
        st.machine.metered(now.saturating_sub(st.seen));
        st.machine.held_for(st.since.elapsed());
        (st.seen, st.since) = (now, Instant::now());
        let mut decided = st.machine.invoice(owed);
        if let Err(PayerRefusal::OverDeposit { .. }) = decided {
            // Out of deposit: top up (within our cap) and pay.
            let deposit = st.machine.deposit();
            if let Some(add) = cfg.caps.top_up(deposit, 0, cfg.deposit) {
                match cfg.channels.top_up(self.channel, add).await {
                    Ok(_) => {
                        st.machine.deposit_changed(deposit + add);
                        decided = st.machine.invoice(owed);
                    }
                    Err(e) => tracing::warn!(error = %e, "top-up failed"),
                }
            }
        }
        // Above our meter: perhaps only bytes still on their way.
        if let Err(PayerRefusal::Overbilled { .. }) = decided {
            let t = Instant::now();
            let mut p = self.pending.unwrap_or(Pending {
                owed,
                until: t + IN_FLIGHT_WAIT,
                meter: now,
                moved: t,
            });
            if now != p.meter {
                (p.meter, p.moved) = (now, t);
            }
            p.owed = p.owed.max(owed);
            if t < p.until && t.duration_since(p.moved) < METER_STILL {
                self.pending = Some(p);
                return None;
            }
            self.pending = None;
        }
        if decided.is_ok() {
            self.pending = self.pending.filter(|p| p.owed > owed);
        }
        let cum = match decided {
            Ok(None) => return None,
            Ok(Some(cum)) => cum,
            Err(e) => {
                let (code, reason) = match e {
                    PayerRefusal::Overbilled { .. } => (RefusalCode::Overbilled, "overbilled"),
                    PayerRefusal::OverDeposit { .. } => (RefusalCode::OverDeposit, "over_deposit"),
                    _ => (RefusalCode::Other, "spend_cap"),
                };
                let refuse = PayMsg::Refuse {
                    code,
                    reason: e.to_string(),
                };
                let _ = s.send(&refuse).await;
                self.refused(reason, e.to_string());
                if code == RefusalCode::Overbilled
                    && self.h.relays().iter().any(|(r, _)| *r == self.peer)
                {
                    // A relay that bills more than it carried is not used
                    // again: its reservation ends.
                    tracing::warn!(relay = %self.peer, "overbilling relay dropped");
                    self.h.disconnect(self.peer).await;
                }
                return Some(End::Done);
            }
        };
        let Ok(v) = cfg.channels.sign(self.channel, cum) else {
            return Some(End::Done);
        };
        let voucher = PayMsg::Voucher {
            channel: self.channel,
            cumulative: cum,
            signature: v.signature,
        };
        if s.send(&voucher).await.is_err() {
            return Some(End::Lost);
        }
        self.h.emit(Event::VoucherSent {
            payee: self.peer.to_string(),
            channel: hex_id(&self.channel),
            cumulative: cum.to_string(),
        });
        // Nearly used up: top up ahead, and attach again so the payee reads
        // the new deposit.
        let deposit = st.machine.deposit();
        if deposit.saturating_sub(cum) < cfg.deposit / 2 {
            let add = cfg.caps.top_up(deposit, 0, cfg.deposit)?;
            match cfg.channels.top_up(self.channel, add).await {
                Ok(_) => {
                    st.machine.deposit_changed(deposit + add);
                    let again = (cfg.channels)
                        .bind(self.channel, &self.h.peer_id().to_bytes())
                        .map(|binding| PayMsg::Attach {
                            channel: self.channel,
                            binding,
                        });
                    if let Ok(m) = again {
                        if s.send(&m).await.is_err() {
                            return Some(End::Lost);
                        }
                    }
                }
                Err(e) => self.refused("top_up_failed", format!("cannot top up the channel: {e}")),
            }
        }
        None
    }
}
