//! Metered payment on a channel, without I/O: what a payee (a relay, a
//! provider) extends as credit and asks for, and what a payer agrees to pay.
//!
//! The payee counts what it served and bills it at the [`Terms`]' prices.
//! It extends a credit window: small at first, doubled after each voucher
//! that arrives before the window is used up, never more than the deposit
//! left; it invoices at half the window, pauses at the window, and cuts
//! after a grace period without payment. The payer keeps its own meter
//! and signs no more than that meter's cost plus a small leeway: an
//! inflated invoice is refused.
//!
//! ```text
//!   payee: served ──► Meter ──► unpaid ≥ window/2 ─► Invoice(owed)
//!                               unpaid ≥ window   ─► Pause ── grace ─► Cut
//!   payer: Invoice ──► own meter + leeway ≥ owed? ─► sign Voucher(owed) : Refuse
//!   payee: Voucher ──► > paid, ≤ deposit, ≤ owed + window ─► Accept (window grows, Resume)
//! ```

pub mod book;
pub mod payee;
pub mod payer;
pub mod wait;
pub mod wire;

pub use book::{Book, BookAction, BookConfig, BookEvent};
pub use payee::{Payee, PayeeAction, VoucherRefusal};
pub use payer::{Caps, Leeway, Payer, PayerRefusal, TermsRefusal};

use std::time::Duration;

/// An amount in the ledger's smallest unit (wei).
pub type Wei = u128;

/// Bytes in a MiB, the unit prices are quoted in.
pub const MIB: u128 = 1 << 20;

/// What a payee charges and asks of a payer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Terms {
    /// Price of each MiB served (both directions counted, for a relay).
    pub price_per_mib: Wei,
    /// Price of each hour of a reservation (a relay; 0 for streams).
    pub price_per_hour: Wei,
    /// Bytes served free before billing starts.
    pub free_bytes: u64,
    /// The smallest deposit a channel must hold to be accepted.
    pub min_deposit: Wei,
}

impl Terms {
    /// Free service: nothing is ever billed.
    pub const FREE: Self = Self {
        price_per_mib: 0,
        price_per_hour: 0,
        free_bytes: u64::MAX,
        min_deposit: 0,
    };

    /// Whether anything is ever billed.
    pub fn is_free(&self) -> bool {
        self.price_per_mib == 0 && self.price_per_hour == 0
    }

    /// The price of `bytes` served in all and `held` of reservation time,
    /// rounded down (both sides compute the same figure).
    pub fn cost(&self, bytes: u64, held: Duration) -> Wei {
        let billed = u128::from(bytes.saturating_sub(self.free_bytes));
        let by_bytes = billed.saturating_mul(self.price_per_mib) / MIB;
        let by_time = held.as_millis().saturating_mul(self.price_per_hour) / 3_600_000;
        by_bytes.saturating_add(by_time)
    }
}

/// How much credit a payee extends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreditPolicy {
    /// The first window (the most a payee risks on a new payer).
    pub initial: Wei,
    /// The largest window.
    pub max: Wei,
    /// How long a paused payer has to pay before it is cut.
    pub grace: Duration,
}

impl CreditPolicy {
    /// A window worth `initial_mib` MiB at `price_per_mib`, growing to
    /// `max_mib` MiB, with a 10 s grace.
    pub fn in_mib(price_per_mib: Wei, initial_mib: u128, max_mib: u128) -> Self {
        Self {
            initial: price_per_mib.saturating_mul(initial_mib).max(1),
            max: price_per_mib.saturating_mul(max_mib).max(1),
            grace: Duration::from_secs(10),
        }
    }
}

#[cfg(test)]
mod tests;
