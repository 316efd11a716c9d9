//! Payment channels on an EVM chain: the `PaymentChannels` contract that
//! `SignalBoard` deployed with itself, through alloy. Every revert maps to
//! its [`PayError`]; the gas each call used is reported.

use super::{
    voucher, ChannelId, ChannelState, Domain, PayError, PaymentChannels, SignedVoucher, TxCost, Wei,
};
use crate::evm::{parse_spec, provider_for, timed, EvmError, SignalBoard};
use crate::BoxFuture;
use alloy::primitives::{Address, Bytes, B256, U256};
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::{Filter, TransactionReceipt, TransactionRequest};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolEvent;
use std::time::Duration;

/// The contract's bindings (named like the contract, apart from the trait).
pub mod onchain {
    #![allow(missing_docs)]
    alloy::sol! {
    /// The on-chain interface of `contracts/PaymentChannels.sol` (checked
    /// against the committed ABI by a test).
    #[sol(rpc)]
    contract PaymentChannels {
        event Opened(bytes32 indexed id, address indexed payer, address indexed payee, uint256 deposit);
        event ToppedUp(bytes32 indexed id, uint256 amount, uint256 deposit);
        event Claimed(bytes32 indexed id, address indexed payee, uint256 amount, uint256 claimed);
        event CloseStarted(bytes32 indexed id, uint256 closesAt);
        event Closed(bytes32 indexed id, uint256 refunded, uint256 claimed);

        error NoSuchChannel(bytes32 id);
        error NotPayer(bytes32 id);
        error NotPayee(bytes32 id);
        error ZeroDeposit();
        error BadPayee();
        error DepositTooLarge();
        error Closing(bytes32 id);
        error NotClosing(bytes32 id);
        error TooEarly(bytes32 id, uint256 closesAt);
        error BadSignature();
        error NothingToClaim(bytes32 id, uint256 cumulative, uint256 claimed);
        error TransferFailed();

        function CLOSE_DELAY() external view returns (uint64);
        function VOUCHER_TYPEHASH() external view returns (bytes32);
        function opened() external view returns (uint256);
        function channels(bytes32 id) external view returns (address payer, uint64 closesAt, address payee, uint128 deposit, uint128 claimed);
        function domainSeparator() external view returns (bytes32);
        function voucherDigest(bytes32 id, uint128 cumulative) external view returns (bytes32);
        function open(address payee) external payable returns (bytes32 id);
        function topUp(bytes32 id) external payable;
        function claim(bytes32 id, uint128 cumulative, bytes calldata signature) external;
        function claimAndClose(bytes32 id, uint128 cumulative, bytes calldata signature) external;
        function startClose(bytes32 id) external;
        function finishClose(bytes32 id) external;
    }
    }
}

use onchain::PaymentChannels as Contract;

/// The committed compiler output (ABI and bytecode) of `PaymentChannels.sol`.
pub const PAYMENT_CHANNELS_ARTIFACT: &str = include_str!("../../contracts/PaymentChannels.json");

/// The payment channels of one board, seen from one account.
#[derive(Clone)]
pub struct EvmPayments {
    provider: DynProvider,
    url: String,
    contract: Address,
    chain_id: u64,
    signer: Option<PrivateKeySigner>,
    close_delay: Duration,
    rpc_timeout: Duration,
    send_lock: std::sync::Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for EvmPayments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EvmPayments")
            .field("url", &self.url)
            .field("contract", &self.contract)
            .field("account", &self.signer.as_ref().map(|s| s.address()))
            .finish_non_exhaustive()
    }
}

impl EvmPayments {
    /// The payment channels of the board `spec` (`evm:RPC_URL@BOARD`) names:
    /// the board says where its contract is.
    pub async fn connect(spec: &str, signer: Option<PrivateKeySigner>) -> Result<Self, EvmError> {
        let (url, board) = parse_spec(spec)?;
        let provider = provider_for(&url, signer.clone())?;
        let t = Duration::from_secs(10);
        let unreachable = |detail: String| EvmError::Unreachable {
            url: url.clone(),
            detail,
        };
        let chain_id = timed(t, provider.get_chain_id())
            .await
            .map_err(unreachable)?;
        let contract = timed(t, SignalBoard::new(board, &provider).payments().call())
            .await
            .map_err(|e| {
                EvmError::Artifact(format!(
                    "the board at {board} names no payment contract: {e}"
                ))
            })?;
        let delay = timed(t, Contract::new(contract, &provider).CLOSE_DELAY().call())
            .await
            .map_err(|e| {
                tracing::debug!(error = %e, %contract, "no payment contract");
                EvmError::NoContract {
                    address: contract,
                    chain_id,
                }
            })?;
        Ok(Self {
            provider,
            url,
            contract,
            chain_id,
            signer,
            close_delay: Duration::from_secs(delay),
            rpc_timeout: t,
            send_lock: Default::default(),
        })
    }

    /// The payment contract's address.
    pub fn contract(&self) -> Address {
        self.contract
    }

    fn from(&self) -> Result<Address, PayError> {
        self.signer
            .as_ref()
            .map(|s| s.address())
            .ok_or(PayError::NoAccount)
    }

    fn instance(&self) -> Contract::PaymentChannelsInstance<&DynProvider> {
        Contract::new(self.contract, &self.provider)
    }

    /// Sends `tx` from our account and waits for its receipt.
    async fn send(&self, tx: TransactionRequest) -> Result<TransactionReceipt, PayError> {
        let from = self.from()?;
        let tx = tx.from(from);
        let t = self.rpc_timeout;
        let sent = {
            let _one_at_a_time = self.send_lock.lock().await;
            tokio::time::timeout(t, self.provider.send_transaction(tx)).await
        };
        let pending = match sent {
            Err(_) => return Err(PayError::Unavailable(format!("no answer within {t:?}"))),
            Ok(Err(e)) => return Err(pay_error(&e)),
            Ok(Ok(p)) => p,
        };
        let receipt = timed(t * 3, pending.get_receipt())
            .await
            .map_err(PayError::Unavailable)?;
        if !receipt.status() {
            return Err(PayError::Refused(format!(
                "transaction {} reverted",
                receipt.transaction_hash
            )));
        }
        Ok(receipt)
    }
}

fn cost(r: &TransactionReceipt) -> TxCost {
    TxCost {
        tx: Some(format!("{}", r.transaction_hash)),
        gas_used: Some(r.gas_used),
    }
}

/// The contract's revert (decoded from an estimate or a send), as a `PayError`.
fn pay_error(e: &alloy::transports::TransportError) -> PayError {
    use Contract::PaymentChannelsErrors as E;
    if let Some(decoded) = e
        .as_error_resp()
        .and_then(|p| p.as_decoded_interface_error::<E>())
    {
        return match decoded {
            E::NoSuchChannel(_) => PayError::NoSuchChannel,
            E::NotPayer(_) => PayError::NotPayer,
            E::NotPayee(_) => PayError::NotPayee,
            E::ZeroDeposit(_) => PayError::ZeroDeposit,
            E::BadPayee(_) => PayError::BadPayee,
            E::DepositTooLarge(_) => PayError::Refused("deposit too large".into()),
            E::Closing(_) => PayError::Closing,
            E::NotClosing(_) => PayError::NotClosing,
            E::TooEarly(t) => PayError::TooEarly {
                closes_at: t.closesAt.saturating_to(),
            },
            E::BadSignature(_) => PayError::BadSignature,
            E::NothingToClaim(n) => PayError::NothingToClaim {
                cumulative: n.cumulative.saturating_to(),
                claimed: n.claimed.saturating_to(),
            },
            E::TransferFailed(_) => PayError::Refused("transfer failed".into()),
        };
    }
    let text = e.to_string();
    if text.contains("insufficient funds") {
        PayError::InsufficientFunds(text)
    } else if e.as_error_resp().is_some() {
        PayError::Refused(text)
    } else {
        PayError::Unavailable(text)
    }
}

fn state(id: ChannelId, c: Contract::channelsReturn) -> Option<ChannelState> {
    (c.payer != Address::ZERO).then(|| ChannelState {
        id,
        payer: c.payer,
        payee: c.payee,
        deposit: c.deposit,
        claimed: c.claimed,
        closes_at: (c.closesAt != 0).then_some(c.closesAt),
    })
}

impl PaymentChannels for EvmPayments {
    fn describe(&self) -> String {
        format!(
            "evm:{} payments {} (chain {})",
            self.url, self.contract, self.chain_id
        )
    }

    fn domain(&self) -> Domain {
        Domain {
            chain_id: self.chain_id,
            contract: self.contract,
        }
    }

    fn account(&self) -> Option<Address> {
        self.signer.as_ref().map(|s| s.address())
    }

    fn close_delay(&self) -> Duration {
        self.close_delay
    }

    fn open(
        &self,
        payee: Address,
        deposit: Wei,
    ) -> BoxFuture<'_, Result<(ChannelId, TxCost), PayError>> {
        Box::pin(async move {
            let tx = (self.instance().open(payee))
                .value(U256::from(deposit))
                .into_transaction_request();
            let receipt = self.send(tx).await?;
            let id = (receipt.inner.logs().iter())
                .filter(|l| l.address() == self.contract)
                .find_map(|l| Contract::Opened::decode_log(&l.inner).ok())
                .map(|ev| ev.data.id.0)
                .ok_or_else(|| PayError::Refused("no Opened event in the receipt".into()))?;
            Ok((id, cost(&receipt)))
        })
    }

    fn top_up(&self, id: ChannelId, amount: Wei) -> BoxFuture<'_, Result<TxCost, PayError>> {
        Box::pin(async move {
            let tx = (self.instance().topUp(B256::from(id)))
                .value(U256::from(amount))
                .into_transaction_request();
            Ok(cost(&self.send(tx).await?))
        })
    }

    fn channel(&self, id: ChannelId) -> BoxFuture<'_, Result<Option<ChannelState>, PayError>> {
        Box::pin(async move {
            let c = timed(
                self.rpc_timeout,
                self.instance().channels(B256::from(id)).call(),
            )
            .await
            .map_err(PayError::Unavailable)?;
            Ok(state(id, c))
        })
    }

    fn channels_of(&self, account: Address) -> BoxFuture<'_, Result<Vec<ChannelState>, PayError>> {
        Box::pin(async move {
            let opened = Filter::new()
                .address(self.contract)
                .event_signature(Contract::Opened::SIGNATURE_HASH)
                .from_block(0u64);
            let mut ids = vec![];
            for f in [
                opened
                    .clone()
                    .topic2(B256::left_padding_from(account.as_slice())),
                opened.topic3(B256::left_padding_from(account.as_slice())),
            ] {
                let logs = timed(self.rpc_timeout, self.provider.get_logs(&f))
                    .await
                    .map_err(PayError::Unavailable)?;
                ids.extend(logs.iter().filter_map(|l| l.topics().get(1).map(|t| t.0)));
            }
            ids.sort();
            ids.dedup();
            let mut out = vec![];
            for id in ids {
                if let Some(c) = self.channel(id).await? {
                    out.push(c);
                }
            }
            Ok(out)
        })
    }

    fn claim(&self, v: SignedVoucher) -> BoxFuture<'_, Result<(Wei, TxCost), PayError>> {
        Box::pin(async move {
            let tx = (self.instance())
                .claim(
                    B256::from(v.channel),
                    v.cumulative,
                    Bytes::from(v.signature.to_vec()),
                )
                .into_transaction_request();
            let receipt = self.send(tx).await?;
            let amount = (receipt.inner.logs().iter())
                .filter(|l| l.address() == self.contract)
                .find_map(|l| Contract::Claimed::decode_log(&l.inner).ok())
                .map(|ev| ev.data.amount.saturating_to())
                .unwrap_or(0);
            Ok((amount, cost(&receipt)))
        })
    }

    fn claim_and_close(
        &self,
        id: ChannelId,
        v: Option<SignedVoucher>,
    ) -> BoxFuture<'_, Result<TxCost, PayError>> {
        Box::pin(async move {
            let (cumulative, sig) = match v {
                Some(v) => (v.cumulative, v.signature.to_vec()),
                None => (0, vec![]),
            };
            let tx = (self.instance())
                .claimAndClose(B256::from(id), cumulative, Bytes::from(sig))
                .into_transaction_request();
            Ok(cost(&self.send(tx).await?))
        })
    }

    fn start_close(&self, id: ChannelId) -> BoxFuture<'_, Result<TxCost, PayError>> {
        Box::pin(async move {
            let tx = self
                .instance()
                .startClose(B256::from(id))
                .into_transaction_request();
            Ok(cost(&self.send(tx).await?))
        })
    }

    fn finish_close(&self, id: ChannelId) -> BoxFuture<'_, Result<TxCost, PayError>> {
        Box::pin(async move {
            let tx = self
                .instance()
                .finishClose(B256::from(id))
                .into_transaction_request();
            Ok(cost(&self.send(tx).await?))
        })
    }

    fn sign(&self, id: ChannelId, cumulative: Wei) -> Result<SignedVoucher, PayError> {
        let key = self.signer.as_ref().ok_or(PayError::NoAccount)?;
        Ok(voucher::sign(key, &self.domain(), id, cumulative))
    }

    fn bind(&self, id: ChannelId, peer_id: &[u8]) -> Result<[u8; 65], PayError> {
        let key = self.signer.as_ref().ok_or(PayError::NoAccount)?;
        Ok(voucher::sign_binding(key, &self.domain(), id, peer_id))
    }
}
