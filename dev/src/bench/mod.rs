//! `ledgermesh bench`: throughput, latency, set-up time, M×N scale and
//! envelope cost, each next to a baseline measured in the same run.
//!
//! Everything runs on loopback in this process (the EVM set-up phase uses an
//! anvil it starts itself when installed). Figures are printed, never
//! asserted: these machines are shared and noisy.

mod baselines;
pub mod cpus;
mod envelope;
mod idle;
mod live;
mod nodes;
mod payments;
mod peers;
mod scale;
mod setup;
mod table;
mod throughput;

use baselines::{chacha_baseline, chacha_ring_baseline, ring_seal_baseline, tcp_baseline};
use envelope::envelope_cost;
use nodes::node;
use scale::{one_consumer_n_providers, one_provider_m_consumers};
use setup::setup_phases;
pub use table::print_table;
use throughput::{median, relay_process_json, throughput};

use crate::DevNet;
use libp2p::StreamProtocol;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

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
    /// Which cores the relay process and the endpoints run on.
    pub cpus: cpus::CpuPlan,
    /// Whether the benchmark's nodes announce AESGCM for Noise (they use it
    /// with each other then); ChaChaPoly everywhere when off.
    pub noise_aesgcm: bool,
    /// QUIC's MTU ceiling on the benchmark's own nodes.
    pub quic_mtu_ceiling: u16,
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
    /// Live streams: one feed to M buyers, one buyer on N feeds (lag, fairness).
    Live,
    /// The stock rust-libp2p stack (TCP and QUIC) against ours, same bytes, same rounds.
    Peers,
    /// A relay process's resident memory per idle connection and per reservation.
    Idle,
    /// Vouchers per second, gas per channel call, settlement overhead, and
    /// a priced stream against the same stream free.
    Payments,
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

/// A local chain with two funded keys under `dir` (anvil must be installed).
async fn anvil(
    dir: &std::path::Path,
    block_time: Option<u64>,
) -> anyhow::Result<crate::devchain::DevChain> {
    crate::devchain::start(crate::devchain::DevChainOptions {
        host: "127.0.0.1".into(),
        port: 0,
        state: None,
        accounts: 2,
        key_dir: dir.to_path_buf(),
        deploy: None,
        block_time,
    })
    .await
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
    if let Err(e) = cpus::apply(opts.cpus) {
        eprintln!("bench: cores not pinned: {e}");
    }
    nodes::set_noise_aesgcm(opts.noise_aesgcm);
    nodes::set_quic_mtu_ceiling(opts.quic_mtu_ceiling);
    out.insert(
        "machine".into(),
        json!({
            "cpus": cpus::available(),
            "quick": opts.quick,
            "placement": cpus::report(opts.cpus),
            "aes_in_hardware": ledgermesh_node::swarm::aes_in_hardware(),
            // What the benchmark's own nodes seal Noise frames with.
            "noise_cipher": if opts.noise_aesgcm { "AESGCM" } else { "ChaChaPoly" },
            // The largest QUIC packet our nodes try (loopback's MTU is 64 KiB).
            "quic_mtu_ceiling": opts.quic_mtu_ceiling,
        }),
    );
    let (mut tcp, mut chacha, mut aes256) = (None, None, None);
    if wants(Section::Baseline) {
        eprintln!("bench: baselines…");
        let t = tcp_baseline(sz.tcp_bytes).await?;
        let c = tokio::task::spawn_blocking(move || chacha_ring_baseline(sz.crypto_time)).await?;
        let c_rc = tokio::task::spawn_blocking(move || chacha_baseline(sz.crypto_time)).await?;
        // QUIC seals each packet: the ciphers at a QUIC packet's size.
        // libp2p-tls offers ChaCha20-Poly1305 first (and rustls follows the
        // client's order); rustls's own default, which iroh keeps, puts
        // AES-GCM first.
        let packets = tokio::task::spawn_blocking(move || {
            let seal = |alg, record| round(ring_seal_baseline(alg, record, sz.crypto_time), 1);
            json!({
                "chacha20poly1305_1452b_mib_s": seal(&ring::aead::CHACHA20_POLY1305, 1452),
                "aes128gcm_1452b_mib_s": seal(&ring::aead::AES_128_GCM, 1452),
                "aes128gcm_mib_s": seal(&ring::aead::AES_128_GCM, 64 * 1024),
                // Noise's AESGCM, what our nodes use with each other.
                "aes256gcm_mib_s": seal(&ring::aead::AES_256_GCM, 64 * 1024),
            })
        })
        .await?;
        let mut baseline = json!({
            "tcp_loopback_mib_s": round(t, 1),
            "chacha20poly1305_mib_s": round(c, 1),
            "chacha20poly1305_rustcrypto_mib_s": round(c_rc, 1),
        });
        if let (Some(b), Some(p)) = (baseline.as_object_mut(), packets.as_object()) {
            b.extend(p.clone());
        }
        aes256 = baseline.pointer("/aes256gcm_mib_s").and_then(Value::as_f64);
        out.insert("baseline".into(), baseline);
        (tcp, chacha) = (Some(t), Some(c));
    }

    if wants(Section::Throughput) {
        eprintln!("bench: direct and relayed streams…");
        let t = throughput(&sz).await?;
        let ratio = |a: f64, b: Option<f64>| b.map(|b| round(a / b, 3));
        let (dt, dq) = (t.direct_tcp.median(), t.direct_quic.median());
        let dtc = t.direct_tcp_chachapoly.median();
        let cipher_ratios = t.direct_tcp.ratios_to(&t.direct_tcp_chachapoly);
        let (rt, rq) = (t.relayed_tcp.median(), t.relayed_quic.median());
        let rel_ratios = t.relayed_tcp.ratios_to(&t.direct_tcp);
        let relq_ratios = t.relayed_quic.ratios_to(&t.direct_quic);
        let quic_tcp_ratios = t.direct_quic.ratios_to(&t.direct_tcp);
        let dqe = t.direct_quic_ethernet.median();
        out.insert(
            "direct".into(),
            json!({
                "tcp_mib_s": round(dt.mib_s, 1),
                "quic_mib_s": round(dq.mib_s, 1),
                "tcp_ratio_to_raw_tcp": ratio(dt.mib_s, tcp),
                "tcp_ratio_to_chacha20poly1305": ratio(dt.mib_s, chacha),
                "tcp_ratio_to_aes256gcm": ratio(dt.mib_s, aes256),
                "tcp_chachapoly_mib_s": round(dtc.mib_s, 1),
                "tcp_chachapoly_cpu_ms_per_mib": dtc.cpu_ms_per_mib(),
                "tcp_chachapoly_runs_mib_s": t.direct_tcp_chachapoly.rates(),
                "tcp_ratio_to_chachapoly": round(median(cipher_ratios.clone()), 3),
                "tcp_ratio_to_chachapoly_runs": cipher_ratios,
                "tcp_cpu_cores": dt.cores,
                "tcp_cpu_ms_per_mib": dt.cpu_ms_per_mib(),
                "quic_cpu_cores": dq.cores,
                "quic_cpu_ms_per_mib": dq.cpu_ms_per_mib(),
                "tcp_runs_mib_s": t.direct_tcp.rates(),
                "quic_runs_mib_s": t.direct_quic.rates(),
                "quic_ratio_to_tcp": round(median(quic_tcp_ratios.clone()), 3),
                "quic_ratio_to_tcp_runs": quic_tcp_ratios,
                "quic_1452_mib_s": round(dqe.mib_s, 1),
                "quic_1452_cpu_ms_per_mib": dqe.cpu_ms_per_mib(),
                "quic_1452_runs_mib_s": t.direct_quic_ethernet.rates(),
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
        let relay_addr = ledgermesh_node::relay::dial_addr(&relay).await?;
        let setup_memory = setup_phases(&relay_addr, None, false, false).await?;
        // On anvil: one block per transaction (the chain adds nothing but its
        // RPC), and one block a second (a real chain's cadence).
        let on_anvil = |block_time: Option<u64>, read_pending: bool, ws: bool| {
            let relay_addr = relay_addr.clone();
            async move {
                let dir = std::env::temp_dir().join(format!(
                    "lm-bench-{}-{}-{read_pending}-{ws}",
                    std::process::id(),
                    block_time.unwrap_or(0)
                ));
                let chain = anvil(&dir, block_time).await?;
                let r = setup_phases(&relay_addr, Some(&chain), read_pending, ws).await;
                chain.stop().await?;
                let _ = std::fs::remove_dir_all(dir);
                r
            }
        };
        // With 1 s blocks, also with both sides reading the pending block,
        // polling it and then woken by the endpoint's websocket. The other
        // rows poll only, as before websocket wake-ups.
        let (mut setup_anvil, mut setup_1s, mut setup_1s_pending) = (None, None, None);
        let mut setup_1s_pending_ws = None;
        if crate::devchain::find_anvil().is_ok() {
            setup_anvil = Some(on_anvil(None, false, false).await?);
            setup_1s = Some(on_anvil(Some(1), false, false).await?);
            setup_1s_pending = Some(on_anvil(Some(1), true, false).await?);
            setup_1s_pending_ws = Some(on_anvil(Some(1), true, true).await?);
        }
        relay.shutdown().await;
        out.insert(
            "setup_ms".into(),
            json!({
                "memory": setup_memory,
                "anvil": setup_anvil,
                "anvil_1s_blocks": setup_1s,
                "anvil_1s_blocks_read_pending": setup_1s_pending,
                "anvil_1s_blocks_read_pending_ws": setup_1s_pending_ws,
            }),
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

    if wants(Section::Live) {
        eprintln!("bench: live streams…");
        let secs = if opts.quick { 1.0 } else { 4.0 };
        // A busy feed (market data, a video-sized sensor stream) to each
        // buyer; the same bytes in all spread over N feeds. Both ends run in
        // this one process, so the fan-out's M × rate of sealing and
        // opening shares its cores.
        out.insert(
            "live".into(),
            json!({
                "one_feed_m_buyers": live::fanout(&[10, 50], 2 << 20, secs).await?,
                "one_buyer_n_feeds": live::fanin(&[10, 50], 8 << 20, secs).await?,
            }),
        );
    }

    if wants(Section::Peers) {
        eprintln!("bench: the stock libp2p stack against ours…");
        out.insert("peers".into(), peers::peers(&sz).await?);
    }

    if wants(Section::Idle) {
        let n = if opts.quick { 200 } else { 1000 };
        eprintln!("bench: {n} idle connections and reservations on a relay process…");
        out.insert("idle".into(), idle::idle(n).await?);
    }

    if wants(Section::Payments) {
        eprintln!("bench: payments…");
        out.insert("payments".into(), payments::payments(opts.quick).await?);
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
            "direct_quic_over_direct_tcp": goal(at("direct", "quic_ratio_to_tcp"), 1.0),
            "paid_over_free": goal(at("payments", "paid_ratio_to_free"), 0.95),
            "relayed_paid_over_free": goal(at("payments", "relayed_paid_ratio_to_free"), 0.95),
            // At most 1 % of what is claimed goes to gas (1 gwei).
            "settlement_overhead": {
                "value": at("payments", "settlement_overhead"),
                "max": 0.01,
                "met": at("payments", "settlement_overhead").map(|o| o <= 0.01),
            },
        }),
    );
    out.insert(
        "elapsed_s".into(),
        json!(round(t0.elapsed().as_secs_f64(), 1)),
    );
    Ok(Value::Object(out))
}
