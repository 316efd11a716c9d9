//! The payee's side: the protocol crate's [`Book`] (one account per
//! channel) behind a lock, the pay streams that feed it, the [`Budget`]
//! through which metered service asks for room, and the chain calls
//! (reads, claims) it asks for. Every decision is the book's; this module
//! carries its actions out.

mod budget;
mod chain;
mod circuit;
mod driver;
mod session;

pub use budget::Budget;
pub use circuit::CircuitPay;
pub use ledgermesh_protocol::payment::book::Room;

use crate::events::{Emitter, Event};
use ledgermesh_ledger::payments::{PaymentChannels, SignedVoucher};
use ledgermesh_protocol::payment::book::{BookAction, BookEvent, ChannelId, Voucher};
use ledgermesh_protocol::payment::wait::{PayVerdict, PayWait};
use ledgermesh_protocol::payment::wire::{Offer, PayMsg, RefusalCode};
use ledgermesh_protocol::payment::{Book, BookConfig, CreditPolicy, Terms, Wei};
use ledgermesh_protocol::Machine;
use libp2p::PeerId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::task::Waker;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Notify};

/// What a payee charges and where it is paid.
#[derive(Clone)]
pub struct PayeeConfig {
    /// Its channels (its key receives).
    pub channels: Arc<dyn PaymentChannels>,
    /// Prices, free allowance, minimum deposit.
    pub terms: Terms,
    /// Credit extended.
    pub policy: CreditPolicy,
    /// Claim once a payer's unclaimed vouchers reach this much.
    pub claim_threshold: Wei,
}

impl std::fmt::Debug for PayeeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PayeeConfig")
            .field("ledger", &self.channels.describe())
            .field("terms", &self.terms)
            .finish_non_exhaustive()
    }
}

/// A priced node's channels have no key to receive with.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("a priced node needs a ledger key (--ledger-key)")]
pub struct NoLedgerKey;

/// The book and what the driver keeps beside it.
struct State {
    book: Book,
    /// To each peer's latest pay stream.
    tx: HashMap<PeerId, mpsc::Sender<PayMsg>>,
    /// Service waiting for room on a channel.
    wakers: HashMap<ChannelId, Vec<Waker>>,
}

struct Inner {
    cfg: PayeeConfig,
    offer: Offer,
    state: Mutex<State>,
    /// Someone attached or was served again.
    attached: Notify,
    emitter: Emitter,
    /// One claim on the chain at a time.
    claiming: tokio::sync::Mutex<()>,
    /// Where accepted vouchers are kept until claimed.
    store: Mutex<Option<Arc<super::store::VoucherStore>>>,
    /// Claims, channel reads and pay sessions (they hold `Payees` clones,
    /// so these end first; then the book goes and this stops).
    tasks: crate::tasks::StopOnDrop,
}

/// The accounts of paying peers; clones share them.
#[derive(Clone)]
pub struct Payees {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Payees {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Payees")
            .field("terms", &self.inner.cfg.terms)
            .finish_non_exhaustive()
    }
}

impl Payees {
    /// Accounts for `cfg`'s terms, reporting to `emitter`.
    pub fn new(cfg: PayeeConfig, emitter: Emitter) -> Result<Self, NoLedgerKey> {
        let me = cfg.channels.account().ok_or(NoLedgerKey)?;
        let domain = cfg.channels.domain();
        let offer = Offer {
            terms: cfg.terms,
            chain_id: domain.chain_id,
            contract: domain.contract.0 .0,
            payee: me.0 .0,
            credit: cfg.policy.initial,
        };
        let book = Book::new(BookConfig::new(cfg.terms, cfg.policy, cfg.claim_threshold));
        Ok(Self {
            inner: Arc::new(Inner {
                cfg,
                offer,
                state: Mutex::new(State {
                    book,
                    tx: HashMap::new(),
                    wakers: HashMap::new(),
                }),
                attached: Notify::new(),
                emitter,
                claiming: tokio::sync::Mutex::new(()),
                store: Mutex::new(None),
                tasks: Default::default(),
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The terms offered.
    pub fn terms(&self) -> Terms {
        self.inner.cfg.terms
    }

    /// Whether `peer` has an attached channel and is served now.
    pub fn is_paying(&self, peer: &PeerId) -> bool {
        self.lock().book.is_paying(peer)
    }

    /// Waits for `peer` to attach a channel (a request can arrive before
    /// the payer's attach does), as long as its [`PayWait`] allows: true
    /// once it pays.
    pub async fn wait_paying(&self, peer: &PeerId, wait: Duration) -> bool {
        let mut gate = PayWait::new(Instant::now(), wait);
        loop {
            let attached = self.inner.attached.notified();
            let now = Instant::now();
            gate.handle_paying(self.is_paying(peer));
            if gate.poll_timeout().is_some_and(|t| t <= now) {
                gate.handle_timeout(now);
            }
            match (gate.poll_action(), gate.poll_timeout()) {
                (Some(verdict), _) => return verdict == PayVerdict::Paid,
                (None, Some(at)) => tokio::select! {
                    _ = attached => {}
                    _ = tokio::time::sleep_until(at.into()) => {}
                },
                (None, None) => return false,
            }
        }
    }

    /// Whether `dst` (billed as a circuit's destination) pays for circuits
    /// from `src`.
    pub fn consents_to(&self, dst: &PeerId, src: &PeerId) -> bool {
        self.lock().book.consents_to(dst, src)
    }

    /// Every account as the book has it (the payments report).
    pub fn report(&self) -> Vec<ledgermesh_protocol::payment::book::AccountReport> {
        self.lock().book.report()
    }

    /// [`Payees::report`] for the operator's view, which knows no payees.
    pub fn book_reader(&self) -> crate::ops::PayeeBook {
        let payees = self.clone();
        std::sync::Arc::new(move || payees.report())
    }

    /// The bytes billed to `peer`'s channel so far (every peer bound to it).
    pub fn billed_bytes(&self, peer: &PeerId) -> Option<u64> {
        let st = self.lock();
        let ch = st.book.channel_of(peer)?;
        Some(st.book.machine(&ch)?.bytes())
    }

    /// Metered service billed to `peer`, if it has an account.
    pub fn budget(&self, peer: &PeerId) -> Option<Budget> {
        let bound = self.lock().book.channel_of(peer).is_some();
        bound.then(|| Budget::new(self.clone(), *peer))
    }

    /// `peer` held a reservation for `d` more.
    pub fn held_for(&self, peer: &PeerId, d: Duration) {
        self.with_book(|b| b.held_for(peer, d, Instant::now()));
    }

    /// Invoices `peer` for everything still unpaid (a service ended: what
    /// is owed below half the window would otherwise never be asked for).
    pub fn invoice_now(&self, peer: &PeerId) {
        self.with_book(|b| b.invoice_now(peer));
    }

    /// Invoices every account that owes more than it paid and whose bytes
    /// have not moved since the last call (`seen`, kept by the caller):
    /// for service with no end of its own (an exit's packets), what is owed
    /// below half the window is asked for once the traffic pauses; once per
    /// pause (an account that does not pay is not asked every second).
    pub fn invoice_quiet(&self, seen: &mut HashMap<ChannelId, (u64, bool)>) {
        let report = self.report();
        let mut quiet = vec![];
        for a in &report {
            let (bytes, asked) = seen.get(&a.channel).copied().unwrap_or((u64::MAX, false));
            let still = bytes == a.bytes;
            let ask = still && !asked && a.owed > a.paid;
            seen.insert(a.channel, (a.bytes, still && (asked || ask)));
            if ask {
                quiet.extend(a.peers.first().copied());
            }
        }
        seen.retain(|ch, _| report.iter().any(|a| a.channel == *ch));
        for peer in quiet {
            self.invoice_now(&peer);
        }
    }

    /// Tells `peer` why it is refused (over its pay stream, if it has one).
    pub fn refuse(&self, peer: &PeerId, code: RefusalCode, reason: &str) {
        let tx = self.lock().tx.get(peer).cloned();
        if let Some(tx) = tx {
            let _ = tx.try_send(PayMsg::Refuse {
                code,
                reason: reason.into(),
            });
        }
    }

    /// The voucher file's highest voucher for `channel`, from an earlier run.
    fn kept(&self, channel: &ChannelId) -> Option<SignedVoucher> {
        let store = self.inner.store.lock().unwrap_or_else(|p| p.into_inner());
        store.as_ref()?.highest(channel)
    }
}

fn refusal(code: RefusalCode, reason: &str) -> PayMsg {
    PayMsg::Refuse {
        code,
        reason: reason.into(),
    }
}
