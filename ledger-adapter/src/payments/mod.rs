//! Payment channels on the ledger: a payer locks a deposit for one payee
//! and pays off chain with [`SignedVoucher`]s (each the cumulative amount
//! owed); the payee claims on chain with the latest one. The payer can top
//! up and close; a close waits [`PaymentChannels::close_delay`] for the
//! payee's last claim, then refunds the rest.
//!
//! Two implementations behind one trait and one [`conformance`] suite: the
//! `PaymentChannels` contract on an EVM chain ([`EvmPayments`], deployed by
//! `SignalBoard` with itself, so the board's spec finds it) and an
//! in-memory one ([`MemoryPayments`]) for the demo and unit tests.

pub mod conformance;
pub mod evm;
pub mod memory;
pub mod voucher;

pub use evm::EvmPayments;
pub use memory::{MemoryChain, MemoryPayments};
pub use voucher::{SignedVoucher, VoucherError};

use crate::BoxFuture;
use alloy::primitives::Address;
use std::time::Duration;

/// A channel's id (`keccak256(chain, contract, payer, payee, n)` on chain).
pub type ChannelId = [u8; 32];

/// An amount of the chain's native currency, in its smallest unit (wei).
pub type Wei = u128;

/// Where vouchers are valid: one chain, one contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Domain {
    /// The chain id.
    pub chain_id: u64,
    /// The payment-channel contract.
    pub contract: Address,
}

/// A channel as the ledger holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelState {
    /// Its id.
    pub id: ChannelId,
    /// Who locked the deposit.
    pub payer: Address,
    /// Who may claim it.
    pub payee: Address,
    /// Locked in all (top-ups included).
    pub deposit: Wei,
    /// Paid to the payee so far.
    pub claimed: Wei,
    /// When the payer's close takes effect (Unix seconds), if closing.
    pub closes_at: Option<u64>,
}

/// What a transaction cost, where there is a chain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TxCost {
    /// Its hash.
    pub tx: Option<String>,
    /// Gas used.
    pub gas_used: Option<u64>,
}

/// Why a channel operation failed. The contract's reverts map one to one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PayError {
    /// No such channel (never opened, or finished).
    #[error("no such channel")]
    NoSuchChannel,
    /// Only the payer may do this.
    #[error("only the channel's payer may do this")]
    NotPayer,
    /// Only the payee may do this.
    #[error("only the channel's payee may do this")]
    NotPayee,
    /// A deposit or top-up of nothing.
    #[error("a deposit must be more than zero")]
    ZeroDeposit,
    /// Paying oneself, or nobody.
    #[error("bad payee")]
    BadPayee,
    /// The channel is closing: no more top-ups or closes.
    #[error("the channel is closing")]
    Closing,
    /// The channel is not closing.
    #[error("the channel is not closing")]
    NotClosing,
    /// The close delay has not passed.
    #[error("the close takes effect at {closes_at} (Unix seconds)")]
    TooEarly {
        /// When it may finish.
        closes_at: u64,
    },
    /// The voucher's signature is not the payer's (or is malleable).
    #[error("the voucher is not signed by the payer")]
    BadSignature,
    /// The voucher owes nothing beyond what was claimed.
    #[error("the voucher owes nothing more (cumulative {cumulative}, claimed {claimed})")]
    NothingToClaim {
        /// The voucher's amount.
        cumulative: Wei,
        /// Claimed so far.
        claimed: Wei,
    },
    /// The account cannot pay (the deposit, or gas).
    #[error("insufficient funds: {0}")]
    InsufficientFunds(String),
    /// This handle has no account key.
    #[error("no payment account key: pass --ledger-key FILE")]
    NoAccount,
    /// The ledger did not answer.
    #[error("ledger unavailable: {0}")]
    Unavailable(String),
    /// Anything else the ledger refused.
    #[error("refused: {0}")]
    Refused(String),
}

/// Payment channels on some ledger, seen from one account (the key that
/// signs transactions and, as payer, vouchers).
pub trait PaymentChannels: Send + Sync {
    /// What this is (`evm:…` or `memory`), for logs.
    fn describe(&self) -> String;

    /// Where vouchers are valid.
    fn domain(&self) -> Domain;

    /// This handle's account, if it has a key.
    fn account(&self) -> Option<Address>;

    /// How long a payer's close waits for the payee's last claim.
    fn close_delay(&self) -> Duration;

    /// The chain's clock in seconds, as a channel's `closes_at` counts
    /// (a real chain's blocks follow the wall clock).
    fn chain_now(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }

    /// Opens a channel to `payee` with `deposit`; its id.
    fn open(
        &self,
        payee: Address,
        deposit: Wei,
    ) -> BoxFuture<'_, Result<(ChannelId, TxCost), PayError>>;

    /// Adds `amount` to an open channel's deposit (payer).
    fn top_up(&self, id: ChannelId, amount: Wei) -> BoxFuture<'_, Result<TxCost, PayError>>;

    /// The channel's state, if it exists.
    fn channel(&self, id: ChannelId) -> BoxFuture<'_, Result<Option<ChannelState>, PayError>>;

    /// The channels this account pays or is paid through (open or closing).
    fn channels_of(&self, account: Address) -> BoxFuture<'_, Result<Vec<ChannelState>, PayError>>;

    /// Claims what `voucher` owes beyond what was claimed (payee); the
    /// amount paid.
    fn claim(&self, voucher: SignedVoucher) -> BoxFuture<'_, Result<(Wei, TxCost), PayError>>;

    /// Claims with `voucher` if it owes more, then closes at once (payee).
    fn claim_and_close(
        &self,
        id: ChannelId,
        voucher: Option<SignedVoucher>,
    ) -> BoxFuture<'_, Result<TxCost, PayError>>;

    /// Starts closing (payer): the payee may still claim for the delay.
    fn start_close(&self, id: ChannelId) -> BoxFuture<'_, Result<TxCost, PayError>>;

    /// Finishes a close once the delay has passed (payer): the rest comes back.
    fn finish_close(&self, id: ChannelId) -> BoxFuture<'_, Result<TxCost, PayError>>;

    /// Signs a voucher for `cumulative` on `id` with this account's key.
    fn sign(&self, id: ChannelId, cumulative: Wei) -> Result<SignedVoucher, PayError>;

    /// Signs the binding of channel `id` to the libp2p peer `peer_id`.
    fn bind(&self, id: ChannelId, peer_id: &[u8]) -> Result<[u8; 65], PayError>;

    /// Checks off chain that `payer` signed `voucher` for this domain.
    fn verify(&self, voucher: &SignedVoucher, payer: Address) -> Result<(), VoucherError> {
        voucher::verify(&self.domain(), voucher, payer)
    }
}
