//! `ledgermesh devchain`: a local EVM chain (anvil, installed by
//! `scripts/setup.sh`) with SignalBoard deployed and funded ledger keys.

use alloy::primitives::{Address, U256};
use alloy::providers::{Provider, ProviderBuilder};
use alloy::signers::local::PrivateKeySigner;
use anyhow::{bail, Context};
use ledgermesh_ledger::evm::EvmLedger;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Where `scripts/setup.sh` puts anvil, relative to the project root.
pub const ANVIL_REL: &str = ".tools/node_modules/.bin/anvil";

/// Finds anvil: `$LEDGERMESH_ANVIL`, then `.tools` above the current directory
/// or above this executable, then `anvil` on `PATH`.
pub fn find_anvil() -> anyhow::Result<PathBuf> {
    if let Ok(p) = std::env::var("LEDGERMESH_ANVIL") {
        return Ok(PathBuf::from(p));
    }
    let mut starts = vec![];
    if let Ok(cwd) = std::env::current_dir() {
        starts.push(cwd);
    }
    if let Ok(exe) = std::env::current_exe() {
        starts.push(exe);
    }
    for start in starts {
        for dir in start.ancestors() {
            let candidate = dir.join(ANVIL_REL);
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let candidate = dir.join("anvil");
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    bail!("anvil not found: run scripts/setup.sh (it installs anvil into {ANVIL_REL}) or set LEDGERMESH_ANVIL")
}

/// How to start the chain.
#[derive(Debug, Clone)]
pub struct DevChainOptions {
    /// Address to listen on.
    pub host: String,
    /// Port (0 = any free port).
    pub port: u16,
    /// Anvil state file: loaded at start if present, written at exit.
    pub state: Option<PathBuf>,
    /// How many funded ledger keys to write.
    pub accounts: usize,
    /// Where to write the key files.
    pub key_dir: PathBuf,
    /// Deploy SignalBoard (skip when restarting from a state that has it).
    pub deploy: Option<Address>,
    /// Mine a block every this many seconds instead of one per transaction
    /// (what a real chain does; anvil `--block-time`).
    pub block_time: Option<u64>,
}

/// A running local chain.
pub struct DevChain {
    child: Child,
    /// JSON-RPC endpoint.
    pub rpc_url: String,
    /// The SignalBoard contract.
    pub contract: Address,
    /// Funded ledger key files and their addresses.
    pub keys: Vec<(PathBuf, Address)>,
}

impl DevChain {
    /// The `--ledger` spec for nodes.
    pub fn spec(&self) -> String {
        format!("evm:{}@{}", self.rpc_url, self.contract)
    }

    /// The anvil process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Stops anvil gracefully (SIGTERM, so it writes its state), then waits.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(pid) = self.child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        match tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await {
            Ok(r) => {
                r?;
            }
            Err(_) => {
                self.child.kill().await?;
            }
        }
        Ok(())
    }
}

fn write_key(path: &Path, signer: &PrivateKeySigner) -> anyhow::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    writeln!(f, "0x{}", hex::encode(signer.to_bytes()))?;
    Ok(())
}

/// Starts anvil on 127.0.0.1, deploys SignalBoard, funds fresh ledger keys.
pub async fn start(opts: DevChainOptions) -> anyhow::Result<DevChain> {
    let anvil = find_anvil()?;
    let mut cmd = Command::new(&anvil);
    cmd.args([
        "--host",
        &opts.host,
        "--port",
        &opts.port.to_string(),
        "--accounts",
        "1",
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit())
    .kill_on_drop(true);
    if let Some(state) = &opts.state {
        cmd.arg("--state").arg(state);
    }
    if let Some(secs) = opts.block_time {
        cmd.arg("--block-time").arg(secs.max(1).to_string());
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", anvil.display()))?;
    let stdout = child.stdout.take().context("anvil stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let addr = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await? {
            if let Some(rest) = line.trim().strip_prefix("Listening on ") {
                return Ok::<_, anyhow::Error>(rest.trim().to_string());
            }
        }
        bail!("anvil exited before listening")
    })
    .await
    .context("anvil did not start within 30 s")??;
    // Keep draining anvil's output so it never blocks on a full pipe.
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::trace!(target: "anvil", "{line}");
        }
    });
    let rpc_url = format!("http://{addr}");
    let provider = ProviderBuilder::new().connect_http(rpc_url.parse()?);
    std::fs::create_dir_all(&opts.key_dir)?;
    let mut keys = Vec::new();
    let mut signers = Vec::new();
    for i in 0..opts.accounts.max(1) {
        let signer = PrivateKeySigner::random();
        let amount = U256::from(1_000u64) * U256::from(10u64).pow(U256::from(18u64));
        let _: serde_json::Value = provider
            .raw_request("anvil_setBalance".into(), (signer.address(), amount))
            .await
            .context("funding a ledger key")?;
        let path = opts.key_dir.join(format!("ledger-{i}.key"));
        write_key(&path, &signer)?;
        keys.push((path, signer.address()));
        signers.push(signer);
    }
    let contract = match opts.deploy {
        Some(existing) => existing,
        None => EvmLedger::deploy(&rpc_url, signers[0].clone()).await?,
    };
    Ok(DevChain {
        child,
        rpc_url,
        contract,
        keys,
    })
}
