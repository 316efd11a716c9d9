//! One channel's account in the payee's book, and the small types the book
//! speaks in.

use super::super::{Payee, PayeeAction, Wei};
use super::BookConfig;
use libp2p_identity::PeerId;
use std::time::{Duration, Instant};

/// A voucher: the cumulative amount and the payer's signature over it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Voucher {
    /// Everything paid, in all.
    pub cumulative: Wei,
    /// The payer account's signature.
    pub signature: [u8; 65],
}

/// A channel as the chain shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelView {
    /// Who pays.
    pub payer: [u8; 20],
    /// What it holds.
    pub deposit: Wei,
    /// What was claimed from it.
    pub claimed: Wei,
    /// When a close started takes effect (chain seconds).
    pub closes_at: Option<u64>,
}

impl ChannelView {
    /// Whether its close takes effect within `margin` of `unix_now`.
    pub fn closes_within(&self, unix_now: u64, margin: Duration) -> bool {
        self.closes_at
            .is_some_and(|t| t <= unix_now.saturating_add(margin.as_secs()))
    }
}

/// What the payer hears when its channel is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttachAck {
    /// Paid so far: the highest voucher held, or the claimed amount.
    pub paid: Wei,
    /// Credit extended now.
    pub window: Wei,
    /// Owed in all (above `paid`: a debt from before).
    pub owed: Wei,
    /// The signature of the voucher for `paid`, when one is held (the
    /// payer checks it is its own before it counts from there).
    pub voucher: Option<[u8; 65]>,
}

/// Why an attach is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AttachRefusal {
    /// Below the minimum deposit.
    #[error("deposit {deposit} below the minimum {min}")]
    DepositTooLow {
        /// What it holds.
        deposit: Wei,
        /// What is asked.
        min: Wei,
    },
    /// It closes before more could be claimed.
    #[error("the channel is closing")]
    Closing,
    /// The channel already has as many peers as allowed.
    #[error("the channel already pays for {max} peers")]
    TooManyPeers {
        /// The limit.
        max: usize,
    },
    /// The book is full of accounts with money at stake.
    #[error("too many payers")]
    TooManyAccounts,
    /// The peer owes on the channel it is bound to: it pays there first.
    #[error("{owed} is owed on the channel this peer attached before: pay it there first")]
    OwesElsewhere {
        /// What it owes there.
        owed: Wei,
    },
    /// More attaches than a minute allows.
    #[error(
        "too many attaches: at most {} a minute",
        super::MAX_ATTACHES_PER_MINUTE
    )]
    TooOften,
}

/// Why a claim brought nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimFailure {
    /// The chain already has as much or more claimed.
    NothingToClaim {
        /// What it has claimed.
        claimed: Wei,
    },
    /// The channel is gone.
    NoSuchChannel,
    /// The transaction reverted.
    Reverted,
    /// The RPC endpoint failed; tried again later.
    Rpc,
}

impl ClaimFailure {
    /// The reason in events.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::NothingToClaim { .. } => "nothing_to_claim",
            Self::NoSuchChannel => "no_such_channel",
            Self::Reverted => "reverted",
            Self::Rpc => "rpc",
        }
    }
}

/// What a budget allows now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Room {
    /// This many bytes.
    Bytes(u64),
    /// None until paid.
    Paused,
    /// None ever: cut, or no account.
    Cut,
}

/// A peer the book knows: its pay streams and the channel it is bound to.
#[derive(Debug)]
pub(super) struct Bound {
    pub(super) channel: Option<super::ChannelId>,
    pub(super) streams: usize,
    pub(super) last: Instant,
    /// Attaches in the minute from `attach_window`.
    pub(super) attaches: u32,
    pub(super) attach_window: Instant,
    /// (Billed as a circuit's destination) it pays for every source.
    pub(super) consent_any: bool,
    /// The sources it pays for, newest last.
    pub(super) consent: std::collections::VecDeque<PeerId>,
}

impl Bound {
    pub(super) fn new(now: Instant) -> Self {
        Self {
            channel: None,
            streams: 0,
            last: now,
            attaches: 0,
            attach_window: now,
            consent_any: false,
            consent: std::collections::VecDeque::new(),
        }
    }
}

/// One channel's account.
#[derive(Debug)]
pub(super) struct Account {
    pub(super) payer: [u8; 20],
    pub(super) machine: Payee,
    pub(super) peers: Vec<PeerId>,
    pub(super) latest: Option<Voucher>,
    pub(super) claimed: Wei,
    pub(super) claiming: bool,
    /// When the credit stops (a close is near), once known.
    pub(super) closing: Option<Instant>,
    /// The channel is closing: every voucher is claimed at once.
    pub(super) closes: bool,
    pub(super) last: Instant,
    pub(super) last_read: Option<Instant>,
    pub(super) reading: bool,
}

impl Account {
    pub(super) fn new(
        cfg: &BookConfig,
        view: &ChannelView,
        held: Option<Voucher>,
        now: Instant,
    ) -> Self {
        let held = held.filter(|v| v.cumulative > view.claimed && v.cumulative <= view.deposit);
        let base = held.map_or(view.claimed, |v| v.cumulative);
        Self {
            payer: view.payer,
            machine: Payee::resumed(cfg.terms, cfg.policy, view.deposit, base),
            peers: vec![],
            latest: held,
            claimed: view.claimed,
            claiming: false,
            closing: None,
            closes: false,
            last: now,
            last_read: None,
            reading: false,
        }
    }

    /// Vouchers held above what was claimed.
    pub(super) fn unclaimed(&self) -> Wei {
        self.latest
            .map_or(0, |v| v.cumulative.saturating_sub(self.claimed))
    }

    pub(super) fn ack(&self) -> AttachAck {
        let paid = self.machine.paid();
        AttachAck {
            paid,
            window: self.machine.window(),
            owed: self.machine.owed(),
            voucher: self
                .latest
                .filter(|v| v.cumulative == paid)
                .map(|v| v.signature),
        }
    }

    /// A fresh view of the channel: its deposit, what was claimed, a close.
    pub(super) fn refresh(
        &mut self,
        cfg: &BookConfig,
        view: &ChannelView,
        unix_now: u64,
        now: Instant,
    ) -> Vec<PayeeAction> {
        self.claimed = self.claimed.max(view.claimed);
        self.last_read = Some(now);
        let mut acts = self.machine.deposit_changed(view.deposit, now);
        if let Some(at) = view.closes_at {
            let left = at.saturating_sub(unix_now);
            let freeze_in = Duration::from_secs(left).saturating_sub(cfg.close_margin);
            self.closes = true;
            self.closing = Some(now + freeze_in);
            if freeze_in.is_zero() {
                self.closing = None;
                acts.extend(self.machine.freeze(now));
            }
        }
        acts
    }

    pub(super) fn tick(&mut self, now: Instant) -> Vec<PayeeAction> {
        let mut acts = vec![];
        if self.closing.is_some_and(|t| now >= t) {
            self.closing = None;
            acts.extend(self.machine.freeze(now));
        }
        acts.extend(self.machine.tick(now));
        acts
    }

    /// Whether money is at stake and the channel was not read lately.
    pub(super) fn read_due(&self, cfg: &BookConfig, now: Instant) -> bool {
        let last = self.last_read.unwrap_or(self.last);
        self.at_stake() && !self.reading && now.duration_since(last) >= cfg.recheck
    }

    pub(super) fn at_stake(&self) -> bool {
        self.unclaimed() > 0
            || self.machine.unpaid() > 0
            || (!self.peers.is_empty() && self.machine.serving())
    }

    pub(super) fn deadline(&self, cfg: &BookConfig) -> Option<Instant> {
        let read = (self.at_stake() && !self.reading)
            .then(|| self.last_read.unwrap_or(self.last) + cfg.recheck);
        let idle = self.peers.is_empty().then(|| self.last + cfg.idle);
        [self.machine.next_deadline(), self.closing, read, idle]
            .into_iter()
            .flatten()
            .min()
    }
}
