//! The refusal of a priced stream to a buyer without a paid-up channel
//! (the wait for the channel is [`crate::payment::wait::PayWait`]).

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

#[cfg(test)]
mod tests {
    use super::*;

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
