//! The payer's side of one channel: its own meter, and which invoices it
//! pays. It never signs more than its meter's cost plus a leeway (bytes
//! in flight and framing the payee counted and it did not), counted from
//! where it stood when it attached: what the payee proved it holds, or
//! what the chain says was claimed. A payee that holds less than we
//! signed (a voucher lost in a crash) is sent our highest again.

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
    /// Paying it would spend more on this payee than we allow in one run.
    #[error(
        "paying {owed} would spend {spend} on this payee, above the cap of {cap} (--max-spend)"
    )]
    SpendCap {
        /// What was asked, in all.
        owed: Wei,
        /// What it would spend in this run.
        spend: Wei,
        /// The cap.
        cap: Wei,
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
    /// Where we stood at the last attach (everything before is paid).
    base: Wei,
    bytes_at_base: u64,
    held_at_base: Duration,
    /// Debt from before the attach that we agreed to pay.
    debt: Wei,
    /// Where we stood at the first attach of this run (for the spend cap).
    first_base: Option<Wei>,
    signed: Wei,
    /// The highest voucher the payee acknowledged.
    acked: Wei,
    max_spend: Option<Wei>,
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
            base: 0,
            bytes_at_base: 0,
            held_at_base: Duration::ZERO,
            debt: 0,
            first_base: None,
            signed: 0,
            acked: 0,
            max_spend: None,
        }
    }

    /// Spends at most `cap` on this payee in this run (`--max-spend`).
    pub fn with_max_spend(mut self, cap: Option<Wei>) -> Self {
        self.max_spend = cap;
        self
    }

    /// The payee acknowledged our channel: `paid` is what it proved it
    /// holds (or the chain's claimed amount), `debt` what it says is owed
    /// beyond that, as far as we agree (on the first attach of a run the
    /// caller caps it at one credit window: what a payee could have served
    /// us unpaid before we came back; later, our own meter caps it). Our
    /// meter counts from here.
    pub fn attached(&mut self, paid: Wei, debt: Wei) {
        // Attached before in this run: our own meter says what is owed
        // beyond `paid`; a payee asking more from us each time it has us
        // attach again gets no more than that.
        let debt = match self.first_base {
            Some(_) => debt.min(self.measured().saturating_sub(paid)),
            None => debt,
        };
        self.base = paid;
        self.acked = paid;
        self.debt = debt;
        self.bytes_at_base = self.bytes;
        self.held_at_base = self.held;
        self.first_base.get_or_insert(self.base);
    }

    /// The payee acknowledged a voucher: it holds `paid`.
    pub fn acked(&mut self, paid: Wei) {
        self.acked = self.acked.max(paid);
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

    /// The deposit last known.
    pub fn deposit(&self) -> Wei {
        self.deposit
    }

    /// What our meter says we owe, in all (from the base).
    pub fn measured(&self) -> Wei {
        let bytes = self.bytes - self.bytes_at_base;
        let held = self.held.saturating_sub(self.held_at_base);
        (self.base.saturating_add(self.debt)).saturating_add(self.terms.cost(bytes, held))
    }

    /// The most we would sign now.
    pub fn limit(&self) -> Wei {
        let bytes = self.bytes - self.bytes_at_base;
        let held = self.held.saturating_sub(self.held_at_base);
        let extra = self.leeway.bytes + bytes / 1000 * self.leeway.per_mille;
        (self.base.saturating_add(self.debt)).saturating_add(
            self.terms
                .cost(bytes.saturating_add(extra), held + self.leeway.time),
        )
    }

    /// The highest voucher signed.
    pub fn signed(&self) -> Wei {
        self.signed
    }

    /// The highest voucher the payee acknowledged holding.
    pub fn held_by_payee(&self) -> Wei {
        self.acked
    }

    /// Bytes our meter counted for this payee in this run.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// What this run has spent on the payee (signed beyond the first base).
    pub fn spent(&self) -> Wei {
        self.signed.saturating_sub(self.first_base.unwrap_or(0))
    }

    /// An invoice for `owed` in all: the cumulative amount to sign (or to
    /// send again, when the payee holds less than we signed), or `Ok(None)`
    /// when an earlier voucher it holds already covers it.
    pub fn invoice(&mut self, owed: Wei) -> Result<Option<Wei>, PayerRefusal> {
        if owed <= self.signed {
            return Ok((self.acked < self.signed).then_some(self.signed));
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
        if let Some(cap) = self.max_spend {
            let spend = owed.saturating_sub(self.first_base.unwrap_or(0));
            if spend > cap {
                return Err(PayerRefusal::SpendCap { owed, spend, cap });
            }
        }
        self.signed = owed;
        Ok(Some(owed))
    }
}

/// What a payer accepts before it touches the chain: prices, the deposit
/// it locks per channel, what it spends per payee in a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Caps {
    /// Highest price per MiB (`--max-price-per-mib` for streams,
    /// `--max-relay-price-per-mib` for relays).
    pub max_price_per_mib: Option<Wei>,
    /// Most locked in one channel (`--max-deposit`).
    pub max_deposit: Option<Wei>,
    /// Most spent on one payee in one run (`--max-spend`).
    pub max_spend: Option<Wei>,
}

/// Why a payee's terms are refused before anything is signed or sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TermsRefusal {
    /// Priced above our cap.
    #[error("price {price} wei/MiB is above our cap of {max}")]
    PriceTooHigh {
        /// Its price.
        price: Wei,
        /// Our cap.
        max: Wei,
    },
    /// Its minimum deposit is more than we lock in one channel.
    #[error("minimum deposit {min_deposit} wei is above our cap of {max} (--max-deposit)")]
    DepositTooHigh {
        /// What it asks.
        min_deposit: Wei,
        /// Our cap.
        max: Wei,
    },
    /// Other terms, or another account, than it offered before in this run.
    #[error("the payee changed its terms mid-session ({what})")]
    TermsChanged {
        /// What changed.
        what: &'static str,
    },
}

impl TermsRefusal {
    /// The reason in events (`price_too_high`, `deposit_too_high`,
    /// `terms_changed`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::PriceTooHigh { .. } => "price_too_high",
            Self::DepositTooHigh { .. } => "deposit_too_high",
            Self::TermsChanged { .. } => "terms_changed",
        }
    }
}

impl Caps {
    /// Checks `terms` from the account `payee`, against what the same
    /// payee offered earlier in this run (`before`).
    pub fn check(
        &self,
        terms: &Terms,
        payee: [u8; 20],
        before: Option<(Terms, [u8; 20])>,
    ) -> Result<(), TermsRefusal> {
        if let Some((old, old_payee)) = before {
            if old_payee != payee {
                return Err(TermsRefusal::TermsChanged {
                    what: "another payee account",
                });
            }
            if terms.price_per_mib > old.price_per_mib
                || terms.price_per_hour > old.price_per_hour
                || terms.free_bytes < old.free_bytes
            {
                return Err(TermsRefusal::TermsChanged {
                    what: "a higher price",
                });
            }
            if terms.min_deposit > old.min_deposit {
                return Err(TermsRefusal::TermsChanged {
                    what: "a higher minimum deposit",
                });
            }
        }
        if let Some(max) = self.max_price_per_mib {
            if terms.price_per_mib > max {
                return Err(TermsRefusal::PriceTooHigh {
                    price: terms.price_per_mib,
                    max,
                });
            }
        }
        if let Some(max) = self.max_deposit {
            if terms.min_deposit > max {
                return Err(TermsRefusal::DepositTooHigh {
                    min_deposit: terms.min_deposit,
                    max,
                });
            }
        }
        Ok(())
    }

    /// What to add to a channel holding `deposit` (0 for a new one) so it
    /// holds at least `min` and, where room is left, `want` more; never
    /// beyond `--max-deposit`. `None` when nothing may be added.
    pub fn top_up(&self, deposit: Wei, min: Wei, want: Wei) -> Option<Wei> {
        let add = want.max(min.saturating_sub(deposit));
        let room = match self.max_deposit {
            Some(max) => max.saturating_sub(deposit),
            None => Wei::MAX,
        };
        let add = add.min(room);
        (add > 0 && deposit + add >= min).then_some(add)
    }
}
