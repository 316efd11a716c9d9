//! The glue per subcommand: build the node's configuration from the flags,
//! start the role, wait for it (or for Ctrl-C / SIGTERM).

use super::args::*;
use anyhow::Context;
use ledgermesh_node::consumer::{self, ConsumerConfig};
use ledgermesh_node::events::{Emitter, Event};
use ledgermesh_node::identity::load_or_ephemeral;
use ledgermesh_node::provider::{self, ProviderConfig};
use ledgermesh_node::source::{parse_stream_spec, Source};
use ledgermesh_node::swarm::{spawn, NodeConfig, RelayLimits};
use libp2p::Multiaddr;
use std::time::Duration;

pub(super) async fn run_devchain(args: DevchainArgs) -> anyhow::Result<i32> {
    let deploy = args
        .contract
        .as_deref()
        .map(|c| c.parse().context("--contract is not an address"))
        .transpose()?;
    let chain = ledgermesh_dev::devchain::start(ledgermesh_dev::devchain::DevChainOptions {
        host: args.host,
        port: args.port,
        state: args.state,
        accounts: args.accounts,
        key_dir: args.dir,
        deploy,
        block_time: args.block_time,
    })
    .await?;
    // A board from an older saved state may have no payment contract.
    let payments =
        match ledgermesh_ledger::payments::EvmPayments::connect(&chain.spec(), None).await {
            Ok(p) => Some(p.contract().to_string()),
            Err(e) => {
                tracing::warn!(error = %e, "the board has no payment contract");
                None
            }
        };
    let keys: Vec<String> = chain
        .keys
        .iter()
        .map(|(p, _)| p.display().to_string())
        .collect();
    let ready = serde_json::json!({
        "event": "devchain_ready",
        "spec": chain.spec(),
        "rpc": chain.rpc_url,
        "contract": chain.contract.to_string(),
        "payments": payments,
        "anvil_pid": chain.pid(),
        "ledger_keys": keys,
    });
    if let Some(file) = &args.ready_file {
        let tmp = file.with_extension("tmp");
        std::fs::write(&tmp, format!("{ready}\n"))
            .and_then(|()| std::fs::rename(&tmp, file))
            .with_context(|| format!("--ready-file {}", file.display()))?;
    }
    if args.json {
        ledgermesh_node::events::print_json_line(&ready);
    } else {
        println!("local chain ready at {}", chain.rpc_url);
        println!("SignalBoard deployed at {}", chain.contract);
        if let Some(p) = &payments {
            println!("PaymentChannels (deployed by the board) at {p}");
        }
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
    Emitter::new(name)
        .with_json_stdout(json)
        .with_human_log(!json)
}

/// Cancelled on the first Ctrl-C or SIGTERM. The handlers are installed
/// once, before a role starts, so a signal that arrives while the node is
/// still starting up is a clean shutdown too, not the default death.
static SIGNALLED: std::sync::OnceLock<tokio_util::sync::CancellationToken> =
    std::sync::OnceLock::new();

/// Installs the Ctrl-C / SIGTERM handlers (idempotent). The OS-level
/// handlers are in place when this returns.
pub(super) fn install_signal_handlers() {
    SIGNALLED.get_or_init(|| {
        let token = tokio_util::sync::CancellationToken::new();
        let fire = token.clone();
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let term = signal(SignalKind::terminate());
            let int = signal(SignalKind::interrupt());
            tokio::spawn(async move {
                match (term, int) {
                    (Ok(mut term), Ok(mut int)) => {
                        tokio::select! {
                            _ = term.recv() => {}
                            _ = int.recv() => {}
                        }
                    }
                    _ => {
                        let _ = tokio::signal::ctrl_c().await;
                    }
                }
                fire.cancel();
            });
        }
        #[cfg(not(unix))]
        tokio::spawn(async move {
            let _ = tokio::signal::ctrl_c().await;
            fire.cancel();
        });
        token
    });
}

/// Waits for Ctrl-C or SIGTERM.
async fn wait_for_ctrl_c() {
    install_signal_handlers();
    if let Some(token) = SIGNALLED.get() {
        token.cancelled().await;
    }
    tracing::info!("interrupted; shutting down");
}

/// A relay's allowlist: the file, the list its reloads replace, and the
/// file's fingerprint when it was read.
struct Allowlist {
    path: std::path::PathBuf,
    acl: std::sync::Arc<std::sync::RwLock<ledgermesh_protocol::access::Acl>>,
    seen: ledgermesh_node::access::acl_file::Fingerprint,
}

/// The relay's limits from its flags, and its allowlist when it has one.
fn relay_limits(args: &RelayArgs) -> anyhow::Result<(RelayLimits, Option<Allowlist>)> {
    let mut limits = if args.open {
        RelayLimits::lifted()
    } else {
        RelayLimits::default()
    };
    // The flags size the circuits the relay serves most: everyone's when
    // open, the listed peers' with an allowlist, else the stock ones.
    let served = if args.open || args.allow.is_some() {
        &mut limits.lifted
    } else {
        &mut limits.stock
    };
    if let Some(secs) = args.max_circuit_secs {
        served.duration = Duration::from_secs(secs);
    }
    if let Some(bytes) = args.max_circuit_bytes {
        served.bytes = bytes;
    }
    limits.reservations_per_ip = args.max_reservations_per_ip;
    limits.circuits_per_ip = args.max_circuits_per_ip;
    let allow = match &args.allow {
        Some(path) => {
            // Taken before the read: an edit from now on is read again.
            let seen = ledgermesh_node::access::acl_file::fingerprint(path);
            let acl = ledgermesh_node::access::acl_file::load(path)
                .with_context(|| format!("reading the relay allowlist {}", path.display()))?;
            let acl = std::sync::Arc::new(std::sync::RwLock::new(acl));
            limits.allow = Some(acl.clone());
            Some(Allowlist {
                path: path.clone(),
                acl,
                seen,
            })
        }
        None => None,
    };
    Ok((limits, allow))
}

pub(super) async fn run_relay(args: RelayArgs) -> anyhow::Result<i32> {
    let keypair = load_or_ephemeral(args.node.key.as_deref())?;
    let mut config = NodeConfig::new("relay");
    let (mut limits, allow) = relay_limits(&args)?;
    config.listen = args.listen;
    config.external = args.external;
    ledgermesh_node::logs::show_addrs(args.node.log_addrs);
    let emitter = emitter_for("relay", args.node.json);
    let payees = args
        .price
        .payees(
            args.pay_ledger.ledger.as_deref(),
            args.pay_ledger.ledger_key.as_deref(),
            &emitter,
        )
        .await
        .context("setting up the relay's payments")?;
    if let Some(payees) = &payees {
        let peer = keypair.public().to_peer_id();
        if let Some(dir) = given_or_default_dir(args.pay_ledger.data_dir.as_ref(), &args.node, peer)
        {
            payees
                .keep_vouchers_in(&dir)
                .await
                .with_context(|| format!("keeping vouchers in {}", dir.display()))?;
        }
        limits.pay = Some(ledgermesh_node::swarm::RelayPay {
            payees: payees.clone(),
            bill: match args.bill {
                super::args::BillArg::Destination => ledgermesh_node::swarm::Bill::Destination,
                super::args::BillArg::Source => ledgermesh_node::swarm::Bill::Source,
            },
        });
    }
    config.relay_server = Some(limits);
    config.idle_timeout = Duration::from_secs(300);
    config.emitter = Some(emitter);
    config.audit = args.node.audit()?;
    config.allow_private_addrs = args.node.allow_private_addrs;
    config.noise_aesgcm = args.node.noise_cipher.aesgcm();
    config.quic_mtu_ceiling = args.node.quic_mtu_ceiling;
    config.limits = args.node.caps();
    args.node.check_api()?;
    let handle = spawn(config, keypair).await.context("starting the relay")?;
    if let Some(a) = allow {
        ledgermesh_node::relay::watch_allowlist(handle.tasks(), a.path, a.acl, a.seen);
    }
    args.node.start_api(&handle).await?;
    let snap = handle.wait_listening().await?;
    for a in &snap.direct_addrs {
        // The line an operator copies: a relay is public by design.
        tracing::info!(target: ledgermesh_node::logs::PUBLIC, "relay reachable at {a}/p2p/{}", handle.peer_id());
    }
    if !args.node.allow_private_addrs {
        use ledgermesh_protocol::path::scope::{ip_of, is_global};
        if !(snap.direct_addrs.iter()).any(|a| ip_of(a).is_some_and(is_global)) {
            tracing::warn!(
                "none of these addresses is public: until a public one is known, every \
                 reservation is refused (\"no public address to offer\"); on one machine or \
                 a LAN, start the relay and every node with --local"
            );
        }
    }
    wait_for_ctrl_c().await;
    if let Some(payees) = &payees {
        // What the vouchers say is ours: claim it before going.
        payees.claim_all().await;
    }
    handle.shutdown_because("signal").await;
    Ok(0)
}

/// The payer of priced relays that `--relay-deposit` asks for.
async fn relay_payer(
    ledger: &LedgerArgs,
    net: &PeerArgs,
) -> anyhow::Result<Option<ledgermesh_node::protocols::pay::PayerConfig>> {
    let Some(deposit) = net.relay_deposit else {
        return Ok(None);
    };
    let key = ledgermesh_node::ledger_spec::ledger_key(ledger.ledger_key.as_deref())?
        .context("--relay-deposit needs --ledger-key FILE (the paying account)")?;
    let channels = ledgermesh_node::ledger_spec::open_payments(&ledger.ledger, Some(&key))
        .await
        .context("--relay-deposit: opening the payment channels")?;
    Ok(Some(ledgermesh_node::protocols::pay::PayerConfig {
        channels,
        deposit,
        leeway: Default::default(),
        caps: ledgermesh_protocol::payment::Caps {
            max_price_per_mib: net.max_relay_price_per_mib,
            max_deposit: net.max_deposit,
            max_spend: net.max_spend,
        },
        consent: None,
    }))
}

/// Opens the ledger and starts a node with reservations on `relays`; the
/// address-consensus observers are the relays plus `observers`.
/// Refuses, before anything starts, an address given with `flag` that this
/// node would never dial: a loopback or private one without `--local`.
fn public_or_local(flag: &str, addrs: &[Multiaddr], allow_private: bool) -> anyhow::Result<()> {
    use ledgermesh_protocol::path::scope::{ip_of, is_global};
    if allow_private {
        return Ok(());
    }
    match addrs
        .iter()
        .find(|a| ip_of(a).is_some_and(|ip| !is_global(ip)))
    {
        Some(a) => anyhow::bail!(
            "{flag} {a}: not a public address, and this node dials only public ones: \
             on one machine or a LAN, start every node with --local"
        ),
        None => Ok(()),
    }
}

async fn start_ledger_node(
    role: &str,
    keypair: libp2p::identity::Keypair,
    node: &NodeArgs,
    ledger: &LedgerArgs,
    net: &PeerArgs,
) -> anyhow::Result<(
    ledgermesh_node::swarm::NodeHandle,
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
    let handle = start_node(role, keypair, node, net).await?;
    Ok((handle, opened, observers))
}

/// Starts the node of `role` (and its API, when asked for).
async fn start_node(
    role: &str,
    keypair: libp2p::identity::Keypair,
    node: &NodeArgs,
    net: &PeerArgs,
) -> anyhow::Result<ledgermesh_node::swarm::NodeHandle> {
    public_or_local("--relay", &net.relay, node.allow_private_addrs)?;
    public_or_local("--observer", &net.observer, node.allow_private_addrs)?;
    let mut config = NodeConfig::new(role);
    config.listen = net.listen.clone();
    config.relays = net.relay.clone();
    config.max_reservations = net.reservations.max(1);
    config.ping_interval = Duration::from_secs(net.ping_secs.max(1));
    config.hole_punching = !net.no_hole_punch;
    config.hard_nat = !net.no_hole_punch && net.hard_nat == super::args::OnOff::On;
    config.hard_nat_plan =
        ledgermesh_protocol::path::hardnat::Plan::new(net.hard_nat_sockets, net.hard_nat_probes);
    // Reservations wait for the relay's terms: a node that pays its relays
    // reserves once its channel is attached, one that cannot pay never asks
    // a priced relay (roles::paying).
    config.defer_reservations = !net.relay.is_empty();
    ledgermesh_node::logs::show_addrs(node.log_addrs);
    config.emitter = Some(emitter_for(role, node.json));
    config.allow_private_addrs = node.allow_private_addrs;
    config.noise_aesgcm = node.noise_cipher.aesgcm();
    config.quic_mtu_ceiling = node.quic_mtu_ceiling;
    config.limits = node.caps();
    node.check_api()?;
    let handle = spawn(config, keypair)
        .await
        .with_context(|| format!("starting the {role} node"))?;
    node.start_api(&handle).await?;
    Ok(handle)
}

/// The exit's part, from its flags (checked together already).
fn exit_of(
    flag: &Option<ledgermesh_node::roles::vpn::ExitFlag>,
    routes: Vec<ledgermesh_protocol::vpn::IpNet>,
    kill_switch: bool,
    lan: bool,
) -> Option<ledgermesh_node::roles::vpn::Exit> {
    use ledgermesh_node::roles::vpn::{Exit, ExitFlag};
    Some(match (*flag)? {
        ExitFlag::Gateway => Exit::Gateway { lan },
        ExitFlag::Via(peer) => Exit::Via {
            peer,
            routes: match routes.is_empty() {
                true => vec!["0.0.0.0/0".parse().ok()?, "::/0".parse().ok()?],
                false => routes,
            },
            kill_switch,
        },
    })
}

/// `ledgermesh vpn`: the node, its TUN device and the tunnel.
pub(super) async fn run_vpn(args: VpnRunArgs) -> anyhow::Result<i32> {
    let keypair = load_or_ephemeral(args.node.key.as_deref())?;
    public_or_local(
        "--peer-addr",
        &args.peer_addr,
        args.node.allow_private_addrs,
    )?;
    let me = keypair.public().to_peer_id();
    let handle = start_node("vpn", keypair, &args.node, &args.peer).await?;
    let payees = exit_payees(&args, &handle, me).await?;
    let config = ledgermesh_node::roles::vpn::VpnConfig {
        tun_name: args.tun_name,
        mtu: args.mtu,
        peers: args.peers,
        address_v4: args.address_v4,
        dial: args.peer_addr,
        observers: (args.peer.relay.iter())
            .chain(args.peer.observer.iter())
            .cloned()
            .collect(),
        quorum: args.peer.quorum,
        audit: args.node.audit()?,
        exit: exit_of(
            &args.exit,
            args.exit_routes,
            args.kill_switch,
            args.exit_lan,
        ),
        payees: payees.clone(),
        payer: exit_payer(
            &args.ledger,
            args.deposit,
            args.max_price_per_mib,
            &args.peer,
        )
        .await?,
        own_hosts: ledgermesh_node::ledger_spec::rpc_addrs(&args.ledger.ledger).await,
        // A ledger in this process alone reaches nobody.
        ledger: match args.ledger.ledger.as_str() {
            "memory" => None,
            _ => Some(
                args.ledger
                    .open(&me.to_string())
                    .await
                    .context("opening the ledger")?,
            ),
        },
        data_dir: data_dir(&args.ledger, &args.node, me),
    };
    let result = tokio::select! {
        r = ledgermesh_node::roles::vpn::run(handle.clone(), config) => r.map_err(anyhow::Error::from),
        _ = wait_for_ctrl_c() => Ok(()),
    };
    if let Some(payees) = &payees {
        // What the vouchers say is ours: claim it before going.
        payees.claim_all().await;
    }
    let why = if result.is_ok() { "signal" } else { "error" };
    handle.shutdown_because(why).await;
    result.map(|()| 0)
}

/// A priced exit's accounts (`--price-per-mib`), its unclaimed vouchers
/// kept where `--data-dir` (or the key's default) says.
async fn exit_payees(
    args: &VpnRunArgs,
    handle: &ledgermesh_node::swarm::NodeHandle,
    me: libp2p::PeerId,
) -> anyhow::Result<Option<ledgermesh_node::protocols::pay::Payees>> {
    let payees = (args.price)
        .payees(
            Some(&args.ledger.ledger),
            args.ledger.ledger_key.as_deref(),
            handle.emitter(),
        )
        .await
        .context("setting up the exit's payments")?;
    if let Some(payees) = &payees {
        if let Some(dir) = data_dir(&args.ledger, &args.node, me) {
            (payees.keep_vouchers_in(&dir).await)
                .with_context(|| format!("keeping vouchers in {}", dir.display()))?;
        }
    }
    Ok(payees)
}

/// How a client pays its exit (`--deposit`).
async fn exit_payer(
    ledger: &super::args::LedgerArgs,
    deposit: Option<u128>,
    max_price_per_mib: Option<u128>,
    peer: &super::args::PeerArgs,
) -> anyhow::Result<Option<ledgermesh_node::protocols::pay::PayerConfig>> {
    let Some(deposit) = deposit else {
        return Ok(None);
    };
    let spec = &ledger.ledger;
    let key = ledgermesh_node::ledger_spec::ledger_key(ledger.ledger_key.as_deref())?
        .context("--deposit needs --ledger-key FILE (the paying account)")?;
    let channels = ledgermesh_node::ledger_spec::open_payments(spec, Some(&key))
        .await
        .context("--deposit: opening the payment channels")?;
    Ok(Some(ledgermesh_node::protocols::pay::PayerConfig {
        channels,
        deposit,
        leeway: Default::default(),
        caps: ledgermesh_protocol::payment::Caps {
            max_price_per_mib,
            max_deposit: peer.max_deposit,
            max_spend: peer.max_spend,
        },
        consent: None,
    }))
}

pub(super) async fn run_provide(args: ProvideArgs) -> anyhow::Result<i32> {
    if args.stream.is_empty() {
        anyhow::bail!("nothing to sell: give at least one --stream NAME=SOURCE");
    }
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
    pc.data_dir = data_dir(&args.ledger, &args.node, handle.peer_id());
    pc.observers = observers;
    pc.quorum = args.peer.quorum;
    pc.max_grant_secs = args.max_grant_secs;
    pc.acl = args.acl.clone();
    pc.audit = args.node.audit()?;
    pc.serve_limits.slots.max_streams = args.max_streams.max(1);
    pc.serve_limits.slots.max_per_peer = args.max_streams_per_peer.max(1);
    pc.serve_limits.write_stall = Duration::from_secs(args.write_stall_secs.max(1));
    pc.serve_limits.inbox_max_bytes = args.inbox_max_bytes;
    pc.answer_limits.burst = args.answer_burst.max(1);
    pc.answer_limits.per_minute = args.answers_per_minute;
    pc.relay_payer = relay_payer(&args.ledger, &args.peer).await?;
    pc.live_buffer = args.live_buffer.max(1);
    pc.exec_once = args.exec_once;
    pc.fault_flip_live_byte = args.fault_flip_live_byte;
    pc.price = args
        .price
        .payees(
            Some(&args.ledger.ledger),
            args.ledger.ledger_key.as_deref(),
            handle.emitter(),
        )
        .await
        .context("setting up the provider's prices")?;
    let payees = pc.price.clone();
    tokio::select! {
        r = provider::run(handle.clone(), ledger, pc) => r.context("provider stopped")?,
        _ = wait_for_ctrl_c() => {}
    }
    if let Some(payees) = &payees {
        // What the vouchers say is ours: claim it before going.
        payees.claim_all().await;
    }
    handle.shutdown_because("signal").await;
    Ok(0)
}

/// The consumer's flags that only make sense together; `--events FILE`
/// opened. Whether the stream goes to standard output (`--out -`).
fn check_consume_args(args: &mut ConsumeArgs) -> anyhow::Result<bool> {
    let out_is_stdout = args.out.as_deref() == Some(std::path::Path::new("-"));
    if out_is_stdout && args.want.len() != 1 {
        anyhow::bail!(
            "--out - writes one stream to standard output: want exactly one (got {})",
            args.want.len()
        );
    }
    if args.send && args.want.len() != 1 {
        anyhow::bail!(
            "--send sends standard input to one stream: want exactly one (got {})",
            args.want.len()
        );
    }
    if args.listen_local.is_some() && args.want.len() != 1 {
        anyhow::bail!(
            "--listen-local serves one stream: want exactly one (got {})",
            args.want.len()
        );
    }
    if let Some(path) = &args.events {
        ledgermesh_node::events::json_to_file(path)
            .with_context(|| format!("--events {}: cannot write it", path.display()))?;
        args.node.json = true;
    } else if out_is_stdout && args.node.json {
        anyhow::bail!("--out - takes standard output for the stream's bytes: send the JSON events to a file with --events FILE");
    }
    Ok(out_is_stdout)
}

/// The payer of priced streams that `--deposit` asks for.
async fn stream_payer(
    args: &ConsumeArgs,
) -> anyhow::Result<Option<ledgermesh_node::protocols::pay::PayerConfig>> {
    Ok(match args.deposit {
        None => None,
        Some(deposit) => {
            let key = ledgermesh_node::ledger_spec::ledger_key(args.ledger.ledger_key.as_deref())?
                .context("--deposit needs --ledger-key FILE (the paying account)")?;
            let channels =
                ledgermesh_node::ledger_spec::open_payments(&args.ledger.ledger, Some(&key))
                    .await
                    .context("--deposit: opening the payment channels")?;
            Some(ledgermesh_node::protocols::pay::PayerConfig {
                channels,
                deposit,
                leeway: Default::default(),
                caps: ledgermesh_protocol::payment::Caps {
                    max_price_per_mib: Some(args.max_price_per_mib),
                    max_deposit: args.peer.max_deposit,
                    max_spend: args.peer.max_spend,
                },
                consent: None,
            })
        }
    })
}

/// Says how each wanted stream went (a line each on a terminal, events
/// with `--json`); whether all of them did.
fn report_outcomes(
    handle: &ledgermesh_node::swarm::NodeHandle,
    outcomes: &[consumer::StreamOutcome],
    args: &ConsumeArgs,
    out_is_stdout: bool,
) -> bool {
    let mut ok = true;
    for o in outcomes {
        match &o.result {
            Ok(f) if f.verified || args.send => {
                if !args.node.json && !out_is_stdout {
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
                    ledgermesh_node::events::ErrorPart::Verify,
                    format!(
                        "{}/{}: sha256 {} does not match the provider's",
                        o.peer,
                        o.stream,
                        hex::encode(f.sha256)
                    ),
                ));
                if !args.node.json && !out_is_stdout {
                    println!(
                        "BAD  {}/{}  {} bytes  sha256 mismatch",
                        o.peer, o.stream, f.bytes
                    );
                }
            }
            // `| head` took what it wanted and left: done, as `cat` would be.
            Err(e) if e.output_closed() => {}
            Err(e) => {
                ok = false;
                if !args.node.json {
                    eprintln!("FAIL {}/{}  {e}", o.peer, o.stream);
                }
            }
        }
    }
    ok
}

pub(super) async fn run_consume(mut args: ConsumeArgs) -> anyhow::Result<i32> {
    let out_is_stdout = check_consume_args(&mut args)?;
    let keypair = load_or_ephemeral(args.node.key.as_deref())?;
    let (handle, ledger, observers) =
        start_ledger_node("consumer", keypair, &args.node, &args.ledger, &args.peer).await?;
    let mut cc = ConsumerConfig::new(args.want.clone(), args.out.clone().unwrap_or_default());
    if let Some(addr) = args.listen_local {
        let fanout = ledgermesh_node::streams::local::Fanout::listen(addr)
            .await
            .with_context(|| format!("--listen-local {addr}"))?;
        handle.emit(Event::LocalListening {
            addr: fanout.addr().to_string(),
        });
        cc.listen_local = Some(fanout);
    }
    cc.response_timeout = Duration::from_secs(args.response_timeout);
    cc.data_dir = data_dir(&args.ledger, &args.node, handle.peer_id());
    cc.observers = observers;
    cc.quorum = args.peer.quorum;
    cc.hire_secs = args.hire_secs;
    cc.renew = args.renew;
    cc.fetch.max_bytes = args.max_bytes;
    cc.audit = args.node.audit()?;
    for a in &args.provider_addr {
        if ledgermesh_node::addr::peer_of(a).is_none() {
            anyhow::bail!("--provider-addr {a}: the address must end in /p2p/<provider peer id>");
        }
    }
    public_or_local(
        "--provider-addr",
        &args.provider_addr,
        args.node.allow_private_addrs,
    )?;
    cc.direct = args.provider_addr.clone();
    cc.relay_payer = relay_payer(&args.ledger, &args.peer).await?;
    cc.max_price_per_mib = args.max_price_per_mib;
    cc.stream_payer = stream_payer(&args).await?;
    cc.send = args.send;
    cc.live.from = args.from;
    cc.live.skip_ahead = args.skip_ahead;
    let stop = cc.live.stop.clone();
    match args.until {
        Some(Until::Bytes(b)) => cc.live.until_bytes = Some(b),
        Some(Until::Time(t)) => {
            let stop = stop.clone();
            handle.spawn(async move {
                tokio::time::sleep(t).await;
                stop.cancel();
            });
        }
        None => {}
    }
    // Progress bars for finite streams, on a terminal only.
    let bars = (!out_is_stdout && super::progress::wanted(args.node.json))
        .then(|| super::progress::spawn(handle.ops().traffic.clone()));
    let run = consumer::run(handle.clone(), ledger, cc);
    tokio::pin!(run);
    let outcomes = tokio::select! {
        r = &mut run => r.context("consumer failed")?,
        _ = wait_for_ctrl_c() => {
            // Live subscriptions end and report; what arrived so far stays
            // on disk. Finite streams still running are not waited for.
            stop.cancel();
            match tokio::time::timeout(Duration::from_secs(2), run).await {
                Ok(r) => r.context("consumer failed")?,
                Err(_) => {
                    handle.shutdown_because("signal").await;
                    return Ok(0);
                }
            }
        }
    };
    // The bars go before the result lines, so nothing is printed onto one.
    if let Some(bars) = bars {
        bars.stop().await;
    }
    let ok = report_outcomes(&handle, &outcomes, &args, out_is_stdout);
    handle.shutdown_because("finished").await;
    Ok(if ok { 0 } else { 1 })
}

/// Where a node keeps its cursor and answer journal: `--data-dir`, else,
/// for a node with a key file (a stable identity), `.ledgermesh/nodes/<peer
/// id>` so that a restart neither misses nor repeats anything; an ephemeral
/// identity is new at every start and has nothing to resume.
fn data_dir(
    ledger: &LedgerArgs,
    node: &NodeArgs,
    peer: libp2p::PeerId,
) -> Option<std::path::PathBuf> {
    given_or_default_dir(ledger.data_dir.as_ref(), node, peer)
}

/// `given`, or with `--key` the node's own directory `.ledgermesh/nodes/<peer id>`.
fn given_or_default_dir(
    given: Option<&std::path::PathBuf>,
    node: &NodeArgs,
    peer: libp2p::PeerId,
) -> Option<std::path::PathBuf> {
    given.cloned().or_else(|| {
        node.key
            .as_ref()
            .map(|_| std::path::Path::new(".ledgermesh/nodes").join(peer.to_string()))
    })
}
