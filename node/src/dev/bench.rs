//! `ledgermesh bench`: throughput, latency, set-up time, M×N scale and
//! envelope cost, each next to a baseline measured in the same run.
//!
//! Everything runs on loopback in this process (the EVM set-up phase uses an
//! anvil it starts itself when installed). Figures are printed, never
//! asserted: these machines are shared and noisy.

use crate::consumer::{self, ConsumerConfig, Want};
use crate::dev::{DevNet, Recorder};
use crate::events::{now_ms, Event, Record};
use crate::provider::ProviderConfig;
use crate::source::Source;
use crate::streams::{read_frame, serve, Catalog, STREAM_PROTOCOL};
use crate::swarm::{NodeHandle, RelayLimits};
use anyhow::Context;
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use ledgermesh_ledger::Ledger;
use ledgermesh_protocol::framing::{StreamHeader, StreamRequest};
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

/// How big a run, and which parts of it.
#[derive(Debug, Clone, Default)]
pub struct BenchOptions {
    /// A run under a minute.
    pub quick: bool,
    /// Only these sections (all when empty).
    pub only: Vec<Section>,
    /// Bytes per single-stream run (and per M×N row) instead of the default.
    pub bytes: Option<u64>,
    /// Rounds of the single-stream runs instead of the default.
    pub rounds: Option<usize>,
}

/// A part of the benchmark that can be run on its own (`--only`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Section {
    /// Raw TCP over loopback and single-core ChaCha20-Poly1305.
    Baseline,
    /// One stream direct and relayed (TCP, QUIC) and round-trip latency.
    Throughput,
    /// Phases from "consumer wants a stream" to its first byte.
    Setup,
    /// One consumer × N providers, one provider × M consumers.
    Mxn,
    /// Envelope seal/open rate and bytes on the ledger.
    Envelope,
}

struct Sizes {
    throughput_bytes: u64,
    tcp_bytes: u64,
    crypto_time: Duration,
    rtt_samples: usize,
    /// Rounds of the single-stream transfers (medians are reported).
    rounds: usize,
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
                rounds: 3,
                mxn_total: 128 << 20,
                mxn_ns: &[1, 10, 50],
                envelope_time: Duration::from_millis(300),
            }
        } else {
            Sizes {
                throughput_bytes: 512 << 20,
                tcp_bytes: 4 << 30,
                crypto_time: Duration::from_secs(2),
                rtt_samples: 2000,
                rounds: 5,
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

/// A benchmark node: recorded, reserving on `relays`, optionally a relay.
async fn node(
    net: &DevNet,
    name: &str,
    relays: Vec<Multiaddr>,
    hole_punching: bool,
    relay_server: bool,
) -> anyhow::Result<(NodeHandle, Recorder)> {
    let mut c = net.config(name);
    let rec = Recorder::new(c.emitter.as_ref().context("the net sets an emitter")?);
    c.relays = relays;
    c.hole_punching = hole_punching;
    if relay_server {
        c.relay_server = Some(RelayLimits {
            max_circuits: 1024,
            max_circuits_per_peer: 64,
            ..RelayLimits::default()
        });
    }
    Ok((net.spawn(c).await?, rec))
}

/// A node that serves zero streams and echoes, for timing the transport.
async fn sink_provider(
    net: &DevNet,
    name: &str,
    relays: Vec<Multiaddr>,
    hole_punching: bool,
    bytes: u64,
) -> anyhow::Result<NodeHandle> {
    let (h, _) = node(net, name, relays, hole_punching, false).await?;
    let mut catalog = Catalog::default();
    catalog
        .insert_undigested("zeros", Source::Zeros { len: bytes })
        .await?;
    // The benchmark measures transport, not sales: everyone may fetch.
    let access = crate::access::Access::open(h.emitter().clone());
    tokio::spawn(serve(h.clone(), Arc::new(catalog), access, 4096));
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
    let (header, past) = read_frame(&mut s).await.map_err(early)?;
    if let StreamHeader::Rejected(r) = StreamHeader::decode(&header).map_err(late)? {
        return Err(late(anyhow::anyhow!("refused: {}", r.detail)));
    }
    let mut got = past.len() as u64;
    let mut buf = vec![0u8; 256 * 1024];
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

/// CPU time (user + system) this process has used so far.
fn cpu_time() -> Duration {
    use nix::sys::resource::{getrusage, UsageWho};
    getrusage(UsageWho::RUSAGE_SELF)
        .map(|u| {
            let t = |tv: nix::sys::time::TimeVal| {
                Duration::new(tv.tv_sec() as u64, tv.tv_usec() as u32 * 1000)
            };
            t(u.user_time()) + t(u.system_time())
        })
        .unwrap_or_default()
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

/// Runs the benchmarks (all, or the sections in `opts.only`) and returns the
/// JSON object; sections not run are left out.
pub async fn run(opts: BenchOptions) -> anyhow::Result<Value> {
    let mut sz = Sizes::new(opts.quick);
    if let Some(b) = opts.bytes {
        sz.throughput_bytes = b;
        sz.tcp_bytes = b.saturating_mul(4);
        sz.mxn_total = b;
    }
    if let Some(r) = opts.rounds {
        sz.rounds = r.max(1);
    }
    let wants = |s: Section| opts.only.is_empty() || opts.only.contains(&s);
    let t0 = Instant::now();
    let mut out = serde_json::Map::new();
    out.insert(
        "machine".into(),
        json!({"cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1), "quick": opts.quick}),
    );
    let (mut tcp, mut chacha) = (None, None);
    if wants(Section::Baseline) {
        eprintln!("bench: baselines…");
        let t = tcp_baseline(sz.tcp_bytes).await?;
        let c = tokio::task::spawn_blocking(move || chacha_ring_baseline(sz.crypto_time)).await?;
        let c_rc = tokio::task::spawn_blocking(move || chacha_baseline(sz.crypto_time)).await?;
        out.insert(
            "baseline".into(),
            json!({
                "tcp_loopback_mib_s": round(t, 1),
                "chacha20poly1305_mib_s": round(c, 1),
                "chacha20poly1305_rustcrypto_mib_s": round(c_rc, 1),
            }),
        );
        (tcp, chacha) = (Some(t), Some(c));
    }

    if wants(Section::Throughput) {
        eprintln!("bench: direct and relayed streams…");
        let t = throughput(&sz).await?;
        let ratio = |a: f64, b: Option<f64>| b.map(|b| round(a / b, 3));
        let (dt, dq) = (t.direct_tcp.median(), t.direct_quic.median());
        let (rt, rq) = (t.relayed_tcp.median(), t.relayed_quic.median());
        let rel_ratios = t.relayed_tcp.ratios_to(&t.direct_tcp);
        let relq_ratios = t.relayed_quic.ratios_to(&t.direct_quic);
        out.insert(
            "direct".into(),
            json!({
                "tcp_mib_s": round(dt.mib_s, 1),
                "quic_mib_s": round(dq.mib_s, 1),
                "tcp_ratio_to_raw_tcp": ratio(dt.mib_s, tcp),
                "tcp_ratio_to_chacha20poly1305": ratio(dt.mib_s, chacha),
                "tcp_cpu_cores": dt.cores,
                "tcp_cpu_ms_per_mib": dt.cpu_ms_per_mib(),
                "quic_cpu_cores": dq.cores,
                "quic_cpu_ms_per_mib": dq.cpu_ms_per_mib(),
                "tcp_runs_mib_s": t.direct_tcp.rates(),
                "quic_runs_mib_s": t.direct_quic.rates(),
                "bytes_per_run": sz.throughput_bytes,
            }),
        );
        out.insert(
            "relayed".into(),
            json!({
                "tcp_mib_s": round(rt.mib_s, 1),
                "ratio_to_direct": round(median(rel_ratios.clone()), 3),
                "quic_mib_s": round(rq.mib_s, 1),
                "quic_ratio_to_direct_quic": round(median(relq_ratios.clone()), 3),
                "tcp_cpu_cores": rt.cores,
                "tcp_cpu_ms_per_mib": rt.cpu_ms_per_mib(),
                "quic_cpu_cores": rq.cores,
                "quic_cpu_ms_per_mib": rq.cpu_ms_per_mib(),
                "tcp_runs_mib_s": t.relayed_tcp.rates(),
                "quic_runs_mib_s": t.relayed_quic.rates(),
                "ratio_to_direct_runs": rel_ratios,
                "quic_ratio_to_direct_quic_runs": relq_ratios,
                "relay_process": relay_process_json(&t.relay_process_tcp, &t.direct_tcp),
            }),
        );
        out.insert(
            "latency_ms".into(),
            json!({
                "direct_p50": t.direct_rtt.0, "direct_p99": t.direct_rtt.1,
                "relayed_p50": t.relayed_rtt.0, "relayed_p99": t.relayed_rtt.1,
                "relay_hop_added_p50": round(t.relayed_rtt.0 - t.direct_rtt.0, 3),
            }),
        );
    }

    if wants(Section::Setup) {
        eprintln!("bench: connection set-up…");
        let net = DevNet::new(DevNet::plain());
        let (relay, _) = node(&net, "relay", vec![], false, true).await?;
        let relay_addr = crate::relay::dial_addr(&relay).await?;
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
        relay.shutdown().await;
        out.insert(
            "setup_ms".into(),
            json!({"memory": setup_memory, "anvil": setup_anvil}),
        );
    }

    if wants(Section::Mxn) {
        eprintln!("bench: M×N scale…");
        let (n_prov, rss_per_conn) = one_consumer_n_providers(sz.mxn_total, sz.mxn_ns).await?;
        let m_cons = one_provider_m_consumers(sz.mxn_total, sz.mxn_ns).await?;
        out.insert(
            "mxn".into(),
            json!({
                "one_consumer_n_providers": n_prov,
                "one_provider_m_consumers": m_cons,
                "rss_kib_per_connection": rss_per_conn,
            }),
        );
    }

    if wants(Section::Envelope) {
        eprintln!("bench: envelopes…");
        out.insert("envelope".into(), envelope_cost(sz.envelope_time)?);
    }
    let at = |section: &str, key: &str| out.get(section)?.get(key)?.as_f64();
    let goal = |got: Option<f64>, min: f64| json!({"value": got, "min": min, "met": got.map(|g| g >= min)});
    out.insert(
        "goals".into(),
        json!({
            "direct_tcp_over_chacha20poly1305": goal(at("direct", "tcp_ratio_to_chacha20poly1305"), 0.10),
            "relayed_tcp_over_direct_tcp": goal(at("relayed", "ratio_to_direct"), 0.5),
        }),
    );
    out.insert(
        "elapsed_s".into(),
        json!(round(t0.elapsed().as_secs_f64(), 1)),
    );
    Ok(Value::Object(out))
}

/// One stream's rate and the CPU it took (all nodes run in this process).
#[derive(Debug, Clone, Copy)]
struct Rate {
    mib_s: f64,
    /// CPU time over wall time: how many of the cores the transfer kept busy
    /// (the relay process's included).
    cores: f64,
    /// The relay process's share of `cores`, when there is a relay.
    relay_cores: Option<f64>,
}

impl Rate {
    /// CPU milliseconds spent per MiB moved, summed over every node.
    fn cpu_ms_per_mib(&self) -> f64 {
        round(self.cores * 1000.0 / self.mib_s.max(1e-9), 2)
    }
    /// The relay's CPU milliseconds per MiB it forwarded.
    fn relay_cpu_ms_per_mib(&self) -> Option<f64> {
        self.relay_cores
            .map(|c| round(c * 1000.0 / self.mib_s.max(1e-9), 2))
    }
}

/// Drains one stream, timing it and the process's CPU time.
async fn timed_drain(h: &NodeHandle, peer: PeerId) -> anyhow::Result<Rate> {
    timed_drain_with(h, peer, || None).await
}

/// [`timed_drain`], also counting the CPU time `relay_cpu` reads (a relay
/// process's) over the same transfer.
async fn timed_drain_with(
    h: &NodeHandle,
    peer: PeerId,
    relay_cpu: impl Fn() -> Option<Duration>,
) -> anyhow::Result<Rate> {
    let (cpu0, relay0) = (cpu_time(), relay_cpu());
    let (b, d) = drain(h, peer).await?;
    let per_sec = |t: Duration| round(t.as_secs_f64() / d.as_secs_f64().max(1e-9), 2);
    let own = per_sec(cpu_time().saturating_sub(cpu0));
    let relay_cores = relay0
        .zip(relay_cpu())
        .map(|(a, b)| per_sec(b.saturating_sub(a)));
    Ok(Rate {
        mib_s: mib_s(b, d),
        cores: round(own + relay_cores.unwrap_or(0.0), 2),
        relay_cores,
    })
}

/// The benchmark's relay: `ledgermesh relay` in its own process, as it runs
/// in a deployment, so its CPU time can be told apart from the endpoints'.
struct RelayProcess {
    child: tokio::process::Child,
    tcp: Multiaddr,
}

impl RelayProcess {
    async fn start() -> anyhow::Result<RelayProcess> {
        use tokio::io::AsyncBufReadExt;
        let exe = std::env::current_exe().context("locating the ledgermesh binary")?;
        let mut child = tokio::process::Command::new(exe)
            .args(["relay", "--json", "--listen"])
            .arg("/ip4/127.0.0.1/tcp/0")
            .env("RUST_LOG", "error")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting the relay process")?;
        let out = child.stdout.take().context("relay stdout")?;
        let mut lines = tokio::io::BufReader::new(out).lines();
        let found = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(line) = lines.next_line().await? {
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if v["event"] != "listening" {
                    continue;
                }
                let peer: PeerId = v["peer_id"].as_str().unwrap_or_default().parse()?;
                let addrs: Vec<Multiaddr> = v["addrs"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|a| a.as_str()?.parse().ok())
                    .collect();
                if let Some(tcp) = addrs.into_iter().find(crate::addr::is_tcp) {
                    return anyhow::Ok(tcp.with(Protocol::P2p(peer)));
                }
            }
            anyhow::bail!("relay process exited before listening")
        })
        .await
        .context("relay process did not report its addresses")??;
        // Keep reading its events so the pipe never fills.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(RelayProcess { child, tcp: found })
    }

    /// The relay's CPU time so far, from /proc.
    fn cpu_time(&self) -> Option<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()?)).ok()?;
        // Fields after the command name (which may hold spaces) start at ')'.
        let rest = stat.rsplit_once(')')?.1;
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
        let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .unwrap_or(100) as u64;
        Some(Duration::from_secs_f64(ticks as f64 / hz as f64))
    }

    /// [`timed_drain`] through this relay, adding the relay's CPU time.
    async fn timed_drain(&self, h: &NodeHandle, peer: PeerId) -> anyhow::Result<Rate> {
        timed_drain_with(h, peer, || self.cpu_time()).await
    }

    async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// Repeated runs of one kind of transfer.
#[derive(Debug, Clone, Default)]
struct Series(Vec<Rate>);

impl Series {
    fn median_by(&self, f: impl Fn(&Rate) -> f64) -> f64 {
        median(self.0.iter().map(f).collect())
    }
    /// The median run by rate: its rate and its CPU figures.
    fn median(&self) -> Rate {
        let m = self.median_by(|r| r.mib_s);
        self.0
            .iter()
            .copied()
            .min_by(|a, b| (a.mib_s - m).abs().total_cmp(&(b.mib_s - m).abs()))
            .unwrap_or(Rate {
                mib_s: 0.0,
                cores: 0.0,
                relay_cores: None,
            })
    }
    fn rates(&self) -> Vec<f64> {
        self.0.iter().map(|r| round(r.mib_s, 1)).collect()
    }
    /// Run-by-run ratios to another series taken in the same rounds.
    fn ratios_to(&self, base: &Series) -> Vec<f64> {
        self.0
            .iter()
            .zip(&base.0)
            .map(|(a, b)| round(a.mib_s / b.mib_s.max(1e-9), 3))
            .collect()
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Single-stream figures: direct and relayed, TCP and QUIC, and round trips.
struct Throughput {
    direct_tcp: Series,
    direct_quic: Series,
    relayed_tcp: Series,
    relayed_quic: Series,
    /// Relayed TCP through `ledgermesh relay` running as its own process.
    relay_process_tcp: Series,
    direct_rtt: (f64, f64),
    relayed_rtt: (f64, f64),
}

/// Sets up the four paths once, then runs them in rounds (direct TCP, direct
/// QUIC, relayed TCP, relayed QUIC, again and again): each ratio compares runs
/// taken seconds apart, so a shared machine's load swings hit both sides.
///
/// All nodes share this process's runtime (one worker per core), like one
/// machine running all three roles; on two cores the relayed path's three
/// nodes compete for the same CPU, which the CPU figures show.
async fn throughput(sz: &Sizes) -> anyhow::Result<Throughput> {
    let bytes = sz.throughput_bytes;
    let net = DevNet::new(DevNet::plain());
    let (relay, _) = node(&net, "relay", vec![], false, true).await?;
    let relay_tcp = crate::relay::dial_addr(&relay).await?;
    let relay_quic = only(&relay.wait_listening().await?.direct_addrs, true)
        .into_iter()
        .next()
        .context("relay has no QUIC address")?
        .with(Protocol::P2p(relay.peer_id()));
    let relay_proc = RelayProcess::start().await?;
    let proc_peer = crate::addr::peer_of(&relay_proc.tcp).context("relay process id")?;
    // Two providers: one reserved over TCP on both relays, one over QUIC.
    let prov = sink_provider(
        &net,
        "provider",
        vec![relay_tcp, relay_proc.tcp.clone()],
        false,
        bytes,
    )
    .await?;
    let prov_q = sink_provider(&net, "provider-q", vec![relay_quic], false, bytes).await?;
    let snap = prov.snapshot().await?;
    let snap_q = prov_q.snapshot().await?;
    let (pid, pid_q) = (prov.peer_id(), prov_q.peer_id());

    let net = &net;
    let connect = |name: &'static str, peer: PeerId, addrs: Vec<Multiaddr>| async move {
        let (h, _) = node(net, name, vec![], false, false).await?;
        h.dial(peer, addrs).await.map_err(anyhow::Error::msg)?;
        anyhow::Ok(h)
    };
    let c_tcp = connect("consumer-tcp", pid, only(&snap.direct_addrs, false)).await?;
    let c_quic = connect("consumer-quic", pid, only(&snap.direct_addrs, true)).await?;
    let c_rel = connect(
        "consumer-relayed",
        pid,
        via(&snap.circuit_addrs, relay.peer_id()),
    )
    .await?;
    let c_relq = connect("consumer-relayed-quic", pid_q, snap_q.circuit_addrs.clone()).await?;
    let c_relp = connect(
        "consumer-relay-process",
        pid,
        via(&snap.circuit_addrs, proc_peer),
    )
    .await?;

    let mut t = Throughput {
        direct_tcp: Series::default(),
        direct_quic: Series::default(),
        relayed_tcp: Series::default(),
        relayed_quic: Series::default(),
        relay_process_tcp: Series::default(),
        direct_rtt: (0.0, 0.0),
        relayed_rtt: (0.0, 0.0),
    };
    for _ in 0..sz.rounds {
        t.direct_tcp.0.push(timed_drain(&c_tcp, pid).await?);
        t.direct_quic.0.push(timed_drain(&c_quic, pid).await?);
        t.relayed_tcp.0.push(timed_drain(&c_rel, pid).await?);
        t.relayed_quic.0.push(timed_drain(&c_relq, pid_q).await?);
        t.relay_process_tcp
            .0
            .push(relay_proc.timed_drain(&c_relp, pid).await?);
    }
    t.direct_rtt = rtts(&c_tcp, pid, sz.rtt_samples).await?;
    t.relayed_rtt = rtts(&c_rel, pid, sz.rtt_samples).await?;
    for h in [
        &c_tcp, &c_quic, &c_rel, &c_relq, &c_relp, &prov, &prov_q, &relay,
    ] {
        h.shutdown().await;
    }
    relay_proc.stop().await;
    Ok(t)
}

/// Relayed TCP with the relay in its own process: the measured rate, and the
/// CPU each side spent per MiB, so the relay's cost can be told apart from the
/// endpoints'.
fn relay_process_json(relayed: &Series, direct: &Series) -> Value {
    let m = relayed.median();
    let relay_ms = relayed.median_by(|r| r.relay_cpu_ms_per_mib().unwrap_or(f64::NAN));
    let total_ms = relayed.median_by(Rate::cpu_ms_per_mib);
    let endpoints_ms = total_ms - relay_ms;
    let direct_ms = direct.median_by(Rate::cpu_ms_per_mib);
    json!({
        "tcp_mib_s": round(m.mib_s, 1),
        "ratio_to_direct": round(median(relayed.ratios_to(direct)), 3),
        "tcp_runs_mib_s": relayed.rates(),
        "cpu_cores": m.cores,
        "relay_cpu_ms_per_mib": round(relay_ms, 2),
        "endpoints_cpu_ms_per_mib": round(endpoints_ms, 2),
        "direct_endpoints_cpu_ms_per_mib": round(direct_ms, 2),
        // Where every node has its own CPU and the endpoints' work is the
        // limit, relayed runs at this fraction of direct.
        "cpu_bound_ratio_own_cpus": round(direct_ms / endpoints_ms.max(1e-9), 3),
        "relay_mib_s_per_core": round(1000.0 / relay_ms.max(1e-9), 1),
    })
}

/// The relay circuits among `addrs` that go through `relay`.
fn via(addrs: &[Multiaddr], relay: PeerId) -> Vec<Multiaddr> {
    addrs
        .iter()
        .filter(|a| {
            a.iter()
                .find_map(|p| match p {
                    Protocol::P2p(id) => Some(id),
                    _ => None,
                })
                .is_some_and(|id| id == relay)
        })
        .cloned()
        .collect()
}

/// Milestones of "consumer wants a stream" → first byte, in ms since the want.
async fn setup_phases(
    relay_addr: &Multiaddr,
    chain: Option<&crate::devchain::DevChain>,
) -> anyhow::Result<Value> {
    let net = DevNet::new(DevNet::plain());
    let ledger_for = |h: &NodeHandle,
                      key: usize|
     -> futures::future::BoxFuture<'static, anyhow::Result<Arc<dyn Ledger>>> {
        let account = h.peer_id().to_string();
        let memory = net.ledger_for(h);
        let spec_key = chain.map(|c| (c.spec(), c.keys[key].0.clone()));
        Box::pin(async move {
            Ok(match spec_key {
                None => memory,
                Some((spec, key)) => {
                    let key = std::fs::read_to_string(key)?;
                    crate::ledger_spec::open_ledger(&spec, Some(&key), &account, Default::default())
                        .await?
                }
            })
        })
    };
    let (prov, mut prov_rec) = node(
        &net,
        "setup-provider",
        vec![relay_addr.clone()],
        true,
        false,
    )
    .await?;
    let mut pc = ProviderConfig::new(vec![("s".into(), Source::Zeros { len: 1 << 20 })]);
    pc.relay_only = true;
    let pl = ledger_for(&prov, 0).await?;
    let provider_task = net.provide(&prov, Some(pl), pc);
    prov.wait_relays().await?;
    let (cons, mut cons_rec) = node(
        &net,
        "setup-consumer",
        vec![relay_addr.clone()],
        true,
        false,
    )
    .await?;
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
    let c = cons_rec.drain().to_vec();
    let p = prov_rec.drain().to_vec();
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

async fn one_consumer_n_providers(total: u64, ns: &[usize]) -> anyhow::Result<(Value, Value)> {
    let net = DevNet::new(DevNet::plain());
    let mut rows = vec![];
    let mut rss_per_conn = Value::Null;
    for &n in ns {
        let per = (total / n as u64).max(256 << 10);
        let rss0 = rss_kib();
        let mut provs = vec![];
        for i in 0..n {
            provs.push(sink_provider(&net, &format!("p{i}"), vec![], false, per).await?);
        }
        let (cons, _) = node(&net, "consumer", vec![], false, false).await?;
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
    let net = DevNet::new(DevNet::plain());
    let mut rows = vec![];
    for &m in ms {
        let per = (total / m as u64).max(256 << 10);
        let prov = sink_provider(&net, "provider", vec![], false, per).await?;
        let addrs = only(&prov.snapshot().await?.direct_addrs, false);
        let mut cons = vec![];
        for i in 0..m {
            let (c, _) = node(&net, &format!("c{i}"), vec![], false, false).await?;
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
        hire_secs: 3600,
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
        grant_expires_ms: Some(1_800_000_000_000),
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
    let has = |k: &str| v.get(k).is_some();
    if has("baseline") {
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
    }
    if has("direct") {
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
        "  CPU per MiB moved (all nodes)  direct TCP {} ms · relayed TCP {} ms · direct QUIC {} ms · relayed QUIC {} ms",
        f("/direct/tcp_cpu_ms_per_mib"),
        f("/relayed/tcp_cpu_ms_per_mib"),
        f("/direct/quic_cpu_ms_per_mib"),
        f("/relayed/quic_cpu_ms_per_mib")
    );
        println!(
        "  cores kept busy                direct TCP {} · relayed TCP {} · direct QUIC {} · relayed QUIC {}",
        f("/direct/tcp_cpu_cores"),
        f("/relayed/tcp_cpu_cores"),
        f("/direct/quic_cpu_cores"),
        f("/relayed/quic_cpu_cores")
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
        let runs = |p: &str| {
            v.pointer(p)
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .map(|x| x.to_string())
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default()
        };
        println!(
        "  per run (medians above)        direct TCP [{}] · relayed TCP [{}] MiB/s; relayed/direct [{}]",
        runs("/direct/tcp_runs_mib_s"),
        runs("/relayed/tcp_runs_mib_s"),
        runs("/relayed/ratio_to_direct_runs")
    );
        println!(
        "  relayed TCP, relay as its own process {} MiB/s ({} of direct); CPU per MiB: relay {} ms, endpoints {} ms (direct: {} ms)",
        f("/relayed/relay_process/tcp_mib_s"),
        f("/relayed/relay_process/ratio_to_direct"),
        f("/relayed/relay_process/relay_cpu_ms_per_mib"),
        f("/relayed/relay_process/endpoints_cpu_ms_per_mib"),
        f("/relayed/relay_process/direct_endpoints_cpu_ms_per_mib")
    );
        println!(
        "    → with every node on its own CPU: relayed ≈ {} of direct; one relay core forwards ≈ {} MiB/s",
        f("/relayed/relay_process/cpu_bound_ratio_own_cpus"),
        f("/relayed/relay_process/relay_mib_s_per_core")
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
    }
    if has("setup_ms") {
        println!("\nCONNECTION SET-UP (ms since the consumer wanted the stream)");
        for ledger in ["memory", "anvil"] {
            match v.pointer(&format!("/setup_ms/{ledger}")) {
                Some(Value::Object(m)) => {
                    let mut items: Vec<(&String, &Value)> = m.iter().collect();
                    items.sort_by_key(|(_, x)| x.as_u64().unwrap_or(u64::MAX));
                    let parts: Vec<String> =
                        items.iter().map(|(k, x)| format!("{k} {x}")).collect();
                    println!("  {ledger:<7} {}", parts.join(" · "));
                }
                _ => println!("  {ledger:<7} (not measured: anvil not installed)"),
            }
        }
    }
    if has("mxn") {
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
    }
    if has("envelope") {
        println!("\nENVELOPES");
        println!(
            "  seal {}/s, open {}/s; request {} bytes, response {} bytes on the ledger",
            f("/envelope/seal_per_s"),
            f("/envelope/open_per_s"),
            f("/envelope/request_bytes"),
            f("/envelope/response_bytes")
        );
    }
    if has("direct") {
        println!("\nGOALS (issue #4)");
        for (key, label) in [
            (
                "direct_tcp_over_chacha20poly1305",
                "direct TCP / ChaCha20-Poly1305",
            ),
            ("relayed_tcp_over_direct_tcp", "relayed TCP / direct TCP"),
        ] {
            let g = |k: &str| f(&format!("/goals/{key}/{k}"));
            let verdict = match g("met") {
                Value::Bool(true) => "met",
                Value::Bool(false) => "NOT met in this run",
                _ => "not measured",
            };
            println!(
                "  {label:<32} {} (at least {}): {verdict}",
                g("value"),
                g("min")
            );
        }
    }
    println!("\n(total {} s)", f("/elapsed_s"));
}
