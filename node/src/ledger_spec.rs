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

/// The addresses of the RPC endpoint an `evm:` spec names (none for
/// `memory`, or where its host does not resolve): a node that sends its
/// traffic through an exit keeps these on the host's own routes.
pub async fn rpc_addrs(spec: &str) -> Vec<std::net::IpAddr> {
    let Some(rest) = spec.strip_prefix("evm:") else {
        return vec![];
    };
    // evm:SCHEME://HOST[:PORT][/PATH]@CONTRACT
    let url = rest.rsplit_once('@').map_or(rest, |(url, _)| url);
    let Some((scheme, after)) = url.split_once("://") else {
        return vec![];
    };
    let authority = after.split('/').next().unwrap_or_default();
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let default_port = if scheme.ends_with('s') { 443 } else { 80 };
    let with_port = match authority.rsplit_once(':') {
        // A port, not the inside of a bare IPv6 address.
        Some((_, port)) if port.parse::<u16>().is_ok() && !authority.ends_with(']') => {
            authority.to_string()
        }
        _ => format!("{authority}:{default_port}"),
    };
    match tokio::net::lookup_host(with_port).await {
        Ok(addrs) => {
            let mut ips: Vec<std::net::IpAddr> = addrs.map(|a| a.ip()).collect();
            ips.sort_unstable();
            ips.dedup();
            ips
        }
        Err(e) => {
            tracing::debug!(error = %e, "the ledger's RPC host does not resolve");
            vec![]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_rpc_endpoints_addresses_come_from_its_spec() {
        let c = "0x5FbDB2315678afecb367f032d93F642f64180aa3";
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        let at = |url: &str| format!("evm:{url}@{c}");
        assert_eq!(
            rpc_addrs(&at("http://203.0.113.20:8545")).await,
            vec![ip("203.0.113.20")]
        );
        assert_eq!(
            rpc_addrs(&at("https://198.51.100.7/rpc/v1")).await,
            vec![ip("198.51.100.7")]
        );
        assert_eq!(
            rpc_addrs(&at("http://[2001:db8::1]:8545")).await,
            vec![ip("2001:db8::1")]
        );
        assert_eq!(
            rpc_addrs(&at("http://[2001:db8::1]")).await,
            vec![ip("2001:db8::1")]
        );
        assert!(rpc_addrs("memory").await.is_empty());
        assert!(rpc_addrs("evm:nonsense").await.is_empty());
    }
}
