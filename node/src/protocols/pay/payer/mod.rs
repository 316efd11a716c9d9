//! The payer's side: agree terms with a payee (checked against our caps
//! before anything touches the chain), attach a channel (reused, topped up,
//! or opened), learn where we stand on it, then pay each invoice our own
//! meter agrees with, attaching again when the connection under the pay
//! stream goes away (a DCUtR upgrade, a relay that died).

mod consent;
mod fund;
mod handshake;
mod invoice;
mod session;

pub use consent::{Consent, ConsentSet};

use fund::Funded;
use handshake::{attach, hello};

use super::{hex_id, PayStream, HANDSHAKE, PAY};
use crate::events::Event;
use crate::protocols::pay::PayNet;
use ledgermesh_ledger::payments::{ChannelId, PayError, PaymentChannels};
use ledgermesh_protocol::payment::wire::{Offer, RefusalCode};
use ledgermesh_protocol::payment::{Caps, Leeway, Payer, Terms, TermsRefusal, Wei};
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
    /// Prices, deposit and spend we accept.
    pub caps: Caps,
    /// (Paying relays) the sources whose circuits to us we pay for.
    pub consent: Option<Consent>,
}

impl std::fmt::Debug for PayerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PayerConfig")
            .field("ledger", &self.channels.describe())
            .field("deposit", &self.deposit)
            .field("caps", &self.caps)
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
    /// What the payee offered first in this run.
    offer: Offer,
}

impl PayerState {
    /// Where we stand with the payee `peer` (the payments report): our
    /// meter, the highest voucher signed and the one it acknowledged.
    pub fn report(&self, peer: &PeerId) -> serde_json::Value {
        let m = &self.machine;
        serde_json::json!({
            "payee": peer.to_string(),
            "payee_account": format!("0x{}", hex::encode(self.offer.payee)),
            "channel": hex_id(&self.channel),
            "bytes": m.bytes(),
            "measured_wei": m.measured().to_string(),
            "highest_voucher_wei": m.signed().to_string(),
            "held_by_payee_wei": m.held_by_payee().to_string(),
            "spent_this_run_wei": m.spent().to_string(),
            "deposit_wei": m.deposit().to_string(),
            "price_per_mib_wei": self.offer.terms.price_per_mib.to_string(),
        })
    }
}

/// What `peer` charges, asked over the payment protocol and nothing
/// agreed: `None` when it does not speak it (a stock relay: free).
pub async fn terms(handle: &impl PayNet, peer: PeerId) -> Result<Option<Terms>, PayFailure> {
    match hello(handle, peer, &Caps::default(), None).await {
        Ok((mut s, offer)) => {
            s.close().await;
            Ok(Some(offer.terms))
        }
        Err(PayFailure::Unsupported(_)) => Ok(None),
        Err(e) => Err(e),
    }
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
    /// Its terms are beyond our caps, or changed.
    #[error("{0}")]
    Terms(#[from] TermsRefusal),
    /// The ledger.
    #[error("ledger: {0}")]
    Ledger(#[from] PayError),
    /// The stream.
    #[error("{0}")]
    Io(#[from] StreamFault),
}

/// What broke on the payment stream: a fault worth a new stream
/// ([`handshake::on_the_stream`]).
#[derive(Debug, thiserror::Error)]
pub enum StreamFault {
    /// The payee said nothing in time.
    #[error("no answer in time")]
    Silent,
    /// The payee closed the stream.
    #[error("the payee closed the stream")]
    Closed,
    /// A connection to the payee closed under the stream.
    #[error("a connection to the payee closed")]
    ConnectionClosed,
    /// Another message than the one the step waits for.
    #[error("expected {expected}, got {got}")]
    Unexpected {
        /// What the step waits for.
        expected: &'static str,
        /// What came.
        got: String,
    },
    /// The stream could not be opened.
    #[error(transparent)]
    Open(#[from] libp2p_stream::OpenStreamError),
    /// Reading a message failed.
    #[error(transparent)]
    Recv(#[from] crate::protocols::pay::PayIoError),
    /// Sending a message failed.
    #[error(transparent)]
    Send(#[from] std::io::Error),
}

impl PayFailure {
    /// The reason in events.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Terms(t) => t.as_str(),
            Self::Refused { code, .. } => code.as_str(),
            _ => "payment",
        }
    }
}

fn io(e: impl Into<StreamFault>) -> PayFailure {
    PayFailure::Io(e.into())
}

/// Agrees terms with `peer` (connected) and, if it charges, attaches a
/// channel and pays its invoices from then on, as one of the node's tasks,
/// while `meter` (bytes it carried for us, by our count) agrees.
pub async fn pay(
    handle: &impl PayNet,
    peer: PeerId,
    cfg: PayerConfig,
    meter: Arc<AtomicU64>,
) -> Result<Paying, PayFailure> {
    // Watched from the start: a DCUtR upgrade may close the connection
    // under the pay stream at any moment of the handshake.
    let mut closes = handle.watch_closes(peer).await.ok();
    let state = handle.payer_state(peer);
    let before = state.lock().await.as_ref().map(|st| st.offer);
    let (mut s, offer) = greet(handle, peer, &cfg.caps, before).await?;
    if offer.terms.is_free() {
        s.close().await;
        return Ok(Paying::Free);
    }
    let Funded {
        channel,
        mut deposit,
        claimed,
    } = fund::fund(handle, &cfg, &offer).await?;
    let mut guard = state.lock().await;
    let fresh = || PayerState {
        channel,
        machine: Payer::new(offer.terms, cfg.leeway, deposit).with_max_spend(cfg.caps.max_spend),
        seen: meter.load(Ordering::Relaxed),
        since: Instant::now(),
        offer,
    };
    let st = match guard.as_mut() {
        Some(st) if st.channel == channel => st,
        _ => guard.insert(fresh()),
    };
    // Coming back to a channel our vouchers have nearly used up: top up
    // before attaching, so the payee reads the new deposit.
    if deposit.saturating_sub(st.machine.signed()) < cfg.deposit / 2 {
        if let Some(add) = cfg.caps.top_up(deposit, 0, cfg.deposit) {
            cfg.channels.top_up(channel, add).await?;
            deposit += add;
        }
    }
    st.machine.deposit_changed(deposit);
    let mut tries = 0;
    loop {
        match attach(handle, &mut s, &cfg, channel, claimed, st, &mut closes).await {
            Err(e) if handshake::on_the_stream(&e) && tries + 1 < handshake::OPEN_TRIES => {
                tries += 1;
                tracing::debug!(%peer, error = %e, "attaching again on a new pay stream");
                tokio::time::sleep(std::time::Duration::from_millis(100 << tries)).await;
                s = hello(handle, peer, &cfg.caps, Some(offer)).await?.0;
            }
            r => break r?,
        }
    }
    drop(guard);
    let terms = offer.terms;
    let consent = cfg.consent.as_ref().map(Consent::subscribe);
    let run = session::Session {
        h: handle.clone(),
        peer,
        cfg,
        channel,
        state,
        meter,
        offer,
        closes,
        consent,
        pending: None,
    };
    handle.spawn(run.run(s));
    Ok(Paying::Attached { channel, terms })
}

/// Opens a pay stream and hears the payee's terms (again, a few times,
/// while the stream itself fails); terms over our caps are said where the
/// user looks, before anything is signed.
async fn greet(
    handle: &impl PayNet,
    peer: PeerId,
    caps: &Caps,
    before: Option<Offer>,
) -> Result<(PayStream, Offer), PayFailure> {
    let mut tries = 0;
    loop {
        match hello(handle, peer, caps, before).await {
            Err(e) if handshake::on_the_stream(&e) && tries + 1 < handshake::OPEN_TRIES => {
                tries += 1;
                tracing::debug!(%peer, error = %e, "opening the pay stream again");
                tokio::time::sleep(std::time::Duration::from_millis(100 << tries)).await;
            }
            Err(PayFailure::Terms(e)) => {
                handle.emit(Event::PaymentRefused {
                    peer_id: peer.to_string(),
                    reason: e.as_str(),
                    detail: e.to_string(),
                });
                return Err(e.into());
            }
            r => return r,
        }
    }
}
