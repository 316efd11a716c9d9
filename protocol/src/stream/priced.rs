//! Priced streams, both sides: the seller's refusal of a buyer without a
//! paid-up channel (the wait for the channel is
//! [`crate::payment::wait::PayWait`]), and the buyer's gate on the price.

use crate::payment::Terms;
use crate::{RejectReason, StreamRejection};

/// What a buyer without a paid-up channel is told: the price and the
/// minimum deposit, and where to attach a channel.
pub fn unpaid(name: &str, terms: &Terms) -> StreamRejection {
    StreamRejection {
        name: name.to_string(),
        reason: RejectReason::Unpaid,
        detail: format!(
            "priced at {} wei per MiB (minimum deposit {}): attach a paid-up channel over /ledgermesh/pay/1",
            terms.price_per_mib, terms.min_deposit
        ),
        earliest: None,
    }
}

/// Why a buyer does not buy a priced stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuyerRefusal {
    /// The seller asks more per MiB than the buyer pays.
    PriceTooHigh {
        /// The seller's price.
        price: u128,
        /// The buyer's limit.
        max: u128,
    },
    /// A priced stream, and nothing to pay from.
    NoDeposit,
}

impl BuyerRefusal {
    /// The reason as events and logs name it.
    pub fn as_str(self) -> &'static str {
        match self {
            BuyerRefusal::PriceTooHigh { .. } => "price_too_high",
            BuyerRefusal::NoDeposit => "no_deposit",
        }
    }
}

/// The buyer's gate, before any byte or channel: a stream at `price` wei
/// per MiB is bought when it is free, or within `max` with a deposit to pay
/// from (`can_pay`). `Ok(true)`: it is priced, so pay before fetching.
pub fn buyer_gate(price: u128, max: u128, can_pay: bool) -> Result<bool, BuyerRefusal> {
    match price {
        0 => Ok(false),
        p if p > max => Err(BuyerRefusal::PriceTooHigh { price: p, max }),
        _ if !can_pay => Err(BuyerRefusal::NoDeposit),
        _ => Ok(true),
    }
}

/// The terms the seller gave on the pay stream, checked again: a seller
/// may quote one price on the ledger and ask another when paid.
pub fn check_attached(price: u128, max: u128) -> Result<(), BuyerRefusal> {
    match price > max {
        true => Err(BuyerRefusal::PriceTooHigh { price, max }),
        false => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_buyer_buys_free_streams_and_priced_ones_within_its_limit_with_a_deposit() {
        assert_eq!(buyer_gate(0, 0, false), Ok(false));
        assert_eq!(buyer_gate(100, 100, true), Ok(true));
        assert_eq!(
            buyer_gate(101, 100, true),
            Err(BuyerRefusal::PriceTooHigh {
                price: 101,
                max: 100
            })
        );
        // Too dear is said first: a deposit would not help.
        assert_eq!(
            buyer_gate(101, 100, false).map_err(BuyerRefusal::as_str),
            Err("price_too_high")
        );
        assert_eq!(buyer_gate(50, 100, false), Err(BuyerRefusal::NoDeposit));
        assert_eq!(BuyerRefusal::NoDeposit.as_str(), "no_deposit");
    }

    #[test]
    fn a_seller_that_asks_more_when_paid_than_it_quoted_is_refused() {
        assert_eq!(check_attached(100, 100), Ok(()));
        assert_eq!(
            check_attached(150, 100),
            Err(BuyerRefusal::PriceTooHigh {
                price: 150,
                max: 100
            })
        );
    }

    #[test]
    fn the_refusal_says_the_price_and_the_deposit() {
        let t = Terms {
            price_per_mib: 1_000,
            price_per_hour: 0,
            free_bytes: 0,
            min_deposit: 50_000,
        };
        let r = unpaid("feed", &t);
        assert_eq!((r.name.as_str(), r.reason), ("feed", RejectReason::Unpaid));
        assert!(r.detail.contains("1000 wei per MiB") && r.detail.contains("50000"));
    }
}
