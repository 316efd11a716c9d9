//! Single-stream throughput and latency on every path, in rounds, with the
//! relay also run as its own process.

use super::nodes::{
    node, node_with_mtu, only, rtts, sink_provider, timed_drain, timed_drain_with, Rate,
    ETHERNET_MTU,
};
use super::{round, Sizes};
use crate::DevNet;
use anyhow::Context;
use ledgermesh_node::swarm::NodeHandle;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use serde_json::{json, Value};
use std::time::Duration;

/// The benchmark's relay: `ledgermesh relay` in its own process, as it runs
/// in a deployment, so its CPU time can be told apart from the endpoints'.
pub(super) struct RelayProcess {
    pub(super) child: tokio::process::Child,
    pub(super) tcp: Multiaddr,
    /// Its QUIC listen address (with its peer id).
    pub(super) quic: Multiaddr,
}

impl RelayProcess {
    pub(super) async fn start() -> anyhow::Result<RelayProcess> {
        Self::start_with(&[]).await
    }

    /// [`RelayProcess::start`] with extra flags.
    pub(super) async fn start_with(extra: &[&str]) -> anyhow::Result<RelayProcess> {
        use tokio::io::AsyncBufReadExt;
        let exe = std::env::current_exe().context("locating the ledgermesh binary")?;
        // A profiler around the relay (`LEDGERMESH_BENCH_RELAY_WRAP="heaptrack
        // -o /tmp/relay"`, `"perf record -g -o relay.data"`): for finding where
        // its memory or CPU goes. Its figures are then the wrapper's process.
        let wrap = std::env::var("LEDGERMESH_BENCH_RELAY_WRAP").unwrap_or_default();
        let mut wrap = wrap.split_whitespace();
        let mut cmd = match wrap.next() {
            Some(program) => {
                let mut cmd = tokio::process::Command::new(program);
                cmd.args(wrap).arg(exe);
                cmd
            }
            None => tokio::process::Command::new(exe),
        };
        cmd.args([
            "relay",
            "--json",
            "--open",
            "--allow-private-addrs",
            "--listen",
        ])
        .args(["/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"])
        .args(if super::nodes::noise_aesgcm() {
            &[][..]
        } else {
            &["--noise-cipher", "chachapoly"][..]
        })
        .args([
            "--quic-mtu-ceiling".to_string(),
            super::nodes::quic_mtu_ceiling().to_string(),
        ])
        .args(extra)
        .env(
            "RUST_LOG",
            std::env::var("LEDGERMESH_BENCH_RELAY_LOG").unwrap_or_else(|_| "error".into()),
        )
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true);
        super::cpus::for_relay(&mut cmd);
        let mut child = cmd.spawn().context("starting the relay process")?;
        let out = child.stdout.take().context("relay stdout")?;
        let mut lines = tokio::io::BufReader::new(out).lines();
        let (tcp, quic) = tokio::time::timeout(Duration::from_secs(20), async {
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
                let tcp = addrs.iter().find(|a| ledgermesh_node::addr::is_tcp(a));
                let quic = addrs.iter().find(|a| ledgermesh_node::addr::is_quic(a));
                if let (Some(tcp), Some(quic)) = (tcp, quic) {
                    return anyhow::Ok((
                        tcp.clone().with(Protocol::P2p(peer)),
                        quic.clone().with(Protocol::P2p(peer)),
                    ));
                }
            }
            anyhow::bail!("relay process exited before listening")
        })
        .await
        .context("relay process did not report its addresses")??;
        // Keep reading its events so the pipe never fills; a refusal is
        // worth seeing (a benchmark's peers should never be refused).
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains("\"refused\"") {
                    eprintln!("bench: the relay process refused: {line}");
                }
            }
        });
        Ok(RelayProcess { child, tcp, quic })
    }

    /// The relay's CPU time so far, from /proc.
    pub(super) fn cpu_time(&self) -> Option<Duration> {
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
    pub(super) async fn timed_drain(&self, h: &NodeHandle, peer: PeerId) -> anyhow::Result<Rate> {
        timed_drain_with(h, peer, || self.cpu_time()).await
    }

    pub(super) async fn stop(mut self) {
        // A wrapped relay (under a profiler) is asked to end, so that the
        // wrapper writes what it found: SIGTERM to the wrapper's child that
        // runs this binary (the relay; not the profiler's own helpers), then
        // the wrapper gets 30 s to finish.
        if std::env::var_os("LEDGERMESH_BENCH_RELAY_WRAP").is_some() {
            if let Some(pid) = self.child.id() {
                let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"));
                for child in children.unwrap_or_default().split_whitespace() {
                    let ours = std::fs::read_link(format!("/proc/{child}/exe")).ok()
                        == std::env::current_exe().ok();
                    if let (true, Ok(child)) = (ours, child.parse::<i32>()) {
                        let child = nix::unistd::Pid::from_raw(child);
                        let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGTERM);
                    }
                }
                if tokio::time::timeout(Duration::from_secs(30), self.child.wait())
                    .await
                    .is_ok()
                {
                    return;
                }
            }
        }
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// Repeated runs of one kind of transfer.
#[derive(Debug, Clone, Default)]
pub(super) struct Series(pub(super) Vec<Rate>);

impl Series {
    pub(super) fn median_by(&self, f: impl Fn(&Rate) -> f64) -> f64 {
        median(self.0.iter().map(f).collect())
    }
    /// The median run by rate: its rate and its CPU figures.
    pub(super) fn median(&self) -> Rate {
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
    pub(super) fn rates(&self) -> Vec<f64> {
        self.0.iter().map(|r| round(r.mib_s, 1)).collect()
    }
    /// Run-by-run ratios to another series taken in the same rounds.
    pub(super) fn ratios_to(&self, base: &Series) -> Vec<f64> {
        self.0
            .iter()
            .zip(&base.0)
            .map(|(a, b)| round(a.mib_s / b.mib_s.max(1e-9), 3))
            .collect()
    }
}

pub(super) fn median(mut v: Vec<f64>) -> f64 {
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
pub(super) struct Throughput {
    pub(super) direct_tcp: Series,
    /// Direct TCP from a consumer that announces ChaChaPoly only.
    pub(super) direct_tcp_chachapoly: Series,
    pub(super) direct_quic: Series,
    /// Direct QUIC from a consumer whose MTU ceiling is Ethernet's.
    pub(super) direct_quic_ethernet: Series,
    pub(super) relayed_tcp: Series,
    pub(super) relayed_quic: Series,
    /// Relayed TCP through `ledgermesh relay` running as its own process.
    pub(super) relay_process_tcp: Series,
    pub(super) direct_rtt: (f64, f64),
    pub(super) relayed_rtt: (f64, f64),
}

/// Sets up the four paths once, then runs them in rounds (direct TCP, direct
/// QUIC, relayed TCP, relayed QUIC, again and again): each ratio compares runs
/// taken seconds apart, so a shared machine's load swings hit both sides.
///
/// All nodes share this process's runtime (one worker per core), like one
/// machine running all three roles; on two cores the relayed path's three
/// nodes compete for the same CPU, which the CPU figures show.
pub(super) async fn throughput(sz: &Sizes) -> anyhow::Result<Throughput> {
    let bytes = sz.throughput_bytes;
    let net = DevNet::new(DevNet::plain());
    let (relay, _) = node(&net, "relay", vec![], false, true).await?;
    let relay_tcp = ledgermesh_node::relay::dial_addr(&relay).await?;
    let relay_quic = only(&relay.wait_listening().await?.direct_addrs, true)
        .into_iter()
        .next()
        .context("relay has no QUIC address")?
        .with(Protocol::P2p(relay.peer_id()));
    let relay_proc = RelayProcess::start().await?;
    let proc_peer = ledgermesh_node::addr::peer_of(&relay_proc.tcp).context("relay process id")?;
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
    // The same path with Noise's ChaChaPoly (what a stock peer gets).
    let c_tcp_cc = {
        let mut c = net.config("consumer-tcp-chachapoly");
        c.noise_aesgcm = false;
        let h = net.spawn(c).await?;
        h.dial(pid, only(&snap.direct_addrs, false))
            .await
            .map_err(anyhow::Error::msg)?;
        h
    };
    let c_quic = connect("consumer-quic", pid, only(&snap.direct_addrs, true)).await?;
    // The same path held to Ethernet's MTU (what a 1,500-byte path gives).
    let c_quic_eth = node_with_mtu(net, "consumer-quic-1452", ETHERNET_MTU).await?;
    c_quic_eth
        .dial(pid, only(&snap.direct_addrs, true))
        .await
        .map_err(anyhow::Error::msg)?;
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
        direct_tcp_chachapoly: Series::default(),
        direct_quic: Series::default(),
        direct_quic_ethernet: Series::default(),
        relayed_tcp: Series::default(),
        relayed_quic: Series::default(),
        relay_process_tcp: Series::default(),
        direct_rtt: (0.0, 0.0),
        relayed_rtt: (0.0, 0.0),
    };
    for _ in 0..sz.rounds {
        t.direct_tcp.0.push(timed_drain(&c_tcp, pid).await?);
        t.direct_tcp_chachapoly
            .0
            .push(timed_drain(&c_tcp_cc, pid).await?);
        t.direct_quic.0.push(timed_drain(&c_quic, pid).await?);
        t.direct_quic_ethernet
            .0
            .push(timed_drain(&c_quic_eth, pid).await?);
        t.relayed_tcp.0.push(timed_drain(&c_rel, pid).await?);
        t.relayed_quic.0.push(timed_drain(&c_relq, pid_q).await?);
        t.relay_process_tcp
            .0
            .push(relay_proc.timed_drain(&c_relp, pid).await?);
    }
    t.direct_rtt = rtts(&c_tcp, pid, sz.rtt_samples).await?;
    t.relayed_rtt = rtts(&c_rel, pid, sz.rtt_samples).await?;
    for h in [
        &c_tcp,
        &c_tcp_cc,
        &c_quic,
        &c_quic_eth,
        &c_rel,
        &c_relq,
        &c_relp,
        &prov,
        &prov_q,
        &relay,
    ] {
        h.shutdown().await;
    }
    relay_proc.stop().await;
    Ok(t)
}

/// Relayed TCP with the relay in its own process: the measured rate, and the
/// CPU each side spent per MiB, so the relay's cost can be told apart from the
/// endpoints'.
pub(super) fn relay_process_json(relayed: &Series, direct: &Series) -> Value {
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
pub(super) fn via(addrs: &[Multiaddr], relay: PeerId) -> Vec<Multiaddr> {
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
