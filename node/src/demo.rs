//! `ledgermesh demo`: a whole network in one process, on loopback, with the
//! in-memory ledger. One relay, three providers (the third reachable only
//! through the relay, so its connections start relayed and DCUtR upgrades
//! them), two consumers each buying from all three at once. Every stream is
//! checked against the SHA-256 of the provider's source.

use crate::consumer::{self, ConsumerConfig, StreamOutcome, Want};
use crate::events::{print_json_line, Emitter, Event, PathKind, Record, TransportKind};
use crate::net::{spawn, NodeConfig, NodeHandle, RelayLimits};
use crate::provider::{self, ProviderConfig};
use crate::source::Source;
use anyhow::Context;
use ledgermesh_ledger::{Ledger, MemoryLedger};
use libp2p::identity::Keypair;
use serde::Serialize;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast;

/// How to run the demo.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Print events and the summary as JSON lines instead of tables.
    pub json: bool,
    /// Size of each provider's `feed` stream.
    pub feed_bytes: u64,
    /// Keep received files here (a temporary directory otherwise).
    pub out_dir: Option<PathBuf>,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            json: false,
            feed_bytes: 8 << 20,
            out_dir: None,
        }
    }
}

/// A node of the demo.
#[derive(Debug, Clone, Serialize)]
pub struct NodeRow {
    /// Label.
    pub name: String,
    /// Role.
    pub role: String,
    /// PeerId.
    pub peer_id: String,
}

/// One ledger post.
#[derive(Debug, Clone, Serialize)]
pub struct LedgerRow {
    /// Who posted.
    pub from: String,
    /// To whom (the node whose stdin topic it is).
    pub to: String,
    /// Kind.
    pub kind: String,
    /// Size on the ledger.
    pub bytes: usize,
}

/// One consumer→provider connection.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectionRow {
    /// Consumer label.
    pub consumer: String,
    /// Provider label.
    pub provider: String,
    /// Path of the first connection.
    pub path: PathKind,
    /// Its transport.
    pub transport: TransportKind,
    /// Relay label when relayed.
    pub via: Option<String>,
    /// Whether DCUtR upgraded it to direct.
    pub upgraded: bool,
    /// Time from relayed to direct.
    pub ms_after_relayed: Option<u64>,
    /// Transport of the direct connection after the upgrade.
    pub upgraded_transport: Option<TransportKind>,
}

/// One received stream.
#[derive(Debug, Clone, Serialize)]
pub struct StreamRow {
    /// Consumer label.
    pub consumer: String,
    /// Provider label.
    pub provider: String,
    /// Stream name.
    pub stream: String,
    /// Bytes received.
    pub bytes: u64,
    /// Throughput.
    pub mib_s: f64,
    /// SHA-256 received, hex.
    pub sha256: String,
    /// Equal to the SHA-256 of the provider's source, computed independently.
    pub verified: bool,
    /// Resumptions on a new path.
    pub resumes: u32,
    /// Error when it failed.
    pub error: Option<String>,
}

/// One node's address-consensus verdict.
#[derive(Debug, Clone, Serialize)]
pub struct PublicRow {
    /// Node label.
    pub node: String,
    /// Accepted public address.
    pub addr: Option<String>,
    /// NAT mapping.
    pub mapping: String,
    /// Dial-back verdict.
    pub reachable: Option<bool>,
    /// Observers that answered.
    pub observers: usize,
    /// Observers agreeing.
    pub agreeing: usize,
}

/// The demo's result.
#[derive(Debug, Clone, Serialize)]
pub struct DemoSummary {
    /// Always `demo_summary`.
    pub event: &'static str,
    /// Every stream complete and verified.
    pub ok: bool,
    /// Wall time.
    pub elapsed_ms: u64,
    /// Nodes.
    pub nodes: Vec<NodeRow>,
    /// Ledger posts.
    pub ledger_messages: Vec<LedgerRow>,
    /// Consumer→provider connections.
    pub connections: Vec<ConnectionRow>,
    /// Streams.
    pub streams: Vec<StreamRow>,
    /// Address-consensus verdicts.
    pub public_addresses: Vec<PublicRow>,
}

struct Collector {
    records: Arc<Mutex<Vec<Record>>>,
}

impl Collector {
    fn new() -> Self {
        Self {
            records: Arc::default(),
        }
    }

    fn attach(&self, mut rx: broadcast::Receiver<Record>) {
        let records = self.records.clone();
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(r) => records.lock().unwrap_or_else(|p| p.into_inner()).push(r),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "demo collector fell behind");
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        });
    }

    fn snapshot(&self) -> Vec<Record> {
        self.records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

fn short(id: &str) -> String {
    let n = id.len();
    if n > 8 {
        format!("…{}", &id[n - 6..])
    } else {
        id.into()
    }
}

/// Runs the demo and prints its tables (or JSON). `ok` is false when any
/// stream is incomplete or unverified.
pub async fn run(opts: DemoOptions) -> anyhow::Result<DemoSummary> {
    let started = std::time::Instant::now();
    let collector = Collector::new();
    let board = MemoryLedger::new();
    let tmp;
    let out_dir = match &opts.out_dir {
        Some(d) => d.clone(),
        None => {
            tmp = TempDir::new("ledgermesh-demo")?;
            tmp.path.clone()
        }
    };
    let mut nodes: Vec<(String, String, NodeHandle)> = Vec::new();
    let mk_emitter = |name: &str| {
        let e = Emitter::new(name).with_json_stdout(opts.json);
        collector.attach(e.subscribe());
        e
    };

    let relay = {
        let mut c = NodeConfig::new("relay");
        c.relay_server = Some(RelayLimits::default());
        c.emitter = Some(mk_emitter("relay"));
        spawn(c, Keypair::generate_ed25519()).await?
    };
    let relay_addr = crate::relay::dial_addr(&relay).await?;
    nodes.push(("relay".into(), "relay".into(), relay.clone()));

    // A small text file for provider-1's `log` stream, to show file sources.
    let log_path = out_dir.join("provider-1-log.txt");
    tokio::fs::create_dir_all(&out_dir).await?;
    let log: String = (0..20_000)
        .map(|i| format!("tick {i:06} temperature={}.{}\n", 20 + i % 7, i % 10))
        .collect();
    tokio::fs::write(&log_path, log).await?;

    let mut sources: HashMap<(String, String), Source> = HashMap::new();
    let mut wants = Vec::new();
    for i in 1..=3u64 {
        let name = format!("provider-{i}");
        let mut c = NodeConfig::new(&name);
        c.relays = vec![relay_addr.clone()];
        c.emitter = Some(mk_emitter(&name));
        let handle = spawn(c, Keypair::generate_ed25519()).await?;
        let mut streams = vec![(
            "feed".to_string(),
            Source::Random {
                len: opts.feed_bytes,
                seed: i,
            },
        )];
        if i == 1 {
            streams.push(("log".into(), Source::File(log_path.clone())));
        }
        for (s, src) in &streams {
            sources.insert((handle.peer_id().to_string(), s.clone()), src.clone());
            wants.push(Want {
                peer: handle.peer_id(),
                stream: s.clone(),
            });
        }
        let mut pc = ProviderConfig::new(streams);
        pc.relay_only = i == 3;
        let ledger: Arc<dyn Ledger> = Arc::new(board.account(handle.peer_id().to_string()));
        let h = handle.clone();
        tokio::spawn(async move {
            if let Err(e) = provider::run(h.clone(), ledger, pc).await {
                h.emit(Event::error("provider", format!("{e:#}")));
            }
        });
        let role = if i == 3 {
            "provider (relay-only)"
        } else {
            "provider"
        };
        nodes.push((name, role.into(), handle));
    }

    // Every node answers the observe protocol: the relay and the two public
    // providers are the consumers' address-consensus observers (K = 3). The
    // relay-only provider is not asked: a direct connection to it would
    // bypass the relay this demo shows.
    let mut observers = vec![relay_addr.clone()];
    for (_, _, h) in nodes
        .iter()
        .filter(|(n, role, _)| n.starts_with("provider") && !role.contains("relay-only"))
    {
        let snap = h.wait_listening().await?;
        if let Some(a) = snap.direct_addrs.iter().find(|a| crate::addr::is_tcp(a)) {
            observers.push(
                a.clone()
                    .with(libp2p::multiaddr::Protocol::P2p(h.peer_id())),
            );
        }
    }
    let mut consumers = tokio::task::JoinSet::new();
    for j in 1..=2 {
        let name = format!("consumer-{j}");
        let mut c = NodeConfig::new(&name);
        c.relays = vec![relay_addr.clone()];
        c.emitter = Some(mk_emitter(&name));
        let handle = spawn(c, Keypair::generate_ed25519()).await?;
        let ledger: Arc<dyn Ledger> = Arc::new(board.account(handle.peer_id().to_string()));
        let mut cc = ConsumerConfig::new(wants.clone(), out_dir.join(&name));
        cc.observers = observers.clone();
        let h = handle.clone();
        let n = name.clone();
        consumers.spawn(async move { (n, consumer::run(h, ledger, cc).await) });
        nodes.push((name, "consumer".into(), handle));
    }

    let mut outcomes: Vec<(String, StreamOutcome)> = Vec::new();
    let all = async {
        while let Some(done) = consumers.join_next().await {
            let (name, result) = done?;
            for o in result.with_context(|| format!("{name} failed"))? {
                outcomes.push((name.clone(), o));
            }
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(Duration::from_secs(90), all)
        .await
        .context("demo did not finish within 90 s")??;

    // Independent check: hash each provider's source here, not trusting any node.
    let mut truth: HashMap<(String, String), [u8; 32]> = HashMap::new();
    for (key, src) in &sources {
        truth.insert(key.clone(), src.digest().await?.1);
    }
    for (_, _, h) in &nodes {
        // The summary must be the last line: nothing a stopping node says may follow it.
        h.emitter().mute_json();
        h.shutdown().await;
    }

    let summary = summarize(
        &nodes,
        &collector.snapshot(),
        &outcomes,
        &truth,
        started.elapsed(),
    );
    if opts.json {
        print_json_line(&summary);
    } else {
        print_tables(&summary);
    }
    Ok(summary)
}

fn summarize(
    nodes: &[(String, String, NodeHandle)],
    records: &[Record],
    outcomes: &[(String, StreamOutcome)],
    truth: &HashMap<(String, String), [u8; 32]>,
    elapsed: Duration,
) -> DemoSummary {
    let label: HashMap<String, String> = nodes
        .iter()
        .map(|(n, _, h)| (h.peer_id().to_string(), n.clone()))
        .collect();
    let topic_owner: HashMap<String, String> = nodes
        .iter()
        .map(|(n, _, h)| {
            (
                ledgermesh_protocol::Topic::stdin(&h.peer_id()).to_hex(),
                n.clone(),
            )
        })
        .collect();
    let name_of = |id: &str| label.get(id).cloned().unwrap_or_else(|| short(id));
    let is_provider = |id: &str| label.get(id).is_some_and(|n| n.starts_with("provider"));

    let mut ledger_messages = Vec::new();
    let mut connections: Vec<ConnectionRow> = Vec::new();
    let mut public_addresses = Vec::new();
    for r in records {
        match &r.event {
            Event::PublicAddress {
                addr,
                mapping,
                reachable,
                observers,
                agreeing,
                ..
            } => public_addresses.push(PublicRow {
                node: r.node.clone(),
                addr: addr.clone(),
                mapping: mapping.clone(),
                reachable: *reachable,
                observers: *observers,
                agreeing: *agreeing,
            }),
            Event::LedgerPost {
                topic, kind, bytes, ..
            } => ledger_messages.push(LedgerRow {
                from: r.node.clone(),
                to: topic_owner
                    .get(topic)
                    .cloned()
                    .unwrap_or_else(|| short(topic)),
                kind: kind.clone(),
                bytes: *bytes,
            }),
            Event::Connected {
                peer_id,
                path,
                transport,
                via,
                ..
            } if r.node.starts_with("consumer") && is_provider(peer_id) => {
                let provider = name_of(peer_id);
                if !connections
                    .iter()
                    .any(|c| c.consumer == r.node && c.provider == provider)
                {
                    connections.push(ConnectionRow {
                        consumer: r.node.clone(),
                        provider,
                        path: *path,
                        transport: *transport,
                        via: via.as_deref().map(name_of),
                        upgraded: false,
                        ms_after_relayed: None,
                        upgraded_transport: None,
                    });
                }
            }
            Event::Upgraded {
                peer_id,
                transport,
                ms_after_relayed,
            } => {
                // Either side may see the upgrade first; report it on the pair.
                let (consumer, provider) = if r.node.starts_with("consumer") {
                    (r.node.clone(), name_of(peer_id))
                } else {
                    (name_of(peer_id), r.node.clone())
                };
                if let Some(c) = connections
                    .iter_mut()
                    .find(|c| c.consumer == consumer && c.provider == provider && !c.upgraded)
                {
                    c.upgraded = true;
                    c.ms_after_relayed = Some(*ms_after_relayed);
                    c.upgraded_transport = Some(*transport);
                }
            }
            _ => {}
        }
    }
    connections.sort_by(|a, b| (&a.consumer, &a.provider).cmp(&(&b.consumer, &b.provider)));

    let mut streams = Vec::new();
    for (consumer, o) in outcomes {
        let expected = truth.get(&(o.peer.to_string(), o.stream.clone()));
        let row = match &o.result {
            Ok(f) => StreamRow {
                consumer: consumer.clone(),
                provider: name_of(&o.peer.to_string()),
                stream: o.stream.clone(),
                bytes: f.bytes,
                mib_s: f.bytes as f64 / (1 << 20) as f64 / f.elapsed.as_secs_f64().max(1e-6),
                sha256: hex::encode(f.sha256),
                verified: f.verified && expected == Some(&f.sha256),
                resumes: f.resumes,
                error: None,
            },
            Err(e) => StreamRow {
                consumer: consumer.clone(),
                provider: name_of(&o.peer.to_string()),
                stream: o.stream.clone(),
                bytes: 0,
                mib_s: 0.0,
                sha256: String::new(),
                verified: false,
                resumes: 0,
                error: Some(e.clone()),
            },
        };
        streams.push(row);
    }
    streams.sort_by(|a, b| {
        (&a.consumer, &a.provider, &a.stream).cmp(&(&b.consumer, &b.provider, &b.stream))
    });
    let ok = !streams.is_empty() && streams.iter().all(|s| s.verified);
    DemoSummary {
        event: "demo_summary",
        ok,
        elapsed_ms: elapsed.as_millis() as u64,
        nodes: nodes
            .iter()
            .map(|(n, role, h)| NodeRow {
                name: n.clone(),
                role: role.clone(),
                peer_id: h.peer_id().to_string(),
            })
            .collect(),
        ledger_messages,
        connections,
        streams,
        public_addresses,
    }
}

fn transport_str(t: TransportKind) -> &'static str {
    match t {
        TransportKind::Tcp => "tcp",
        TransportKind::Quic => "quic",
        TransportKind::Other => "other",
    }
}

fn print_tables(s: &DemoSummary) {
    println!("\nNODES");
    println!("  {:<12} {:<22} peer id", "name", "role");
    for n in &s.nodes {
        println!("  {:<12} {:<22} {}", n.name, n.role, n.peer_id);
    }
    println!("\nLEDGER MESSAGES (sealed with HPKE to the recipient; no address in the clear)");
    println!("  {:<12} {:<12} {:<18} bytes", "from", "to (stdin)", "kind");
    for m in &s.ledger_messages {
        println!("  {:<12} {:<12} {:<18} {}", m.from, m.to, m.kind, m.bytes);
    }
    println!("\nCONNECTIONS (consumer → provider)");
    println!(
        "  {:<12} {:<12} {:<9} {:<6} {:<8} upgrade",
        "consumer", "provider", "path", "tcp/quic", "via"
    );
    for c in &s.connections {
        let path = match c.path {
            PathKind::Direct => "direct",
            PathKind::Relayed => "relayed",
        };
        let upgrade = match (c.upgraded, c.ms_after_relayed, c.upgraded_transport) {
            (true, Some(ms), Some(t)) => {
                format!("→ direct ({}) after {ms} ms (DCUtR)", transport_str(t))
            }
            _ if c.path == PathKind::Relayed => "stayed relayed".into(),
            _ => "-".into(),
        };
        println!(
            "  {:<12} {:<12} {:<9} {:<8} {:<8} {}",
            c.consumer,
            c.provider,
            path,
            transport_str(c.transport),
            c.via.clone().unwrap_or_else(|| "-".into()),
            upgrade
        );
    }
    println!("\nPUBLIC ADDRESS (peer consensus: a quorum of observers must agree)");
    for p in &s.public_addresses {
        println!(
            "  {:<12} {:<26} {:<22} reachable={:<5} {}/{} observers agree",
            p.node,
            p.addr.clone().unwrap_or_else(|| "-".into()),
            p.mapping,
            p.reachable
                .map(|r| r.to_string())
                .unwrap_or_else(|| "?".into()),
            p.agreeing,
            p.observers
        );
    }
    println!("\nSTREAMS");
    println!(
        "  {:<12} {:<12} {:<6} {:>10} {:>9} {:<17} {:<8} resumes",
        "consumer", "provider", "stream", "bytes", "MiB/s", "sha256", "verified"
    );
    for st in &s.streams {
        println!(
            "  {:<12} {:<12} {:<6} {:>10} {:>9.1} {:<17} {:<8} {}",
            st.consumer,
            st.provider,
            st.stream,
            st.bytes,
            st.mib_s,
            st.sha256.get(..16).unwrap_or("-"),
            if st.verified { "yes" } else { "NO" },
            st.resumes
        );
        if let Some(e) = &st.error {
            println!("      error: {e}");
        }
    }
    println!(
        "\n{} in {:.1} s: {} of {} streams complete and verified.",
        if s.ok { "OK" } else { "FAILED" },
        s.elapsed_ms as f64 / 1000.0,
        s.streams.iter().filter(|x| x.verified).count(),
        s.streams.len()
    );
}

/// A directory removed on drop.
struct TempDir {
    path: PathBuf,
}

impl TempDir {
    fn new(prefix: &str) -> std::io::Result<Self> {
        let path = std::env::temp_dir().join(format!(
            "{prefix}-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&path)?;
        Ok(Self { path })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
