//! The benchmark's nodes (on the shared `DevNet` builder) and the timed
//! transfers between them.

use super::baselines::cpu_time;
use super::{mib_s, round, ECHO};
use crate::{DevNet, Recorder};
use anyhow::Context;
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use ledgermesh_node::source::Source;
use ledgermesh_node::streams::{read_frame, serve, Catalog, ServeLimits, STREAM_PROTOCOL};
use ledgermesh_node::swarm::{NodeHandle, RelayLimits};
use ledgermesh_protocol::framing::{StreamHeader, StreamRequest};
use ledgermesh_protocol::stream::slots::SlotLimits;
use libp2p::{Multiaddr, PeerId};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A benchmark node: recorded, reserving on `relays`, optionally a relay.
/// Whether the benchmark's nodes announce AESGCM for Noise (`bench
/// --noise-cipher`); set once, before any node starts.
static NOISE_AESGCM: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

pub(super) fn set_noise_aesgcm(on: bool) {
    NOISE_AESGCM.store(on, std::sync::atomic::Ordering::Relaxed);
}

pub(super) fn noise_aesgcm() -> bool {
    NOISE_AESGCM.load(std::sync::atomic::Ordering::Relaxed)
}

/// QUIC's MTU ceiling on the benchmark's own nodes (`bench
/// --quic-mtu-ceiling`); set once, before any node starts.
static QUIC_MTU_CEILING: std::sync::atomic::AtomicU16 =
    std::sync::atomic::AtomicU16::new(ledgermesh_node::swarm::quic::MTU_CEILING);

pub(super) fn set_quic_mtu_ceiling(bytes: u16) {
    QUIC_MTU_CEILING.store(bytes, std::sync::atomic::Ordering::Relaxed);
}

pub(super) fn quic_mtu_ceiling() -> u16 {
    QUIC_MTU_CEILING.load(std::sync::atomic::Ordering::Relaxed)
}

/// Ethernet's ceiling (quinn's default): the bench's consumers at it show
/// what a path with a 1,500-byte MTU gives, beside the loopback figures.
pub(super) const ETHERNET_MTU: u16 = 1452;

/// [`node`] with QUIC's MTU ceiling at `mtu` (what it also tells peers to
/// send it, so the peer's packets stay that size too).
pub(super) async fn node_with_mtu(
    net: &DevNet,
    name: &str,
    mtu: u16,
) -> anyhow::Result<NodeHandle> {
    let mut c = net.config(name);
    c.noise_aesgcm &= noise_aesgcm();
    c.quic_mtu_ceiling = mtu;
    Ok(net.spawn(c).await?)
}

pub(super) async fn node(
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
    c.noise_aesgcm &= noise_aesgcm();
    c.quic_mtu_ceiling = quic_mtu_ceiling();
    if relay_server {
        c.relay_server = Some(RelayLimits {
            max_circuits: 1024,
            max_circuits_per_peer: 64,
            ..RelayLimits::lifted()
        });
    }
    Ok((net.spawn(c).await?, rec))
}

/// A node that serves zero streams and echoes, for timing the transport.
pub(super) async fn sink_provider(
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
    let access = ledgermesh_node::access::Access::open(h.emitter().clone());
    let limits = lifted_serve_limits();
    let shop = ledgermesh_node::streams::Shop {
        catalog: Arc::new(catalog),
        access,
        payees: None,
    };
    h.spawn(serve(h.clone(), shop, limits));
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

/// Serving caps out of the way: the per-peer cap is not under test.
pub(super) fn lifted_serve_limits() -> ServeLimits {
    ServeLimits {
        slots: SlotLimits {
            max_streams: 4096,
            max_per_peer: 4096,
            max_refusals: 64,
        },
        ..Default::default()
    }
}

pub(super) fn only(addrs: &[Multiaddr], quic: bool) -> Vec<Multiaddr> {
    addrs
        .iter()
        .filter(|a| ledgermesh_node::addr::is_quic(a) == quic)
        .cloned()
        .collect()
}

/// Receives a whole zero stream, discarding it; returns bytes and time.
/// `libp2p-stream` hands inbound streams over through a channel with a single
/// slot and resets the ones that arrive while it is full, so a burst of opens
/// can be refused: those are retried, as `streams::fetch` does.
pub(super) async fn drain(h: &NodeHandle, peer: PeerId) -> anyhow::Result<(u64, Duration)> {
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
pub(super) async fn drain_once(
    h: &NodeHandle,
    peer: PeerId,
) -> Result<(u64, Duration), (bool, anyhow::Error)> {
    pub(super) fn early<E: Into<anyhow::Error>>(e: E) -> (bool, anyhow::Error) {
        (false, e.into())
    }
    pub(super) fn late<E: Into<anyhow::Error>>(e: E) -> (bool, anyhow::Error) {
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
        live_edge: false,
        send: false,
    };
    s.write_all(&request.encode()).await.map_err(early)?;
    let (header, past) = read_frame(&mut s).await.map_err(early)?;
    if let StreamHeader::Rejected(r) = StreamHeader::decode(&header).map_err(late)? {
        return Err(late(anyhow::anyhow!("refused: {}", r.detail)));
    }
    let mut got = past.len() as u64;
    let mut buf = vec![0u8; 256 * 1024];
    // Read as the product's fetch does: in the node's share of receiving.
    let fair = h.fair_in().join();
    loop {
        let read = s.read(&mut buf);
        let n = fair
            .take(256 * 1024, read, |r| *r.as_ref().unwrap_or(&0))
            .await
            .map_err(late)?;
        if n == 0 {
            break;
        }
        got += n as u64;
    }
    Ok((got, start.elapsed()))
}

pub(super) async fn rtts(
    h: &NodeHandle,
    peer: PeerId,
    samples: usize,
) -> anyhow::Result<(f64, f64)> {
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

/// One stream's rate and the CPU it took (all nodes run in this process).
#[derive(Debug, Clone, Copy)]
pub(super) struct Rate {
    pub(super) mib_s: f64,
    /// CPU time over wall time: how many of the cores the transfer kept busy
    /// (the relay process's included).
    pub(super) cores: f64,
    /// The relay process's share of `cores`, when there is a relay.
    pub(super) relay_cores: Option<f64>,
}

impl Rate {
    /// CPU milliseconds spent per MiB moved, summed over every node.
    pub(super) fn cpu_ms_per_mib(&self) -> f64 {
        round(self.cores * 1000.0 / self.mib_s.max(1e-9), 2)
    }
    /// The relay's CPU milliseconds per MiB it forwarded.
    pub(super) fn relay_cpu_ms_per_mib(&self) -> Option<f64> {
        self.relay_cores
            .map(|c| round(c * 1000.0 / self.mib_s.max(1e-9), 2))
    }
}

/// Drains one stream, timing it and the process's CPU time.
pub(super) async fn timed_drain(h: &NodeHandle, peer: PeerId) -> anyhow::Result<Rate> {
    timed_drain_with(h, peer, || None).await
}

/// [`timed_drain`], also counting the CPU time `relay_cpu` reads (a relay
/// process's) over the same transfer.
pub(super) async fn timed_drain_with(
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

/// Drains every `(reader, provider)` pair at once; returns the aggregate
/// MiB/s and the fairness (slowest / fastest stream rate).
pub(super) async fn drain_all(pairs: Vec<(NodeHandle, PeerId)>) -> anyhow::Result<(f64, f64)> {
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
