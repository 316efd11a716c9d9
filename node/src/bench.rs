//! `ledgermesh bench`: throughput, latency, set-up time, M×N scale and
//! envelope cost, each next to a baseline measured in the same run.
//!
//! Everything runs on loopback in this process (the EVM set-up phase uses an
//! anvil it starts itself when installed). Figures are printed, never
//! asserted: these machines are shared and noisy.

use crate::consumer::{self, ConsumerConfig, Want};
use crate::events::{now_ms, Emitter, Event, Record};
use crate::net::{spawn, NodeConfig, NodeHandle, RelayLimits};
use crate::provider::{self, ProviderConfig};
use crate::source::Source;
use crate::streams::{serve, Catalog, STREAM_PROTOCOL};
use anyhow::Context;
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use ledgermesh_ledger::{Ledger, MemoryLedger};
use ledgermesh_protocol::framing::{split_frame, StreamHeader, StreamRequest};
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId, StreamProtocol};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Echo protocol used to time round trips.
const ECHO: StreamProtocol = StreamProtocol::new("/ledgermesh/bench-echo/1");
const MIB: f64 = (1 << 20) as f64;

/// How big a run.
#[derive(Debug, Clone, Copy)]
pub struct BenchOptions {
    /// A run under a minute.
    pub quick: bool,
}

struct Sizes {
    throughput_bytes: u64,
    tcp_bytes: u64,
    crypto_time: Duration,
    rtt_samples: usize,
    mxn_total: u64,
    mxn_ns: &'static [usize],
    envelope_time: Duration,
}

impl Sizes {
    fn new(quick: bool) -> Self {
        if quick {
            Sizes {
                throughput_bytes: 256 << 20,
                tcp_bytes: 1 << 30,
                crypto_time: Duration::from_millis(400),
                rtt_samples: 300,
                mxn_total: 128 << 20,
                mxn_ns: &[1, 10, 50],
                envelope_time: Duration::from_millis(300),
            }
        } else {
            Sizes {
                throughput_bytes: 1 << 30,
                tcp_bytes: 4 << 30,
                crypto_time: Duration::from_secs(2),
                rtt_samples: 2000,
                mxn_total: 512 << 20,
                mxn_ns: &[1, 10, 50],
                envelope_time: Duration::from_secs(1),
            }
        }
    }
}

fn mib_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / MIB / d.as_secs_f64().max(1e-9)
}

fn round(x: f64, places: i32) -> f64 {
    let p = 10f64.powi(places);
    (x * p).round() / p
}

/// Raw TCP over loopback between two tokio sockets: the ceiling.
async fn tcp_baseline(bytes: u64) -> anyhow::Result<f64> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let reader = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut got = 0u64;
        let start = Instant::now();
        while got < bytes {
            let n = s.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            got += n as u64;
        }
        anyhow::Ok((got, start.elapsed()))
    });
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let buf = vec![7u8; 256 * 1024];
    let mut sent = 0u64;
    while sent < bytes {
        s.write_all(&buf).await?;
        sent += buf.len() as u64;
    }
    s.shutdown().await?;
    let (got, d) = reader.await??;
    Ok(mib_s(got, d))
}

/// Single-core ChaCha20-Poly1305 sealing of 64 KiB records with ring, the
/// implementation libp2p-noise uses for the transport.
fn chacha_ring_baseline(time: Duration) -> f64 {
    use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
    let key = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &[9u8; 32]).expect("key"));
    let mut buf = vec![1u8; 64 * 1024];
    let start = Instant::now();
    let mut bytes = 0u64;
    let mut n = 0u64;
    while start.elapsed() < time {
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(&n.to_le_bytes());
        let tag = key
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut buf)
            .expect("seal");
        let _ = std::hint::black_box(tag);
        bytes += buf.len() as u64;
        n += 1;
    }
    mib_s(bytes, start.elapsed())
}

/// Single-core ChaCha20-Poly1305 sealing of 64 KiB records with the RustCrypto
/// crate the envelopes' HPKE uses.
fn chacha_baseline(time: Duration) -> f64 {
    use chacha20poly1305::aead::{AeadInPlace, KeyInit};
    use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
    let cipher = ChaCha20Poly1305::new(Key::from_slice(&[9u8; 32]));
    let mut buf = vec![1u8; 64 * 1024];
    let start = Instant::now();
    let mut bytes = 0u64;
    let mut n = 0u64;
    while start.elapsed() < time {
        let mut nonce = [0u8; 12];
        nonce[..8].copy_from_slice(&n.to_le_bytes());
        let tag = cipher
            .encrypt_in_place_detached(Nonce::from_slice(&nonce), b"", &mut buf)
            .expect("encrypt");
        std::hint::black_box(tag);
        bytes += buf.len() as u64;
        n += 1;
    }
    mib_s(bytes, start.elapsed())
}

struct Recorder {
    rx: tokio::sync::broadcast::Receiver<Record>,
    seen: Vec<Record>,
}

impl Recorder {
    fn all(&mut self) -> &[Record] {
        while let Ok(r) = self.rx.try_recv() {
            self.seen.push(r);
        }
        &self.seen
    }
}

async fn node(
    name: &str,
    relays: Vec<Multiaddr>,
    hole_punching: bool,
    relay_server: bool,
) -> anyhow::Result<(NodeHandle, Recorder)> {
    let emitter = Emitter::new(name);
    let rec = Recorder {
        rx: emitter.subscribe(),
        seen: vec![],
    };
    let mut c = NodeConfig::new(name);
    c.relays = relays;
    c.hole_punching = hole_punching;
    c.emitter = Some(emitter);
    if relay_server {
        c.relay_server = Some(RelayLimits {
            max_circuits: 1024,
            max_circuits_per_peer: 64,
            ..RelayLimits::default()
        });
    }
    Ok((spawn(c, Keypair::generate_ed25519()).await?, rec))
}

/// A node that serves zero streams and echoes, for timing the transport.
async fn sink_provider(
    name: &str,
    relays: Vec<Multiaddr>,
    hole_punching: bool,
    bytes: u64,
) -> anyhow::Result<NodeHandle> {
    let (h, _) = node(name, relays, hole_punching, false).await?;
    let mut catalog = Catalog::default();
    catalog
        .insert_undigested("zeros", Source::Zeros { len: bytes })
        .await?;
    tokio::spawn(serve(h.clone(), Arc::new(catalog), 4096));
    let mut control = h.stream_control();
    let mut incoming = control.accept(ECHO)?;
    tokio::spawn(async move {
        while let Some((_, mut s)) = incoming.next().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).await.is_err() || s.flush().await.is_err() {
                                break;
                            }
                        }
                    }
                }
            });
        }
    });
    h.wait_listening().await?;
    h.wait_relays().await?;
    Ok(h)
}

fn only(addrs: &[Multiaddr], quic: bool) -> Vec<Multiaddr> {
    addrs
        .iter()
        .filter(|a| crate::addr::is_quic(a) == quic)
        .cloned()
        .collect()
}

/// Receives a whole zero stream, discarding it; returns bytes and time.
/// `libp2p-stream` hands inbound streams over through a channel with a single
/// slot and resets the ones that arrive while it is full, so a burst of opens
/// can be refused: those are retried, as `streams::fetch` does.
async fn drain(h: &NodeHandle, peer: PeerId) -> anyhow::Result<(u64, Duration)> {
    let mut last = None;
    for attempt in 0..8u32 {
        match drain_once(h, peer).await {
            Ok(r) => return Ok(r),
            Err((true, e)) => return Err(e),
            Err((false, e)) => {
                last = Some(e);
                tokio::time::sleep(Duration::from_millis(20 << attempt)).await;
            }
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("drain failed")))
}

/// One attempt; the error says whether data had started to flow.
async fn drain_once(
    h: &NodeHandle,
    peer: PeerId,
) -> Result<(u64, Duration), (bool, anyhow::Error)> {
    fn early<E: Into<anyhow::Error>>(e: E) -> (bool, anyhow::Error) {
        (false, e.into())
    }
    fn late<E: Into<anyhow::Error>>(e: E) -> (bool, anyhow::Error) {
        (true, e.into())
    }
    let mut control = h.stream_control();
    let start = Instant::now();
    let mut s = control
        .open_stream(peer, STREAM_PROTOCOL)
        .await
        .map_err(early)?;
    let request = StreamRequest {
        name: "zeros".into(),
        offset: 0,
    };
    s.write_all(&request.encode()).await.map_err(early)?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut head = Vec::new();
    let mut got = 0u64;
    loop {
        let n = s.read(&mut buf).await.map_err(early)?;
        if n == 0 {
            return Err(early(anyhow::anyhow!("stream ended before its header")));
        }
        head.extend_from_slice(&buf[..n]);
        if let Some((body, used)) = split_frame(&head).map_err(late)? {
            if let StreamHeader::Rejected(r) = StreamHeader::decode(body).map_err(late)? {
                return Err(late(anyhow::anyhow!("refused: {}", r.detail)));
            }
            got += (head.len() - used) as u64;
            break;
        }
    }
    loop {
        let n = s.read(&mut buf).await.map_err(late)?;
        if n == 0 {
            break;
        }
        got += n as u64;
    }
    Ok((got, start.elapsed()))
}

async fn rtts(h: &NodeHandle, peer: PeerId, samples: usize) -> anyhow::Result<(f64, f64)> {
    let mut control = h.stream_control();
    let mut s = control.open_stream(peer, ECHO).await?;
    let msg = [42u8; 32];
    let mut back = [0u8; 32];
    let mut v = Vec::with_capacity(samples);
    for i in 0..samples + 20 {
        let t = Instant::now();
        s.write_all(&msg).await?;
        s.flush().await?;
        s.read_exact(&mut back).await?;
        if i >= 20 {
            v.push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let p = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    Ok((round(p(0.5), 3), round(p(0.99), 3)))
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// Runs every benchmark; prints a table (and returns the JSON object).
pub async fn run(opts: BenchOptions) -> anyhow::Result<Value> {
    let sz = Sizes::new(opts.quick);
    let t0 = Instant::now();
    eprintln!("bench: baselines…");
    let tcp = tcp_baseline(sz.tcp_bytes).await?;
    let chacha = tokio::task::spawn_blocking(move || chacha_ring_baseline(sz.crypto_time)).await?;
    let chacha_rc = tokio::task::spawn_blocking(move || chacha_baseline(sz.crypto_time)).await?;

    eprintln!("bench: direct and relayed streams…");
    let (relay, _) = node("relay", vec![], false, true).await?;
    let relay_addr = crate::relay::dial_addr(&relay).await?;
    let prov = sink_provider(
        "provider",
        vec![relay_addr.clone()],
        false,
        sz.throughput_bytes,
    )
    .await?;
    let snap = prov.snapshot().await?;
    let pid = prov.peer_id();

    let (c_tcp, _) = node("consumer-tcp", vec![], false, false).await?;
    c_tcp
        .dial(pid, only(&snap.direct_addrs, false))
        .await
        .map_err(anyhow::Error::msg)?;
    let (b, d) = drain(&c_tcp, pid).await?;
    let direct_tcp = mib_s(b, d);
    let (direct_p50, direct_p99) = rtts(&c_tcp, pid, sz.rtt_samples).await?;

    let (c_quic, _) = node("consumer-quic", vec![], false, false).await?;
    c_quic
        .dial(pid, only(&snap.direct_addrs, true))
        .await
        .map_err(anyhow::Error::msg)?;
    let (b, d) = drain(&c_quic, pid).await?;
    let direct_quic = mib_s(b, d);

    let (c_rel, _) = node("consumer-relayed", vec![], false, false).await?;
    c_rel
        .dial(pid, snap.circuit_addrs.clone())
        .await
        .map_err(anyhow::Error::msg)?;
    let (b, d) = drain(&c_rel, pid).await?;
    let relayed_tcp = mib_s(b, d);
    let (relayed_p50, relayed_p99) = rtts(&c_rel, pid, sz.rtt_samples).await?;
    for h in [&c_tcp, &c_quic, &c_rel, &prov] {
        h.shutdown().await;
    }

    // The same through the relay with QUIC on both outer hops.
    let relay_quic = only(&relay.wait_listening().await?.direct_addrs, true)
        .into_iter()
        .next()
        .context("relay has no QUIC address")?
        .with(Protocol::P2p(relay.peer_id()));
    let prov_q = sink_provider(
        "provider-q",
        vec![relay_quic.clone()],
        false,
        sz.throughput_bytes,
    )
    .await?;
    let snap_q = prov_q.snapshot().await?;
    let (c_relq, _) = node("consumer-relayed-quic", vec![], false, false).await?;
    c_relq
        .dial(prov_q.peer_id(), snap_q.circuit_addrs.clone())
        .await
        .map_err(anyhow::Error::msg)?;
    let (b, d) = drain(&c_relq, prov_q.peer_id()).await?;
    let relayed_quic = mib_s(b, d);
    c_relq.shutdown().await;
    prov_q.shutdown().await;

    eprintln!("bench: connection set-up…");
    let setup_memory = setup_phases(&relay_addr, None).await?;
    let setup_anvil = match crate::devchain::find_anvil() {
        Ok(_) => {
            let dir = std::env::temp_dir().join(format!("lm-bench-{}", std::process::id()));
            let chain = crate::devchain::start(crate::devchain::DevChainOptions {
                host: "127.0.0.1".into(),
                port: 0,
                state: None,
                accounts: 2,
                key_dir: dir.clone(),
                deploy: None,
            })
            .await?;
            let r = setup_phases(&relay_addr, Some(&chain)).await;
            chain.stop().await?;
            let _ = std::fs::remove_dir_all(dir);
            Some(r?)
        }
        Err(_) => None,
    };

    eprintln!("bench: M×N scale…");
    let (n_prov, rss_per_conn) =
        one_consumer_n_providers(&relay_addr, sz.mxn_total, sz.mxn_ns).await?;
    let m_cons = one_provider_m_consumers(sz.mxn_total, sz.mxn_ns).await?;
    relay.shutdown().await;

    eprintln!("bench: envelopes…");
    let env = envelope_cost(sz.envelope_time)?;

    let out = json!({
        "machine": {"cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1), "quick": opts.quick},
        "baseline": {
            "tcp_loopback_mib_s": round(tcp, 1),
            "chacha20poly1305_mib_s": round(chacha, 1),
            "chacha20poly1305_rustcrypto_mib_s": round(chacha_rc, 1),
        },
        "direct": {
            "tcp_mib_s": round(direct_tcp, 1),
            "quic_mib_s": round(direct_quic, 1),
            "tcp_ratio_to_raw_tcp": round(direct_tcp / tcp, 3),
            "tcp_ratio_to_chacha20poly1305": round(direct_tcp / chacha, 3),
            "bytes": sz.throughput_bytes,
        },
        "relayed": {
            "tcp_mib_s": round(relayed_tcp, 1),
            "ratio_to_direct": round(relayed_tcp / direct_tcp, 3),
            "quic_mib_s": round(relayed_quic, 1),
            "quic_ratio_to_direct_quic": round(relayed_quic / direct_quic, 3),
        },
        "latency_ms": {
            "direct_p50": direct_p50, "direct_p99": direct_p99,
            "relayed_p50": relayed_p50, "relayed_p99": relayed_p99,
            "relay_hop_added_p50": round(relayed_p50 - direct_p50, 3),
        },
        "setup_ms": {"memory": setup_memory, "anvil": setup_anvil},
        "mxn": {
            "one_consumer_n_providers": n_prov,
            "one_provider_m_consumers": m_cons,
            "rss_kib_per_connection": rss_per_conn,
        },
        "envelope": env,
        "elapsed_s": round(t0.elapsed().as_secs_f64(), 1),
    });
    Ok(out)
}

/// Milestones of "consumer wants a stream" → first byte, in ms since the want.
async fn setup_phases(
    relay_addr: &Multiaddr,
    chain: Option<&crate::devchain::DevChain>,
) -> anyhow::Result<Value> {
    let board = MemoryLedger::new();
    let ledger_for = |h: &NodeHandle,
                      key: usize|
     -> futures::future::BoxFuture<'static, anyhow::Result<Arc<dyn Ledger>>> {
        let account = h.peer_id().to_string();
        let board = board.clone();
        let spec_key = chain.map(|c| (c.spec(), c.keys[key].0.clone()));
        Box::pin(async move {
            Ok(match spec_key {
                None => Arc::new(board.account(account)) as Arc<dyn Ledger>,
                Some((spec, key)) => {
                    let key = std::fs::read_to_string(key)?;
                    crate::ledger_spec::open_ledger(&spec, Some(&key), &account, Default::default())
                        .await?
                }
            })
        })
    };
    let (prov, mut prov_rec) =
        node("setup-provider", vec![relay_addr.clone()], true, false).await?;
    let mut pc = ProviderConfig::new(vec![("s".into(), Source::Zeros { len: 1 << 20 })]);
    pc.relay_only = true;
    let pl = ledger_for(&prov, 0).await?;
    let ph = prov.clone();
    let provider_task = tokio::spawn(async move { provider::run(ph, pl, pc).await });
    prov.wait_relays().await?;
    let (cons, mut cons_rec) =
        node("setup-consumer", vec![relay_addr.clone()], true, false).await?;
    cons.wait_relays().await?;
    let cl = ledger_for(&cons, 1).await?;
    // Let the provider's follower start before the clock does.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let dir = std::env::temp_dir().join(format!("lm-bench-setup-{}", rand::random::<u32>()));
    let cc = ConsumerConfig::new(
        vec![Want {
            peer: prov.peer_id(),
            stream: "s".into(),
        }],
        dir.clone(),
    );
    let start = now_ms();
    let outcomes = consumer::run(cons.clone(), cl, cc).await?;
    let _ = std::fs::remove_dir_all(&dir);
    let fetched = outcomes[0]
        .result
        .as_ref()
        .map_err(|e| anyhow::anyhow!("setup stream failed: {e}"))?;
    let pid = prov.peer_id().to_string();
    let at = |recs: &[Record], f: &dyn Fn(&Event) -> bool| {
        recs.iter()
            .find(|r| f(&r.event))
            .map(|r| r.ts_ms.saturating_sub(start))
    };
    let c = cons_rec.all().to_vec();
    let p = prov_rec.all().to_vec();
    let mut phases = serde_json::Map::new();
    let mut put = |k: &str, v: Option<u64>| {
        phases.insert(k.into(), v.map(Value::from).unwrap_or(Value::Null));
    };
    put(
        "request_posted",
        at(&c, &|e| matches!(e, Event::LedgerPost { .. })),
    );
    put(
        "request_seen_by_provider",
        at(&p, &|e| matches!(e, Event::LedgerMessage { .. })),
    );
    put(
        "response_posted",
        at(&p, &|e| matches!(e, Event::LedgerPost { .. })),
    );
    put(
        "response_seen_by_consumer",
        at(&c, &|e| matches!(e, Event::LedgerMessage { .. })),
    );
    put(
        "relayed_connected",
        at(
            &c,
            &|e| matches!(e, Event::Connected { peer_id, path: crate::events::PathKind::Relayed, .. } if *peer_id == pid),
        ),
    );
    put(
        "dcutr_upgraded",
        at(
            &c,
            &|e| matches!(e, Event::Upgraded { peer_id, .. } if *peer_id == pid),
        ),
    );
    put(
        "first_byte",
        fetched.first_byte_ts_ms.map(|t| t.saturating_sub(start)),
    );
    provider_task.abort();
    prov.shutdown().await;
    cons.shutdown().await;
    Ok(Value::Object(phases))
}

/// Drains every `(reader, provider)` pair at once; returns the aggregate
/// MiB/s and the fairness (slowest / fastest stream rate).
async fn drain_all(pairs: Vec<(NodeHandle, PeerId)>) -> anyhow::Result<(f64, f64)> {
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (c, pid) in pairs {
        tasks.spawn(async move { drain(&c, pid).await });
    }
    let mut rates = vec![];
    let mut bytes = 0;
    while let Some(r) = tasks.join_next().await {
        let (b, d) = r??;
        bytes += b;
        rates.push(mib_s(b, d));
    }
    let wall = start.elapsed();
    let (min, max) = rates
        .iter()
        .fold((f64::MAX, 0f64), |(lo, hi), r| (lo.min(*r), hi.max(*r)));
    Ok((round(mib_s(bytes, wall), 1), round(min / max.max(1e-9), 3)))
}

async fn one_consumer_n_providers(
    relay_addr: &Multiaddr,
    total: u64,
    ns: &[usize],
) -> anyhow::Result<(Value, Value)> {
    let _ = relay_addr;
    let mut rows = vec![];
    let mut rss_per_conn = Value::Null;
    for &n in ns {
        let per = (total / n as u64).max(1 << 20);
        let rss0 = rss_kib();
        let mut provs = vec![];
        for i in 0..n {
            provs.push(sink_provider(&format!("p{i}"), vec![], false, per).await?);
        }
        let (cons, _) = node("consumer", vec![], false, false).await?;
        for p in &provs {
            let s = p.snapshot().await?;
            cons.dial(p.peer_id(), only(&s.direct_addrs, false))
                .await
                .map_err(anyhow::Error::msg)?;
        }
        let rss1 = rss_kib();
        let pairs = provs.iter().map(|p| (cons.clone(), p.peer_id())).collect();
        let (aggregate, fairness) = drain_all(pairs).await?;
        rows.push(json!({"n": n, "aggregate_mib_s": aggregate, "fairness": fairness, "bytes_per_stream": per}));
        if n == *ns.last().unwrap_or(&1) {
            rss_per_conn = json!(round((rss1.saturating_sub(rss0)) as f64 / n as f64, 1));
        }
        for p in provs.iter().chain(std::iter::once(&cons)) {
            p.shutdown().await;
        }
    }
    Ok((Value::Array(rows), rss_per_conn))
}

async fn one_provider_m_consumers(total: u64, ms: &[usize]) -> anyhow::Result<Value> {
    let mut rows = vec![];
    for &m in ms {
        let per = (total / m as u64).max(1 << 20);
        let prov = sink_provider("provider", vec![], false, per).await?;
        let addrs = only(&prov.snapshot().await?.direct_addrs, false);
        let mut cons = vec![];
        for i in 0..m {
            let (c, _) = node(&format!("c{i}"), vec![], false, false).await?;
            c.dial(prov.peer_id(), addrs.clone())
                .await
                .map_err(anyhow::Error::msg)?;
            cons.push(c);
        }
        let pairs = cons.iter().map(|c| (c.clone(), prov.peer_id())).collect();
        let (aggregate, fairness) = drain_all(pairs).await?;
        rows.push(json!({"m": m, "aggregate_mib_s": aggregate, "fairness": fairness, "bytes_per_stream": per}));
        for c in cons.iter().chain(std::iter::once(&prov)) {
            c.shutdown().await;
        }
    }
    Ok(Value::Array(rows))
}

fn envelope_cost(time: Duration) -> anyhow::Result<Value> {
    use ledgermesh_protocol::envelope::{seal, OpenPolicy, Opener};
    use ledgermesh_protocol::{ServiceRequest, ServiceResponse, Signal, StreamInfo};
    let alice = Keypair::generate_ed25519();
    let bob = Keypair::generate_ed25519();
    let bob_id = bob.public().to_peer_id();
    let relay = Keypair::generate_ed25519().public().to_peer_id();
    let me = alice.public().to_peer_id();
    let addrs: Vec<Multiaddr> = vec![
        "/ip4/203.0.113.7/tcp/40123".parse()?,
        "/ip4/203.0.113.7/udp/40123/quic-v1".parse()?,
        format!("/ip4/198.51.100.1/tcp/4001/p2p/{relay}/p2p-circuit/p2p/{me}").parse()?,
    ];
    let request = Signal::Request(ServiceRequest {
        addrs: addrs.clone(),
        streams: vec!["feed".into()],
    });
    let response = Signal::Response(ServiceResponse {
        request_nonce: [1; 16],
        addrs,
        accepted: vec![StreamInfo {
            name: "feed".into(),
            length: Some(1 << 30),
            sha256: Some([3; 32]),
        }],
        rejected: vec![],
    });
    let now = now_ms();
    let mut rng = rand::rng();
    let req_bytes = seal(&alice, &bob_id, &request, now, 60_000, &mut rng)?
        .bytes
        .len();
    let resp_bytes = seal(&alice, &bob_id, &response, now, 60_000, &mut rng)?
        .bytes
        .len();
    let start = Instant::now();
    let mut sealed = vec![];
    while start.elapsed() < time {
        sealed.push(seal(&alice, &bob_id, &request, now, 60_000, &mut rng)?.bytes);
    }
    let seal_per_s = sealed.len() as f64 / start.elapsed().as_secs_f64();
    let mut opener = Opener::new(
        &bob,
        OpenPolicy {
            replay_capacity: sealed.len() + 1,
            ..Default::default()
        },
    )?;
    let start = Instant::now();
    for s in &sealed {
        opener.open(s, now).context("open")?;
    }
    let open_per_s = sealed.len() as f64 / start.elapsed().as_secs_f64();
    Ok(json!({
        "seal_per_s": round(seal_per_s, 0),
        "open_per_s": round(open_per_s, 0),
        "request_bytes": req_bytes,
        "response_bytes": resp_bytes,
    }))
}

/// Prints the figures as a table.
pub fn print_table(v: &Value) {
    let f = |p: &str| v.pointer(p).cloned().unwrap_or(Value::Null);
    println!("\nBASELINES (same run)");
    println!(
        "  raw TCP over loopback          {:>10} MiB/s",
        f("/baseline/tcp_loopback_mib_s")
    );
    println!(
        "  ChaCha20-Poly1305, one core    {:>10} MiB/s  (ring, as in noise; RustCrypto {} MiB/s)",
        f("/baseline/chacha20poly1305_mib_s"),
        f("/baseline/chacha20poly1305_rustcrypto_mib_s")
    );
    println!("\nTHROUGHPUT (one stream)");
    println!(
        "  direct TCP+noise+yamux         {:>10} MiB/s  ({} of raw TCP, {} of ChaCha20-Poly1305)",
        f("/direct/tcp_mib_s"),
        f("/direct/tcp_ratio_to_raw_tcp"),
        f("/direct/tcp_ratio_to_chacha20poly1305")
    );
    println!(
        "  direct QUIC                    {:>10} MiB/s",
        f("/direct/quic_mib_s")
    );
    println!(
        "  relayed TCP (via relay)        {:>10} MiB/s  ({} of direct TCP)",
        f("/relayed/tcp_mib_s"),
        f("/relayed/ratio_to_direct")
    );
    println!(
        "  relayed QUIC (via relay)       {:>10} MiB/s  ({} of direct QUIC)",
        f("/relayed/quic_mib_s"),
        f("/relayed/quic_ratio_to_direct_quic")
    );
    println!("\nLATENCY (32-byte round trip, ms)");
    println!(
        "  direct   p50 {:>8}   p99 {:>8}",
        f("/latency_ms/direct_p50"),
        f("/latency_ms/direct_p99")
    );
    println!(
        "  relayed  p50 {:>8}   p99 {:>8}   (relay hop adds {} ms at p50)",
        f("/latency_ms/relayed_p50"),
        f("/latency_ms/relayed_p99"),
        f("/latency_ms/relay_hop_added_p50")
    );
    println!("\nCONNECTION SET-UP (ms since the consumer wanted the stream)");
    for ledger in ["memory", "anvil"] {
        match v.pointer(&format!("/setup_ms/{ledger}")) {
            Some(Value::Object(m)) => {
                let mut items: Vec<(&String, &Value)> = m.iter().collect();
                items.sort_by_key(|(_, x)| x.as_u64().unwrap_or(u64::MAX));
                let parts: Vec<String> = items.iter().map(|(k, x)| format!("{k} {x}")).collect();
                println!("  {ledger:<7} {}", parts.join(" · "));
            }
            _ => println!("  {ledger:<7} (not measured: anvil not installed)"),
        }
    }
    println!("\nM×N SCALE");
    for (key, label) in [
        ("one_consumer_n_providers", "n"),
        ("one_provider_m_consumers", "m"),
    ] {
        if let Some(Value::Array(rows)) = v.pointer(&format!("/mxn/{key}")) {
            for r in rows {
                println!(
                    "  {key:<26} {label}={:<3} aggregate {:>8} MiB/s  fairness (min/max) {}",
                    r[label], r["aggregate_mib_s"], r["fairness"]
                );
            }
        }
    }
    println!(
        "  resident memory per connection (both ends, in-process): {} KiB",
        f("/mxn/rss_kib_per_connection")
    );
    println!("\nENVELOPES");
    println!(
        "  seal {}/s, open {}/s; request {} bytes, response {} bytes on the ledger",
        f("/envelope/seal_per_s"),
        f("/envelope/open_per_s"),
        f("/envelope/request_bytes"),
        f("/envelope/response_bytes")
    );
    println!("\n(total {} s)", f("/elapsed_s"));
}
