//! The channel a payer pays a payee from: on the payee's ledger, reused
//! (the fullest open one), topped up to the minimum, or opened; never
//! beyond `--max-deposit`.

use super::{PayFailure, PayerConfig};
use crate::events::Event;
use crate::protocols::pay::{hex_id, PayNet};
use ledgermesh_ledger::payments::{ChannelId, PayError};
use ledgermesh_protocol::payment::wire::Offer;
use ledgermesh_protocol::payment::{TermsRefusal, Wei};

/// The channel to attach, and where it stands on chain.
pub(super) struct Funded {
    pub(super) channel: ChannelId,
    pub(super) deposit: Wei,
    pub(super) claimed: Wei,
}

/// The channel that pays `offer`'s payee.
pub(super) async fn fund(
    handle: &impl PayNet,
    cfg: &PayerConfig,
    offer: &Offer,
) -> Result<Funded, PayFailure> {
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
    let mine = chans.channels_of(me).await?;
    let reuse = (mine.into_iter())
        .filter(|c| c.payer == me && c.payee == payee && c.closes_at.is_none())
        .max_by_key(|c| c.deposit - c.claimed);
    let min = offer.terms.min_deposit;
    let too_much = || TermsRefusal::DepositTooHigh {
        min_deposit: min,
        max: cfg.caps.max_deposit.unwrap_or(Wei::MAX),
    };
    match reuse {
        Some(c) if c.deposit >= min => Ok(Funded {
            channel: c.id,
            deposit: c.deposit,
            claimed: c.claimed,
        }),
        Some(c) => {
            let add = (cfg.caps)
                .top_up(c.deposit, min, cfg.deposit)
                .ok_or_else(too_much)?;
            chans.top_up(c.id, add).await?;
            Ok(Funded {
                channel: c.id,
                deposit: c.deposit + add,
                claimed: c.claimed,
            })
        }
        None => {
            let amount = cfg.caps.top_up(0, min, cfg.deposit).ok_or_else(too_much)?;
            let (id, cost) = chans.open(payee, amount).await?;
            handle.emit(Event::ChannelOpened {
                payee: payee.to_string(),
                channel: hex_id(&id),
                deposit: amount.to_string(),
                tx: cost.tx,
                gas_used: cost.gas_used,
            });
            Ok(Funded {
                channel: id,
                deposit: amount,
                claimed: 0,
            })
        }
    }
}
