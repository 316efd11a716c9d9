//! The `ledgermesh` command line. Flags and `--json` events are a contract:
//! add, never rename.

mod args;
mod run;

use crate::identity::generate_key_file;
use anyhow::Context;
pub use args::*;
use clap::{Parser, Subcommand};
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
