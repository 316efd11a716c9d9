//! The payee's side: every paying peer's account (its channel and the
//! protocol crate's `Payee` machine), the pay streams that feed them, the
//! [`Budget`] through which metered service (a relay's circuits) asks for
//! room and reports bytes, and the claims that turn vouchers into money.

use super::{hex_id, PayStream, PAY};
use crate::events::{Emitter, Event};
use futures::StreamExt;
use ledgermesh_ledger::payments::{PayError, PaymentChannels, SignedVoucher};
use ledgermesh_protocol::payment::wire::{Offer, PayMsg, RefusalCode};
use ledgermesh_protocol::payment::{CreditPolicy, Payee, PayeeAction, Terms, VoucherRefusal, Wei};
use libp2p::PeerId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Notify};

/// Accounts held at once (each a paying peer).
const MAX_ACCOUNTS: usize = 4_096;

/// How often the channels of payers with unclaimed vouchers are checked
/// for a close in progress.
const CLOSE_CHECK: Duration = Duration::from_secs(30);

/// Pay streams served at once.
const MAX_STREAMS: usize = 1_024;

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

struct Account {
    channel: [u8; 32],
    payer: alloy::primitives::Address,
    machine: Payee,
    latest: Option<SignedVoucher>,
    claimed: Wei,
    /// A claim is on its way to the chain.
    claiming: bool,
    wakers: Vec<Waker>,
    /// To the payer's pay stream (invoices, refusals).
    tx: Option<mpsc::Sender<PayMsg>>,
}

struct Inner {
    cfg: PayeeConfig,
    offer: Offer,
    accounts: Mutex<HashMap<PeerId, Account>>,
    attached: Notify,
    emitter: Emitter,
    claiming: tokio::sync::Mutex<()>,
    /// Where accepted vouchers are kept until claimed.
    store: Mutex<Option<Arc<super::store::VoucherStore>>>,
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
    pub fn new(cfg: PayeeConfig, emitter: Emitter) -> anyhow::Result<Self> {
        let me = cfg
            .channels
            .account()
            .ok_or_else(|| anyhow::anyhow!("a priced node needs a ledger key (--ledger-key)"))?;
        let domain = cfg.channels.domain();
        let offer = Offer {
            terms: cfg.terms,
            chain_id: domain.chain_id,
            contract: domain.contract.0 .0,
            payee: me.0 .0,
            credit: cfg.policy.initial,
        };
        Ok(Self {
            inner: Arc::new(Inner {
                cfg,
                offer,
                accounts: Mutex::new(HashMap::new()),
                attached: Notify::new(),
                emitter,
                claiming: tokio::sync::Mutex::new(()),
                store: Mutex::new(None),
            }),
        })
    }

    /// Keeps accepted vouchers under `dir` (synced before each is
    /// acknowledged) and claims those a previous run left unclaimed.
    pub async fn keep_vouchers_in(&self, dir: &std::path::Path) -> std::io::Result<()> {
        let d = dir.to_path_buf();
        let (store, left) =
            tokio::task::spawn_blocking(move || super::store::VoucherStore::open(&d))
                .await
                .map_err(std::io::Error::other)??;
        let store = Arc::new(store);
        *self.inner.store.lock().unwrap_or_else(|p| p.into_inner()) = Some(store.clone());
        let mut unclaimed = vec![];
        for (payer, v) in left {
            match self.inner.cfg.channels.claim(v.clone()).await {
                Ok((amount, cost)) => self.inner.emitter.emit(Event::Claimed {
                    channel: hex_id(&v.channel),
                    amount: amount.to_string(),
                    tx: cost.tx,
                    gas_used: cost.gas_used,
                }),
                Err(PayError::NothingToClaim { .. } | PayError::NoSuchChannel) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "a voucher from before the restart is not claimed yet");
                    unclaimed.push((payer, v));
                }
            }
        }
        tokio::task::spawn_blocking(move || store.compact(&unclaimed))
            .await
            .map_err(std::io::Error::other)?
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PeerId, Account>> {
        self.inner
            .accounts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The terms offered.
    pub fn terms(&self) -> Terms {
        self.inner.cfg.terms
    }

    /// Whether `peer` has an attached channel and is served now.
    pub fn is_paying(&self, peer: &PeerId) -> bool {
        self.lock().get(peer).is_some_and(|a| a.machine.serving())
    }

    /// Waits up to `wait` for `peer` to attach a channel (a reservation can
    /// arrive before the payer's attach does).
    pub async fn wait_paying(&self, peer: &PeerId, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.inner.attached.notified();
            if self.is_paying(peer) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.is_paying(peer);
            }
        }
    }

    /// Metered service billed to `peer`, if it has an account.
    pub fn budget(&self, peer: &PeerId) -> Option<Budget> {
        self.lock().contains_key(peer).then(|| Budget {
            payees: self.clone(),
            peer: *peer,
        })
    }

    /// `peer` held a reservation for `d` more.
    pub fn held_for(&self, peer: &PeerId, d: Duration) {
        let actions = {
            let mut acc = self.lock();
            let Some(a) = acc.get_mut(peer) else { return };
            a.machine.held_for(d, Instant::now())
        };
        self.apply(peer, actions);
    }

    /// Invoices `peer` for everything still unpaid (a service ended: what
    /// is owed below half the window would otherwise never be asked for).
    pub fn invoice_now(&self, peer: &PeerId) {
        let (tx, msg) = {
            let acc = self.lock();
            let Some(a) = acc.get(peer) else { return };
            if a.machine.unpaid() == 0 {
                return;
            }
            let msg = PayMsg::Invoice {
                owed: a.machine.owed(),
                bytes: a.machine.bytes(),
            };
            (a.tx.clone(), msg)
        };
        if let Some(tx) = tx {
            let _ = tx.try_send(msg);
        }
    }

    /// Tells `peer` why it is refused (over its pay stream, if it has one).
    pub fn refuse(&self, peer: &PeerId, code: RefusalCode, reason: &str) {
        let tx = self.lock().get(peer).and_then(|a| a.tx.clone());
        if let Some(tx) = tx {
            let _ = tx.try_send(PayMsg::Refuse {
                code,
                reason: reason.into(),
            });
        }
    }

    /// Serves pay streams until the node stops.
    pub async fn serve(self, mut control: libp2p_stream::Control) {
        let mut incoming = match control.accept(PAY) {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(error = %e, "pay protocol already served");
                return;
            }
        };
        let permits = Arc::new(tokio::sync::Semaphore::new(MAX_STREAMS));
        let mut ticks = tokio::time::interval(Duration::from_secs(1));
        let mut closes = tokio::time::interval(CLOSE_CHECK);
        closes.tick().await;
        loop {
            tokio::select! {
                next = incoming.next() => {
                    let Some((peer, stream)) = next else { break };
                    let Ok(permit) = permits.clone().try_acquire_owned() else {
                        tracing::debug!(%peer, "too many pay streams; dropped");
                        continue;
                    };
                    let me = self.clone();
                    tokio::spawn(async move {
                        let _permit = permit;
                        me.session(peer, PayStream::new(stream)).await;
                    });
                }
                _ = ticks.tick() => self.tick(),
                _ = closes.tick() => {
                    let me = self.clone();
                    tokio::spawn(async move { me.claim_closing().await });
                }
            }
        }
    }

    /// Cuts the payers paused past their grace.
    fn tick(&self) {
        let now = Instant::now();
        let cut: Vec<PeerId> = {
            let mut acc = self.lock();
            acc.iter_mut()
                .filter_map(|(p, a)| (a.machine.tick(now) == Some(PayeeAction::Cut)).then_some(*p))
                .collect()
        };
        for p in cut {
            self.apply(&p, vec![PayeeAction::Cut]);
        }
    }

    async fn session(&self, peer: PeerId, mut s: PayStream) {
        let (tx, mut rx) = mpsc::channel::<PayMsg>(16);
        loop {
            let msg = tokio::select! {
                out = rx.recv() => {
                    let Some(out) = out else { break };
                    if s.send(&out).await.is_err() {
                        break;
                    }
                    continue;
                }
                m = s.recv() => m,
            };
            let msg = match msg {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(e) => {
                    let _ = s
                        .send(&PayMsg::Refuse {
                            code: RefusalCode::Malformed,
                            reason: e.to_string(),
                        })
                        .await;
                    break;
                }
            };
            let answer = match msg {
                PayMsg::Hello => Some(PayMsg::Terms(self.inner.offer)),
                PayMsg::Attach { channel, binding } => {
                    Some(self.attach(peer, channel, binding, tx.clone()).await)
                }
                PayMsg::Voucher {
                    channel,
                    cumulative,
                    signature,
                } => {
                    let mut answer = self.voucher(peer, channel, cumulative, signature);
                    if matches!(
                        answer,
                        PayMsg::Refuse {
                            code: RefusalCode::OverDeposit,
                            ..
                        }
                    ) {
                        // The payer may have topped up: read the deposit again.
                        if let Ok(Some(c)) = self.inner.cfg.channels.channel(channel).await {
                            let actions = (self.lock().get_mut(&peer))
                                .map(|a| a.machine.deposit_changed(c.deposit, Instant::now()));
                            self.apply(&peer, actions.unwrap_or_default());
                            answer = self.voucher(peer, channel, cumulative, signature);
                        }
                    }
                    if matches!(answer, PayMsg::Ack { .. }) {
                        // Money owed to us: on disk before the payer hears it landed.
                        let v = SignedVoucher {
                            channel,
                            cumulative,
                            signature,
                        };
                        self.persist(peer, v).await;
                        let bytes = self.lock().get(&peer).map_or(0, |a| a.machine.bytes());
                        self.inner.emitter.emit(Event::VoucherReceived {
                            payer: peer.to_string(),
                            channel: hex_id(&channel),
                            cumulative: cumulative.to_string(),
                            bytes,
                        });
                    }
                    Some(answer)
                }
                PayMsg::Refuse { code, reason } => {
                    self.inner.emitter.emit(Event::PaymentRefused {
                        peer_id: peer.to_string(),
                        reason: code.as_str().into(),
                        detail: format!("the payer refused: {reason}"),
                    });
                    None
                }
                other => Some(refusal(
                    RefusalCode::Malformed,
                    &format!("unexpected {other:?} from a payer"),
                )),
            };
            if let Some(a) = answer {
                if let PayMsg::Refuse { code, reason } = &a {
                    self.inner.emitter.emit(Event::PaymentRefused {
                        peer_id: peer.to_string(),
                        reason: code.as_str().into(),
                        detail: reason.clone(),
                    });
                }
                if s.send(&a).await.is_err() {
                    break;
                }
            }
            self.maybe_claim(&peer);
        }
        if let Some(a) = self.lock().get_mut(&peer) {
            a.tx = None;
        }
        s.close().await;
    }

    async fn attach(
        &self,
        peer: PeerId,
        channel: [u8; 32],
        binding: [u8; 65],
        tx: mpsc::Sender<PayMsg>,
    ) -> PayMsg {
        let chans = &self.inner.cfg.channels;
        let me = chans.account().expect("checked in new");
        let state = match chans.channel(channel).await {
            Ok(Some(c)) => c,
            Ok(None) => return refusal(RefusalCode::NoChannel, "no such channel on the ledger"),
            Err(e) => return refusal(RefusalCode::Unavailable, &e.to_string()),
        };
        if state.payee != me {
            return refusal(RefusalCode::NoChannel, "the channel pays someone else");
        }
        if state.closes_at.is_some() {
            return refusal(RefusalCode::NoChannel, "the channel is closing");
        }
        let min = self.inner.cfg.terms.min_deposit;
        if state.deposit < min {
            return refusal(
                RefusalCode::DepositTooLow,
                &format!("deposit {} below the minimum {min}", state.deposit),
            );
        }
        let domain = chans.domain();
        let bound = ledgermesh_ledger::payments::voucher::verify_binding(
            &domain,
            channel,
            &peer.to_bytes(),
            &binding,
            state.payer,
        );
        if let Err(e) = bound {
            return refusal(RefusalCode::BadBinding, &e.to_string());
        }
        let (paid, window) = {
            let mut acc = self.lock();
            if acc.len() >= MAX_ACCOUNTS && !acc.contains_key(&peer) {
                return refusal(RefusalCode::Other, "too many payers");
            }
            let cfg = &self.inner.cfg;
            let fresh = || Account {
                channel,
                payer: state.payer,
                machine: Payee::new(cfg.terms, cfg.policy, state.deposit),
                latest: None,
                claimed: state.claimed,
                claiming: false,
                wakers: vec![],
                tx: None,
            };
            let a = acc.entry(peer).or_insert_with(fresh);
            if a.channel != channel {
                // A new channel starts a new account (the old one's vouchers
                // were claimed or are lost to the payee, not the payer).
                *a = fresh();
            }
            a.tx = Some(tx);
            let actions = a.machine.deposit_changed(state.deposit, Instant::now());
            drop(acc);
            self.apply(&peer, actions);
            let acc = self.lock();
            let a = &acc[&peer];
            (a.machine.paid(), a.machine.window())
        };
        self.inner.attached.notify_waiters();
        // A payer coming back unpaid (paused or cut) hears what it owes.
        let owing = (self.lock().get(&peer))
            .filter(|a| !a.machine.serving() && a.machine.unpaid() > 0)
            .map(|a| (a.machine.owed(), a.machine.bytes()));
        if let Some((owed, bytes)) = owing {
            let tx = self.lock().get(&peer).and_then(|a| a.tx.clone());
            if let Some(tx) = tx {
                let _ = tx.try_send(PayMsg::Invoice { owed, bytes });
            }
        }
        PayMsg::Ack { paid, window }
    }

    fn voucher(
        &self,
        peer: PeerId,
        channel: [u8; 32],
        cumulative: Wei,
        signature: [u8; 65],
    ) -> PayMsg {
        let v = SignedVoucher {
            channel,
            cumulative,
            signature,
        };
        let payer = {
            let acc = self.lock();
            let Some(a) = acc.get(&peer) else {
                return refusal(RefusalCode::NoChannel, "attach a channel first");
            };
            if a.channel != channel {
                return refusal(RefusalCode::BadVoucher, "a voucher for another channel");
            }
            a.payer
        };
        if let Err(e) = self.inner.cfg.channels.verify(&v, payer) {
            return refusal(RefusalCode::BadVoucher, &e.to_string());
        }
        let result = {
            let mut acc = self.lock();
            let Some(a) = acc.get_mut(&peer) else {
                return refusal(RefusalCode::NoChannel, "attach a channel first");
            };
            let r = a.machine.voucher(cumulative, Instant::now());
            if r.is_ok() {
                a.latest = Some(v);
            }
            r.map(|acts| (acts, a.machine.paid(), a.machine.window()))
        };
        match result {
            Ok((actions, paid, window)) => {
                self.apply(&peer, actions);
                PayMsg::Ack { paid, window }
            }
            Err(e) => {
                let code = match e {
                    VoucherRefusal::NotIncreasing { .. } => RefusalCode::NotIncreasing,
                    VoucherRefusal::OverDeposit { .. } => RefusalCode::OverDeposit,
                    _ => RefusalCode::Unpaid,
                };
                refusal(code, &e.to_string())
            }
        }
    }

    async fn persist(&self, peer: PeerId, v: SignedVoucher) {
        let store = self
            .inner
            .store
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(store) = store {
            let written = tokio::task::spawn_blocking(move || store.append(&peer, &v)).await;
            if let Err(e) = written.map_err(std::io::Error::other).and_then(|r| r) {
                self.inner.emitter.emit(Event::error(
                    "vouchers",
                    format!("cannot keep a voucher: {e}"),
                ));
            }
        }
    }

    /// Carries out what the machine decided for `peer`.
    fn apply(&self, peer: &PeerId, actions: Vec<PayeeAction>) {
        for act in actions {
            let (tx, wake) = {
                let mut acc = self.lock();
                let Some(a) = acc.get_mut(peer) else { return };
                let wake = matches!(act, PayeeAction::Resume | PayeeAction::Cut)
                    .then(|| std::mem::take(&mut a.wakers))
                    .unwrap_or_default();
                (a.tx.clone(), wake)
            };
            wake.into_iter().for_each(Waker::wake);
            if act == PayeeAction::Resume {
                // Whoever waits for this payer to be served again.
                self.inner.attached.notify_waiters();
            }
            let msg = match act {
                PayeeAction::Invoice { owed } => {
                    let bytes = self
                        .lock()
                        .get(peer)
                        .map(|a| a.machine.bytes())
                        .unwrap_or(0);
                    Some(PayMsg::Invoice { owed, bytes })
                }
                PayeeAction::Cut => {
                    self.inner.emitter.emit(Event::PaymentRefused {
                        peer_id: peer.to_string(),
                        reason: RefusalCode::Unpaid.as_str().into(),
                        detail: "unpaid past the grace period: service cut".into(),
                    });
                    Some(refusal(RefusalCode::Unpaid, "unpaid past the grace period"))
                }
                PayeeAction::Pause | PayeeAction::Resume => None,
            };
            if let (Some(tx), Some(m)) = (tx, msg) {
                let _ = tx.try_send(m);
            }
        }
    }

    /// Claims `peer`'s latest voucher when enough is unclaimed, in a task
    /// of its own: a slow chain never holds up the pay stream (a paused
    /// payer's invoice must not wait behind a claim).
    fn maybe_claim(&self, peer: &PeerId) {
        let due = {
            let mut acc = self.lock();
            acc.get_mut(peer).and_then(|a| {
                let v = a.latest.clone()?;
                let due = !a.claiming
                    && v.cumulative.saturating_sub(a.claimed) >= self.inner.cfg.claim_threshold;
                a.claiming |= due;
                due.then_some(v)
            })
        };
        if let Some(v) = due {
            let (me, peer) = (self.clone(), *peer);
            tokio::spawn(async move {
                me.claim(&peer, v).await;
                if let Some(a) = me.lock().get_mut(&peer) {
                    a.claiming = false;
                }
            });
        }
    }

    async fn claim(&self, peer: &PeerId, v: SignedVoucher) {
        let _one = self.inner.claiming.lock().await;
        let channel = v.channel;
        let cumulative = v.cumulative;
        match self.inner.cfg.channels.claim(v).await {
            Ok((amount, cost)) => {
                if let Some(a) = self.lock().get_mut(peer) {
                    a.claimed = a.claimed.max(cumulative);
                }
                self.inner.emitter.emit(Event::Claimed {
                    channel: hex_id(&channel),
                    amount: amount.to_string(),
                    tx: cost.tx,
                    gas_used: cost.gas_used,
                });
            }
            Err(PayError::NothingToClaim { claimed, .. }) => {
                if let Some(a) = self.lock().get_mut(peer) {
                    a.claimed = a.claimed.max(claimed);
                }
            }
            Err(e) => {
                tracing::warn!(%peer, error = %e, "claim failed; kept for later");
                self.inner
                    .emitter
                    .emit(Event::error("claim", format!("claiming from {peer}: {e}")));
            }
        }
    }

    /// Claims at once from every payer whose channel is closing (its close
    /// delay is the last chance to claim).
    pub async fn claim_closing(&self) {
        for (p, v) in self.unclaimed() {
            match self.inner.cfg.channels.channel(v.channel).await {
                Ok(Some(c)) if c.closes_at.is_some() => {
                    tracing::info!(peer = %p, "the payer is closing its channel; claiming now");
                    self.claim(&p, v).await;
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "channel state unavailable"),
            }
        }
    }

    /// Every payer's latest voucher that owes more than was claimed.
    fn unclaimed(&self) -> Vec<(PeerId, SignedVoucher)> {
        let acc = self.lock();
        acc.iter()
            .filter_map(|(p, a)| {
                let v = a.latest.clone()?;
                (v.cumulative > a.claimed).then_some((*p, v))
            })
            .collect()
    }

    /// Claims every unclaimed voucher (on shutdown).
    pub async fn claim_all(&self) {
        for (p, v) in self.unclaimed() {
            self.claim(&p, v).await;
        }
    }
}

fn refusal(code: RefusalCode, reason: &str) -> PayMsg {
    PayMsg::Refuse {
        code,
        reason: reason.into(),
    }
}

/// Service billed to one payer: asks for room before carrying bytes and
/// reports what it carried.
#[derive(Clone)]
pub struct Budget {
    payees: Payees,
    peer: PeerId,
}

/// What a budget allows now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Room {
    /// This many bytes.
    Bytes(u64),
    /// None until paid (the caller is woken).
    Paused,
    /// None ever: cut, or the account is gone.
    Cut,
}

impl Budget {
    /// The room left; registers `cx` to be woken when a paused payer pays.
    pub fn poll_room(&self, cx: &mut Context<'_>) -> Room {
        let mut acc = self.payees.lock();
        let Some(a) = acc.get_mut(&self.peer) else {
            return Room::Cut;
        };
        if a.machine.is_cut() {
            return Room::Cut;
        }
        match a.machine.room() {
            0 => {
                if !a.wakers.iter().any(|w| w.will_wake(cx.waker())) {
                    a.wakers.push(cx.waker().clone());
                }
                Room::Paused
            }
            n => Room::Bytes(n),
        }
    }

    /// `bytes` were carried.
    pub fn served(&self, bytes: u64) {
        let actions = {
            let mut acc = self.payees.lock();
            let Some(a) = acc.get_mut(&self.peer) else {
                return;
            };
            a.machine.served(bytes, Instant::now())
        };
        self.payees.apply(&self.peer, actions);
    }

    /// The room left as a poll: pending while paused (woken on payment).
    pub fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<Room> {
        match self.poll_room(cx) {
            Room::Paused => Poll::Pending,
            r => Poll::Ready(r),
        }
    }
}
