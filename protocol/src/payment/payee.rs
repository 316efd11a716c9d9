//! The payee's side of one channel: meter, credit window, invoices, pause
//! and cut. Vouchers reach it already checked (signature, channel, payer).

use super::{CreditPolicy, Terms, Wei, MIB};
use std::time::{Duration, Instant};

/// What the payee should do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayeeAction {
    /// Ask the payer for a voucher covering `owed` in all.
    Invoice {
        /// Everything owed so far.
        owed: Wei,
    },
    /// Stop serving until paid (the window is used up).
    Pause,
    /// Serve again (a voucher arrived in the grace period).
    Resume,
    /// End the service: paused past the grace period.
    Cut,
}

/// Why a voucher is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VoucherRefusal {
    /// Not more than a voucher already accepted (a replay, or lower).
    #[error("not above the {paid} already paid")]
    NotIncreasing {
        /// The highest accepted.
        paid: Wei,
    },
    /// More than the channel holds: it could never be claimed.
    #[error("above the channel's deposit of {deposit}")]
    OverDeposit {
        /// The deposit.
        deposit: Wei,
    },
    /// The service was cut; a new one starts over.
    #[error("the service was cut")]
    Cut,
}

/// One payer's account with this payee.
#[derive(Debug, Clone)]
pub struct Payee {
    terms: Terms,
    policy: CreditPolicy,
    deposit: Wei,
    bytes: u64,
    held: Duration,
    paid: Wei,
    window: Wei,
    invoiced: bool,
    paused_since: Option<Instant>,
    cut: bool,
}

impl Payee {
    /// A fresh account on a channel holding `deposit`.
    pub fn new(terms: Terms, policy: CreditPolicy, deposit: Wei) -> Self {
        Self {
            terms,
            policy,
            deposit,
            bytes: 0,
            held: Duration::ZERO,
            paid: 0,
            window: policy.initial.min(deposit),
            invoiced: false,
            paused_since: None,
            cut: false,
        }
    }

    /// Everything owed so far, at the terms' prices.
    pub fn owed(&self) -> Wei {
        self.terms.cost(self.bytes, self.held)
    }

    /// The highest voucher accepted.
    pub fn paid(&self) -> Wei {
        self.paid
    }

    /// Owed and not yet covered by a voucher.
    pub fn unpaid(&self) -> Wei {
        self.owed().saturating_sub(self.paid)
    }

    /// The credit extended now.
    pub fn window(&self) -> Wei {
        self.window
    }

    /// Bytes metered so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Whether service may go on now.
    pub fn serving(&self) -> bool {
        self.paused_since.is_none() && !self.cut
    }

    /// Whether the service was cut.
    pub fn is_cut(&self) -> bool {
        self.cut
    }

    /// Bytes that may still be served before the window is used up
    /// (`u64::MAX` when bytes are free).
    pub fn room(&self) -> u64 {
        if !self.serving() {
            return 0;
        }
        let free_left = self.terms.free_bytes.saturating_sub(self.bytes);
        if self.terms.price_per_mib == 0 {
            return u64::MAX;
        }
        let credit = self.window.saturating_sub(self.unpaid());
        let bytes = credit.saturating_mul(MIB) / self.terms.price_per_mib;
        u64::try_from(bytes)
            .unwrap_or(u64::MAX)
            .saturating_add(free_left)
    }

    /// `bytes` more were served.
    pub fn served(&mut self, bytes: u64, now: Instant) -> Vec<PayeeAction> {
        self.bytes = self.bytes.saturating_add(bytes);
        self.check(now)
    }

    /// `d` more of reservation time was held.
    pub fn held_for(&mut self, d: Duration, now: Instant) -> Vec<PayeeAction> {
        self.held = self.held.saturating_add(d);
        self.check(now)
    }

    /// The channel's deposit is now `deposit` (a top-up): more credit.
    pub fn deposit_changed(&mut self, deposit: Wei, now: Instant) -> Vec<PayeeAction> {
        self.deposit = deposit;
        let mut out = vec![];
        if self.cut && self.unpaid() == 0 && deposit > self.paid {
            // Cut only for want of deposit, and nothing is owed: serve again.
            self.cut = false;
            self.paused_since = Some(now);
        }
        self.window = self.capped(self.window.max(self.policy.initial));
        self.resume_if_room(&mut out);
        out.extend(self.check(now));
        out
    }

    fn capped(&self, window: Wei) -> Wei {
        window
            .min(self.policy.max)
            .min(self.deposit.saturating_sub(self.paid))
    }

    fn resume_if_room(&mut self, out: &mut Vec<PayeeAction>) {
        if self.paused_since.is_some() && !self.cut && self.unpaid() < self.window {
            self.paused_since = None;
            out.push(PayeeAction::Resume);
        }
    }

    fn check(&mut self, now: Instant) -> Vec<PayeeAction> {
        let mut out = vec![];
        if self.cut || self.terms.is_free() {
            return out;
        }
        let unpaid = self.unpaid();
        if unpaid == 0 {
            return out;
        }
        if !self.invoiced && unpaid >= self.window / 2 {
            self.invoiced = true;
            out.push(PayeeAction::Invoice { owed: self.owed() });
        }
        if self.paused_since.is_none() && unpaid >= self.window {
            self.paused_since = Some(now);
            out.push(PayeeAction::Pause);
            // Ask again with the full amount: the pause is the last call.
            out.push(PayeeAction::Invoice { owed: self.owed() });
        }
        out
    }

    /// A checked voucher for `cumulative` in all arrived.
    pub fn voucher(
        &mut self,
        cumulative: Wei,
        now: Instant,
    ) -> Result<Vec<PayeeAction>, VoucherRefusal> {
        if cumulative <= self.paid {
            return Err(VoucherRefusal::NotIncreasing { paid: self.paid });
        }
        if cumulative > self.deposit {
            return Err(VoucherRefusal::OverDeposit {
                deposit: self.deposit,
            });
        }
        if self.cut {
            // A cut payer is served again once it pays everything it owes.
            if cumulative < self.owed() {
                return Err(VoucherRefusal::Cut);
            }
            self.cut = false;
            self.paused_since = None;
            self.paid = cumulative;
            self.invoiced = false;
            self.window = self.capped(self.policy.initial);
            return Ok(vec![PayeeAction::Resume]);
        }
        let on_time = self.paused_since.is_none();
        self.paid = cumulative;
        self.invoiced = false;
        let grown = if on_time {
            self.window.saturating_mul(2)
        } else {
            self.window
        };
        self.window = self.capped(grown);
        let mut out = vec![];
        self.resume_if_room(&mut out);
        out.extend(self.check(now));
        Ok(out)
    }

    /// Time passed: a payer paused for longer than the grace is cut.
    pub fn tick(&mut self, now: Instant) -> Option<PayeeAction> {
        let since = self.paused_since?;
        if !self.cut && now.duration_since(since) >= self.policy.grace {
            self.cut = true;
            return Some(PayeeAction::Cut);
        }
        None
    }

    /// When [`Payee::tick`] next has work.
    pub fn next_deadline(&self) -> Option<Instant> {
        (!self.cut)
            .then_some(self.paused_since?)
            .map(|s| s + self.policy.grace)
    }
}
