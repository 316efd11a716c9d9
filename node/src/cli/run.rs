//! The glue per subcommand: build the node's configuration from the flags,
//! start the role, wait for it (or for Ctrl-C / SIGTERM).

use super::args::*;
use crate::consumer::{self, ConsumerConfig};
use crate::events::{Emitter, Event};
use crate::identity::load_or_ephemeral;
use crate::provider::{self, ProviderConfig};
use crate::source::{parse_stream_spec, Source};
use crate::swarm::{spawn, NodeConfig, RelayLimits};
use anyhow::Context;
use libp2p::Multiaddr;
use std::time::Duration;

pub(super) async fn run_devchain(args: DevchainArgs) -> anyhow::Result<i32> {
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

pub(super) async fn run_relay(args: RelayArgs) -> anyhow::Result<i32> {
    let keypair = load_or_ephemeral(args.node.key.as_deref())?;
    let mut config = NodeConfig::new("relay");
    config.listen = args.listen;
    config.external = args.external;
    let mut limits = if args.open || args.allow.is_some() {
        RelayLimits::lifted()
    } else {
        RelayLimits::default()
    };
    if let Some(secs) = args.max_circuit_secs {
        limits.max_circuit_duration = Duration::from_secs(secs);
    }
    if let Some(bytes) = args.max_circuit_bytes {
        limits.max_circuit_bytes = bytes;
    }
    limits.ip_caps = std::sync::Arc::new(std::sync::Mutex::new(
        ledgermesh_protocol::relay_caps::IpCaps::new(
            args.max_reservations_per_ip,
            args.max_circuits_per_ip,
        ),
    ));
    if let Some(path) = &args.allow {
        let acl = crate::access::acl_file::load(path)
            .with_context(|| format!("reading the relay allowlist {}", path.display()))?;
        let shared = std::sync::Arc::new(std::sync::RwLock::new(acl));
        crate::relay::watch_allowlist(path.clone(), shared.clone());
        limits.allow = Some(shared);
    }
    config.relay_server = Some(limits);
    config.idle_timeout = Duration::from_secs(300);
    config.emitter = Some(emitter_for("relay", args.node.json));
    config.audit = args.node.audit()?;
    config.allow_private_addrs = args.node.allow_private_addrs;
    config.limits = args.node.caps();
    let handle = spawn(config, keypair).await.context("starting the relay")?;
    let snap = handle.wait_listening().await?;
    for a in &snap.direct_addrs {
        tracing::info!("relay reachable at {a}/p2p/{}", handle.peer_id());
    }
    wait_for_ctrl_c().await;
    handle.shutdown_because("signal").await;
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
    config.allow_private_addrs = node.allow_private_addrs;
    config.limits = node.caps();
    let handle = spawn(config, keypair)
        .await
        .with_context(|| format!("starting the {role} node"))?;
    Ok((handle, opened, observers))
}

pub(super) async fn run_provide(args: ProvideArgs) -> anyhow::Result<i32> {
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
    pc.answer_limits.burst = args.answer_burst.max(1);
    pc.answer_limits.per_minute = args.answers_per_minute;
    tokio::select! {
        r = provider::run(handle.clone(), ledger, pc) => r.context("provider stopped")?,
        _ = wait_for_ctrl_c() => {}
    }
    handle.shutdown_because("signal").await;
    Ok(0)
}

pub(super) async fn run_consume(args: ConsumeArgs) -> anyhow::Result<i32> {
    let keypair = load_or_ephemeral(args.node.key.as_deref())?;
    let (handle, ledger, observers) =
        start_ledger_node("consumer", keypair, &args.node, &args.ledger, &args.peer).await?;
    let mut cc = ConsumerConfig::new(args.want, args.out);
    cc.response_timeout = Duration::from_secs(args.response_timeout);
    cc.data_dir = data_dir(&args.ledger, &args.node, handle.peer_id());
    cc.observers = observers;
    cc.quorum = args.peer.quorum;
    cc.hire_secs = args.hire_secs;
    cc.renew = args.renew;
    cc.fetch.max_bytes = args.max_bytes;
    cc.audit = args.node.audit()?;
    for a in &args.provider_addr {
        if crate::addr::peer_of(a).is_none() {
            anyhow::bail!("--provider-addr {a}: the address must end in /p2p/<provider peer id>");
        }
    }
    cc.direct = args.provider_addr.clone();
    let outcomes = tokio::select! {
        r = consumer::run(handle.clone(), ledger, cc) => r.context("consumer failed")?,
        _ = wait_for_ctrl_c() => {
            // What arrived so far stays on disk.
            handle.shutdown_because("signal").await;
            return Ok(0);
        }
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
    ledger.data_dir.clone().or_else(|| {
        node.key
            .as_ref()
            .map(|_| std::path::Path::new(".ledgermesh/nodes").join(peer.to_string()))
    })
}
