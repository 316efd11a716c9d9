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
    /// More than is owed plus the credit window: nothing to pay for yet.
    #[error("{cumulative} is above the {owed} owed plus the {window} window")]
    AboveOwed {
        /// What the voucher says.
        cumulative: Wei,
        /// Everything owed.
        owed: Wei,
        /// The credit window.
        window: Wei,
    },
    /// A step too small to be worth keeping (it neither pays everything
    /// owed nor an eighth of the window): a flood of 1-wei vouchers.
    #[error("a step of {step} pays neither the {owed} owed nor at least {min_step}")]
    TooSmall {
        /// The voucher's increase.
        step: Wei,
        /// Everything owed.
        owed: Wei,
        /// The smallest step taken short of paying everything.
        min_step: Wei,
    },
}

/// One payer's account with this payee.
#[derive(Debug, Clone)]
pub struct Payee {
    terms: Terms,
    policy: CreditPolicy,
    deposit: Wei,
    bytes: u64,
    held: Duration,
    /// Paid before this account's meter started (claimed on chain, or the
    /// highest voucher held): owed starts here.
    base: Wei,
    paid: Wei,
    /// The window earned by paying on time, before the deposit's cap.
    grown: Wei,
    /// No credit beyond what is paid (a channel about to close).
    frozen: bool,
    invoiced: bool,
    /// The most asked for in an invoice: a voucher paying it is taken
    /// whatever its step.
    asked: Wei,
    paused_since: Option<Instant>,
    cut: bool,
}

impl Payee {
    /// A fresh account on a channel holding `deposit`.
    pub fn new(terms: Terms, policy: CreditPolicy, deposit: Wei) -> Self {
        Self::resumed(terms, policy, deposit, 0)
    }

    /// An account on a channel of which `base` is already paid (claimed on
    /// chain, or the highest voucher held): credit is what the deposit
    /// holds beyond it, and owed starts from it.
    pub fn resumed(terms: Terms, policy: CreditPolicy, deposit: Wei, base: Wei) -> Self {
        Self {
            terms,
            policy,
            deposit,
            bytes: 0,
            held: Duration::ZERO,
            base,
            paid: base,
            grown: policy.initial,
            frozen: false,
            invoiced: false,
            asked: base,
            paused_since: None,
            cut: false,
        }
    }

    /// Everything owed so far, at the terms' prices, from the base.
    pub fn owed(&self) -> Wei {
        self.base
            .saturating_add(self.terms.cost(self.bytes, self.held))
    }

    /// No more credit than is paid now (the channel closes before more
    /// could be claimed): pauses a payer that owes anything.
    pub fn freeze(&mut self, now: Instant) -> Vec<PayeeAction> {
        self.frozen = true;
        let mut out = vec![];
        if self.paused_since.is_none() && !self.cut && !self.terms.is_free() {
            self.paused_since = Some(now);
            out.push(PayeeAction::Pause);
            if self.unpaid() > 0 {
                out.push(PayeeAction::Invoice { owed: self.ask() });
            }
        }
        out
    }

    /// Everything owed, noted as asked for (an invoice is being sent).
    pub fn ask(&mut self) -> Wei {
        let owed = self.owed();
        self.asked = self.asked.max(owed);
        owed
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
        if self.frozen {
            return 0;
        }
        self.grown
            .min(self.policy.max)
            .min(self.deposit.saturating_sub(self.paid))
    }

    /// The deposit last known.
    pub fn deposit(&self) -> Wei {
        self.deposit
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
        let credit = self.window().saturating_sub(self.unpaid());
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

    /// The channel's deposit is now `deposit` (a top-up): the window it
    /// capped comes back, never more than was earned.
    pub fn deposit_changed(&mut self, deposit: Wei, now: Instant) -> Vec<PayeeAction> {
        self.deposit = deposit;
        let mut out = vec![];
        if self.cut && self.unpaid() == 0 && deposit > self.paid && !self.frozen {
            // Cut only for want of deposit, and nothing is owed: serve again.
            self.cut = false;
            self.paused_since = Some(now);
        }
        self.resume_if_room(&mut out);
        out.extend(self.check(now));
        out
    }

    fn resume_if_room(&mut self, out: &mut Vec<PayeeAction>) {
        if self.paused_since.is_some() && !self.cut && self.unpaid() < self.window() {
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
        let window = self.window();
        if !self.invoiced && unpaid >= window / 2 {
            self.invoiced = true;
            out.push(PayeeAction::Invoice { owed: self.ask() });
        }
        if self.paused_since.is_none() && unpaid >= window {
            self.paused_since = Some(now);
            out.push(PayeeAction::Pause);
            // Ask again with the full amount: the pause is the last call.
            out.push(PayeeAction::Invoice { owed: self.ask() });
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
        let owed = self.owed();
        let window = self.window().max(self.policy.initial);
        if cumulative > owed.saturating_add(window) {
            return Err(VoucherRefusal::AboveOwed {
                cumulative,
                owed,
                window,
            });
        }
        let min_step = (window / 8).max(1);
        let step = cumulative - self.paid;
        // Paying off everything owed is always welcome; short of that (or
        // paying ahead), a step must be worth a write to disk.
        let settles = (cumulative >= owed && owed > self.paid)
            || (cumulative >= self.asked && self.asked > self.paid);
        if step < min_step && !settles {
            return Err(VoucherRefusal::TooSmall {
                step,
                owed,
                min_step,
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
            self.grown = self.policy.initial;
            return Ok(vec![PayeeAction::Resume]);
        }
        let on_time = self.paused_since.is_none();
        self.paid = cumulative;
        self.invoiced = false;
        if on_time {
            self.grown = self.grown.saturating_mul(2).min(self.policy.max);
        }
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
