//! The payer's side of one channel: its own meter, and which invoices it
//! pays. It never signs more than its meter's cost plus a leeway (bytes
//! in flight and framing the payee counted and it did not).

use super::{Terms, Wei};
use std::time::Duration;

/// Why an invoice is not paid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PayerRefusal {
    /// The invoice asks for more than our own meter allows.
    #[error("invoice of {owed} exceeds our meter's {measured} plus leeway ({limit})")]
    Overbilled {
        /// What was asked, in all.
        owed: Wei,
        /// What our meter says, in all.
        measured: Wei,
        /// The most we would sign.
        limit: Wei,
    },
    /// The channel cannot cover it: top up first.
    #[error("invoice of {owed} exceeds the deposit of {deposit}")]
    OverDeposit {
        /// What was asked.
        owed: Wei,
        /// The deposit.
        deposit: Wei,
    },
}

/// Leeway on our own meter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leeway {
    /// Bytes always allowed beyond our count (in flight when invoiced).
    pub bytes: u64,
    /// Parts per thousand of our count allowed on top (framing overhead
    /// the payee counts: noise and yamux headers on a relay).
    pub per_mille: u64,
    /// Reservation time allowed beyond our count.
    pub time: Duration,
}

impl Default for Leeway {
    fn default() -> Self {
        Self {
            bytes: 1 << 20,
            per_mille: 30,
            time: Duration::from_secs(30),
        }
    }
}

/// Our account with one payee.
#[derive(Debug, Clone)]
pub struct Payer {
    terms: Terms,
    leeway: Leeway,
    deposit: Wei,
    bytes: u64,
    held: Duration,
    signed: Wei,
}

impl Payer {
    /// An account on a channel holding `deposit`, at `terms`.
    pub fn new(terms: Terms, leeway: Leeway, deposit: Wei) -> Self {
        Self {
            terms,
            leeway,
            deposit,
            bytes: 0,
            held: Duration::ZERO,
            signed: 0,
        }
    }

    /// `bytes` more were carried for us (our own count).
    pub fn metered(&mut self, bytes: u64) {
        self.bytes = self.bytes.saturating_add(bytes);
    }

    /// `d` more of reservation time.
    pub fn held_for(&mut self, d: Duration) {
        self.held = self.held.saturating_add(d);
    }

    /// The channel's deposit changed (a top-up).
    pub fn deposit_changed(&mut self, deposit: Wei) {
        self.deposit = deposit;
    }

    /// What our meter says we owe.
    pub fn measured(&self) -> Wei {
        self.terms.cost(self.bytes, self.held)
    }

    /// The most we would sign now.
    pub fn limit(&self) -> Wei {
        let extra = self.leeway.bytes + self.bytes / 1000 * self.leeway.per_mille;
        self.terms.cost(
            self.bytes.saturating_add(extra),
            self.held + self.leeway.time,
        )
    }

    /// The highest voucher signed.
    pub fn signed(&self) -> Wei {
        self.signed
    }

    /// An invoice for `owed` in all: the cumulative amount to sign, or
    /// `Ok(None)` when an earlier voucher already covers it.
    pub fn invoice(&mut self, owed: Wei) -> Result<Option<Wei>, PayerRefusal> {
        if owed <= self.signed {
            return Ok(None);
        }
        let limit = self.limit();
        if owed > limit {
            return Err(PayerRefusal::Overbilled {
                owed,
                measured: self.measured(),
                limit,
            });
        }
        if owed > self.deposit {
            return Err(PayerRefusal::OverDeposit {
                owed,
                deposit: self.deposit,
            });
        }
        self.signed = owed;
        Ok(Some(owed))
    }
}
