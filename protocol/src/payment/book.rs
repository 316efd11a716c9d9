//! The payee's book: one account per channel, the peers bound to it, and
//! what to do about each (invoice, pause, cut, claim, read the chain
//! again), without I/O.
//!
//! ```text
//!   peer ──bound──► channel ──► Account { Payee machine, highest voucher, claimed }
//!   attach(peer, channel, chain view, voucher held) ─► paid starts at max(claimed, held)
//!   served / voucher / read / claimed / timeout ─────► poll_action(): Send, Wake, Claim,
//!                                                      ReadChannel, Event
//! ```
//!
//! Rules it keeps (each tested in `book_tests.rs`):
//! - peers bound to one channel share its account and its one credit
//!   window; a peer moving to another channel takes its debt along;
//! - credit never exceeds the deposit less what is paid or claimed;
//! - a closing channel is claimed at once and gets no credit within the
//!   margin before its close; a channel gone is cut at once;
//! - tables are bounded: accounts, peers per channel, pay streams per peer.

use super::wire::PayMsg;
use super::{CreditPolicy, Payee, PayeeAction, Terms, VoucherRefusal, Wei};
use libp2p_identity::PeerId;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

mod account;
use account::{Account, Bound};
pub use account::{AttachAck, AttachRefusal, ChannelView, ClaimFailure, Room, Voucher};

/// A channel's id on the chain.
pub type ChannelId = [u8; 32];

/// Attaches one peer may make in a minute (each costs the payee a chain read).
pub const MAX_ATTACHES_PER_MINUTE: u32 = 10;

/// Sources one payer may consent to pay for (the newest are kept).
pub const MAX_CONSENT: usize = 1_024;

/// Limits and timings of a payee's book.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BookConfig {
    /// Prices, free allowance, minimum deposit.
    pub terms: Terms,
    /// Credit extended per channel.
    pub policy: CreditPolicy,
    /// Claim once a channel's unclaimed vouchers reach this much.
    pub claim_threshold: Wei,
    /// Accounts (channels) held at once.
    pub max_accounts: usize,
    /// Peers bound to one channel at once.
    pub max_peers_per_channel: usize,
    /// Pay streams one peer may hold open.
    pub max_streams_per_peer: usize,
    /// An account or a peer unused this long is forgotten.
    pub idle: Duration,
    /// No credit this long before a closing channel's close.
    pub close_margin: Duration,
    /// How often an account with money at stake reads its channel again.
    pub recheck: Duration,
    /// Fewest time between two reads of one channel.
    pub min_read_gap: Duration,
}

impl BookConfig {
    /// The defaults around `terms` and `policy`.
    pub fn new(terms: Terms, policy: CreditPolicy, claim_threshold: Wei) -> Self {
        Self {
            terms,
            policy,
            claim_threshold,
            max_accounts: 4_096,
            max_peers_per_channel: 8,
            max_streams_per_peer: 4,
            idle: Duration::from_secs(3_600),
            close_margin: Duration::from_secs(3_600),
            recheck: Duration::from_secs(30),
            min_read_gap: Duration::from_secs(2),
        }
    }
}

/// What happened that a person (or a test) should hear of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BookEvent {
    /// A channel's payers were cut: unpaid past the grace, or the channel
    /// is gone.
    Cut {
        /// The channel.
        channel: ChannelId,
        /// The peers bound to it.
        peers: Vec<PeerId>,
        /// Why, for people.
        why: &'static str,
    },
    /// A claim did not bring money in.
    ClaimFailed {
        /// The channel.
        channel: ChannelId,
        /// Why.
        reason: ClaimFailure,
    },
    /// Value that can no longer be claimed (the channel is gone).
    VoucherLost {
        /// The channel.
        channel: ChannelId,
        /// Vouchers held above what was claimed.
        amount: Wei,
    },
}

/// One account as it stands (see [`Book::report`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountReport {
    /// The channel.
    pub channel: ChannelId,
    /// Its payer account.
    pub payer: [u8; 20],
    /// The peers bound to it.
    pub peers: Vec<PeerId>,
    /// Bytes served on it (since this run began counting it).
    pub bytes: u64,
    /// Everything owed on it, in all (from what was paid before).
    pub owed: Wei,
    /// The highest voucher held.
    pub paid: Wei,
    /// Claimed on chain.
    pub claimed: Wei,
    /// The credit extended now.
    pub window: Wei,
    /// The deposit last read.
    pub deposit: Wei,
    /// `serving`, `paused` or `cut`.
    pub state: &'static str,
}

/// What the driver should do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BookAction {
    /// Send `msg` on `peer`'s pay stream (an invoice, a refusal).
    Send {
        /// To whom.
        peer: PeerId,
        /// What.
        msg: PayMsg,
    },
    /// Wake whatever waits for room on `channel` (it resumed or was cut).
    Wake {
        /// The channel.
        channel: ChannelId,
    },
    /// Claim `voucher` on `channel`, then call [`Book::claimed`].
    Claim {
        /// The channel.
        channel: ChannelId,
        /// The highest voucher held.
        voucher: Voucher,
    },
    /// Read `channel` from the chain, then call [`Book::channel_read`].
    ReadChannel {
        /// The channel.
        channel: ChannelId,
    },
    /// Report this.
    Event(BookEvent),
}

/// A payee's accounts.
#[derive(Debug)]
pub struct Book {
    cfg: BookConfig,
    accounts: HashMap<ChannelId, Account>,
    peers: HashMap<PeerId, Bound>,
    actions: VecDeque<BookAction>,
}

impl Book {
    /// An empty book.
    pub fn new(cfg: BookConfig) -> Self {
        Self {
            cfg,
            accounts: HashMap::new(),
            peers: HashMap::new(),
            actions: VecDeque::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &BookConfig {
        &self.cfg
    }

    /// The channel `peer` is bound to.
    pub fn channel_of(&self, peer: &PeerId) -> Option<ChannelId> {
        self.peers.get(peer)?.channel
    }

    /// The payer account of `channel` (to check vouchers against).
    pub fn payer_of(&self, channel: &ChannelId) -> Option<[u8; 20]> {
        Some(self.accounts.get(channel)?.payer)
    }

    fn account_of(&self, peer: &PeerId) -> Option<&Account> {
        self.accounts.get(&self.channel_of(peer)?)
    }

    fn account_of_mut(&mut self, peer: &PeerId) -> Option<(ChannelId, &mut Account)> {
        let ch = self.channel_of(peer)?;
        Some((ch, self.accounts.get_mut(&ch)?))
    }

    /// Whether `peer` has a channel and is served now.
    pub fn is_paying(&self, peer: &PeerId) -> bool {
        self.account_of(peer).is_some_and(|a| a.machine.serving())
    }

    /// The channel's payee machine, to read (reports, tests).
    pub fn machine(&self, channel: &ChannelId) -> Option<&Payee> {
        Some(&self.accounts.get(channel)?.machine)
    }

    /// The highest voucher held for `channel` and what was claimed.
    pub fn held(&self, channel: &ChannelId) -> Option<(Option<Voucher>, Wei)> {
        let a = self.accounts.get(channel)?;
        Some((a.latest, a.claimed))
    }

    /// The room `peer` has now.
    pub fn room(&self, peer: &PeerId) -> Room {
        match self.account_of(peer) {
            None => Room::Cut,
            Some(a) if a.machine.is_cut() => Room::Cut,
            Some(a) => match a.machine.room() {
                0 => Room::Paused,
                n => Room::Bytes(n),
            },
        }
    }

    /// A pay stream from `peer` opened: `false` if it holds too many.
    pub fn stream_opened(&mut self, peer: PeerId, now: Instant) -> bool {
        let bound = self.peers.entry(peer).or_insert_with(|| Bound::new(now));
        if bound.streams >= self.cfg.max_streams_per_peer {
            return false;
        }
        bound.streams += 1;
        bound.last = now;
        true
    }

    /// One of `peer`'s pay streams ended; a peer bound to no channel and
    /// with no stream left is forgotten at once.
    pub fn stream_closed(&mut self, peer: &PeerId) {
        if let Some(b) = self.peers.get_mut(peer) {
            b.streams = b.streams.saturating_sub(1);
            if b.streams == 0 && b.channel.is_none() {
                self.peers.remove(peer);
            }
        }
    }

    /// Whether `peer` may attach now (it pays a chain read): at most
    /// [`MAX_ATTACHES_PER_MINUTE`] a minute. Counts the attempt.
    pub fn may_attach(&mut self, peer: PeerId, now: Instant) -> bool {
        let b = self.peers.entry(peer).or_insert_with(|| Bound::new(now));
        if now.duration_since(b.attach_window) >= Duration::from_secs(60) {
            b.attach_window = now;
            b.attaches = 0;
        }
        b.attaches += 1;
        b.attaches <= MAX_ATTACHES_PER_MINUTE
    }

    /// `peer` (billed as a circuit's destination) pays for circuits from
    /// `peers` (`any`: from every source); `replace` starts the set again.
    /// `false` when it has no channel attached.
    pub fn consent(&mut self, peer: &PeerId, replace: bool, any: bool, peers: &[PeerId]) -> bool {
        let Some(b) = self.peers.get_mut(peer).filter(|b| b.channel.is_some()) else {
            return false;
        };
        if replace {
            b.consent.clear();
            b.consent_any = false;
        }
        b.consent_any |= any;
        for p in peers {
            if !b.consent.contains(p) {
                if b.consent.len() >= MAX_CONSENT {
                    b.consent.pop_front();
                }
                b.consent.push_back(*p);
            }
        }
        true
    }

    /// Unbinds `peer` from `channel` (its entry goes with its last stream).
    fn unbind(&mut self, peer: &PeerId, channel: &ChannelId) {
        if let Some(a) = self.accounts.get_mut(channel) {
            a.peers.retain(|p| p != peer);
        }
        if let Some(b) = self.peers.get_mut(peer) {
            b.channel = None;
            b.consent.clear();
            b.consent_any = false;
            if b.streams == 0 {
                self.peers.remove(peer);
            }
        }
    }

    /// Whether `dst` pays for circuits from `src`.
    pub fn consents_to(&self, dst: &PeerId, src: &PeerId) -> bool {
        self.peers
            .get(dst)
            .is_some_and(|b| b.consent_any || b.consent.contains(src))
    }

    /// `peer` attaches `channel`, read from the chain as `view`, its binding
    /// to `peer` checked; `held` is the highest voucher kept for it from an
    /// earlier run. `unix_now` is the chain's clock, in seconds.
    pub fn attach(
        &mut self,
        peer: PeerId,
        channel: ChannelId,
        view: ChannelView,
        held: Option<Voucher>,
        unix_now: u64,
        now: Instant,
    ) -> Result<AttachAck, AttachRefusal> {
        self.may_bind(peer, channel, &view, unix_now)?;
        self.make_room(peer, channel, &view, held, now)?;
        let from = self.channel_of(&peer).filter(|c| *c != channel);
        if let Some(old) = from {
            if let Some(a) = self.accounts.get_mut(&old) {
                a.peers.retain(|p| *p != peer);
            }
        }
        let cfg = self.cfg;
        let bound = self.peers.entry(peer).or_insert_with(|| Bound::new(now));
        bound.channel = Some(channel);
        bound.last = now;
        let a = self.accounts.get_mut(&channel).expect("inserted above");
        if !a.peers.contains(&peer) {
            a.peers.push(peer);
        }
        a.last = now;
        let acts = a.refresh(&cfg, &view, unix_now, now);
        let ack = a.ack();
        self.apply(channel, acts);
        // A payer coming back owing hears what it owes at once (an invoice
        // sent on a stream that died with its connection is not lost).
        let a = self.accounts.get_mut(&channel).expect("inserted above");
        if a.machine.unpaid() > 0 {
            let msg = PayMsg::Invoice {
                owed: a.machine.ask(),
                bytes: a.machine.bytes(),
            };
            self.actions.push_back(BookAction::Send { peer, msg });
        }
        Ok(ack)
    }

    /// Whether `channel` (read as `view`) may carry `peer`: deposit enough,
    /// not closing, and nothing owed by `peer` on another channel (pay where
    /// you owe: it is not served on this one until it pays there).
    fn may_bind(
        &self,
        peer: PeerId,
        channel: ChannelId,
        view: &ChannelView,
        unix_now: u64,
    ) -> Result<(), AttachRefusal> {
        let min = self.cfg.terms.min_deposit;
        if view.deposit < min {
            return Err(AttachRefusal::DepositTooLow {
                deposit: view.deposit,
                min,
            });
        }
        if view.closes_within(unix_now, self.cfg.close_margin) {
            return Err(AttachRefusal::Closing);
        }
        let owed_elsewhere = (self.channel_of(&peer).filter(|c| *c != channel))
            .and_then(|old| self.accounts.get(&old))
            .map_or(0, |a| a.machine.unpaid());
        if owed_elsewhere > 0 {
            return Err(AttachRefusal::OwesElsewhere {
                owed: owed_elsewhere,
            });
        }
        Ok(())
    }

    /// Room for `peer` on `channel`: a place among its account's peers (the
    /// one idle longest, with no pay stream open, gives its place up: they
    /// all share one account, so nothing is forgiven; with every one of
    /// them active the newcomer is refused), or a new account (the least
    /// useful one evicted when the book is full).
    fn make_room(
        &mut self,
        peer: PeerId,
        channel: ChannelId,
        view: &ChannelView,
        held: Option<Voucher>,
        now: Instant,
    ) -> Result<(), AttachRefusal> {
        let Some(a) = self.accounts.get(&channel) else {
            if self.accounts.len() >= self.cfg.max_accounts {
                self.evict(now, true);
            }
            if self.accounts.len() >= self.cfg.max_accounts {
                return Err(AttachRefusal::TooManyAccounts);
            }
            let a = Account::new(&self.cfg, view, held, now);
            self.accounts.insert(channel, a);
            return Ok(());
        };
        if a.peers.len() < self.cfg.max_peers_per_channel || a.peers.contains(&peer) {
            return Ok(());
        }
        let peers = &self.peers;
        let idle = (a.peers.iter())
            .filter(|p| peers.get(p).is_none_or(|b| b.streams == 0))
            .min_by_key(|p| peers.get(p).map(|b| b.last))
            .copied();
        let Some(old) = idle else {
            return Err(AttachRefusal::TooManyPeers {
                max: self.cfg.max_peers_per_channel,
            });
        };
        self.unbind(&old, &channel);
        Ok(())
    }

    /// A voucher from `peer` whose signature was checked against
    /// [`Book::payer_of`]. On `Ok`, keep it on disk before acknowledging.
    pub fn voucher(
        &mut self,
        peer: &PeerId,
        channel: ChannelId,
        v: Voucher,
        now: Instant,
    ) -> Result<(Wei, Wei), VoucherRefusal> {
        let threshold = self.cfg.claim_threshold;
        let Some((ch, a)) = self.account_of_mut(peer) else {
            return Err(VoucherRefusal::Cut);
        };
        if ch != channel {
            return Err(VoucherRefusal::Cut);
        }
        let acts = a.machine.voucher(v.cumulative, now)?;
        a.latest = Some(v);
        a.last = now;
        let due = !a.claiming && (a.closes || v.cumulative.saturating_sub(a.claimed) >= threshold);
        let ack = (a.machine.paid(), a.machine.window());
        self.apply(channel, acts);
        if due {
            self.claim(channel);
        }
        Ok(ack)
    }

    /// Whether a voucher refused as over the deposit should wait for a
    /// fresh read of the channel (a top-up may not be known yet).
    pub fn may_read(&mut self, channel: &ChannelId, now: Instant) -> bool {
        let gap = self.cfg.min_read_gap;
        let Some(a) = self.accounts.get_mut(channel) else {
            return false;
        };
        let ok = a.last_read.is_none_or(|t| now.duration_since(t) >= gap);
        if ok {
            a.last_read = Some(now);
        }
        ok
    }

    /// `bytes` more were served to `peer`.
    pub fn served(&mut self, peer: &PeerId, bytes: u64, now: Instant) {
        if let Some((ch, a)) = self.account_of_mut(peer) {
            a.last = now;
            let acts = a.machine.served(bytes, now);
            self.apply(ch, acts);
        }
        if let Some(b) = self.peers.get_mut(peer) {
            b.last = now;
        }
    }

    /// `peer` held a reservation for `d` more.
    pub fn held_for(&mut self, peer: &PeerId, d: Duration, now: Instant) {
        if let Some((ch, a)) = self.account_of_mut(peer) {
            let acts = a.machine.held_for(d, now);
            self.apply(ch, acts);
        }
    }

    /// Invoices `peer` for everything still unpaid (a service ended).
    pub fn invoice_now(&mut self, peer: &PeerId) {
        let Some((_, a)) = self.account_of_mut(peer) else {
            return;
        };
        if a.machine.unpaid() > 0 {
            let msg = PayMsg::Invoice {
                owed: a.machine.ask(),
                bytes: a.machine.bytes(),
            };
            self.actions
                .push_back(BookAction::Send { peer: *peer, msg });
        }
    }

    /// The chain's answer to a [`BookAction::ReadChannel`]: `Ok(None)` when
    /// the channel is gone, `Err(())` when the chain did not answer.
    pub fn channel_read(
        &mut self,
        channel: ChannelId,
        view: Result<Option<ChannelView>, ()>,
        unix_now: u64,
        now: Instant,
    ) {
        let cfg = self.cfg;
        let Some(a) = self.accounts.get_mut(&channel) else {
            return;
        };
        a.reading = false;
        match view {
            Err(()) => {}
            Ok(Some(v)) => {
                let claim = v.closes_at.is_some() && a.unclaimed() > 0 && !a.claiming;
                let acts = a.refresh(&cfg, &v, unix_now, now);
                self.apply(channel, acts);
                if claim {
                    self.claim(channel);
                }
            }
            Ok(None) => self.gone(channel),
        }
    }

    /// The outcome of a [`BookAction::Claim`]: the channel's claimed total
    /// after it, or why it failed.
    pub fn claimed(&mut self, channel: ChannelId, outcome: Result<Wei, ClaimFailure>) {
        let Some(a) = self.accounts.get_mut(&channel) else {
            return;
        };
        a.claiming = false;
        match outcome {
            Ok(total) => a.claimed = a.claimed.max(total),
            Err(reason) => {
                if let ClaimFailure::NothingToClaim { claimed } = reason {
                    a.claimed = a.claimed.max(claimed);
                }
                self.actions
                    .push_back(BookAction::Event(BookEvent::ClaimFailed {
                        channel,
                        reason,
                    }));
                if reason == ClaimFailure::NoSuchChannel {
                    self.gone(channel);
                }
            }
        }
    }

    /// Claims every channel's unclaimed vouchers (on shutdown), also where
    /// a claim is on its way (it may be for an older voucher).
    pub fn claim_all(&mut self) {
        let due: Vec<ChannelId> = (self.accounts.iter())
            .filter(|(_, a)| a.unclaimed() > 0)
            .map(|(c, _)| *c)
            .collect();
        due.into_iter().for_each(|c| self.claim(c));
    }

    fn claim(&mut self, channel: ChannelId) {
        let Some(a) = self.accounts.get_mut(&channel) else {
            return;
        };
        if let Some(voucher) = a.latest.filter(|v| v.cumulative > a.claimed) {
            a.claiming = true;
            self.actions
                .push_back(BookAction::Claim { channel, voucher });
        }
    }

    /// The channel is gone from the chain: cut its payers, drop its account.
    fn gone(&mut self, channel: ChannelId) {
        let Some(a) = self.accounts.remove(&channel) else {
            return;
        };
        let lost = a.unclaimed();
        if lost > 0 {
            let ev = BookEvent::VoucherLost {
                channel,
                amount: lost,
            };
            self.actions.push_back(BookAction::Event(ev));
        }
        self.cut(channel, &a.peers, "the channel is gone");
        for p in &a.peers {
            if let Some(b) = self.peers.get_mut(p) {
                b.channel = None;
            }
        }
    }

    fn cut(&mut self, channel: ChannelId, peers: &[PeerId], why: &'static str) {
        let ev = BookEvent::Cut {
            channel,
            peers: peers.to_vec(),
            why,
        };
        self.actions.push_back(BookAction::Event(ev));
        self.actions.push_back(BookAction::Wake { channel });
        for p in peers {
            let msg = PayMsg::Refuse {
                code: super::wire::RefusalCode::Unpaid,
                reason: why.into(),
            };
            self.actions.push_back(BookAction::Send { peer: *p, msg });
        }
    }

    fn apply(&mut self, channel: ChannelId, acts: Vec<PayeeAction>) {
        for act in acts {
            let Some(a) = self.accounts.get(&channel) else {
                return;
            };
            match act {
                PayeeAction::Invoice { owed } => {
                    let bytes = a.machine.bytes();
                    for p in a.peers.clone() {
                        let msg = PayMsg::Invoice { owed, bytes };
                        self.actions.push_back(BookAction::Send { peer: p, msg });
                    }
                }
                PayeeAction::Resume => self.actions.push_back(BookAction::Wake { channel }),
                PayeeAction::Cut => {
                    let peers = a.peers.clone();
                    self.cut(channel, &peers, "unpaid past the grace period");
                }
                PayeeAction::Pause => {}
            }
        }
    }

    /// Forgets peers and accounts idle past the limit (all settled ones
    /// when `make_room`); unclaimed value is claimed before it goes.
    fn evict(&mut self, now: Instant, make_room: bool) {
        let idle = self.cfg.idle;
        let accounts = &self.accounts;
        let owing = |c: &Option<ChannelId>| {
            c.and_then(|c| accounts.get(&c))
                .is_some_and(|a| a.machine.unpaid() > 0)
        };
        self.peers
            .retain(|_, b| b.streams > 0 || now.duration_since(b.last) < idle || owing(&b.channel));
        let peers = &self.peers;
        let mut claims = vec![];
        self.accounts.retain(|c, a| {
            a.peers
                .retain(|p| peers.get(p).is_some_and(|b| b.channel == Some(*c)));
            let stale = make_room || now.duration_since(a.last) >= idle;
            // A debt is never forgotten here: the account goes when its
            // channel does (it is read again while anything is owed).
            if !stale || !a.peers.is_empty() {
                return true;
            }
            if a.machine.unpaid() > 0 {
                // Looked at again an idle period later, not at every tick.
                a.last = now;
                return true;
            }
            if a.unclaimed() > 0 {
                // Kept until claimed; looked at again an idle period later.
                a.last = now;
                claims.push(*c);
                return true;
            }
            false
        });
        for c in claims {
            if !self.accounts[&c].claiming {
                self.claim(c);
            }
        }
    }

    /// Every account as it stands, for reports.
    pub fn report(&self) -> Vec<AccountReport> {
        let mut out: Vec<AccountReport> = (self.accounts.iter())
            .map(|(c, a)| AccountReport {
                channel: *c,
                payer: a.payer,
                peers: a.peers.clone(),
                bytes: a.machine.bytes(),
                owed: a.machine.owed(),
                paid: a.machine.paid(),
                claimed: a.claimed,
                window: a.machine.window(),
                deposit: a.machine.deposit(),
                state: if a.machine.is_cut() {
                    "cut"
                } else if a.machine.serving() {
                    "serving"
                } else {
                    "paused"
                },
            })
            .collect();
        out.sort_by_key(|r| r.channel);
        out
    }

    /// The channels with money at stake: vouchers not yet claimed, a debt,
    /// or payers being served.
    pub fn channels_at_stake(&self) -> Vec<ChannelId> {
        (self.accounts.iter())
            .filter(|(_, a)| a.at_stake())
            .map(|(c, _)| *c)
            .collect()
    }

    /// How many accounts and bound peers are held.
    pub fn sizes(&self) -> (usize, usize) {
        (self.accounts.len(), self.peers.len())
    }
}

impl crate::Machine for Book {
    type Action = BookAction;

    /// The next thing to do.
    fn poll_action(&mut self) -> Option<BookAction> {
        self.actions.pop_front()
    }

    /// When [`Machine::handle_timeout`](crate::Machine::handle_timeout) next has work.
    fn poll_timeout(&self) -> Option<Instant> {
        self.accounts
            .values()
            .filter_map(|a| a.deadline(&self.cfg))
            .min()
    }

    /// Time passed: cut payers past the grace, freeze channels about to
    /// close, read channels with money at stake again, forget idle ones.
    fn handle_timeout(&mut self, now: Instant) {
        let cfg = self.cfg;
        let mut reads = vec![];
        let mut acts = vec![];
        for (c, a) in self.accounts.iter_mut() {
            acts.push((*c, a.tick(now)));
            if a.read_due(&cfg, now) {
                a.reading = true;
                a.last_read = Some(now);
                reads.push(*c);
            }
        }
        for (c, act) in acts {
            self.apply(c, act);
        }
        for channel in reads {
            self.actions.push_back(BookAction::ReadChannel { channel });
        }
        self.evict(now, false);
    }
}

#[cfg(test)]
mod tests;
