//! The `ledgermesh` command line. Flags and `--json` events are a contract:
//! add, never rename.

mod args;
mod channels;
mod conf;
pub mod config;
mod progress;
mod run;
pub mod status;

use anyhow::Context;
pub use args::*;
use clap::{Parser, Subcommand};
use ledgermesh_node::identity::generate_key_file;
use run::*;
use std::path::PathBuf;

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
    /// Print one stream (live or not) on standard output; with `--send`,
    /// send standard input to an inbound stream (an echo) and print what
    /// comes back. `consume --out -` with fewer knobs.
    Nc(NcArgs),
    /// A provider of one stream, `echo`, that sends back what a granted
    /// peer sends on it (`nc --send PEER/echo`), for testing paths end to
    /// end. Takes `provide`'s flags.
    Echo(ProvideArgs),
    /// Run a small network on loopback with the in-memory ledger.
    Demo(DemoArgs),
    /// Start a local EVM chain (anvil) with SignalBoard deployed and funded ledger keys.
    Devchain(DevchainArgs),
    /// Ledger set-up.
    #[command(subcommand)]
    Ledger(LedgerCommand),
    /// The account's payment channels: list them (as payer and as payee),
    /// close one (payer; the payee may still claim for the close delay), or
    /// withdraw what is left once the delay has passed.
    Channels(ChannelsArgs),
    /// The mesh VPN: a TUN device with this node's address (from its key)
    /// whose packets go to allowed peers over the node's connections
    /// (Linux, CAP_NET_ADMIN). `vpn address PEER_ID` prints a peer's address.
    Vpn(VpnArgs),
    /// Config files: `config check FILE` validates one and prints the
    /// effective settings (secrets redacted); `config sample ROLE` writes
    /// one with every key.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// How a running node (started with `--api`) reaches each peer: its
    /// path (direct tcp/quic, or via which relay), RTT, loss, bytes and streams.
    Status {
        #[command(flatten)]
        #[allow(missing_docs)]
        api: ApiArgs,
        /// Print one JSON object instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Ping a peer through a running node (started with `--api`): the
    /// round trip and the path each ping took, and whether it was direct.
    Ping {
        /// The peer.
        peer: String,
        #[command(flatten)]
        #[allow(missing_docs)]
        api: ApiArgs,
        /// How many pings, one a second.
        #[arg(long, short = 'c', default_value_t = 3)]
        count: u32,
        /// One JSON object per ping.
        #[arg(long)]
        json: bool,
    },
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
        only: Vec<ledgermesh_dev::bench::Section>,
        /// Bytes per single-stream run and per M×N row (default 512 MiB, 256 MiB with --quick).
        #[arg(long)]
        bytes: Option<u64>,
        /// Rounds of single-stream runs; medians are reported (default 5, 3 with --quick).
        #[arg(long)]
        rounds: Option<usize>,
        /// Cores: `auto` (with 4 or more, a quarter for the relay process and
        /// the rest for the endpoints), `off`, or the relay's core count N
        /// (the last N cores). Reported in `machine.placement`.
        #[arg(long, default_value = "auto")]
        cpus: ledgermesh_dev::bench::cpus::CpuPlan,
        /// Noise's transport cipher between the benchmark's own nodes (and
        /// its relay process), as the roles' `--noise-cipher`; the direct TCP
        /// rounds also measure ChaCha20-Poly1305 beside it either way.
        #[arg(long, value_enum, default_value_t = args::NoiseCipher::Auto)]
        noise_cipher: args::NoiseCipher,
        /// QUIC's MTU ceiling on the benchmark's own nodes, as the roles'
        /// `--quic-mtu-ceiling` (1452 for quinn's stock ceiling); the
        /// direct QUIC rounds also measure a consumer held to 1,452 beside
        /// it either way.
        #[arg(long, default_value_t = ledgermesh_node::swarm::quic::MTU_CEILING,
              value_parser = clap::value_parser!(u16).range(ledgermesh_node::swarm::quic::MIN_MTU as i64..=ledgermesh_node::swarm::quic::MAX_MTU as i64))]
        quic_mtu_ceiling: u16,
    },
}

/// Runs a parsed command; returns the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    if matches!(
        cli.command,
        Command::Relay(_)
            | Command::Provide(_)
            | Command::Consume(_)
            | Command::Nc(_)
            | Command::Echo(_)
            | Command::Devchain(_)
    ) {
        install_signal_handlers();
    }
    match cli.command {
        Command::Keygen { out, force, json } => keygen(&out, force, json),
        Command::Relay(args) => run_relay(args).await,
        Command::Provide(args) => run_provide(args).await,
        Command::Consume(args) => run_consume(args).await,
        Command::Nc(args) => run_consume(args.into_consume()).await,
        Command::Echo(mut args) => {
            args.stream.push("echo=echo:".into());
            run_provide(args).await
        }
        Command::Demo(args) => {
            let summary = ledgermesh_dev::demo::run(ledgermesh_dev::demo::DemoOptions {
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
            cpus,
            noise_cipher,
            quic_mtu_ceiling,
        } => {
            let options = ledgermesh_dev::bench::BenchOptions {
                quick,
                only,
                bytes,
                rounds,
                cpus,
                noise_aesgcm: noise_cipher.aesgcm(),
                quic_mtu_ceiling,
            };
            bench(options, json).await
        }
        Command::Channels(args) => channels::run(args).await,
        Command::Status { api, json } => status::status(&api.api, api.token(), json).await,
        Command::Ping {
            peer,
            api,
            count,
            json,
        } => status::ping(&api.api, api.token(), &peer, count, json).await,
        Command::Config(c) => config::run(c),
        Command::Vpn(args) => vpn(args).await,
        Command::Ledger(LedgerCommand::Deploy {
            rpc,
            ledger_key,
            json,
        }) => deploy(&rpc, ledger_key.as_deref(), json).await,
    }
}

/// `ledgermesh vpn …`.
async fn vpn(args: VpnArgs) -> anyhow::Result<i32> {
    match args.command {
        Some(VpnCommand::Address { peer, json }) => {
            let address = ledgermesh_protocol::vpn::address_of(&peer);
            if json {
                ledgermesh_node::events::print_json_line(&serde_json::json!({
                    "peer_id": peer.to_string(),
                    "address": address.to_string(),
                }));
            } else {
                println!("{address}");
            }
            Ok(0)
        }
        Some(VpnCommand::Status { api, json }) => {
            status::vpn_status(&api.api, api.token(), json).await
        }
        None => run_vpn(*args.run).await,
    }
}

/// `ledgermesh keygen`: a new identity key in `out` (mode 0600).
fn keygen(out: &std::path::Path, force: bool, json: bool) -> anyhow::Result<i32> {
    let kp = generate_key_file(out, force)?;
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

/// `ledgermesh bench`: the figures as a table, or one JSON object.
async fn bench(options: ledgermesh_dev::bench::BenchOptions, json: bool) -> anyhow::Result<i32> {
    let v = ledgermesh_dev::bench::run(options).await?;
    if json {
        ledgermesh_node::events::print_json_line(&v);
    } else {
        ledgermesh_dev::bench::print_table(&v);
    }
    Ok(0)
}

/// `ledgermesh ledger deploy`: the board (and, with it, its payment
/// contract) on the chain at `rpc`.
async fn deploy(
    rpc: &str,
    ledger_key: Option<&std::path::Path>,
    json: bool,
) -> anyhow::Result<i32> {
    let key = ledgermesh_node::ledger_spec::ledger_key(ledger_key)?
        .context("no deploying key: pass --ledger-key FILE or set LEDGERMESH_LEDGER_KEY")?;
    let signer = ledgermesh_ledger::evm::parse_key(&key)?;
    let contract = ledgermesh_ledger::EvmLedger::deploy(rpc, signer).await?;
    let spec = format!("evm:{rpc}@{contract}");
    // The board deployed its payment contract with itself.
    let payments = ledgermesh_ledger::payments::EvmPayments::connect(&spec, None)
        .await
        .context("finding the board's payment contract")?
        .contract();
    if json {
        println!(
            "{}",
            serde_json::json!({
                "contract": contract.to_string(),
                "payments": payments.to_string(),
                "spec": spec,
            })
        );
    } else {
        println!("{contract}");
    }
    Ok(0)
}
