//! `ledgermesh demo`: a whole network in one process, on loopback, with the
//! in-memory ledger. One relay, three providers (the third reachable only
//! through the relay, so its connections start relayed and DCUtR upgrades
//! them), two consumers each buying from all three at once. Every stream is
//! checked against the SHA-256 of the provider's source.

use ledgermesh_node::consumer::{self, ConsumerConfig, StreamOutcome, Want};
mod report;

use crate::{DevNet, EmitterFactory, TempDir};
use alloy::signers::local::PrivateKeySigner;
use anyhow::Context;
use ledgermesh_ledger::payments::{MemoryChain, PaymentChannels};
use ledgermesh_node::events::{print_json_line, Emitter, Record};
use ledgermesh_node::protocols::pay::{PayeeConfig, Payees, PayerConfig};
use ledgermesh_node::provider::ProviderConfig;
use ledgermesh_node::source::Source;
use ledgermesh_node::swarm::{Bill, NodeHandle, RelayLimits, RelayPay};
use ledgermesh_protocol::payment::{CreditPolicy, Terms};
pub use report::*;
use report::{print_tables, summarize};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast;

/// What the demo's relay and priced provider charge per MiB (1 gwei).
const DEMO_PRICE: u128 = 1_000_000_000;

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

#[derive(Clone)]
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

/// Runs the demo and prints its tables (or JSON). `ok` is false when any
/// Bytes of the live `ticks` feed each consumer follows.
const DEMO_LIVE_BYTES: u64 = 16 << 10;

/// stream is incomplete or unverified.
pub async fn run(opts: DemoOptions) -> anyhow::Result<DemoSummary> {
    let started = std::time::Instant::now();
    let collector = Collector::new();
    let tmp;
    let out_dir = match &opts.out_dir {
        Some(d) => d.clone(),
        None => {
            tmp = TempDir::new("ledgermesh-demo")?;
            tmp.path().to_path_buf()
        }
    };
    let mut nodes: Vec<(String, String, NodeHandle)> = Vec::new();
    let emitters: EmitterFactory = {
        let (collector, json) = (collector.clone(), opts.json);
        Arc::new(move |name: &str| {
            let e = Emitter::new(name).with_json_stdout(json);
            collector.attach(e.subscribe());
            e
        })
    };
    // Money: an in-memory chain. The relay charges per MiB it carries
    // (every node pays it from a channel); provider-2 sells its streams.
    let chain = MemoryChain::new();
    let account = |name: &str| {
        let key = PrivateKeySigner::random();
        chain.fund(key.address(), 1_000 * DEMO_PRICE);
        tracing::debug!(name, account = %key.address(), "demo account");
        Arc::new(chain.account(key)) as Arc<dyn PaymentChannels>
    };
    let payees = |name: &str| {
        // Its events are the node's: collected under the same name.
        let emitter = Emitter::new(name).with_json_stdout(opts.json);
        collector.attach(emitter.subscribe());
        Payees::new(
            PayeeConfig {
                channels: account(name),
                terms: Terms {
                    price_per_mib: DEMO_PRICE,
                    price_per_hour: 0,
                    free_bytes: 0,
                    min_deposit: 10 * DEMO_PRICE,
                },
                policy: CreditPolicy::in_mib(DEMO_PRICE, 2, 64),
                claim_threshold: 1_000 * DEMO_PRICE,
            },
            emitter,
        )
    };
    let payer = |name: &str| PayerConfig {
        channels: account(name),
        deposit: 100 * DEMO_PRICE,
        leeway: Default::default(),
        caps: Default::default(),
        consent: None,
    };
    let relay_payees = payees("relay")?;
    let net = DevNet::new(emitters)
        .with_relay(RelayLimits {
            pay: Some(RelayPay {
                payees: relay_payees.clone(),
                bill: Bill::Destination,
            }),
            ..RelayLimits::lifted()
        })
        .await?;
    let relay = net.relay().context("relay")?.clone();
    let relay_addr = net.relay_addr().context("relay address")?.clone();
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
    let mut provider_payees = vec![("relay".to_string(), relay_payees.clone())];
    for i in 1..=3u64 {
        let name = format!("provider-{i}");
        let mut config = net.config(&name);
        config.defer_reservations = true;
        let handle = net.spawn(config).await?;
        let mut streams = vec![(
            "feed".to_string(),
            Source::Random {
                len: opts.feed_bytes,
                seed: i,
            },
        )];
        if i == 1 {
            streams.push(("log".into(), Source::File(log_path.clone())));
            // A live feed: a command's output, read once, fanned out to
            // both consumers in signed chunks.
            streams.push((
                "ticks".into(),
                Source::Live(ledgermesh_node::streams::live::LiveSpec::Exec(
                    // Ten lines every 10 ms: the buyers' 16 KiB in about two seconds.
                    "i=0; while :; do for _ in 0 1 2 3 4 5 6 7 8 9; do echo \"tick $i\"; \
                     i=$((i+1)); done; sleep 0.01; done"
                        .into(),
                )),
            ));
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
        pc.relay_payer = Some(payer(&name));
        if i == 2 {
            let p = payees(&name)?;
            provider_payees.push((name.clone(), p.clone()));
            pc.price = Some(p);
        }
        net.provide(&handle, None, pc);
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
        if let Some(a) = snap
            .direct_addrs
            .iter()
            .find(|a| ledgermesh_node::addr::is_tcp(a))
        {
            observers.push(
                a.clone()
                    .with(libp2p::multiaddr::Protocol::P2p(h.peer_id())),
            );
        }
    }
    let mut consumers = tokio::task::JoinSet::new();
    for j in 1..=2 {
        let name = format!("consumer-{j}");
        let mut config = net.config(&name);
        config.defer_reservations = true;
        let handle = net.spawn(config).await?;
        let ledger = net.ledger_for(&handle);
        let mut cc = ConsumerConfig::new(wants.clone(), out_dir.join(&name));
        cc.observers = observers.clone();
        cc.relay_payer = Some(payer(&name));
        cc.stream_payer = Some(payer(&name));
        cc.max_price_per_mib = DEMO_PRICE;
        // Follow the live feed for this many bytes.
        cc.live.until_bytes = Some(DEMO_LIVE_BYTES);
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

    // A peer that posted no request dials provider-1 and asks for its feed:
    // it must be refused `not_allowed` and receive nothing.
    let stranger_refused = {
        let mut c = net.config("stranger");
        c.relays.clear();
        let stranger = net.spawn(c).await?;
        let (_, _, p1) = nodes
            .iter()
            .find(|(n, _, _)| n == "provider-1")
            .context("provider-1")?;
        let addrs = p1.wait_listening().await?.direct_addrs;
        stranger.dial(p1.peer_id(), addrs.clone()).await.ok();
        let dir = out_dir.join("stranger");
        let r = ledgermesh_node::streams::fetch(
            &stranger,
            p1.peer_id(),
            &addrs,
            "feed",
            &dir,
            &ledgermesh_node::streams::FetchPolicy::default(),
        )
        .await;
        let got = std::fs::metadata(ledgermesh_node::streams::output_path(
            &dir,
            &p1.peer_id(),
            "feed",
        ))
        .map(|m| m.len())
        .unwrap_or(0);
        nodes.push(("stranger".into(), "stranger (no request)".into(), stranger));
        matches!(r, Err(ledgermesh_node::streams::StreamError::Rejected(ref rej))
            if rej.reason == ledgermesh_protocol::RejectReason::NotAllowed)
            && got == 0
    };

    // The payees claim what the vouchers say; then both sides' reports.
    let mut money = report::MoneyReports::default();
    for (name, p) in &provider_payees {
        p.claim_all().await;
        (money.payees).extend(p.report().into_iter().map(|r| (name.clone(), r)));
    }
    for (name, _, h) in &nodes {
        (money.payers).extend(
            h.payer_report()
                .await
                .into_iter()
                .map(|v| (name.clone(), v)),
        );
    }

    // Independent check: hash each provider's source here, not trusting any node.
    let mut truth: HashMap<(String, String), [u8; 32]> = HashMap::new();
    for (key, src) in sources.iter().filter(|(_, s)| !s.is_live()) {
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
        stranger_refused,
        &money,
    );
    if opts.json {
        print_json_line(&summary);
    } else {
        print_tables(&summary);
    }
    Ok(summary)
}
