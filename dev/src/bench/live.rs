//! Live streams at scale: one feed fanned out to M buyers, one buyer on N
//! feeds. Each feed is filled at a fixed rate in 16 KiB chunks (signed like
//! any live chunk); each buyer follows it for a fixed number of bytes and
//! reports its lag from the provider reading a chunk to the buyer writing
//! it (p50/p99), and how evenly the buyers were served.

use super::nodes::{lifted_serve_limits, node, only};
use super::round;
use crate::DevNet;
use ledgermesh_node::streams::live::fetch::{fetch_live, LivePolicy};
use ledgermesh_node::streams::live::LiveFeed;
use ledgermesh_node::streams::{serve, Catalog, FetchPolicy, Output, Shop};
use ledgermesh_node::swarm::NodeHandle;
use libp2p::PeerId;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Chunk size of the generated feeds.
const CHUNK: usize = 16 << 10;

/// Pushes `rate` bytes per second into `feed` in [`CHUNK`]s until `stop`.
fn generate(feed: Arc<LiveFeed>, rate: u64, stop: CancellationToken) {
    tokio::spawn(async move {
        let start = tokio::time::Instant::now();
        let every = Duration::from_secs_f64(CHUNK as f64 / rate.max(1) as f64);
        let mut k = 0u32;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep_until(start + every * k) => {}
            }
            feed.push(vec![(k % 251) as u8; CHUNK]);
            k += 1;
        }
    });
}

/// A node selling `feeds` live streams (`live-0` …, signed with its key)
/// to everyone; the caller fills them.
async fn live_provider(
    net: &DevNet,
    name: &str,
    feeds: usize,
) -> anyhow::Result<(NodeHandle, Vec<Arc<LiveFeed>>)> {
    let (h, _) = node(net, name, vec![], false, false).await?;
    let mut catalog = Catalog::default();
    let mut made = vec![];
    for i in 0..feeds {
        let name = format!("live-{i}");
        let feed = LiveFeed::new(&name, h.keypair().clone(), 64 << 20);
        catalog.insert_feed(&name, feed.clone());
        made.push(feed);
    }
    let shop = Shop {
        catalog: Arc::new(catalog),
        access: ledgermesh_node::access::Access::open(h.emitter().clone()),
        payees: None,
    };
    h.spawn(serve(h.clone(), shop, lifted_serve_limits()));
    h.wait_listening().await?;
    Ok((h, made))
}

/// What each follower reported.
struct Followed {
    p50: f64,
    p99: f64,
    max: f64,
    rate: f64,
}

/// Follows `(buyer, provider, stream)` each for `bytes`; the figures.
async fn follow_all(
    follows: Vec<(NodeHandle, PeerId, String)>,
    bytes: u64,
) -> anyhow::Result<(Vec<Followed>, usize)> {
    let mut tasks = tokio::task::JoinSet::new();
    for (h, peer, name) in follows {
        tasks.spawn(async move {
            let addrs: Vec<libp2p::Multiaddr> = Vec::new();
            let live = LivePolicy {
                until_bytes: Some(bytes),
                ..Default::default()
            };
            let started = Instant::now();
            let r = fetch_live(
                &h,
                peer,
                &addrs,
                &name,
                &Output::File("/dev/null".into()),
                &FetchPolicy::default(),
                &live,
                None,
            )
            .await;
            (r, started.elapsed())
        });
    }
    let (mut out, mut failed) = (vec![], 0);
    while let Some(r) = tasks.join_next().await {
        match r? {
            (Ok(f), _) => {
                let l = f.live.unwrap_or_default();
                // From the first byte: joining is not following.
                let since_first = f
                    .first_byte_ts_ms
                    .map(|t| ledgermesh_node::clock::now_ms().saturating_sub(t))
                    .unwrap_or(0)
                    .max(1);
                out.push(Followed {
                    p50: l.lag_ms_p50,
                    p99: l.lag_ms_p99,
                    max: l.lag_ms_max,
                    rate: f.bytes as f64 / (1 << 20) as f64 / (since_first as f64 / 1000.0),
                });
            }
            (Err(e), _) => {
                tracing::warn!(error = %e, "a live follower failed");
                failed += 1;
            }
        }
    }
    Ok((out, failed))
}

fn row(key: &str, n: usize, rate: u64, bytes: u64, got: &[Followed], failed: usize) -> Value {
    let mut p50s: Vec<f64> = got.iter().map(|f| f.p50).collect();
    let mut p99s: Vec<f64> = got.iter().map(|f| f.p99).collect();
    p50s.sort_by(f64::total_cmp);
    p99s.sort_by(f64::total_cmp);
    let mid = |v: &[f64]| v.get(v.len() / 2).copied().unwrap_or(0.0);
    let (lo, hi) = got.iter().fold((f64::MAX, 0f64), |(lo, hi), f| {
        (lo.min(f.rate), hi.max(f.rate))
    });
    json!({
        key: n,
        "rate_mib_s": round(rate as f64 / (1 << 20) as f64, 2),
        "bytes_per_follower": bytes,
        "lag_ms_p50": round(mid(&p50s), 3),
        "lag_ms_p99": round(mid(&p99s), 3),
        "lag_ms_p99_worst": round(p99s.last().copied().unwrap_or(0.0), 3),
        "lag_ms_max": round(got.iter().map(|f| f.max).fold(0.0, f64::max), 3),
        "fairness": round(if got.is_empty() { 0.0 } else { lo / hi.max(1e-9) }, 3),
        "failed": failed,
    })
}

/// One feed at `rate` bytes/s, followed by each of `ms` buyers for `secs`.
pub(super) async fn fanout(ms: &[usize], rate: u64, secs: f64) -> anyhow::Result<Value> {
    let net = DevNet::new(DevNet::plain());
    let bytes = (rate as f64 * secs) as u64;
    let mut rows = vec![];
    for &m in ms {
        let (prov, mut feeds) = live_provider(&net, "provider", 1).await?;
        let feed = feeds.remove(0);
        let addrs = only(&prov.snapshot().await?.direct_addrs, false);
        let mut buyers = vec![];
        for i in 0..m {
            let (c, _) = node(&net, &format!("b{i}"), vec![], false, false).await?;
            c.dial(prov.peer_id(), addrs.clone())
                .await
                .map_err(anyhow::Error::msg)?;
            buyers.push(c);
        }
        let stop = CancellationToken::new();
        generate(feed, rate, stop.clone());
        let follows = buyers
            .iter()
            .map(|b| (b.clone(), prov.peer_id(), "live-0".to_string()))
            .collect();
        let (got, failed) = follow_all(follows, bytes).await?;
        stop.cancel();
        rows.push(row("m", m, rate, bytes, &got, failed));
        for n in buyers.iter().chain(std::iter::once(&prov)) {
            n.shutdown().await;
        }
    }
    Ok(Value::Array(rows))
}

/// One buyer following `ns` feeds (one provider each), `rate` bytes/s in
/// all, for `secs`.
pub(super) async fn fanin(ns: &[usize], rate: u64, secs: f64) -> anyhow::Result<Value> {
    let net = DevNet::new(DevNet::plain());
    let mut rows = vec![];
    for &n in ns {
        let per_feed = (rate / n as u64).max(CHUNK as u64);
        let bytes = (per_feed as f64 * secs) as u64;
        let (buyer, _) = node(&net, "buyer", vec![], false, false).await?;
        let stop = CancellationToken::new();
        let mut provs = vec![];
        for i in 0..n {
            let (p, mut feeds) = live_provider(&net, &format!("p{i}"), 1).await?;
            let feed = feeds.remove(0);
            buyer
                .dial(p.peer_id(), only(&p.snapshot().await?.direct_addrs, false))
                .await
                .map_err(anyhow::Error::msg)?;
            generate(feed, per_feed, stop.clone());
            provs.push(p);
        }
        let follows = provs
            .iter()
            .map(|p| (buyer.clone(), p.peer_id(), "live-0".to_string()))
            .collect();
        let (got, failed) = follow_all(follows, bytes).await?;
        stop.cancel();
        rows.push(row("n", n, per_feed * n as u64, bytes, &got, failed));
        for p in provs.iter().chain(std::iter::once(&buyer)) {
            p.shutdown().await;
        }
    }
    Ok(Value::Array(rows))
}
