//! A payer's running session with one payee: pay each invoice our meter
//! agrees with, top up ahead of need (within `--max-deposit`), and when the
//! pay stream's connection goes away while the payee is still reachable
//! (a DCUtR upgrade closing the relayed one), attach again on what is left.

use super::handshake::closed;
pub(super) use super::invoice::Pending;
use super::{attach, hello, ConsentSet, PayStream, PayerConfig, PayerState};
use crate::events::Event;
use crate::net::CloseWatch;
use crate::protocols::pay::PayNet;
use ledgermesh_ledger::payments::ChannelId;
use ledgermesh_protocol::payment::wire::{Offer, PayMsg, RefusalCode};
use libp2p::PeerId;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Attempts at attaching again after the pay stream's connection closed.
const REATTACH_TRIES: u32 = 5;

/// How often such an invoice is looked at again.
const RECHECK: Duration = Duration::from_millis(20);

/// How a run of invoices ended.
pub(super) enum End {
    /// The stream went away under us: attach again if the payee is there.
    Lost,
    /// Refused, or we refused: nothing more to do.
    Done,
}

pub(super) struct Session<N> {
    pub(super) h: N,
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

impl<N: PayNet> Session<N> {
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

    pub(super) fn refused(&self, reason: &'static str, detail: String) {
        self.h.emit(Event::PaymentRefused {
            peer_id: self.peer.to_string(),
            reason,
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
}
