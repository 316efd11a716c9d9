//! The flags of each subcommand (a contract: add, never rename).

use anyhow::Context;
use clap::Args;
use ledgermesh_node::consumer::Want;
use ledgermesh_node::ledger_spec::open_ledger;
use ledgermesh_node::streams::ServeLimits;
use ledgermesh_node::swarm::ConnectionCaps;
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

/// `ledgermesh vpn`: the role, or one of its subcommands.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct VpnArgs {
    /// A subcommand instead of running the tunnel.
    #[command(subcommand)]
    pub command: Option<VpnCommand>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub run: Box<VpnRunArgs>,
}

/// The tunnel's flags.
#[derive(Debug, Args, serde::Serialize, serde::Deserialize)]
pub struct VpnRunArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    #[serde(flatten)]
    pub node: NodeArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    #[serde(flatten)]
    pub peer: PeerArgs,
    /// A peer allowed through the tunnel (repeatable): `PEER_ID`, its own
    /// mesh address only, or `PEER_ID=NET,NET…` with the networks it owns
    /// besides (`=10.7.0.2/32`, as WireGuard's allowed IPs). In a config
    /// file also `[[peer]]` tables with `id` and `allowed_ips`.
    #[arg(long = "peer", value_name = "PEER_ID[=NET,…]", num_args = 1..)]
    #[serde(rename = "peer", with = "super::conf::many")]
    pub peers: Vec<ledgermesh_protocol::vpn::Peer>,
    /// An IPv4 address of this node inside the tunnel, with its network
    /// (`10.7.0.1/24`): the device gets it, and peers' packets to it are ours.
    #[arg(long, value_name = "ADDR/LEN")]
    #[serde(with = "super::conf::opt")]
    pub address_v4: Option<ledgermesh_protocol::vpn::Ipv4Net>,
    /// A peer to reach at this address (`…/p2p/<id>`, repeatable), kept
    /// connected, and allowed.
    #[arg(long, num_args = 1..)]
    #[serde(with = "super::conf::many")]
    pub peer_addr: Vec<Multiaddr>,
    /// The TUN device's MTU: the largest packet carried. The default fits
    /// one QUIC datagram on a 1,500-byte path.
    #[arg(long, default_value_t = ledgermesh_node::roles::vpn::DEFAULT_MTU,
          value_parser = clap::value_parser!(u16).range(1280..=9000))]
    #[serde(with = "super::conf::one")]
    pub mtu: u16,
    /// The TUN device's name.
    #[arg(long, default_value = ledgermesh_node::roles::vpn::DEFAULT_TUN)]
    #[serde(with = "super::conf::one")]
    pub tun_name: String,
    /// `--exit` alone (or `gateway`): be an exit, forwarding the allowed
    /// peers' traffic to this host's network behind its address (an
    /// nftables masquerade, removed when the node stops). `--exit PEER_ID`:
    /// send this host's traffic (`--exit-routes`) through that exit.
    #[arg(long, value_name = "PEER_ID", num_args = 0..=1,
          default_missing_value = ledgermesh_node::roles::vpn::ExitFlag::GATEWAY)]
    #[serde(with = "super::conf::opt")]
    pub exit: Option<ledgermesh_node::roles::vpn::ExitFlag>,
    /// With `--exit PEER_ID`: the networks sent through the exit
    /// (repeatable; default everything, `0.0.0.0/0` and `::/0`). The
    /// host's more specific routes (its LAN) stay its own.
    #[arg(long, value_name = "CIDR", num_args = 1..)]
    #[serde(with = "super::conf::many")]
    pub exit_routes: Vec<ledgermesh_protocol::vpn::IpNet>,
    /// With `--exit PEER_ID`: no packet leaves this host outside the tunnel
    /// (but the node's own), whether or not the exit is reachable
    /// (nftables, removed when the node stops). Without it, traffic takes
    /// the host's own routes while the exit is unreachable.
    #[arg(long)]
    pub kill_switch: bool,
    /// With `--exit` (a gateway): let peers reach this host's private
    /// networks too (its LAN). Off: only public addresses.
    #[arg(long)]
    pub exit_lan: bool,
    /// The ledger (`--ledger evm:…`): peers named by `--peer` alone are
    /// asked for their addresses there, and allowed peers' requests
    /// answered; a priced exit is paid on its channels.
    #[command(flatten)]
    #[serde(flatten)]
    pub ledger: LedgerArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    #[serde(flatten)]
    pub price: PriceArgs,
    /// With `--exit PEER_ID`: pay a priced exit from the ledger account
    /// (`--ledger-key`): lock this many wei in a channel to it (reusing an
    /// open one), and top up by as much when it runs out. Without it, a
    /// priced exit drops what this node sends through it.
    #[arg(long)]
    #[serde(with = "super::conf::opt")]
    pub deposit: Option<u128>,
    /// With `--exit PEER_ID`: the most we pay the exit per MiB, in wei; an
    /// exit priced above it is not paid (`price_too_high`) before any
    /// channel is opened.
    #[arg(long)]
    #[serde(with = "super::conf::opt")]
    pub max_price_per_mib: Option<u128>,
}

/// Where a running node's API is (`status`, `ping`, `vpn status`).
#[derive(Debug, Args)]
pub struct ApiArgs {
    /// The node's API.
    #[arg(long, env = "LEDGERMESH_API", default_value = super::status::DEFAULT_API)]
    pub api: String,
    /// The API's bearer token.
    #[arg(long, env = "LEDGERMESH_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
}

impl ApiArgs {
    /// The token, if given.
    pub fn token(&self) -> Option<&str> {
        self.api_token.as_deref()
    }
}

/// `ledgermesh vpn ...`.
#[derive(Debug, clap::Subcommand)]
pub enum VpnCommand {
    /// Print PEER_ID's address in the mesh: `fda2:12b9:3212::/48` and 80
    /// bits of a hash of the PeerId, the same on every node (no registry).
    Address {
        /// The peer.
        peer: libp2p::PeerId,
        /// Print `{"peer_id": ..., "address": ...}` instead of the bare address.
        #[arg(long)]
        json: bool,
    },
    /// The tunnel of a running vpn node (started with `--api`): its
    /// addresses, device and exit, and each peer's address, path, round
    /// trip and what was carried each way.
    Status {
        #[command(flatten)]
        #[allow(missing_docs)]
        api: ApiArgs,
        /// Print the API's JSON object instead of the table.
        #[arg(long)]
        json: bool,
    },
}

/// `ledgermesh config ...`.
#[derive(Debug, clap::Subcommand)]
pub enum ConfigCommand {
    /// Check a config file (its `role` key names the role) or a whole
    /// command line (after `--`, with or without FILE as its `--config`),
    /// and print the effective settings and where each came from: the
    /// default, the file, the environment or a flag. Secrets are redacted.
    Check {
        /// The config file.
        file: Option<PathBuf>,
        /// Print one JSON object: `{"ok", "role", "settings": {KEY: {"value", "from"}}}`.
        #[arg(long)]
        json: bool,
        /// A role's command line, e.g. `-- relay --config relay.toml --listen /ip4/…`.
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Print a config file for ROLE with every key under its flag's help:
    /// the common ones set, the rest commented out at their defaults. The
    /// samples in `config/` are these.
    Sample {
        /// relay, provide, consume, nc, echo or vpn.
        #[arg(value_parser = ["relay", "provide", "provider", "consume", "consumer", "nc", "echo", "vpn"])]
        role: String,
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
    /// Mine a block every SECS seconds, like a real chain (default: one
    /// block per transaction, at once).
    #[arg(long, value_name = "SECS")]
    pub block_time: Option<u64>,
    /// Also write the `devchain_ready` object to FILE once the chain is up
    /// (written aside and renamed, so a reader never sees half of it).
    #[arg(long, value_name = "FILE")]
    pub ready_file: Option<std::path::PathBuf>,
}

/// Options of roles that use the ledger.
#[derive(Debug, Args, serde::Serialize, serde::Deserialize)]
pub struct LedgerArgs {
    /// Ledger: `memory` (this process only) or `evm:RPC_URL@CONTRACT_ADDRESS`.
    #[arg(long, env = "LEDGERMESH_LEDGER", default_value = "memory")]
    #[serde(with = "super::conf::one")]
    pub ledger: String,
    /// File holding the ledger account key (hex); else $LEDGERMESH_LEDGER_KEY.
    #[arg(long)]
    pub ledger_key: Option<PathBuf>,
    /// Blocks a ledger message needs before it is read (EVM).
    #[arg(long, default_value_t = 1)]
    #[serde(with = "super::conf::one")]
    pub confirmations: u64,
    /// Also read our messages from the endpoint's pending block, as soon as
    /// they are submitted (EVM): a request or response is handled about a
    /// block earlier; its mined copy is then passed over. Each poll fetches
    /// the whole pending block (every 2 s with websocket wake-ups, which push
    /// each transaction instead): for dev and quiet chains, not busy public ones.
    #[arg(long)]
    pub read_pending: bool,
    /// How often the ledger follower asks the endpoint for news when it is
    /// caught up, in ms (EVM): lower on your own node, higher on a public
    /// endpoint with a request budget.
    #[arg(long, default_value_t = 250, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    #[serde(with = "super::conf::one")]
    pub poll_ms: u64,
    /// Websocket wake-ups from the ledger endpoint (EVM): `auto` (the RPC
    /// URL's ws:// or wss:// twin, as anvil and many endpoints serve both on
    /// one port), `off`, or a ws:// or wss:// URL. The followers subscribe to
    /// new heads (and, with --read-pending, new pending transactions) and
    /// read at once; they still poll underneath, at least every 2 s. An
    /// endpoint without websockets leaves them polling at --poll-ms.
    #[arg(long, default_value = "auto", value_name = "auto|off|URL")]
    #[serde(with = "super::conf::one")]
    pub ledger_ws: String,
    /// Where the node keeps its ledger cursor and answer journal across
    /// restarts (default with `--key`: `.ledgermesh/nodes/<peer id>`).
    #[arg(long, env = "LEDGERMESH_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

/// The websocket for ledger wake-ups that `--ledger-ws` asks for, given the
/// `--ledger` spec.
fn ws_url(choice: &str, ledger: &str) -> anyhow::Result<Option<String>> {
    Ok(match choice {
        "off" => None,
        "auto" => ledgermesh_ledger::evm::parse_spec(ledger)
            .ok()
            .and_then(|(rpc, _)| ledgermesh_ledger::evm::ws_url_for(&rpc)),
        url if url.starts_with("ws://") || url.starts_with("wss://") => Some(url.to_string()),
        other => {
            anyhow::bail!("--ledger-ws {other:?}: expected auto, off or a ws:// or wss:// URL")
        }
    })
}

impl LedgerArgs {
    pub(super) async fn open(
        &self,
        account: &str,
    ) -> anyhow::Result<std::sync::Arc<dyn ledgermesh_ledger::Ledger>> {
        anyhow::ensure!(
            !(self.read_pending && self.confirmations > 1),
            "--read-pending acts on messages before any block holds them; \
             --confirmations {} asks to wait for blocks: choose one",
            self.confirmations
        );
        let key = ledgermesh_node::ledger_spec::ledger_key(self.ledger_key.as_deref())?;
        let options = ledgermesh_ledger::evm::EvmOptions {
            confirmations: self.confirmations.max(1),
            read_pending: self.read_pending,
            poll_interval: std::time::Duration::from_millis(self.poll_ms),
            ws_url: ws_url(&self.ledger_ws, &self.ledger)?,
            ..Default::default()
        };
        Ok(open_ledger(
            &self.ledger,
            key.as_ref().map(|k| k.as_str()),
            account,
            options,
        )
        .await?)
    }
}

/// Options every node role has.
#[derive(Debug, Args, serde::Serialize, serde::Deserialize)]
pub struct NodeArgs {
    /// Read settings from this TOML file: every flag has a key (its long
    /// name with `_` for `-`); `LEDGERMESH_…` variables and flags override it.
    #[arg(long, env = "LEDGERMESH_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
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
    #[serde(with = "super::conf::size")]
    pub audit_max_bytes: u64,
    /// Rotated audit files kept (FILE.1 … FILE.N).
    #[arg(long, default_value_t = ledgermesh_node::access::audit_log::DEFAULT_KEEP)]
    #[serde(with = "super::conf::one")]
    pub audit_keep: usize,
    /// Also dial, dial back and announce loopback, private, link-local and
    /// documentation addresses: a lab on this host or a LAN (`--local` says
    /// the same). Off: only globally routable addresses, whoever names them.
    #[arg(long, visible_alias = "local", env = "LEDGERMESH_ALLOW_PRIVATE_ADDRS")]
    pub allow_private_addrs: bool,
    /// Keep IP addresses and ports in the log's INFO, WARN and ERROR lines
    /// (redacted to `<ip>` and `<port>` by default; peer ids always stay,
    /// and `--json` events and DEBUG lines always carry them).
    #[arg(long, env = "LEDGERMESH_LOG_ADDRS")]
    pub log_addrs: bool,
    /// The cipher of Noise's transport messages (TCP and relayed
    /// connections): `auto` uses AES-256-GCM with our own nodes when both
    /// CPUs have AES instructions, ChaCha20-Poly1305 otherwise and with
    /// every other libp2p peer; `chachapoly` always uses ChaCha20-Poly1305.
    #[arg(long, value_enum, default_value_t = NoiseCipher::Auto)]
    #[serde(with = "super::conf::choice")]
    pub noise_cipher: NoiseCipher,
    /// The largest UDP payload QUIC's MTU discovery tries, and what peers
    /// may send us (1200–65527). Paths with a larger MTU than Ethernet's
    /// (loopback, jumbo frames) then carry fewer, larger packets; on an
    /// Ethernet path discovery settles at ~1,452 either way. 1452 keeps
    /// quinn's stock ceiling.
    #[arg(long, default_value_t = ledgermesh_node::swarm::quic::MTU_CEILING,
          value_parser = clap::value_parser!(u16).range(ledgermesh_node::swarm::quic::MIN_MTU as i64..=ledgermesh_node::swarm::quic::MAX_MTU as i64))]
    #[serde(with = "super::conf::one")]
    pub quic_mtu_ceiling: u16,
    /// Established connections, all peers together; more are denied.
    #[arg(long, default_value_t = ConnectionCaps::default().max_connections)]
    #[serde(with = "super::conf::one")]
    pub max_connections: u32,
    /// Established connections to one peer; more are denied.
    #[arg(long, default_value_t = ConnectionCaps::default().max_connections_per_peer)]
    #[serde(with = "super::conf::one")]
    pub max_connections_per_peer: u32,
    /// Deny new connections while the process uses more memory than this
    /// (K/M/G suffixes allowed; default: 90 % of the machine's memory).
    #[arg(long, value_parser = parse_bytes)]
    #[serde(with = "super::conf::opt_size")]
    pub max_memory: Option<u64>,
    /// Serve the HTTP API (`/api/v1/status`, `/api/v1/peers`,
    /// `/api/v1/streams`, `/metrics`) on this address, e.g. `127.0.0.1:7001`
    /// (port 0 picks one, told in an `api_listening` event). An address
    /// other than loopback needs `--api-token`.
    #[arg(long, value_name = "ADDR")]
    #[serde(with = "super::conf::opt")]
    pub api: Option<std::net::SocketAddr>,
    /// The bearer token the API requires (at least 16 characters); needed
    /// for an API on an address other than loopback.
    #[arg(
        long,
        env = "LEDGERMESH_API_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    #[serde(with = "super::conf::opt")]
    pub api_token: Option<String>,
    /// A host name the API answers to besides IP addresses and `localhost`
    /// (repeatable): any other `Host` or `Origin` is refused, so a web page
    /// cannot reach the API by making its own name resolve to this address.
    #[arg(long, value_name = "NAME")]
    #[serde(with = "super::conf::many")]
    pub api_host: Vec<String>,
}

impl NodeArgs {
    /// Refuses an API setting that cannot start, before anything else does.
    pub(super) fn check_api(&self) -> anyhow::Result<()> {
        if let Some(addr) = self.api {
            if self.api_token.is_none() && !addr.ip().is_loopback() {
                anyhow::bail!("{}", ledgermesh_node::api::ApiError::NeedsToken(addr));
            }
            if self.api_token.as_ref().is_some_and(|t| t.len() < 16) {
                anyhow::bail!("{}", ledgermesh_node::api::ApiError::WeakToken);
            }
        }
        Ok(())
    }

    /// Starts the HTTP API when `--api` asks for it.
    pub(super) async fn start_api(
        &self,
        handle: &ledgermesh_node::swarm::NodeHandle,
    ) -> anyhow::Result<()> {
        if let Some(addr) = self.api {
            let bound = ledgermesh_node::api::start(
                handle.clone(),
                addr,
                self.api_token.clone(),
                self.api_host.clone(),
            )
            .await?;
            tracing::info!(
                "dashboard at http://{bound}/ (JSON under /api/v1/, metrics at /metrics)"
            );
            handle.emit(ledgermesh_node::events::Event::ApiListening {
                addr: bound.to_string(),
            });
        }
        Ok(())
    }

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
    pub(super) fn audit(
        &self,
    ) -> anyhow::Result<Option<ledgermesh_node::access::audit_log::AuditLog>> {
        self.audit_log
            .as_deref()
            .map(|p| {
                ledgermesh_node::access::audit_log::AuditLog::open(
                    p,
                    self.audit_max_bytes,
                    self.audit_keep,
                )
            })
            .transpose()
            .context("opening the audit log")
    }
}

/// `ledgermesh relay`.
#[derive(Debug, Args, serde::Serialize, serde::Deserialize)]
pub struct RelayArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    #[serde(flatten)]
    pub node: NodeArgs,
    /// Addresses to listen on.
    #[arg(long, num_args = 1.., default_values = ["/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1"])]
    #[serde(with = "super::conf::many")]
    pub listen: Vec<Multiaddr>,
    /// Extra public addresses to announce (e.g. behind a port forward).
    #[arg(long, num_args = 1..)]
    #[serde(with = "super::conf::many")]
    pub external: Vec<Multiaddr>,
    /// Longest life of one circuit, in seconds (default: 120, or 3600 with
    /// `--open` / `--allow`, for the listed peers).
    #[arg(long)]
    #[serde(with = "super::conf::opt")]
    pub max_circuit_secs: Option<u64>,
    /// Bytes one circuit may carry in each direction (default: 128 KiB, or
    /// 1 TiB with `--open` / `--allow`, for the listed peers).
    #[arg(long)]
    #[serde(with = "super::conf::opt")]
    pub max_circuit_bytes: Option<u64>,
    /// Serve every peer with lifted circuit limits (an open relay). Without
    /// it, circuits are stock-sized (2 minutes, 128 KiB per direction)
    /// except for the peers `--allow` lists.
    #[arg(long, conflicts_with = "allow")]
    pub open: bool,
    /// Lift the circuit limits for the peers this ACL file allows (the
    /// provider's format; entries with streams `*` or `relay`): a circuit
    /// with a listed end gets 1 hour and 1 TiB per direction; others keep
    /// stock-sized circuits. Re-read when it changes.
    #[arg(long)]
    pub allow: Option<PathBuf>,
    /// Reservations the peers behind one IP address may hold at once.
    #[arg(long, default_value_t = ledgermesh_node::swarm::DEFAULT_RESERVATIONS_PER_IP)]
    #[serde(with = "super::conf::one")]
    pub max_reservations_per_ip: usize,
    /// Circuits the peers behind one IP address may hold at once.
    #[arg(long, default_value_t = ledgermesh_node::swarm::DEFAULT_CIRCUITS_PER_IP)]
    #[serde(with = "super::conf::one")]
    pub max_circuits_per_ip: usize,
    #[command(flatten)]
    #[allow(missing_docs)]
    #[serde(flatten)]
    pub pay_ledger: PayLedgerArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    #[serde(flatten)]
    pub price: PriceArgs,
    /// Who pays for a circuit on a priced relay: the reservation holder
    /// (`destination`, the peer reachable only through the relay) or the
    /// peer that dials (`source`).
    #[arg(long, value_enum, default_value_t = BillArg::Destination)]
    #[serde(with = "super::conf::choice")]
    pub bill: BillArg,
}

/// Which end of a circuit pays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BillArg {
    /// The reservation holder.
    Destination,
    /// The dialing peer.
    Source,
}

/// Where a priced relay is paid (providers use their `--ledger`).
#[derive(Debug, Args, serde::Serialize, serde::Deserialize)]
pub struct PayLedgerArgs {
    /// Ledger whose payment channels pay us: `evm:RPC_URL@CONTRACT_ADDRESS`
    /// (the board's spec; its payment contract is found from it).
    #[arg(
        long = "ledger",
        id = "pay_ledger",
        value_name = "SPEC",
        env = "LEDGERMESH_LEDGER"
    )]
    #[serde(with = "super::conf::opt")]
    pub ledger: Option<String>,
    /// File holding the ledger account key that receives payment.
    #[arg(long = "ledger-key", id = "pay_ledger_key", value_name = "FILE")]
    pub ledger_key: Option<PathBuf>,
    /// Where a priced relay keeps the vouchers it has not claimed yet
    /// (default with `--key`: `.ledgermesh/nodes/<peer id>`).
    #[arg(long, env = "LEDGERMESH_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

/// Prices of a payee (a priced relay or provider).
#[derive(Debug, Args, serde::Serialize, serde::Deserialize)]
pub struct PriceArgs {
    /// Price of each MiB carried or served, in wei (0: free).
    #[arg(long, default_value_t = 0)]
    #[serde(with = "super::conf::one")]
    pub price_per_mib: u128,
    /// Price of each hour of a reservation, in wei (relays).
    #[arg(long, default_value_t = 0)]
    #[serde(with = "super::conf::one")]
    pub price_per_hour: u128,
    /// Bytes free before billing starts.
    #[arg(long, default_value_t = 0)]
    #[serde(with = "super::conf::one")]
    pub free_bytes: u64,
    /// Smallest channel deposit accepted, in wei.
    #[arg(long, default_value_t = 0)]
    #[serde(with = "super::conf::one")]
    pub min_deposit: u128,
    /// The first credit window, in MiB worth (what we risk on a new payer).
    #[arg(long, default_value_t = 4)]
    #[serde(with = "super::conf::one")]
    pub credit_mib: u128,
    /// The largest credit window, in MiB worth.
    #[arg(long, default_value_t = 256)]
    #[serde(with = "super::conf::one")]
    pub max_credit_mib: u128,
    /// Claim a payer's vouchers once they owe this many wei unclaimed
    /// (default: 64 MiB worth, and at least 0.005 ETH, so that a claim's gas
    /// is at most 1 % of it at 1 gwei); all are claimed on shutdown, and at
    /// once from a closing channel.
    #[arg(long)]
    #[serde(with = "super::conf::opt")]
    pub claim_at: Option<u128>,
}

impl PriceArgs {
    /// Whether anything is charged.
    pub fn priced(&self) -> bool {
        self.price_per_mib > 0 || self.price_per_hour > 0
    }

    /// The payee's accounts, when priced, paid on `spec` to `key_file`'s account.
    pub(super) async fn payees(
        &self,
        spec: Option<&str>,
        key_file: Option<&std::path::Path>,
        emitter: &ledgermesh_node::events::Emitter,
    ) -> anyhow::Result<Option<ledgermesh_node::protocols::pay::Payees>> {
        use anyhow::Context as _;
        if !self.priced() {
            return Ok(None);
        }
        let spec =
            spec.context("a price needs --ledger evm:RPC_URL@CONTRACT (where payment arrives)")?;
        let key = ledgermesh_node::ledger_spec::ledger_key(key_file)?
            .context("a price needs --ledger-key FILE (the account that is paid)")?;
        let channels = ledgermesh_node::ledger_spec::open_payments(spec, Some(&key)).await?;
        let terms = ledgermesh_protocol::payment::Terms {
            price_per_mib: self.price_per_mib,
            price_per_hour: self.price_per_hour,
            free_bytes: self.free_bytes,
            min_deposit: self.min_deposit,
        };
        let unit = self.price_per_mib.max(self.price_per_hour / 60).max(1);
        let policy = ledgermesh_protocol::payment::CreditPolicy::in_mib(
            unit,
            self.credit_mib,
            self.max_credit_mib,
        );
        let cfg = ledgermesh_node::protocols::pay::PayeeConfig {
            channels,
            terms,
            policy,
            claim_threshold: self.claim_at.unwrap_or(
                ledgermesh_node::protocols::pay::default_claim_threshold(unit),
            ),
        };
        Ok(Some(ledgermesh_node::protocols::pay::Payees::new(
            cfg,
            emitter.clone(),
        )?))
    }
}

/// Network options of the provider and consumer roles.
#[derive(Debug, Args, serde::Serialize, serde::Deserialize)]
pub struct PeerArgs {
    /// Relays to hold reservations on (`.../p2p/<relay id>`), in order of
    /// preference: the first `--reservations` that accept are held; a dead
    /// one is replaced by the next and asked again with back-off.
    #[arg(long, num_args = 1..)]
    #[serde(with = "super::conf::many")]
    pub relay: Vec<Multiaddr>,
    /// Reservations held at once.
    #[arg(long, default_value_t = ledgermesh_node::swarm::DEFAULT_RESERVATIONS)]
    #[serde(with = "super::conf::one")]
    pub reservations: usize,
    /// Seconds between pings on each connection: round trips and lost pings
    /// rate each path; a relayed path red three times in a row is re-routed.
    #[arg(long, default_value_t = 5)]
    #[serde(with = "super::conf::one")]
    pub ping_secs: u64,
    /// Extra address-consensus observers (`.../p2p/<id>`); the relays observe too.
    #[arg(long, num_args = 1..)]
    #[serde(with = "super::conf::many")]
    pub observer: Vec<Multiaddr>,
    /// Observers that must agree on the public address (default ⌈2K/3⌉ of K observers).
    #[arg(long)]
    #[serde(with = "super::conf::opt")]
    pub quorum: Option<usize>,
    /// Addresses to listen on.
    #[arg(long, num_args = 1.., default_values = ["/ip4/0.0.0.0/tcp/0", "/ip4/0.0.0.0/udp/0/quic-v1"])]
    #[serde(with = "super::conf::many")]
    pub listen: Vec<Multiaddr>,
    /// Pay priced relays from the ledger account (`--ledger-key`): lock this
    /// many wei in a channel to each (reusing an open one), and top up by as
    /// much when it runs out. Without it, a priced relay refuses us.
    #[arg(long)]
    #[serde(with = "super::conf::opt")]
    pub relay_deposit: Option<u128>,
    /// The most we pay a relay per MiB, in wei; a relay priced above it is
    /// not paid (`price_too_high`) before any channel is opened.
    #[arg(long)]
    #[serde(with = "super::conf::opt")]
    pub max_relay_price_per_mib: Option<u128>,
    /// The most we lock in one payment channel, in wei (opening and every
    /// top-up); a payee asking a larger minimum deposit is refused
    /// (`deposit_too_high`).
    #[arg(long)]
    #[serde(with = "super::conf::opt")]
    pub max_deposit: Option<u128>,
    /// The most we pay one payee (a relay, a provider) in one run, in wei;
    /// an invoice beyond it is refused (`spend_cap`).
    #[arg(long)]
    #[serde(with = "super::conf::opt")]
    pub max_spend: Option<u128>,
    /// Stay on relayed paths: take no part in hole punching (DCUtR). For
    /// measuring relays, or where a direct path is unwanted.
    #[arg(long)]
    pub no_hole_punch: bool,
    /// Direct QUIC through one endpoint-dependent ("hard") NAT: the hard side
    /// opens many sockets toward the other's public address, the other
    /// probes many ports of the hard side's IP, first connection wins.
    /// Needs QUIC and an address-consensus verdict on each side; off with
    /// `--no-hole-punch` too.
    #[arg(long, value_enum, default_value_t = OnOff::On)]
    #[serde(with = "super::conf::choice")]
    pub hard_nat: OnOff,
    /// Sockets a hard-NAT attempt opens on the hard side (N, at most 512).
    #[arg(long, default_value_t = ledgermesh_protocol::path::hardnat::DEFAULT_SOCKETS,
          value_parser = clap::value_parser!(u16).range(1..=512))]
    #[serde(with = "super::conf::one")]
    pub hard_nat_sockets: u16,
    /// Probes a hard-NAT attempt sends from the easy side (M, at most 4096;
    /// one UDP packet each): success ≈ 1 − e^(−N·M/64512).
    #[arg(long, default_value_t = ledgermesh_protocol::path::hardnat::DEFAULT_PROBES,
          value_parser = clap::value_parser!(u16).range(1..=4096))]
    #[serde(with = "super::conf::one")]
    pub hard_nat_probes: u16,
}

/// `--noise-cipher`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NoiseCipher {
    /// AES-256-GCM between our nodes with AES instructions, else ChaCha20-Poly1305.
    Auto,
    /// ChaCha20-Poly1305 with everyone (as the libp2p specification fixes).
    Chachapoly,
}

impl NoiseCipher {
    /// Whether the node announces AESGCM.
    pub fn aesgcm(self) -> bool {
        self == NoiseCipher::Auto && ledgermesh_node::swarm::aes_in_hardware()
    }
}

/// A switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnOff {
    /// Enabled.
    On,
    /// Disabled.
    Off,
}

/// `ledgermesh provide`.
#[derive(Debug, Args, serde::Serialize, serde::Deserialize)]
pub struct ProvideArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    #[serde(flatten)]
    pub node: NodeArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    #[serde(flatten)]
    pub ledger: LedgerArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    #[serde(flatten)]
    pub peer: PeerArgs,
    /// Streams to sell: NAME=file:PATH, NAME=random:BYTES[:SEED], NAME=paced:BYTES:RATE[:SEED] (paced random bytes) or NAME=zero:BYTES; live ones, read once and fanned out: NAME=exec:COMMAND (its stdout; restarted when it exits), NAME=tcp:HOST:PORT, NAME=stdin:, NAME=tail:PATH; NAME=echo: sends back what a buyer sends.
    #[arg(long, num_args = 1..)]
    #[serde(with = "super::conf::many")]
    pub stream: Vec<String>,
    /// Advertise only relay circuits (behind a NAT; DCUtR finds the direct path).
    #[arg(long)]
    pub relay_only: bool,
    /// Longest grant a service request can hire, in seconds.
    #[arg(long, default_value_t = ledgermesh_protocol::access::DEFAULT_MAX_GRANT_SECS)]
    #[serde(with = "super::conf::one")]
    pub max_grant_secs: u64,
    /// ACL file (TOML; see scripts/acl.sample.toml): peers allowed without a ledger request. Re-read when it changes and on SIGHUP.
    #[arg(long)]
    pub acl: Option<PathBuf>,
    /// Streams served at once, all buyers together (over it: `busy`).
    #[arg(long, default_value_t = SlotLimits::default().max_streams)]
    #[serde(with = "super::conf::one")]
    pub max_streams: usize,
    /// Streams served at once to one buyer (over it: `busy`).
    #[arg(long, default_value_t = SlotLimits::default().max_per_peer)]
    #[serde(with = "super::conf::one")]
    pub max_streams_per_peer: usize,
    /// End a stream whose buyer takes nothing for this many seconds.
    #[arg(long, default_value_t = ServeLimits::default().write_stall.as_secs())]
    #[serde(with = "super::conf::one")]
    pub write_stall_secs: u64,
    /// The most an `inbox:` stream's file may hold (K/M/G suffixes allowed):
    /// a sender is refused once it is full.
    #[arg(long, default_value = "1G", value_parser = parse_bytes)]
    #[serde(with = "super::conf::size")]
    pub inbox_max_bytes: u64,
    /// Service requests of one sender answered at once (each answer is a
    /// ledger post at our cost) before the per-minute rate applies.
    #[arg(long, default_value_t = RateLimits::default().burst)]
    #[serde(with = "super::conf::one")]
    pub answer_burst: u32,
    /// Service requests of one sender answered per minute after the burst.
    #[arg(long, default_value_t = RateLimits::default().per_minute)]
    #[serde(with = "super::conf::one")]
    pub answers_per_minute: u32,
    /// Sell the streams: prices and credit (paid to the `--ledger-key`
    /// account through the board's payment channels).
    #[command(flatten)]
    #[serde(flatten)]
    pub price: PriceArgs,
    /// Bytes of each live stream kept for buyers that join at an offset
    /// or fall behind (K/M/G suffixes allowed); a buyer a whole buffer
    /// behind is cut (`too_slow`).
    #[arg(long, default_value = "16M", value_parser = parse_bytes)]
    #[serde(with = "super::conf::size")]
    pub live_buffer: u64,
    /// An `exec:` command that exits ends its stream (buyers get the end)
    /// instead of being restarted.
    #[arg(long)]
    pub exec_once: bool,
    /// Fault injection for tests: the first chunk sent that holds this
    /// offset of a live stream has that byte flipped after signing.
    #[arg(long, hide = true)]
    #[serde(with = "super::conf::opt")]
    pub fault_flip_live_byte: Option<u64>,
}

/// `ledgermesh nc`.
#[derive(Debug, Args, serde::Serialize, serde::Deserialize)]
pub struct NcArgs {
    /// The stream, as PEERID/STREAM.
    #[serde(with = "super::conf::one")]
    pub target: Want,
    /// Send standard input to the stream (an echo or other inbound stream)
    /// and print what comes back.
    #[arg(long)]
    pub send: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    #[serde(flatten)]
    pub node: NodeArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    #[serde(flatten)]
    pub ledger: LedgerArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    #[serde(flatten)]
    pub peer: PeerArgs,
    /// Reach the provider at this address (`.../p2p/<id>`) without a ledger request; its ACL must allow us.
    #[arg(long, num_args = 1..)]
    #[serde(with = "super::conf::many")]
    pub provider_addr: Vec<Multiaddr>,
    /// Write the JSON events to FILE (standard output carries the stream).
    #[arg(long)]
    pub events: Option<PathBuf>,
    /// Where to join a live stream: `live` or an offset still held.
    #[arg(long, default_value = "live")]
    #[serde(with = "super::conf::one")]
    pub from: ledgermesh_node::streams::live::fetch::From,
    /// Stop after this many bytes or this long (see `consume --until`).
    #[arg(long)]
    #[serde(with = "super::conf::opt")]
    pub until: Option<Until>,
    /// Skip to the live edge instead of being cut when falling behind.
    #[arg(long)]
    pub skip_ahead: bool,
    /// Seconds to wait for the provider's service response.
    #[arg(long, default_value_t = 60)]
    #[serde(with = "super::conf::one")]
    pub response_timeout: u64,
    /// The most we pay per MiB, in wei (0: free streams only).
    #[arg(long, default_value_t = 0)]
    #[serde(with = "super::conf::one")]
    pub max_price_per_mib: u128,
    /// Pay for a priced stream from the `--ledger-key` account (wei per channel).
    #[arg(long)]
    #[serde(with = "super::conf::opt")]
    pub deposit: Option<u128>,
}

impl NcArgs {
    /// The `consume` this is: the one stream to standard output.
    pub fn into_consume(self) -> ConsumeArgs {
        ConsumeArgs {
            node: self.node,
            ledger: self.ledger,
            peer: self.peer,
            want: vec![self.target],
            out: Some(PathBuf::from("-")),
            listen_local: None,
            events: self.events,
            from: self.from,
            until: self.until,
            skip_ahead: self.skip_ahead,
            send: self.send,
            response_timeout: self.response_timeout,
            hire_secs: 3600,
            renew: true,
            provider_addr: self.provider_addr,
            max_bytes: ledgermesh_node::streams::client::DEFAULT_MAX_BYTES,
            max_price_per_mib: self.max_price_per_mib,
            deposit: self.deposit,
        }
    }
}

/// `ledgermesh consume`.
#[derive(Debug, Args, serde::Serialize, serde::Deserialize)]
pub struct ConsumeArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    #[serde(flatten)]
    pub node: NodeArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    #[serde(flatten)]
    pub ledger: LedgerArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    #[serde(flatten)]
    pub peer: PeerArgs,
    /// Streams to buy, as PEERID/STREAM.
    #[arg(long, num_args = 1.., required = true)]
    #[serde(with = "super::conf::many")]
    pub want: Vec<Want>,
    /// Directory to write streams to (`OUT/<peer id>/<stream>`; a live
    /// stream is appended to), or `-` for standard output (one stream
    /// only: raw bytes and nothing else; events then go to `--events`).
    #[arg(long, required_unless_present = "listen_local")]
    pub out: Option<PathBuf>,
    /// Serve the (one) wanted stream to local TCP clients on this address
    /// (e.g. `127.0.0.1:7000`; port 0 picks one, told in a
    /// `local_listening` event), each from when it connects, instead of
    /// writing it out.
    #[arg(long)]
    #[serde(with = "super::conf::opt")]
    pub listen_local: Option<std::net::SocketAddr>,
    /// Write the JSON events to FILE instead of standard output.
    #[arg(long)]
    pub events: Option<PathBuf>,
    /// Where to join a live stream: `live` (its live edge) or an offset the
    /// provider still holds (else refused `gone`).
    #[arg(long, default_value = "live")]
    #[serde(with = "super::conf::one")]
    pub from: ledgermesh_node::streams::live::fetch::From,
    /// Stop live streams after this many bytes each (`64K`, `1M`) or after
    /// this long (`500ms`, `30s`, `5min`, `2h`). Without it a live stream is
    /// followed until Ctrl-C or until its source ends.
    #[arg(long)]
    #[serde(with = "super::conf::opt")]
    pub until: Option<Until>,
    /// A live stream this consumer falls behind skips to the live edge (a
    /// `gap` event says how much) instead of being cut (`too_slow`).
    #[arg(long)]
    pub skip_ahead: bool,
    /// Send standard input to the (one) wanted stream, an inbound one such
    /// as `ledgermesh echo`'s, and write what comes back to `--out`.
    #[arg(long)]
    pub send: bool,
    /// Seconds to wait for each provider's service response.
    #[arg(long, default_value_t = 60)]
    #[serde(with = "super::conf::one")]
    pub response_timeout: u64,
    /// Seconds of access to hire with each request (the provider caps it).
    #[arg(long, default_value_t = 3600)]
    #[serde(with = "super::conf::one")]
    pub hire_secs: u64,
    /// When a grant runs out mid-stream, post a new request and resume from the offset.
    #[arg(long)]
    pub renew: bool,
    /// Fetch from this provider address (`.../p2p/<id>`) without a ledger request; the provider's ACL must allow us.
    #[arg(long, num_args = 1..)]
    #[serde(with = "super::conf::many")]
    pub provider_addr: Vec<Multiaddr>,
    /// Bytes accepted of a stream of unknown length (a live feed) before the
    /// fetch stops (K/M/G suffixes allowed); a stream of declared length is
    /// held to that length.
    #[arg(long, default_value = "16G", value_parser = parse_bytes)]
    #[serde(with = "super::conf::size")]
    pub max_bytes: u64,
    /// The most we pay per MiB of a stream, in wei; a stream priced above it
    /// is refused (`price_too_high`). 0 (the default): free streams only.
    #[arg(long, default_value_t = 0)]
    #[serde(with = "super::conf::one")]
    pub max_price_per_mib: u128,
    /// Pay for priced streams from the ledger account (`--ledger-key`): lock
    /// this many wei in a channel to each provider (reusing an open one), and
    /// top up by as much when it runs out.
    #[arg(long)]
    #[serde(with = "super::conf::opt")]
    pub deposit: Option<u128>,
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

impl std::fmt::Display for Until {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Until::Bytes(n) => f.write_str(&super::conf::size_text(*n)),
            // The largest unit that says it exactly, as a person would.
            Until::Time(t) => {
                let ms = t.as_millis();
                match ms {
                    0 => f.write_str("0ms"),
                    _ if ms % 3_600_000 == 0 => write!(f, "{}h", ms / 3_600_000),
                    _ if ms % 60_000 == 0 => write!(f, "{}min", ms / 60_000),
                    _ if ms % 1_000 == 0 => write!(f, "{}s", ms / 1_000),
                    _ => write!(f, "{ms}ms"),
                }
            }
        }
    }
}

/// `--until`: a byte count or a duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// Bytes per live stream.
    Bytes(u64),
    /// Time from the start.
    Time(std::time::Duration),
}

impl std::str::FromStr for Until {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let num = |n: &str| n.parse::<u64>().ok();
        let time = if let Some(n) = s.strip_suffix("ms") {
            num(n).map(std::time::Duration::from_millis)
        } else if let Some(n) = s.strip_suffix("min") {
            num(n)
                .and_then(|n| n.checked_mul(60))
                .map(std::time::Duration::from_secs)
        } else if let Some(n) = s.strip_suffix('s') {
            num(n).map(std::time::Duration::from_secs)
        } else if let Some(n) = s.strip_suffix('h') {
            num(n)
                .and_then(|n| n.checked_mul(3600))
                .map(std::time::Duration::from_secs)
        } else {
            None
        };
        if let Some(t) = time {
            return Ok(Until::Time(t));
        }
        ledgermesh_node::source::parse_size(s)
            .filter(|b| *b > 0)
            .map(Until::Bytes)
            .ok_or_else(|| {
                format!("{s:?} is neither a size (64K, 1M) nor a duration (500ms, 30s, 5min, 2h)")
            })
    }
}

fn parse_bytes(s: &str) -> Result<u64, String> {
    super::conf::size_of(s)
}

/// `ledgermesh channels`.
#[derive(Debug, Args)]
pub struct ChannelsArgs {
    /// The board's spec: `evm:RPC_URL@CONTRACT_ADDRESS` (not for `report`).
    #[arg(long, env = "LEDGERMESH_LEDGER")]
    pub ledger: Option<String>,
    /// File holding the account key (hex); else $LEDGERMESH_LEDGER_KEY.
    #[arg(long)]
    pub ledger_key: Option<PathBuf>,
    /// Print JSON (one object) instead of a table (before or after the
    /// subcommand).
    #[arg(long, global = true)]
    pub json: bool,
    /// A payee's data directory: its kept vouchers show what each payer
    /// owes beyond what was claimed.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    #[command(subcommand)]
    #[allow(missing_docs)]
    pub action: Option<ChannelsAction>,
}

/// What to do with a channel.
#[derive(Debug, clap::Subcommand)]
pub enum ChannelsAction {
    /// Start closing channel ID (payer): the payee may claim until the delay ends.
    Close {
        /// The channel id (0x…).
        id: String,
    },
    /// Take back what is left of channel ID once its close delay has passed (payer).
    Withdraw {
        /// The channel id (0x…).
        id: String,
    },
    /// A running node's payments, reconciled: per channel it is paid on,
    /// bytes served, owed, the highest voucher, claimed (with each claim's
    /// transaction and gas), unclaimed and unpaid; per payee it pays, its
    /// own meter and vouchers. Read from its `--api`.
    Report {
        /// The node's API address (its `--api`), e.g. `127.0.0.1:7001`.
        #[arg(long)]
        api: String,
        /// The API's bearer token, when it has one.
        #[arg(long, env = "LEDGERMESH_API_TOKEN", hide_env_values = true)]
        api_token: Option<String>,
    },
}

#[cfg(test)]
mod tests {
    use super::ws_url;

    #[test]
    fn ledger_ws_takes_auto_off_or_a_websocket_url() {
        let spec = "evm:http://127.0.0.1:8545@0x5FbDB2315678afecb367f032d93F642f64180aa3";
        assert_eq!(
            ws_url("auto", spec).unwrap().as_deref(),
            Some("ws://127.0.0.1:8545")
        );
        assert_eq!(ws_url("auto", "memory").unwrap(), None);
        assert_eq!(ws_url("off", spec).unwrap(), None);
        assert_eq!(
            ws_url("wss://node.example/ws", spec).unwrap().as_deref(),
            Some("wss://node.example/ws")
        );
        let err = ws_url("http://127.0.0.1:8546", spec)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--ledger-ws") && err.contains("ws://"),
            "{err}"
        );
    }
}
