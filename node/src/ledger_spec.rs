//! Parsing the `--ledger SPEC` argument.

use ledgermesh_ledger::{Ledger, MemoryLedger};
use std::sync::Arc;

/// A bad or unsupported ledger spec.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerSpecError {
    /// Not a known form.
    #[error("unknown ledger spec {0:?}: expected `memory` or `evm:RPC_URL@CONTRACT_ADDRESS`")]
    Unknown(String),
    /// Recognized but not built into this binary yet.
    #[error("ledger spec {0:?}: the EVM ledger is not available in this build yet; use `memory`")]
    EvmUnavailable(String),
}

/// The ledger a spec names. `memory` is private to this process: nodes in other
/// processes cannot see it, so use it for `ledgermesh demo` and tests.
pub fn open_ledger(spec: &str, account: &str) -> Result<Arc<dyn Ledger>, LedgerSpecError> {
    match spec {
        "memory" => Ok(Arc::new(MemoryLedger::new().account(account))),
        s if s.starts_with("evm:") => Err(LedgerSpecError::EvmUnavailable(s.into())),
        s => Err(LedgerSpecError::Unknown(s.into())),
    }
}
