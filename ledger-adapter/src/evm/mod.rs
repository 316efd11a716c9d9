//! The EVM ledger: the `SignalBoard` contract on any EVM chain, over JSON-RPC,
//! through alloy.
//!
//! Posting signs a `post(topic, payload)` transaction with the node's ledger
//! account key and waits for its receipt. Following polls `eth_getLogs` for
//! the contract's `Posted` events on one topic, in bounded block ranges, up to
//! the head minus `confirmations - 1`. Each message carries its
//! `(block, log index)` cursor; on an RPC error the follower reports it, backs
//! off and re-reads the same range, skipping what it already yielded, so an
//! outage loses and repeats nothing.

mod follow;
mod nudge;
mod pending;
mod post;

pub use nudge::{ws_url_for, RETRY as WS_RETRY, SUBSCRIBED_POLL};

use crate::{Cursor, LedgerError};
use alloy::network::TransactionBuilder;
use alloy::primitives::{Address, Bytes, U256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::TransactionRequest;
use alloy::signers::local::PrivateKeySigner;
use std::time::Duration;

alloy::sol! {
    /// The on-chain interface of `contracts/SignalBoard.sol` (checked against
    /// the committed ABI by a test).
    #[sol(rpc)]
    contract SignalBoard {
        event Posted(bytes32 indexed topic, address indexed sender, bytes payload);
        error PayloadTooLarge(uint256 length, uint256 max);
        function post(bytes32 topic, bytes calldata payload) external;
        function MAX_PAYLOAD() external view returns (uint256);
        function payments() external view returns (address);
    }
}

/// The committed compiler output (ABI and bytecode) of `SignalBoard.sol`.
pub const SIGNAL_BOARD_ARTIFACT: &str = include_str!("../../contracts/SignalBoard.json");

/// The contract's payload cap (`SignalBoard.MAX_PAYLOAD`).
pub const MAX_PAYLOAD: usize = 8192;

/// Deployment bytecode of SignalBoard, from the committed artifact.
pub fn signal_board_bytecode() -> Result<Bytes, EvmError> {
    let v: serde_json::Value = serde_json::from_str(SIGNAL_BOARD_ARTIFACT)
        .map_err(|e| EvmError::Artifact(e.to_string()))?;
    let hex = v["bytecode"]
        .as_str()
        .ok_or_else(|| EvmError::Artifact("no bytecode field".into()))?;
    hex.parse().map_err(|e| EvmError::Artifact(format!("{e}")))
}

/// Errors connecting to or setting up the EVM ledger.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EvmError {
    /// The spec is not `evm:RPC_URL@CONTRACT_ADDRESS`.
    #[error("bad EVM ledger spec {0:?}: expected evm:RPC_URL@CONTRACT_ADDRESS (e.g. evm:http://127.0.0.1:8545@0x5FbD…)")]
    BadSpec(String),
    /// The RPC URL does not parse.
    #[error("bad RPC URL {url:?}: {detail}")]
    BadUrl {
        /// The URL.
        url: String,
        /// Why.
        detail: String,
    },
    /// Nothing answers at the RPC URL.
    #[error("cannot reach the RPC endpoint {url}: {detail} (is the chain running? `ledgermesh devchain` starts a local one)")]
    Unreachable {
        /// The URL.
        url: String,
        /// Why.
        detail: String,
    },
    /// No contract at the address.
    #[error("no contract at {address} on chain {chain_id}: wrong address, or deploy one with `ledgermesh ledger deploy`")]
    NoContract {
        /// The address.
        address: Address,
        /// The chain.
        chain_id: u64,
    },
    /// The ledger key has no funds for gas.
    #[error("ledger account {address} has no funds on chain {chain_id}: it cannot pay gas to post; fund it first")]
    Unfunded {
        /// The account.
        address: Address,
        /// The chain.
        chain_id: u64,
    },
    /// The ledger key does not parse.
    #[error("bad ledger key: {0} (expected 32 bytes of hex, optionally 0x-prefixed)")]
    BadKey(String),
    /// The committed artifact is unusable.
    #[error("SignalBoard artifact: {0}")]
    Artifact(String),
    /// A transaction failed.
    #[error("transaction failed: {0}")]
    Transaction(String),
}

/// Parses `evm:RPC_URL@CONTRACT_ADDRESS`.
pub fn parse_spec(spec: &str) -> Result<(String, Address), EvmError> {
    let rest = spec
        .strip_prefix("evm:")
        .ok_or_else(|| EvmError::BadSpec(spec.into()))?;
    let (url, addr) = rest
        .rsplit_once('@')
        .ok_or_else(|| EvmError::BadSpec(spec.into()))?;
    let address: Address = addr.parse().map_err(|_| EvmError::BadSpec(spec.into()))?;
    Ok((url.to_string(), address))
}

/// Parses a hex private key.
pub fn parse_key(hex: &str) -> Result<PrivateKeySigner, EvmError> {
    hex.trim()
        .parse()
        .map_err(|e| EvmError::BadKey(format!("{e}")))
}

/// How the EVM ledger behaves.
#[derive(Debug, Clone)]
pub struct EvmOptions {
    /// A message is read once its block has this many confirmations (1 = the head block).
    pub confirmations: u64,
    /// How often a follower polls when caught up.
    pub poll_interval: Duration,
    /// Largest block range per `eth_getLogs`.
    pub max_block_range: u64,
    /// Timeout of each RPC call.
    pub rpc_timeout: Duration,
    /// Longest back-off between retries after an RPC error.
    pub max_backoff: Duration,
    /// A follower without a saved cursor starts this many blocks below the head.
    pub lookback_blocks: u64,
    /// Also read messages from the endpoint's pending block
    /// ([`crate::Ledger::follow_pending`]): a message is then seen as soon
    /// as it is submitted, not a block later. Each poll fetches the whole
    /// pending block (with `ws_url`, transactions are pushed and the polls
    /// are a 2 s safety net), so this suits a dev chain or a quiet chain, not
    /// a busy public one.
    pub read_pending: bool,
    /// A websocket endpoint (`ws://`, `wss://`) whose `eth_subscribe`
    /// notifications wake the followers: new heads for the mined blocks,
    /// new pending transactions for `read_pending`. Reads still go to the
    /// RPC URL; without it (or while it fails) followers only poll.
    pub ws_url: Option<String>,
}

impl Default for EvmOptions {
    fn default() -> Self {
        Self {
            confirmations: 1,
            poll_interval: Duration::from_millis(250),
            max_block_range: 2_000,
            rpc_timeout: Duration::from_secs(10),
            max_backoff: Duration::from_secs(5),
            lookback_blocks: 10_000,
            read_pending: false,
            ws_url: None,
        }
    }
}

/// A `Ledger` on the SignalBoard contract.
#[derive(Clone)]
pub struct EvmLedger {
    provider: DynProvider,
    url: String,
    contract: Address,
    account: Option<Address>,
    chain_id: u64,
    options: EvmOptions,
    /// The websocket for followers' wake-ups (opened on first use).
    ws: std::sync::Arc<nudge::WsLink>,
    /// Held from nonce to submission: concurrent posts are submitted one at
    /// a time (their receipts are awaited concurrently).
    send_lock: std::sync::Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for EvmLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EvmLedger")
            .field("url", &self.url)
            .field("contract", &self.contract)
            .field("account", &self.account)
            .field("chain_id", &self.chain_id)
            .finish_non_exhaustive()
    }
}

pub(crate) fn provider_for(
    url: &str,
    signer: Option<PrivateKeySigner>,
) -> Result<DynProvider, EvmError> {
    let parsed =
        alloy::transports::http::reqwest::Url::parse(url).map_err(|e| EvmError::BadUrl {
            url: url.into(),
            detail: e.to_string(),
        })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(EvmError::BadUrl {
            url: url.into(),
            detail: "only http:// and https:// endpoints are supported".into(),
        });
    }
    // Nonces come from the node's pending count on every post (not a local
    // counter): a submission the endpoint dropped would otherwise leave a gap
    // that wedges every later transaction. `EvmLedger::send_lock` keeps two
    // posts of ours from drawing the same nonce.
    Ok(match signer {
        Some(s) => ProviderBuilder::new()
            .disable_recommended_fillers()
            .with_gas_estimation()
            .with_simple_nonce_management()
            .fetch_chain_id()
            .wallet(s)
            .connect_http(parsed)
            .erased(),
        None => ProviderBuilder::new().connect_http(parsed).erased(),
    })
}

pub(crate) async fn timed<T, E: std::fmt::Display>(
    d: Duration,
    f: impl std::future::IntoFuture<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(d, f.into_future()).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {d:?}")),
    }
}

impl EvmLedger {
    /// Connects to `url`, checks the chain answers and that `contract` has code,
    /// and (with a `signer`) that the account can pay gas.
    pub async fn connect(
        url: &str,
        contract: Address,
        signer: Option<PrivateKeySigner>,
        options: EvmOptions,
    ) -> Result<Self, EvmError> {
        let account = signer.as_ref().map(|s| s.address());
        let provider = provider_for(url, signer)?;
        let unreachable = |detail: String| EvmError::Unreachable {
            url: url.into(),
            detail,
        };
        let chain_id = timed(options.rpc_timeout, provider.get_chain_id())
            .await
            .map_err(unreachable)?;
        let code = timed(options.rpc_timeout, provider.get_code_at(contract))
            .await
            .map_err(unreachable)?;
        if code.is_empty() {
            return Err(EvmError::NoContract {
                address: contract,
                chain_id,
            });
        }
        if let Some(address) = account {
            let balance = timed(options.rpc_timeout, provider.get_balance(address))
                .await
                .map_err(unreachable)?;
            if balance == U256::ZERO {
                return Err(EvmError::Unfunded { address, chain_id });
            }
        }
        Ok(Self {
            provider,
            url: url.into(),
            contract,
            account,
            chain_id,
            ws: std::sync::Arc::new(nudge::WsLink::new(options.ws_url.clone())),
            options,
            send_lock: Default::default(),
        })
    }

    /// Deploys SignalBoard with `signer` and returns its address.
    pub async fn deploy(url: &str, signer: PrivateKeySigner) -> Result<Address, EvmError> {
        let from = signer.address();
        let provider = provider_for(url, Some(signer))?;
        let t = Duration::from_secs(30);
        let unreachable = |detail: String| EvmError::Unreachable {
            url: url.into(),
            detail,
        };
        let chain_id = timed(t, provider.get_chain_id())
            .await
            .map_err(unreachable)?;
        let balance = timed(t, provider.get_balance(from))
            .await
            .map_err(unreachable)?;
        if balance == U256::ZERO {
            return Err(EvmError::Unfunded {
                address: from,
                chain_id,
            });
        }
        let tx = TransactionRequest::default()
            .with_from(from)
            .with_deploy_code(signal_board_bytecode()?);
        let pending = timed(t, provider.send_transaction(tx))
            .await
            .map_err(EvmError::Transaction)?;
        let receipt = timed(t, pending.get_receipt())
            .await
            .map_err(EvmError::Transaction)?;
        if !receipt.status() {
            return Err(EvmError::Transaction("deployment reverted".into()));
        }
        receipt
            .contract_address
            .ok_or_else(|| EvmError::Transaction("receipt has no contract address".into()))
    }

    /// The chain id.
    pub fn chain_id(&self) -> u64 {
        self.chain_id
    }

    /// The contract address.
    pub fn contract(&self) -> Address {
        self.contract
    }

    /// The posting account, if any.
    pub fn account(&self) -> Option<Address> {
        self.account
    }

    /// The cursor at the current head (follow from it to see only new messages).
    pub async fn head_cursor(&self) -> Result<Cursor, LedgerError> {
        let head = timed(self.options.rpc_timeout, self.provider.get_block_number())
            .await
            .map_err(LedgerError::Unavailable)?;
        Ok(Cursor {
            block: head,
            index: u64::MAX,
        })
    }
}
