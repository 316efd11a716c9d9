//! Paying one invoice: our meter's verdict, a top-up within our cap when
//! the deposit runs short, the voucher, and a top-up ahead of need. An
//! invoice above our meter waits for the bytes still on their way.

use super::hex_id;
use super::session::{End, Session};
use super::{PayStream, PayerState};
use crate::events::Event;
use crate::protocols::pay::PayNet;
use ledgermesh_protocol::payment::wire::{PayMsg, RefusalCode};
use ledgermesh_protocol::payment::PayerRefusal;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// How long an invoice above our meter waits for the bytes it bills to
/// arrive: the payee counts what it sent, we count what we read, and a
/// transport's windows hold megabytes between the two. Refused
/// `overbilled` only if our meter has not caught up by then.
const IN_FLIGHT_WAIT: Duration = Duration::from_secs(10);

/// An invoice above our meter stops waiting once our meter has not moved
/// for this long: nothing more is on its way.
const METER_STILL: Duration = Duration::from_secs(1);

/// An invoice above our meter, waiting for the bytes it bills.
#[derive(Debug, Clone, Copy)]
pub(super) struct Pending {
    pub(super) owed: u128,
    until: Instant,
    meter: u64,
    moved: Instant,
}

impl<N: PayNet> Session<N> {
    /// Pays `owed` if our meter agrees; `Some` when the session ends.
    pub(super) async fn invoice(&mut self, s: &mut PayStream, owed: u128) -> Option<End> {
        let state = self.state.clone();
        let mut guard = state.lock().await;
        let st = guard.as_mut()?;
        let metered = self.meter.load(Ordering::Relaxed);
        let decided = self.decide(st, owed, metered).await;
        // Above our meter: perhaps only bytes still on their way.
        if let Err(PayerRefusal::Overbilled { .. }) = decided {
            if self.wait_for_meter(owed, metered) {
                return None;
            }
        }
        if decided.is_ok() {
            self.pending = self.pending.filter(|p| p.owed > owed);
        }
        let cum = match decided {
            Ok(None) => return None,
            Ok(Some(cum)) => cum,
            Err(e) => return Some(self.refuse_invoice(s, e).await),
        };
        let Ok(v) = self.cfg.channels.sign(self.channel, cum) else {
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
        self.top_up_ahead(s, st, cum).await
    }

    /// Our machine's verdict on `owed`, after what our meter saw since the
    /// last one (`metered` in all); out of deposit, a top-up (within our
    /// cap) and the verdict again.
    async fn decide(
        &self,
        st: &mut PayerState,
        owed: u128,
        metered: u64,
    ) -> Result<Option<u128>, PayerRefusal> {
        st.machine.metered(metered.saturating_sub(st.seen));
        st.machine.held_for(st.since.elapsed());
        (st.seen, st.since) = (metered, Instant::now());
        let decided = st.machine.invoice(owed);
        let Err(PayerRefusal::OverDeposit { .. }) = decided else {
            return decided;
        };
        let (cfg, deposit) = (&self.cfg, st.machine.deposit());
        let Some(add) = cfg.caps.top_up(deposit, 0, cfg.deposit) else {
            return decided;
        };
        match cfg.channels.top_up(self.channel, add).await {
            Ok(_) => {
                st.machine.deposit_changed(deposit + add);
                st.machine.invoice(owed)
            }
            Err(e) => {
                tracing::warn!(error = %e, "top-up failed");
                decided
            }
        }
    }

    /// An invoice above our meter (at `metered`) waits while our meter
    /// still moves, up to [`IN_FLIGHT_WAIT`]: true while it waits.
    fn wait_for_meter(&mut self, owed: u128, metered: u64) -> bool {
        let t = Instant::now();
        let mut p = self.pending.unwrap_or(Pending {
            owed,
            until: t + IN_FLIGHT_WAIT,
            meter: metered,
            moved: t,
        });
        if metered != p.meter {
            (p.meter, p.moved) = (metered, t);
        }
        p.owed = p.owed.max(owed);
        let waits = t < p.until && t.duration_since(p.moved) < METER_STILL;
        self.pending = waits.then_some(p);
        waits
    }

    /// Refuses an invoice our machine will not pay, and says why; a relay
    /// that bills more than it carried is not used again.
    async fn refuse_invoice(&mut self, s: &mut PayStream, e: PayerRefusal) -> End {
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
        if code == RefusalCode::Overbilled && self.h.relays().iter().any(|(r, _)| *r == self.peer) {
            // Its reservation ends.
            tracing::warn!(relay = %self.peer, "overbilling relay dropped");
            self.h.disconnect(self.peer).await;
        }
        End::Done
    }

    /// Nearly used up after voucher `cum`: top up ahead, and attach again
    /// so the payee reads the new deposit.
    async fn top_up_ahead(&self, s: &mut PayStream, st: &mut PayerState, cum: u128) -> Option<End> {
        let (cfg, deposit) = (&self.cfg, st.machine.deposit());
        if deposit.saturating_sub(cum) >= cfg.deposit / 2 {
            return None;
        }
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
        None
    }
}
