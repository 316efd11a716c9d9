//! Payment channels in memory: one [`MemoryChain`] (balances, channels, a
//! clock tests can move) shared by a [`MemoryPayments`] handle per account.
//! It keeps the contract's rules, checks vouchers the same way, and signs
//! them with real keys; only the chain is pretend.

use super::{
    voucher, ChannelId, ChannelState, Domain, PayError, PaymentChannels, SignedVoucher, TxCost, Wei,
};
use crate::BoxFuture;
use alloy::primitives::{keccak256, Address};
use alloy::signers::local::PrivateKeySigner;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The contract's close delay, kept here too.
pub const CLOSE_DELAY: Duration = Duration::from_secs(24 * 3600);

#[derive(Default)]
struct State {
    balances: HashMap<Address, Wei>,
    channels: HashMap<ChannelId, ChannelState>,
    opened: u64,
    /// Seconds added to the wall clock (tests move time forward).
    skew: u64,
}

/// The pretend chain: balances, channels and a clock.
#[derive(Clone, Default)]
pub struct MemoryChain {
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for MemoryChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryChain").finish_non_exhaustive()
    }
}

/// The domain of the pretend chain's vouchers.
pub const DOMAIN: Domain = Domain {
    chain_id: 0x6c6d, // "lm"
    contract: Address::repeat_byte(0x6c),
};

impl MemoryChain {
    /// An empty chain.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Gives `account` `amount` more to spend.
    pub fn fund(&self, account: Address, amount: Wei) {
        *self.lock().balances.entry(account).or_default() += amount;
    }

    /// What `account` holds.
    pub fn balance(&self, account: Address) -> Wei {
        self.lock().balances.get(&account).copied().unwrap_or(0)
    }

    /// Moves the chain's clock forward.
    pub fn advance(&self, by: Duration) {
        self.lock().skew += by.as_secs();
    }

    fn now(&self, st: &State) -> u64 {
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        wall + st.skew
    }

    /// A handle for the account of `key`.
    pub fn account(&self, key: PrivateKeySigner) -> MemoryPayments {
        MemoryPayments {
            chain: self.clone(),
            key,
        }
    }
}

/// One account's view of a [`MemoryChain`].
#[derive(Clone)]
pub struct MemoryPayments {
    chain: MemoryChain,
    key: PrivateKeySigner,
}

impl std::fmt::Debug for MemoryPayments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryPayments")
            .field("account", &self.key.address())
            .finish()
    }
}

fn ready<T: Send + 'static>(v: T) -> BoxFuture<'static, T> {
    Box::pin(std::future::ready(v))
}

impl MemoryPayments {
    fn me(&self) -> Address {
        self.key.address()
    }

    fn debit(st: &mut State, who: Address, amount: Wei) -> Result<(), PayError> {
        let bal = st.balances.entry(who).or_default();
        if *bal < amount {
            return Err(PayError::InsufficientFunds(format!(
                "{who} holds {bal}, needs {amount}"
            )));
        }
        *bal -= amount;
        Ok(())
    }

    fn settle(st: &mut State, v: &SignedVoucher) -> Result<Wei, PayError> {
        let c = st
            .channels
            .get_mut(&v.channel)
            .ok_or(PayError::NoSuchChannel)?;
        voucher::verify(&DOMAIN, v, c.payer).map_err(|_| PayError::BadSignature)?;
        let owed = v.cumulative.min(c.deposit);
        if owed <= c.claimed {
            return Err(PayError::NothingToClaim {
                cumulative: v.cumulative,
                claimed: c.claimed,
            });
        }
        let amount = owed - c.claimed;
        c.claimed = owed;
        Ok(amount)
    }

    fn finish(st: &mut State, id: ChannelId) {
        if let Some(c) = st.channels.remove(&id) {
            *st.balances.entry(c.payer).or_default() += c.deposit - c.claimed;
        }
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut State, u64) -> Result<T, PayError>,
    ) -> Result<T, PayError> {
        let mut st = self.chain.lock();
        let now = self.chain.now(&st);
        f(&mut st, now)
    }
}

impl PaymentChannels for MemoryPayments {
    fn describe(&self) -> String {
        "memory".into()
    }

    fn domain(&self) -> Domain {
        DOMAIN
    }

    fn account(&self) -> Option<Address> {
        Some(self.me())
    }

    fn close_delay(&self) -> Duration {
        CLOSE_DELAY
    }

    fn chain_now(&self) -> u64 {
        let st = self.chain.lock();
        self.chain.now(&st)
    }

    fn open(
        &self,
        payee: Address,
        deposit: Wei,
    ) -> BoxFuture<'_, Result<(ChannelId, TxCost), PayError>> {
        let me = self.me();
        ready(self.with(|st, _| {
            if deposit == 0 {
                return Err(PayError::ZeroDeposit);
            }
            if payee == Address::ZERO || payee == me {
                return Err(PayError::BadPayee);
            }
            Self::debit(st, me, deposit)?;
            let mut pre = Vec::with_capacity(80);
            pre.extend_from_slice(&DOMAIN.chain_id.to_be_bytes());
            pre.extend_from_slice(me.as_slice());
            pre.extend_from_slice(payee.as_slice());
            pre.extend_from_slice(&st.opened.to_be_bytes());
            let id = keccak256(&pre).0;
            st.opened += 1;
            st.channels.insert(
                id,
                ChannelState {
                    id,
                    payer: me,
                    payee,
                    deposit,
                    claimed: 0,
                    closes_at: None,
                },
            );
            Ok((id, TxCost::default()))
        }))
    }

    fn top_up(&self, id: ChannelId, amount: Wei) -> BoxFuture<'_, Result<TxCost, PayError>> {
        let me = self.me();
        ready(self.with(|st, _| {
            let c = st.channels.get(&id).ok_or(PayError::NoSuchChannel)?;
            if c.payer != me {
                return Err(PayError::NotPayer);
            }
            if c.closes_at.is_some() {
                return Err(PayError::Closing);
            }
            if amount == 0 {
                return Err(PayError::ZeroDeposit);
            }
            Self::debit(st, me, amount)?;
            if let Some(c) = st.channels.get_mut(&id) {
                c.deposit += amount;
            }
            Ok(TxCost::default())
        }))
    }

    fn channel(&self, id: ChannelId) -> BoxFuture<'_, Result<Option<ChannelState>, PayError>> {
        ready(self.with(|st, _| Ok(st.channels.get(&id).cloned())))
    }

    fn channels_of(&self, account: Address) -> BoxFuture<'_, Result<Vec<ChannelState>, PayError>> {
        ready(self.with(|st, _| {
            let mut v: Vec<ChannelState> = (st.channels.values())
                .filter(|c| c.payer == account || c.payee == account)
                .cloned()
                .collect();
            v.sort_by_key(|c| c.id);
            Ok(v)
        }))
    }

    fn claim(&self, v: SignedVoucher) -> BoxFuture<'_, Result<(Wei, TxCost), PayError>> {
        let me = self.me();
        ready(self.with(|st, _| {
            let c = st.channels.get(&v.channel).ok_or(PayError::NoSuchChannel)?;
            if c.payee != me {
                return Err(PayError::NotPayee);
            }
            let amount = Self::settle(st, &v)?;
            *st.balances.entry(me).or_default() += amount;
            Ok((amount, TxCost::default()))
        }))
    }

    fn claim_and_close(
        &self,
        id: ChannelId,
        v: Option<SignedVoucher>,
    ) -> BoxFuture<'_, Result<TxCost, PayError>> {
        let me = self.me();
        ready(self.with(|st, _| {
            let c = st.channels.get(&id).ok_or(PayError::NoSuchChannel)?;
            if c.payee != me {
                return Err(PayError::NotPayee);
            }
            let claimed = c.claimed;
            let mut amount = 0;
            if let Some(v) = v.filter(|v| v.cumulative > claimed) {
                if v.channel != id {
                    // The contract checks the signature against `id`.
                    return Err(PayError::BadSignature);
                }
                amount = Self::settle(st, &v)?;
            }
            *st.balances.entry(me).or_default() += amount;
            Self::finish(st, id);
            Ok(TxCost::default())
        }))
    }

    fn start_close(&self, id: ChannelId) -> BoxFuture<'_, Result<TxCost, PayError>> {
        let me = self.me();
        ready(self.with(|st, now| {
            let c = st.channels.get_mut(&id).ok_or(PayError::NoSuchChannel)?;
            if c.payer != me {
                return Err(PayError::NotPayer);
            }
            if c.closes_at.is_some() {
                return Err(PayError::Closing);
            }
            c.closes_at = Some(now + CLOSE_DELAY.as_secs());
            Ok(TxCost::default())
        }))
    }

    fn finish_close(&self, id: ChannelId) -> BoxFuture<'_, Result<TxCost, PayError>> {
        let me = self.me();
        ready(self.with(|st, now| {
            let c = st.channels.get(&id).ok_or(PayError::NoSuchChannel)?;
            if c.payer != me {
                return Err(PayError::NotPayer);
            }
            let closes_at = c.closes_at.ok_or(PayError::NotClosing)?;
            if now < closes_at {
                return Err(PayError::TooEarly { closes_at });
            }
            Self::finish(st, id);
            Ok(TxCost::default())
        }))
    }

    fn sign(&self, id: ChannelId, cumulative: Wei) -> Result<SignedVoucher, PayError> {
        Ok(voucher::sign(&self.key, &DOMAIN, id, cumulative))
    }

    fn bind(&self, id: ChannelId, peer_id: &[u8]) -> Result<[u8; 65], PayError> {
        Ok(voucher::sign_binding(&self.key, &DOMAIN, id, peer_id))
    }
}
