//! What the book asks of the chain: channel reads, claims, the vouchers a
//! previous run left unclaimed; and the loop that gives the book its time.

use super::super::hex_id;
use super::Payees;
use crate::events::Event;
use ledgermesh_ledger::payments::{ChannelState, PayError, SignedVoucher};
use ledgermesh_protocol::payment::book::{ChannelId, ChannelView, ClaimFailure, Voucher};
use std::sync::Arc;
use std::time::Instant;

/// The book's view of a channel.
pub(super) fn view(c: &ChannelState) -> ChannelView {
    ChannelView {
        payer: c.payer.0 .0,
        deposit: c.deposit,
        claimed: c.claimed,
        closes_at: c.closes_at,
    }
}

fn failure(e: &PayError) -> ClaimFailure {
    match e {
        PayError::NothingToClaim { claimed, .. } => {
            ClaimFailure::NothingToClaim { claimed: *claimed }
        }
        PayError::NoSuchChannel => ClaimFailure::NoSuchChannel,
        PayError::Unavailable(_) => ClaimFailure::Rpc,
        _ => ClaimFailure::Reverted,
    }
}

impl Payees {
    /// Keeps accepted vouchers under `dir` (synced before each is
    /// acknowledged) and claims those a previous run left unclaimed.
    pub async fn keep_vouchers_in(&self, dir: &std::path::Path) -> std::io::Result<()> {
        let d = dir.to_path_buf();
        let (store, _) =
            tokio::task::spawn_blocking(move || super::super::store::VoucherStore::open(&d))
                .await
                .map_err(std::io::Error::other)??;
        let store = Arc::new(store);
        *self.inner.store.lock().unwrap_or_else(|p| p.into_inner()) = Some(store.clone());
        for v in store.all() {
            match self.inner.cfg.channels.claim(v.clone()).await {
                Ok((amount, cost)) => self.inner.emitter.emit(Event::Claimed {
                    channel: hex_id(&v.channel),
                    amount: amount.to_string(),
                    tx: cost.tx,
                    gas_used: cost.gas_used,
                }),
                Err(PayError::NothingToClaim { .. }) => {}
                Err(e) => {
                    let reason = failure(&e);
                    tracing::warn!(error = %e, "a voucher from before the restart is not claimed");
                    self.inner.emitter.emit(Event::ClaimFailed {
                        channel: hex_id(&v.channel),
                        reason: reason.as_str().into(),
                        detail: e.to_string(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Reads `channel` from the chain and gives the book the answer;
    /// returns the claims it asks for.
    async fn read(&self, channel: ChannelId) -> Vec<(ChannelId, Voucher)> {
        let chans = &self.inner.cfg.channels;
        let view = match chans.channel(channel).await {
            Ok(c) => {
                if c.is_none() {
                    tracing::info!(channel = %hex_id(&channel), "the channel is gone");
                }
                Ok(c.as_ref().map(view))
            }
            Err(e) => {
                tracing::debug!(error = %e, "channel state unavailable");
                Err(())
            }
        };
        let now = chans.chain_now();
        let ((), claims) = self.step(|b| b.channel_read(channel, view, now, Instant::now()));
        claims
    }

    /// [`Self::read`], its claims in tasks of their own.
    pub(super) async fn read_channel(&self, channel: ChannelId) {
        let claims = self.read(channel).await;
        self.spawn_claims(claims);
    }

    pub(super) async fn claim(&self, channel: ChannelId, v: Voucher) {
        let _one = self.inner.claiming.lock().await;
        // Claims wait in line: by now a newer voucher may be held, or this
        // one claimed already.
        let held = self.lock().book.held(&channel);
        let v = match held {
            Some((Some(latest), claimed)) if latest.cumulative > claimed => latest,
            Some((_, claimed)) => {
                self.with_book(|b| b.claimed(channel, Ok(claimed)));
                return;
            }
            None => v,
        };
        let signed = SignedVoucher {
            channel,
            cumulative: v.cumulative,
            signature: v.signature,
        };
        let outcome = match self.inner.cfg.channels.claim(signed).await {
            Ok((amount, cost)) => {
                self.inner.emitter.emit(Event::Claimed {
                    channel: hex_id(&channel),
                    amount: amount.to_string(),
                    tx: cost.tx,
                    gas_used: cost.gas_used,
                });
                Ok(v.cumulative)
            }
            Err(e) => {
                tracing::warn!(channel = %hex_id(&channel), error = %e, "claim failed");
                Err(failure(&e))
            }
        };
        self.with_book(|b| b.claimed(channel, outcome));
    }

    /// Claims every unclaimed voucher (on shutdown) and waits for them.
    pub async fn claim_all(&self) {
        let ((), claims) = self.step(|b| b.claim_all());
        for (c, v) in claims {
            self.claim(c, v).await;
        }
    }

    /// Reads every channel with money at stake now: claims at once from
    /// those closing, stops credit near a close, cuts the payers of those
    /// gone (the book does this every 30 s by itself).
    pub async fn claim_closing(&self) {
        let at_stake = self.lock().book.channels_at_stake();
        for channel in at_stake {
            for (c, v) in self.read(channel).await {
                self.claim(c, v).await;
            }
        }
    }
}
