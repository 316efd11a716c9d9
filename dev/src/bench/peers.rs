//! What a user would pick instead, measured in the same run: the stock
//! rust-libp2p stack (libp2p-tcp + libp2p-noise + libp2p-yamux with their
//! default configs, and libp2p-quic), moving the same bytes over one stream
//! the way libp2p's `perf` protocol does (one writer, one reader, 256 KiB
//! writes, TCP_NODELAY), interleaved round by round with our own direct TCP
//! and QUIC streams so machine drift hits both sides of each ratio.
//!
//! iroh is not built here: it would bring its own QUIC stack into every
//! build. It is a separate benchmark-only crate (`bench/iroh-peer`, its own
//! workspace) that this section drives as a child process, round by round
//! with the others; without it built, the iroh figures are null and say how
//! to build it.

use super::nodes::{node, node_with_mtu, only, sink_provider, timed_drain, Rate, ETHERNET_MTU};
use super::throughput::{median, Series};
use super::{round, Sizes};
use crate::DevNet;
use anyhow::Context;
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, StreamProtocol, Swarm};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// The iroh release `bench/iroh-peer` is built against (its Cargo.lock).
const IROH_VERSION: &str = "1.4.1";

const PERF: StreamProtocol = StreamProtocol::new("/ledgermesh-bench/stock-perf/1");
const WRITE: usize = 256 << 10;

/// A stock swarm: the defaults a libp2p user starts from.
fn stock_swarm() -> anyhow::Result<Swarm<libp2p_stream::Behaviour>> {
    Ok(libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            libp2p::tcp::Config::default().nodelay(true),
            libp2p::noise::Config::new,
            libp2p::yamux::Config::default,
        )?
        .with_quic()
        .with_behaviour(|_| libp2p_stream::Behaviour::new())?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build())
}

/// Drives a swarm until the task is aborted, handing out its listen addresses.
fn drive(
    mut swarm: Swarm<libp2p_stream::Behaviour>,
) -> (
    tokio::task::JoinHandle<()>,
    tokio::sync::mpsc::UnboundedReceiver<Multiaddr>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
                let _ = tx.send(address);
            }
        }
    });
    (task, rx)
}

/// A stock server that sends `bytes` on every stream it is asked for.
struct StockServer {
    peer: PeerId,
    tcp: Multiaddr,
    quic: Multiaddr,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl StockServer {
    async fn start(bytes: u64) -> anyhow::Result<Self> {
        let mut swarm = stock_swarm()?;
        let peer = *swarm.local_peer_id();
        let mut control = swarm.behaviour().new_control();
        let mut incoming = control.accept(PERF)?;
        swarm.listen_on("/ip4/127.0.0.1/tcp/0".parse()?)?;
        swarm.listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse()?)?;
        let (driver, mut addrs) = drive(swarm);
        let (mut tcp, mut quic) = (None, None);
        while tcp.is_none() || quic.is_none() {
            let a = tokio::time::timeout(Duration::from_secs(10), addrs.recv())
                .await
                .context("the stock server did not listen")?
                .context("the stock server stopped")?;
            if ledgermesh_node::addr::is_tcp(&a) {
                tcp = Some(a);
            } else {
                quic = Some(a);
            }
        }
        let server = tokio::spawn(async move {
            while let Some((_, mut s)) = incoming.next().await {
                tokio::spawn(async move {
                    let buf = vec![0x5a_u8; WRITE];
                    let mut left = bytes;
                    while left > 0 {
                        let n = left.min(WRITE as u64) as usize;
                        if s.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                        left -= n as u64;
                    }
                    let _ = s.close().await;
                });
            }
        });
        Ok(Self {
            peer,
            tcp: tcp.expect("set above"),
            quic: quic.expect("set above"),
            tasks: vec![driver, server],
        })
    }
}

impl Drop for StockServer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A stock client connected to the server over one transport.
struct StockClient {
    control: libp2p_stream::Control,
    server: PeerId,
    task: tokio::task::JoinHandle<()>,
}

impl StockClient {
    async fn connect(server: PeerId, addr: Multiaddr) -> anyhow::Result<Self> {
        let mut swarm = stock_swarm()?;
        let control = swarm.behaviour().new_control();
        swarm.dial(addr.with(libp2p::multiaddr::Protocol::P2p(server)))?;
        let (task, _) = drive(swarm);
        Ok(Self {
            control,
            server,
            task,
        })
    }

    /// One stream read to its end: the rate and the process's CPU cores busy.
    async fn drain(&mut self) -> anyhow::Result<Rate> {
        let cpu0 = super::baselines::cpu_time();
        let start = Instant::now();
        let mut s = self
            .control
            .open_stream(self.server, PERF)
            .await
            .map_err(|e| anyhow::anyhow!("stock stream: {e}"))?;
        let mut buf = vec![0u8; WRITE];
        let mut bytes = 0u64;
        loop {
            let n = s.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            bytes += n as u64;
        }
        let d = start.elapsed();
        let cores = super::baselines::cpu_time()
            .saturating_sub(cpu0)
            .as_secs_f64()
            / d.as_secs_f64().max(1e-9);
        Ok(Rate {
            mib_s: super::mib_s(bytes, d),
            cores: round(cores, 2),
            relay_cores: None,
        })
    }
}

impl Drop for StockClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Where `ledgermesh-iroh-peer` is looked for when `LEDGERMESH_IROH_PEER`
/// does not say: under the working directory (the project root).
const IROH_PEER: &str = "bench/iroh-peer/target/release/ledgermesh-iroh-peer";

/// The iroh peer process: both iroh endpoints, connected once; one transfer
/// per round on request (see `bench/iroh-peer/src/main.rs`).
struct IrohPeer {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl IrohPeer {
    /// Starts it, or says why not (not built).
    fn start(bytes: u64) -> Result<Self, String> {
        let path = std::env::var_os("LEDGERMESH_IROH_PEER")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| IROH_PEER.into());
        if !path.exists() {
            return Err(format!(
                "not measured: {} not found (build it: cargo build --release --manifest-path \
                 bench/iroh-peer/Cargo.toml; or point LEDGERMESH_IROH_PEER at it)",
                path.display()
            ));
        }
        let mut cmd = tokio::process::Command::new(&path);
        cmd.args(["--bytes", &bytes.to_string()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true);
        super::cpus::for_endpoints(&mut cmd);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("not measured: starting {}: {e}", path.display()))?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        use tokio::io::AsyncBufReadExt;
        Ok(IrohPeer {
            child,
            stdin,
            lines: tokio::io::BufReader::new(stdout).lines(),
        })
    }

    /// One transfer, timed inside the iroh process.
    async fn round(&mut self) -> anyhow::Result<Rate> {
        use tokio::io::AsyncWriteExt as _;
        self.stdin.write_all(b"round\n").await?;
        self.stdin.flush().await?;
        let line = tokio::time::timeout(Duration::from_secs(120), self.lines.next_line())
            .await
            .context("the iroh peer took over 120 s")??
            .context("the iroh peer exited")?;
        let v: Value = serde_json::from_str(&line).context("the iroh peer's line")?;
        Ok(Rate {
            mib_s: v["mib_s"].as_f64().context("mib_s")?,
            cores: round(v["cores"].as_f64().context("cores")?, 2),
            relay_cores: None,
        })
    }
}

impl Drop for IrohPeer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Our direct TCP and QUIC against the stock stack's (and iroh's, when
/// built), in rounds.
pub(super) async fn peers(sz: &Sizes) -> anyhow::Result<Value> {
    let bytes = sz.throughput_bytes;
    let mut iroh = IrohPeer::start(bytes);
    let server = StockServer::start(bytes).await?;
    let mut stock_tcp = StockClient::connect(server.peer, server.tcp.clone()).await?;
    let mut stock_quic = StockClient::connect(server.peer, server.quic.clone()).await?;

    let net = DevNet::new(DevNet::plain());
    let prov = sink_provider(&net, "provider", vec![], false, bytes).await?;
    let snap = prov.snapshot().await?;
    let pid = prov.peer_id();
    let connect = |name: &'static str, addrs: Vec<Multiaddr>| {
        let net = &net;
        async move {
            let (h, _) = node(net, name, vec![], false, false).await?;
            h.dial(pid, addrs).await.map_err(anyhow::Error::msg)?;
            anyhow::Ok(h)
        }
    };
    let ours_tcp = connect("consumer-tcp", only(&snap.direct_addrs, false)).await?;
    let ours_quic = connect("consumer-quic", only(&snap.direct_addrs, true)).await?;
    // Ours held to Ethernet's MTU, as the stock stack and iroh are.
    let ours_quic_eth = node_with_mtu(&net, "consumer-quic-1452", ETHERNET_MTU).await?;
    ours_quic_eth
        .dial(pid, only(&snap.direct_addrs, true))
        .await
        .map_err(anyhow::Error::msg)?;

    let mut o_quic_eth = Series::default();
    let (mut o_tcp, mut o_quic, mut s_tcp, mut s_quic, mut i_quic) = (
        Series::default(),
        Series::default(),
        Series::default(),
        Series::default(),
        Series::default(),
    );
    for _ in 0..sz.rounds {
        o_tcp.0.push(timed_drain(&ours_tcp, pid).await?);
        s_tcp.0.push(stock_tcp.drain().await?);
        o_quic.0.push(timed_drain(&ours_quic, pid).await?);
        o_quic_eth.0.push(timed_drain(&ours_quic_eth, pid).await?);
        s_quic.0.push(stock_quic.drain().await?);
        if let Ok(peer) = iroh.as_mut() {
            i_quic.0.push(peer.round().await?);
        }
    }
    drop(iroh.as_mut().map(|p| p.child.start_kill()));
    for h in [&ours_tcp, &ours_quic, &ours_quic_eth, &prov] {
        h.shutdown().await;
    }
    let tcp_ratios = o_tcp.ratios_to(&s_tcp);
    let quic_ratios = o_quic.ratios_to(&s_quic);
    let (st, sq) = (s_tcp.median(), s_quic.median());
    let iroh_measured = !i_quic.0.is_empty();
    let iroh_median = iroh_measured.then(|| i_quic.median());
    let iroh_ratios = o_quic.ratios_to(&i_quic);
    let eth_quic_ratios = o_quic_eth.ratios_to(&s_quic);
    let eth_iroh_ratios = o_quic_eth.ratios_to(&i_quic);
    let oqe = o_quic_eth.median();
    Ok(json!({
        "libp2p_tcp_mib_s": round(st.mib_s, 1),
        "libp2p_quic_mib_s": round(sq.mib_s, 1),
        "libp2p_tcp_cpu_ms_per_mib": st.cpu_ms_per_mib(),
        "libp2p_quic_cpu_ms_per_mib": sq.cpu_ms_per_mib(),
        "ours_tcp_mib_s": round(o_tcp.median().mib_s, 1),
        "ours_quic_mib_s": round(o_quic.median().mib_s, 1),
        "ours_tcp_cpu_ms_per_mib": o_tcp.median().cpu_ms_per_mib(),
        "ours_quic_cpu_ms_per_mib": o_quic.median().cpu_ms_per_mib(),
        "tcp_ratio_to_libp2p": round(median(tcp_ratios.clone()), 3),
        "quic_ratio_to_libp2p": round(median(quic_ratios.clone()), 3),
        "tcp_ratio_to_libp2p_runs": tcp_ratios,
        "quic_ratio_to_libp2p_runs": quic_ratios,
        "libp2p_tcp_runs_mib_s": s_tcp.rates(),
        "libp2p_quic_runs_mib_s": s_quic.rates(),
        "iroh_mib_s": iroh_median.map(|r| round(r.mib_s, 1)),
        "iroh_cpu_ms_per_mib": iroh_median.map(|r| r.cpu_ms_per_mib()),
        "iroh_runs_mib_s": iroh_measured.then(|| i_quic.rates()),
        "quic_ratio_to_iroh": iroh_measured.then(|| round(median(iroh_ratios.clone()), 3)),
        "tcp_ratio_to_iroh": iroh_measured.then(|| round(median(o_tcp.ratios_to(&i_quic)), 3)),
        "quic_ratio_to_iroh_runs": iroh_measured.then_some(iroh_ratios),
        // Ours at Ethernet's MTU ceiling, like the stock stack and iroh.
        "ours_quic_1452_mib_s": round(oqe.mib_s, 1),
        "ours_quic_1452_cpu_ms_per_mib": oqe.cpu_ms_per_mib(),
        "quic_1452_ratio_to_libp2p": round(median(eth_quic_ratios.clone()), 3),
        "quic_1452_ratio_to_libp2p_runs": eth_quic_ratios,
        "quic_1452_ratio_to_iroh": iroh_measured.then(|| round(median(eth_iroh_ratios.clone()), 3)),
        "quic_1452_ratio_to_iroh_runs": iroh_measured.then_some(eth_iroh_ratios),
        "iroh": match &iroh {
            Ok(_) => format!("iroh {IROH_VERSION}: two endpoints in one process on loopback, no relay, one unidirectional stream per round"),
            Err(why) => why.clone(),
        },
        "bytes_per_run": bytes,
    }))
}
