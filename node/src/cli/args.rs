//! The flags of each subcommand (a contract: add, never rename).

use crate::consumer::Want;
use crate::ledger_spec::open_ledger;
use crate::streams::ServeLimits;
use crate::swarm::ConnectionCaps;
use anyhow::Context;
use clap::Args;
use ledgermesh_protocol::signaling::RateLimits;
use ledgermesh_protocol::stream::slots::SlotLimits;
use libp2p::Multiaddr;
use std::path::PathBuf;

/// `ledgermesh ledger ...`.
#[derive(Debug, clap::Subcommand)]
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
    /// Where the node keeps its ledger cursor and answer journal across
    /// restarts (default with `--key`: `.ledgermesh/nodes/<peer id>`).
    #[arg(long, env = "LEDGERMESH_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

impl LedgerArgs {
    pub(super) async fn open(
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
    /// Also dial, dial back and announce loopback, private, link-local and
    /// documentation addresses (labs, a LAN, loopback tests). Off: only
    /// globally routable addresses, whoever names them.
    #[arg(long, env = "LEDGERMESH_ALLOW_PRIVATE_ADDRS")]
    pub allow_private_addrs: bool,
    /// Established connections, all peers together; more are denied.
    #[arg(long, default_value_t = ConnectionCaps::default().max_connections)]
    pub max_connections: u32,
    /// Established connections to one peer; more are denied.
    #[arg(long, default_value_t = ConnectionCaps::default().max_connections_per_peer)]
    pub max_connections_per_peer: u32,
    /// Deny new connections while the process uses more memory than this
    /// (K/M/G suffixes allowed; default: 90 % of the machine's memory).
    #[arg(long, value_parser = parse_bytes)]
    pub max_memory: Option<u64>,
}

impl NodeArgs {
    /// The connection ceilings these flags ask for.
    pub(super) fn caps(&self) -> ConnectionCaps {
        ConnectionCaps {
            max_connections: self.max_connections.max(1),
            max_connections_per_peer: self.max_connections_per_peer.max(1),
            max_memory_bytes: self.max_memory.map(|b| b as usize),
            ..Default::default()
        }
    }
}

impl NodeArgs {
    /// The audit log, when asked for.
    pub(super) fn audit(&self) -> anyhow::Result<Option<crate::access::audit_log::AuditLog>> {
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
    /// Longest life of one circuit, in seconds (default: 120, or 3600 with
    /// `--open` / `--allow`).
    #[arg(long)]
    pub max_circuit_secs: Option<u64>,
    /// Bytes one circuit may carry, both directions together (default:
    /// 128 KiB, or 1 TiB with `--open` / `--allow`).
    #[arg(long)]
    pub max_circuit_bytes: Option<u64>,
    /// Serve every peer with lifted circuit limits (an open relay). Without
    /// it (or `--allow`), circuits are stock-sized: 2 minutes, 128 KiB.
    #[arg(long, conflicts_with = "allow")]
    pub open: bool,
    /// Serve only the peers this ACL file allows (the provider's format;
    /// entries with streams `*` or `relay`), with lifted limits; others get
    /// no reservation and no circuit. Re-read when it changes.
    #[arg(long)]
    pub allow: Option<PathBuf>,
    /// Reservations the peers behind one IP address may hold at once.
    #[arg(long, default_value_t = crate::swarm::DEFAULT_RESERVATIONS_PER_IP)]
    pub max_reservations_per_ip: usize,
    /// Circuits the peers behind one IP address may hold at once.
    #[arg(long, default_value_t = crate::swarm::DEFAULT_CIRCUITS_PER_IP)]
    pub max_circuits_per_ip: usize,
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
    /// Streams served at once, all buyers together (over it: `busy`).
    #[arg(long, default_value_t = SlotLimits::default().max_streams)]
    pub max_streams: usize,
    /// Streams served at once to one buyer (over it: `busy`).
    #[arg(long, default_value_t = SlotLimits::default().max_per_peer)]
    pub max_streams_per_peer: usize,
    /// End a stream whose buyer takes nothing for this many seconds.
    #[arg(long, default_value_t = ServeLimits::default().write_stall.as_secs())]
    pub write_stall_secs: u64,
    /// Service requests of one sender answered at once (each answer is a
    /// ledger post at our cost) before the per-minute rate applies.
    #[arg(long, default_value_t = RateLimits::default().burst)]
    pub answer_burst: u32,
    /// Service requests of one sender answered per minute after the burst.
    #[arg(long, default_value_t = RateLimits::default().per_minute)]
    pub answers_per_minute: u32,
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
    /// Bytes accepted of a stream of unknown length (a live feed) before the
    /// fetch stops (K/M/G suffixes allowed); a stream of declared length is
    /// held to that length.
    #[arg(long, default_value = "16G", value_parser = parse_bytes)]
    pub max_bytes: u64,
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
