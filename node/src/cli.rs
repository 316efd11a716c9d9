//! The `ledgermesh` command line. Flags and `--json` events are a contract:
//! add, never rename.

use crate::consumer::{self, ConsumerConfig, Want};
use crate::events::{Emitter, Event};
use crate::identity::{generate_key_file, load_or_ephemeral};
use crate::ledger_spec::open_ledger;
use crate::provider::{self, ProviderConfig};
use crate::source::{parse_stream_spec, Source};
use crate::swarm::{spawn, NodeConfig, RelayLimits};
use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use libp2p::Multiaddr;
use std::path::PathBuf;
use std::time::Duration;

/// ledgermesh: buy and sell live data streams peer to peer, signaling through a public ledger.
#[derive(Debug, Parser)]
#[command(name = "ledgermesh", version, about)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a new Ed25519 identity key (mode 0600) and print its PeerId.
    Keygen {
        /// Where to write the key.
        #[arg(long)]
        out: PathBuf,
        /// Overwrite an existing file (its identity is lost).
        #[arg(long)]
        force: bool,
        /// Print `{"peer_id": ..., "path": ...}` instead of the bare PeerId.
        #[arg(long)]
        json: bool,
    },
    /// Run a public relay (circuit relay v2 server; DCUtR coordination).
    Relay(RelayArgs),
    /// Sell named streams.
    Provide(ProvideArgs),
    /// Buy streams from one or more providers.
    Consume(ConsumeArgs),
    /// Run a small network on loopback with the in-memory ledger.
    Demo(DemoArgs),
    /// Start a local EVM chain (anvil) with SignalBoard deployed and funded ledger keys.
    Devchain(DevchainArgs),
    /// Ledger set-up.
    #[command(subcommand)]
    Ledger(LedgerCommand),
    /// Measure throughput, latency, set-up, M×N scale and envelope cost against same-run baselines.
    Bench {
        /// Under a minute (smaller transfers, fewer samples).
        #[arg(long)]
        quick: bool,
        /// Print one JSON object with every figure instead of the table.
        #[arg(long)]
        json: bool,
        /// Run only these sections (comma-separated); the others are left out.
        #[arg(long, value_enum, value_delimiter = ',')]
        only: Vec<crate::bench::Section>,
        /// Bytes per single-stream run and per M×N row (default 512 MiB, 256 MiB with --quick).
        #[arg(long)]
        bytes: Option<u64>,
        /// Rounds of single-stream runs; medians are reported (default 5, 3 with --quick).
        #[arg(long)]
        rounds: Option<usize>,
    },
}

/// `ledgermesh ledger ...`.
#[derive(Debug, Subcommand)]
pub enum LedgerCommand {
    /// Deploy the SignalBoard contract and print its address.
    Deploy {
        /// JSON-RPC endpoint of the chain.
        #[arg(long)]
        rpc: String,
        /// File holding the deploying account's key (hex); else $LEDGERMESH_LEDGER_KEY.
        #[arg(long)]
        ledger_key: Option<PathBuf>,
        /// Print `{"contract": ..., "spec": ...}`.
        #[arg(long)]
        json: bool,
    },
}

/// `ledgermesh devchain`.
#[derive(Debug, Args)]
pub struct DevchainArgs {
    /// Address to serve JSON-RPC on (loopback by default; a lab host's address in the NAT lab).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port (0 = any free port).
    #[arg(long, default_value_t = 8545)]
    pub port: u16,
    /// Where to write the funded ledger key files.
    #[arg(long, default_value = ".ledgermesh/devchain")]
    pub dir: PathBuf,
    /// How many funded ledger keys to write.
    #[arg(long, default_value_t = 8)]
    pub accounts: usize,
    /// Anvil state file: loaded at start when present, written at exit.
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// Reuse this SignalBoard (already in the loaded state) instead of deploying one.
    #[arg(long)]
    pub contract: Option<String>,
    /// Print one JSON object (`devchain_ready`) with the spec and key files.
    #[arg(long)]
    pub json: bool,
}

/// Options of roles that use the ledger.
#[derive(Debug, Args)]
pub struct LedgerArgs {
    /// Ledger: `memory` (this process only) or `evm:RPC_URL@CONTRACT_ADDRESS`.
    #[arg(long, env = "LEDGERMESH_LEDGER", default_value = "memory")]
    pub ledger: String,
    /// File holding the ledger account key (hex); else $LEDGERMESH_LEDGER_KEY.
    #[arg(long)]
    pub ledger_key: Option<PathBuf>,
    /// Blocks a ledger message needs before it is read (EVM).
    #[arg(long, default_value_t = 1)]
    pub confirmations: u64,
    /// Where the node keeps its ledger cursor across restarts.
    #[arg(long, env = "LEDGERMESH_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

impl LedgerArgs {
    async fn open(
        &self,
        account: &str,
    ) -> anyhow::Result<std::sync::Arc<dyn ledgermesh_ledger::Ledger>> {
        let key = crate::ledger_spec::ledger_key(self.ledger_key.as_deref())?;
        let options = ledgermesh_ledger::evm::EvmOptions {
            confirmations: self.confirmations.max(1),
            ..Default::default()
        };
        Ok(open_ledger(&self.ledger, key.as_deref(), account, options).await?)
    }
}

/// Options every node role has.
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// Identity key file (see `keygen`); a fresh in-memory key when omitted.
    #[arg(long, env = "LEDGERMESH_KEY")]
    pub key: Option<PathBuf>,
    /// Print one JSON object per event on stdout.
    #[arg(long)]
    pub json: bool,
    /// Append every access decision (grant, renew, refuse, serve_start, serve_end, expire, acl_reload, acl_error) to FILE as JSON lines.
    #[arg(long, env = "LEDGERMESH_AUDIT_LOG")]
    pub audit_log: Option<PathBuf>,
    /// Rotate the audit log when it reaches this size (K/M/G suffixes allowed).
    #[arg(long, default_value = "16M", value_parser = parse_bytes)]
    pub audit_max_bytes: u64,
    /// Rotated audit files kept (FILE.1 … FILE.N).
    #[arg(long, default_value_t = crate::access::audit_log::DEFAULT_KEEP)]
    pub audit_keep: usize,
}

impl NodeArgs {
    /// The audit log, when asked for.
    fn audit(&self) -> anyhow::Result<Option<crate::access::audit_log::AuditLog>> {
        self.audit_log
            .as_deref()
            .map(|p| {
                crate::access::audit_log::AuditLog::open(p, self.audit_max_bytes, self.audit_keep)
            })
            .transpose()
            .context("opening the audit log")
    }
}

/// `ledgermesh relay`.
#[derive(Debug, Args)]
pub struct RelayArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub node: NodeArgs,
    /// Addresses to listen on.
    #[arg(long, num_args = 1.., default_values = ["/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1"])]
    pub listen: Vec<Multiaddr>,
    /// Extra public addresses to announce (e.g. behind a port forward).
    #[arg(long, num_args = 1..)]
    pub external: Vec<Multiaddr>,
    /// Longest life of one circuit, in seconds.
    #[arg(long, default_value_t = 3600)]
    pub max_circuit_secs: u64,
    /// Bytes one circuit may carry per direction.
    #[arg(long, default_value_t = 1 << 40)]
    pub max_circuit_bytes: u64,
}

/// Network options of the provider and consumer roles.
#[derive(Debug, Args)]
pub struct PeerArgs {
    /// Relays to hold a reservation on (`.../p2p/<relay id>`).
    #[arg(long, num_args = 1..)]
    pub relay: Vec<Multiaddr>,
    /// Extra address-consensus observers (`.../p2p/<id>`); the relays observe too.
    #[arg(long, num_args = 1..)]
    pub observer: Vec<Multiaddr>,
    /// Observers that must agree on the public address (default ⌈2K/3⌉ of K observers).
    #[arg(long)]
    pub quorum: Option<usize>,
    /// Addresses to listen on.
    #[arg(long, num_args = 1.., default_values = ["/ip4/0.0.0.0/tcp/0", "/ip4/0.0.0.0/udp/0/quic-v1"])]
    pub listen: Vec<Multiaddr>,
}

/// `ledgermesh provide`.
#[derive(Debug, Args)]
pub struct ProvideArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub node: NodeArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub ledger: LedgerArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub peer: PeerArgs,
    /// Streams to sell: NAME=file:PATH, NAME=random:BYTES[:SEED], NAME=paced:BYTES:RATE[:SEED] (a live feed at RATE bytes/s) or NAME=zero:BYTES.
    #[arg(long, num_args = 1.., required = true)]
    pub stream: Vec<String>,
    /// Advertise only relay circuits (behind a NAT; DCUtR finds the direct path).
    #[arg(long)]
    pub relay_only: bool,
    /// Longest grant a service request can hire, in seconds.
    #[arg(long, default_value_t = ledgermesh_protocol::access::DEFAULT_MAX_GRANT_SECS)]
    pub max_grant_secs: u64,
    /// ACL file (TOML; see scripts/acl.sample.toml): peers allowed without a ledger request. Re-read when it changes and on SIGHUP.
    #[arg(long)]
    pub acl: Option<PathBuf>,
}

/// `ledgermesh consume`.
#[derive(Debug, Args)]
pub struct ConsumeArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub node: NodeArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub ledger: LedgerArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub peer: PeerArgs,
    /// Streams to buy, as PEERID/STREAM.
    #[arg(long, num_args = 1.., required = true)]
    pub want: Vec<Want>,
    /// Directory to write streams to (`OUT/<peer id>/<stream>`).
    #[arg(long)]
    pub out: PathBuf,
    /// Seconds to wait for each provider's service response.
    #[arg(long, default_value_t = 60)]
    pub response_timeout: u64,
    /// Seconds of access to hire with each request (the provider caps it).
    #[arg(long, default_value_t = 3600)]
    pub hire_secs: u64,
    /// When a grant runs out mid-stream, post a new request and resume from the offset.
    #[arg(long)]
    pub renew: bool,
    /// Fetch from this provider address (`.../p2p/<id>`) without a ledger request; the provider's ACL must allow us.
    #[arg(long, num_args = 1..)]
    pub provider_addr: Vec<Multiaddr>,
}

/// `ledgermesh demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Print every event as JSON, then one summary object as the last line.
    #[arg(long)]
    pub json: bool,
    /// Size of each provider's `feed` stream (K/M/G suffixes allowed).
    #[arg(long, default_value = "8M", value_parser = parse_bytes)]
    pub bytes: u64,
    /// Keep the received files here instead of a temporary directory.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

fn parse_bytes(s: &str) -> Result<u64, String> {
    crate::source::parse_size(s).ok_or_else(|| format!("{s:?} is not a size like 8M"))
}

/// Runs a parsed command; returns the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Keygen { out, force, json } => {
            let kp = generate_key_file(&out, force)?;
            let peer = kp.public().to_peer_id();
            if json {
                println!(
                    "{}",
                    serde_json::json!({"peer_id": peer.to_string(), "path": out})
                );
            } else {
                println!("{peer}");
            }
            Ok(0)
        }
        Command::Relay(args) => run_relay(args).await,
        Command::Provide(args) => run_provide(args).await,
        Command::Consume(args) => run_consume(args).await,
        Command::Demo(args) => {
            let summary = crate::demo::run(crate::demo::DemoOptions {
                json: args.json,
                feed_bytes: args.bytes,
                out_dir: args.out,
            })
            .await?;
            Ok(if summary.ok { 0 } else { 1 })
        }
        Command::Devchain(args) => run_devchain(args).await,
        Command::Bench {
            quick,
            json,
            only,
            bytes,
            rounds,
        } => {
            let v = crate::bench::run(crate::bench::BenchOptions {
                quick,
                only,
                bytes,
                rounds,
            })
            .await?;
            if json {
                crate::events::print_json_line(&v);
            } else {
                crate::bench::print_table(&v);
            }
            Ok(0)
        }
        Command::Ledger(LedgerCommand::Deploy {
            rpc,
            ledger_key,
            json,
        }) => {
            let key = crate::ledger_spec::ledger_key(ledger_key.as_deref())?
                .context("no deploying key: pass --ledger-key FILE or set LEDGERMESH_LEDGER_KEY")?;
            let signer = ledgermesh_ledger::evm::parse_key(&key)?;
            let contract = ledgermesh_ledger::EvmLedger::deploy(&rpc, signer).await?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"contract": contract.to_string(), "spec": format!("evm:{rpc}@{contract}")})
                );
            } else {
                println!("{contract}");
            }
            Ok(0)
        }
    }
}

async fn run_devchain(args: DevchainArgs) -> anyhow::Result<i32> {
    let deploy = args
        .contract
        .as_deref()
        .map(|c| c.parse().context("--contract is not an address"))
        .transpose()?;
    let chain = crate::devchain::start(crate::devchain::DevChainOptions {
        host: args.host,
        port: args.port,
        state: args.state,
        accounts: args.accounts,
        key_dir: args.dir,
        deploy,
    })
    .await?;
    let keys: Vec<String> = chain
        .keys
        .iter()
        .map(|(p, _)| p.display().to_string())
        .collect();
    if args.json {
        crate::events::print_json_line(&serde_json::json!({
            "event": "devchain_ready",
            "spec": chain.spec(),
            "rpc": chain.rpc_url,
            "contract": chain.contract.to_string(),
            "anvil_pid": chain.pid(),
            "ledger_keys": keys,
        }));
    } else {
        println!("local chain ready at {}", chain.rpc_url);
        println!("SignalBoard deployed at {}", chain.contract);
        println!("pass to every node:  --ledger {}", chain.spec());
        println!("funded ledger keys (one per node, --ledger-key FILE):");
        for k in &keys {
            println!("  {k}");
        }
        println!("Ctrl-C stops the chain.");
    }
    wait_for_ctrl_c().await;
    chain.stop().await?;
    Ok(0)
}

fn emitter_for(name: &str, json: bool) -> Emitter {
    Emitter::new(name).with_json_stdout(json)
}

/// Waits for Ctrl-C or SIGTERM.
async fn wait_for_ctrl_c() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
    tracing::info!("interrupted; shutting down");
}

async fn run_relay(args: RelayArgs) -> anyhow::Result<i32> {
    let keypair = load_or_ephemeral(args.node.key.as_deref())?;
    let mut config = NodeConfig::new("relay");
    config.listen = args.listen;
    config.external = args.external;
    config.relay_server = Some(RelayLimits {
        max_circuit_duration: Duration::from_secs(args.max_circuit_secs),
        max_circuit_bytes: args.max_circuit_bytes,
        ..RelayLimits::default()
    });
    config.idle_timeout = Duration::from_secs(300);
    config.emitter = Some(emitter_for("relay", args.node.json));
    let handle = spawn(config, keypair).await.context("starting the relay")?;
    let snap = handle.wait_listening().await?;
    for a in &snap.direct_addrs {
        tracing::info!("relay reachable at {a}/p2p/{}", handle.peer_id());
    }
    wait_for_ctrl_c().await;
    handle.shutdown().await;
    Ok(0)
}

/// Opens the ledger and starts a node with reservations on `relays`; the
/// address-consensus observers are the relays plus `observers`.
async fn start_ledger_node(
    role: &str,
    keypair: libp2p::identity::Keypair,
    node: &NodeArgs,
    ledger: &LedgerArgs,
    net: &PeerArgs,
) -> anyhow::Result<(
    crate::swarm::NodeHandle,
    std::sync::Arc<dyn ledgermesh_ledger::Ledger>,
    Vec<Multiaddr>,
)> {
    let peer = keypair.public().to_peer_id();
    let opened = ledger
        .open(&peer.to_string())
        .await
        .context("opening the ledger")?;
    let observers: Vec<Multiaddr> = net
        .relay
        .iter()
        .chain(net.observer.iter())
        .cloned()
        .collect();
    let mut config = NodeConfig::new(role);
    config.listen = net.listen.clone();
    config.relays = net.relay.clone();
    config.emitter = Some(emitter_for(role, node.json));
    let handle = spawn(config, keypair)
        .await
        .with_context(|| format!("starting the {role} node"))?;
    Ok((handle, opened, observers))
}

async fn run_provide(args: ProvideArgs) -> anyhow::Result<i32> {
    let keypair = load_or_ephemeral(args.node.key.as_deref())?;
    let streams: Vec<(String, Source)> = args
        .stream
        .iter()
        .map(|s| parse_stream_spec(s))
        .collect::<Result<_, _>>()?;
    let peer = keypair.public().to_peer_id();
    let (handle, ledger, observers) =
        start_ledger_node("provider", keypair, &args.node, &args.ledger, &args.peer).await?;
    tracing::info!(%peer, "provider started");
    let mut pc = ProviderConfig::new(streams);
    pc.relay_only = args.relay_only;
    pc.data_dir = args.ledger.data_dir.clone();
    pc.observers = observers;
    pc.quorum = args.peer.quorum;
    pc.max_grant_secs = args.max_grant_secs;
    pc.acl = args.acl.clone();
    pc.audit = args.node.audit()?;
    tokio::select! {
        r = provider::run(handle.clone(), ledger, pc) => r.context("provider stopped")?,
        _ = wait_for_ctrl_c() => {}
    }
    handle.shutdown().await;
    Ok(0)
}

async fn run_consume(args: ConsumeArgs) -> anyhow::Result<i32> {
    let keypair = load_or_ephemeral(args.node.key.as_deref())?;
    let (handle, ledger, observers) =
        start_ledger_node("consumer", keypair, &args.node, &args.ledger, &args.peer).await?;
    let mut cc = ConsumerConfig::new(args.want, args.out);
    cc.response_timeout = Duration::from_secs(args.response_timeout);
    cc.data_dir = args.ledger.data_dir.clone();
    cc.observers = observers;
    cc.quorum = args.peer.quorum;
    cc.hire_secs = args.hire_secs;
    cc.renew = args.renew;
    cc.audit = args.node.audit()?;
    for a in &args.provider_addr {
        if crate::addr::peer_of(a).is_none() {
            anyhow::bail!("--provider-addr {a}: the address must end in /p2p/<provider peer id>");
        }
    }
    cc.direct = args.provider_addr.clone();
    let outcomes = tokio::select! {
        r = consumer::run(handle.clone(), ledger, cc) => r.context("consumer failed")?,
        _ = wait_for_ctrl_c() => { handle.shutdown().await; return Ok(130) }
    };
    let mut ok = true;
    for o in &outcomes {
        match &o.result {
            Ok(f) if f.verified => {
                if !args.node.json {
                    println!(
                        "ok   {}/{}  {} bytes  sha256 {}",
                        o.peer,
                        o.stream,
                        f.bytes,
                        hex::encode(f.sha256)
                    );
                }
            }
            Ok(f) => {
                ok = false;
                handle.emit(Event::error(
                    "verify",
                    format!(
                        "{}/{}: sha256 {} does not match the provider's",
                        o.peer,
                        o.stream,
                        hex::encode(f.sha256)
                    ),
                ));
                if !args.node.json {
                    println!(
                        "BAD  {}/{}  {} bytes  sha256 mismatch",
                        o.peer, o.stream, f.bytes
                    );
                }
            }
            Err(e) => {
                ok = false;
                if !args.node.json {
                    println!("FAIL {}/{}  {e}", o.peer, o.stream);
                }
            }
        }
    }
    handle.shutdown().await;
    Ok(if ok { 0 } else { 1 })
}
