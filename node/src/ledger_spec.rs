//! Opening the ledger named by `--ledger SPEC`.

use ledgermesh_ledger::evm::{parse_key, parse_spec, EvmLedger, EvmOptions};
use ledgermesh_ledger::{Ledger, MemoryLedger};
use std::path::Path;
use std::sync::Arc;

/// A bad or unusable ledger spec.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerSpecError {
    /// Not a known form.
    #[error("unknown ledger spec {0:?}: expected `memory` or `evm:RPC_URL@CONTRACT_ADDRESS`")]
    Unknown(String),
    /// The EVM ledger failed to open.
    #[error(transparent)]
    Evm(#[from] ledgermesh_ledger::evm::EvmError),
    /// The ledger key file is unreadable.
    #[error("ledger key file {path}: {detail}")]
    KeyFile {
        /// The file.
        path: String,
        /// Why.
        detail: String,
    },
}

/// The environment variable holding the ledger account key (hex), used when
/// `--ledger-key FILE` is not given.
pub const LEDGER_KEY_ENV: &str = "LEDGERMESH_LEDGER_KEY";

/// The ledger key: from `file` when given, else from [`LEDGER_KEY_ENV`].
pub fn ledger_key(
    file: Option<&Path>,
) -> Result<Option<zeroize::Zeroizing<String>>, LedgerSpecError> {
    match file {
        Some(p) => {
            // An account key others can read is refused, like an identity key.
            crate::identity::check_private(p).map_err(|e| LedgerSpecError::KeyFile {
                path: p.display().to_string(),
                detail: e.to_string(),
            })?;
            std::fs::read_to_string(p)
                .map(|k| Some(zeroize::Zeroizing::new(k)))
                .map_err(|e| LedgerSpecError::KeyFile {
                    path: p.display().to_string(),
                    detail: e.to_string(),
                })
        }
        None => Ok(std::env::var(LEDGER_KEY_ENV)
            .ok()
            .filter(|k| !k.trim().is_empty())
            .map(zeroize::Zeroizing::new)),
    }
}

/// The ledger a spec names. `memory` is private to this process (use it for
/// `ledgermesh demo` and tests); `evm:RPC_URL@CONTRACT` is the SignalBoard
/// contract on an EVM chain, posting with `key` (hex) when given.
pub async fn open_ledger(
    spec: &str,
    key: Option<&str>,
    account: &str,
    options: EvmOptions,
) -> Result<Arc<dyn Ledger>, LedgerSpecError> {
    match spec {
        "memory" => Ok(Arc::new(MemoryLedger::new().account(account))),
        s if s.starts_with("evm:") => {
            let (url, contract) = parse_spec(s)?;
            let signer = key.map(parse_key).transpose()?;
            Ok(Arc::new(
                EvmLedger::connect(&url, contract, signer, options).await?,
            ))
        }
        s => Err(LedgerSpecError::Unknown(s.into())),
    }
}

/// The payment channels of the board a spec names, as the account of `key`
/// (hex). Payments need a chain: `memory` is refused (the demo and tests
/// build an in-process chain themselves).
pub async fn open_payments(
    spec: &str,
    key: Option<&str>,
) -> Result<Arc<dyn ledgermesh_ledger::payments::PaymentChannels>, LedgerSpecError> {
    match spec {
        s if s.starts_with("evm:") => {
            let signer = key.map(parse_key).transpose()?;
            Ok(Arc::new(
                ledgermesh_ledger::payments::EvmPayments::connect(s, signer).await?,
            ))
        }
        s => Err(LedgerSpecError::Unknown(format!(
            "{s} (payments need an EVM ledger: evm:RPC_URL@CONTRACT_ADDRESS)"
        ))),
    }
}
