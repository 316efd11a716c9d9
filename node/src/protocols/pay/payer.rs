//! The payer's side: agree terms with a payee, attach a channel (reused,
//! topped up, or opened), then pay each invoice our own meter agrees with.
//! An invoice above our meter plus leeway is refused and paying stops.

use super::{hex_id, PayStream, HANDSHAKE, PAY};
use crate::events::Event;
use crate::swarm::NodeHandle;
use ledgermesh_ledger::payments::{ChannelId, PayError, PaymentChannels};
use ledgermesh_protocol::payment::wire::{PayMsg, RefusalCode};
use ledgermesh_protocol::payment::{Leeway, Payer, PayerRefusal, Terms, Wei};
use libp2p::PeerId;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// How a payer pays.
#[derive(Clone)]
pub struct PayerConfig {
    /// Its channels (its key signs).
    pub channels: Arc<dyn PaymentChannels>,
    /// What a new channel locks, and each top-up adds.
    pub deposit: Wei,
    /// Slack on our own meter.
    pub leeway: Leeway,
}

impl std::fmt::Debug for PayerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PayerConfig")
            .field("ledger", &self.channels.describe())
            .field("deposit", &self.deposit)
            .finish_non_exhaustive()
    }
}

/// Our account with one payee, kept by the node across pay sessions.
#[derive(Debug)]
pub struct PayerState {
    channel: ChannelId,
    machine: Payer,
    /// Our meter's reading when last billed.
    seen: u64,
    since: Instant,
}

/// The outcome of agreeing with a payee.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Paying {
    /// It charges nothing.
    Free,
    /// A channel is attached and its invoices are being paid.
    Attached {
        /// The channel.
        channel: ChannelId,
        /// Its terms.
        terms: Terms,
    },
}

/// Why paying could not start.
#[derive(Debug, thiserror::Error)]
pub enum PayFailure {
    /// The peer does not speak the payment protocol.
    #[error("the peer does not take payments: {0}")]
    Unsupported(String),
    /// The payee refused.
    #[error("the payee refused ({}): {reason}", code.as_str())]
    Refused {
        /// Its code.
        code: RefusalCode,
        /// Its reason.
        reason: String,
    },
    /// The payee is paid on another chain or contract than ours.
    #[error("the payee takes payment on chain {0}, contract 0x{1}; ours differ")]
    OtherLedger(u64, String),
    /// The ledger.
    #[error("ledger: {0}")]
    Ledger(#[from] PayError),
    /// The stream.
    #[error("{0}")]
    Io(String),
}

fn io(e: impl std::fmt::Display) -> PayFailure {
    PayFailure::Io(e.to_string())
}

async fn answer(s: &mut PayStream) -> Result<PayMsg, PayFailure> {
    match tokio::time::timeout(HANDSHAKE, s.recv()).await {
        Err(_) => Err(io("no answer in time")),
        Ok(Err(e)) => Err(io(e)),
        Ok(Ok(None)) => Err(io("the payee closed the stream")),
        Ok(Ok(Some(PayMsg::Refuse { code, reason }))) => Err(PayFailure::Refused { code, reason }),
        Ok(Ok(Some(m))) => Ok(m),
    }
}

/// Agrees terms with `peer` (connected) and, if it charges, attaches a
/// channel and pays its invoices from then on, as one of the node's tasks,
/// while `meter` (bytes it carried for us, by our count) agrees.
pub async fn pay(
    handle: &NodeHandle,
    peer: PeerId,
    cfg: PayerConfig,
    meter: Arc<AtomicU64>,
) -> Result<Paying, PayFailure> {
    let stream = (handle.stream_control())
        .open_stream(peer, PAY)
        .await
        .map_err(|e| PayFailure::Unsupported(e.to_string()))?;
    let mut s = PayStream::new(stream);
    s.send(&PayMsg::Hello).await.map_err(io)?;
    let offer = match answer(&mut s).await? {
        PayMsg::Terms(o) => o,
        other => return Err(io(format!("expected terms, got {other:?}"))),
    };
    if offer.terms.is_free() {
        s.close().await;
        return Ok(Paying::Free);
    }
    let chans = &cfg.channels;
    let domain = chans.domain();
    if domain.chain_id != offer.chain_id || domain.contract.0 .0 != offer.contract {
        return Err(PayFailure::OtherLedger(
            offer.chain_id,
            hex::encode(offer.contract),
        ));
    }
    let me = chans.account().ok_or(PayError::NoAccount)?;
    let payee = alloy::primitives::Address::from(offer.payee);
    // Reuse an open channel to this payee (the fullest), top it up to the
    // minimum, or open one.
    let mine = chans.channels_of(me).await?;
    let reuse = (mine.into_iter())
        .filter(|c| c.payer == me && c.payee == payee && c.closes_at.is_none())
        .max_by_key(|c| c.deposit - c.claimed);
    let min = offer.terms.min_deposit;
    let (channel, mut deposit) = match reuse {
        Some(c) if c.deposit >= min => (c.id, c.deposit),
        Some(c) => {
            let add = (min - c.deposit).max(cfg.deposit);
            chans.top_up(c.id, add).await?;
            (c.id, c.deposit + add)
        }
        None => {
            let amount = cfg.deposit.max(min);
            let (id, cost) = chans.open(payee, amount).await?;
            handle.emit(Event::ChannelOpened {
                payee: payee.to_string(),
                channel: hex_id(&id),
                deposit: amount.to_string(),
                tx: cost.tx,
                gas_used: cost.gas_used,
            });
            (id, amount)
        }
    };
    // Coming back to a channel our vouchers have nearly used up: top up
    // before attaching, so the payee reads the new deposit.
    let state = handle.payer_state(peer);
    let signed = (state.lock().await.as_ref())
        .filter(|st| st.channel == channel)
        .map(|st| st.machine.signed());
    if let Some(signed) = signed {
        if deposit.saturating_sub(signed) < cfg.deposit / 2 {
            chans.top_up(channel, cfg.deposit).await?;
            deposit += cfg.deposit;
        }
    }
    let binding = chans.bind(channel, &handle.peer_id().to_bytes())?;
    s.send(&PayMsg::Attach { channel, binding })
        .await
        .map_err(io)?;
    match answer(&mut s).await? {
        PayMsg::Ack { .. } => {}
        other => return Err(io(format!("expected an ack, got {other:?}"))),
    }
    let terms = offer.terms;
    let h = handle.clone();
    // Our account with this payee goes on from an earlier session on the same
    // channel (what we measured and signed); else it starts now, with our
    // meter read here (the task below may start after service has).
    {
        let mut st = state.lock().await;
        match st.as_mut() {
            Some(s) if s.channel == channel => s.machine.deposit_changed(deposit),
            _ => {
                *st = Some(PayerState {
                    channel,
                    machine: Payer::new(terms, cfg.leeway, deposit),
                    seen: meter.load(Ordering::Relaxed),
                    since: Instant::now(),
                })
            }
        }
    }
    handle.spawn(async move {
        loop {
            let msg = match s.recv().await {
                Ok(Some(m)) => m,
                Ok(None) | Err(_) => break,
            };
            match msg {
                PayMsg::Invoice { owed, .. } => {
                    let mut guard = state.lock().await;
                    let Some(st) = guard.as_mut() else { break };
                    let machine = &mut st.machine;
                    let now = meter.load(Ordering::Relaxed);
                    machine.metered(now.saturating_sub(st.seen));
                    machine.held_for(st.since.elapsed());
                    (st.seen, st.since) = (now, Instant::now());
                    let mut decided = machine.invoice(owed);
                    if let Err(PayerRefusal::OverDeposit { .. }) = decided {
                        // Out of deposit: top up and pay.
                        match cfg.channels.top_up(channel, cfg.deposit).await {
                            Ok(_) => {
                                deposit += cfg.deposit;
                                st.machine.deposit_changed(deposit);
                                decided = st.machine.invoice(owed);
                            }
                            Err(e) => tracing::warn!(error = %e, "top-up failed"),
                        }
                    }
                    match decided {
                        Ok(Some(cum)) => {
                            let Ok(v) = cfg.channels.sign(channel, cum) else {
                                break;
                            };
                            let voucher = PayMsg::Voucher {
                                channel,
                                cumulative: cum,
                                signature: v.signature,
                            };
                            if s.send(&voucher).await.is_err() {
                                break;
                            }
                            h.emit(Event::VoucherSent {
                                payee: peer.to_string(),
                                channel: hex_id(&channel),
                                cumulative: cum.to_string(),
                            });
                            // Nearly used up: top up ahead, and attach again so
                            // the payee reads the new deposit.
                            if deposit.saturating_sub(cum) < cfg.deposit / 2 {
                                match cfg.channels.top_up(channel, cfg.deposit).await {
                                    Ok(_) => {
                                        deposit += cfg.deposit;
                                        st.machine.deposit_changed(deposit);
                                        let again = cfg
                                            .channels
                                            .bind(channel, &h.peer_id().to_bytes())
                                            .map(|binding| PayMsg::Attach { channel, binding });
                                        if let Ok(m) = again {
                                            if s.send(&m).await.is_err() {
                                                break;
                                            }
                                        }
                                    }
                                    Err(e) => h.emit(Event::PaymentRefused {
                                        peer_id: peer.to_string(),
                                        reason: "top_up_failed".into(),
                                        detail: format!("cannot top up the channel: {e}"),
                                    }),
                                }
                            }
                        }
                        Ok(None) => {}
                        Err(e) => {
                            let code = match e {
                                PayerRefusal::Overbilled { .. } => RefusalCode::Overbilled,
                                _ => RefusalCode::OverDeposit,
                            };
                            let _ = s
                                .send(&PayMsg::Refuse {
                                    code,
                                    reason: e.to_string(),
                                })
                                .await;
                            h.emit(Event::PaymentRefused {
                                peer_id: peer.to_string(),
                                reason: code.as_str().into(),
                                detail: e.to_string(),
                            });
                            if code == RefusalCode::Overbilled
                                && h.relays().iter().any(|(r, _)| *r == peer)
                            {
                                // A relay that bills more than it carried is
                                // not used again: its reservation ends.
                                tracing::warn!(relay = %peer, "overbilling relay dropped");
                                h.disconnect(peer).await;
                            }
                            break;
                        }
                    }
                }
                PayMsg::Refuse { code, reason } => {
                    h.emit(Event::PaymentRefused {
                        peer_id: peer.to_string(),
                        reason: code.as_str().into(),
                        detail: reason,
                    });
                    if code == RefusalCode::Unpaid {
                        break;
                    }
                }
                _ => {}
            }
        }
        s.close().await;
    });
    Ok(Paying::Attached { channel, terms })
}
