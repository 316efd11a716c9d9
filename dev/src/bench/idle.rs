//! What idle peers cost a node: the growth of one `ledgermesh relay`
//! process's resident memory over N idle connections from this process,
//! then over N reservations on them; then, on a fresh relay process, over N
//! idle QUIC connections. Each connection is its own peer (a stock libp2p
//! swarm with the relay client); dials and reservations go in batches, under
//! the relay's handshake caps.

use super::baselines::rss_kib_of;
use super::round;
use super::throughput::RelayProcess;
use anyhow::Context;
use futures::StreamExt;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::Multiaddr;
use serde_json::{json, Value};
use std::time::Duration;
use tokio::sync::mpsc;

/// Connections and reservations opened at once.
const BATCH: usize = 100;

#[derive(NetworkBehaviour)]
#[behaviour(prelude = "libp2p::swarm::derive_prelude")]
struct Idler {
    relay: libp2p::relay::client::Behaviour,
}

/// What an idle peer reports back.
#[derive(Debug)]
enum Report {
    Connected,
    Reserved,
    /// A reservation request that failed (it is asked again).
    NotReserved(usize),
    Failed(String),
}

/// One idle peer: dials the relay, reserves when told, reports both.
fn idler(
    index: usize,
    relay: Multiaddr,
    reports: mpsc::UnboundedSender<Report>,
) -> anyhow::Result<(tokio::task::JoinHandle<()>, mpsc::UnboundedSender<()>)> {
    let idle = |c: libp2p::swarm::Config| c.with_idle_connection_timeout(Duration::from_secs(3600));
    let mut swarm = if ledgermesh_node::addr::is_quic(&relay) {
        libp2p::SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_quic()
            .with_relay_client(libp2p::noise::Config::new, libp2p::yamux::Config::default)?
            .with_behaviour(|_, relay| Idler { relay })?
            .with_swarm_config(idle)
            .build()
    } else {
        libp2p::SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_tcp(
                libp2p::tcp::Config::default().nodelay(true),
                libp2p::noise::Config::new,
                libp2p::yamux::Config::default,
            )?
            .with_relay_client(libp2p::noise::Config::new, libp2p::yamux::Config::default)?
            .with_behaviour(|_, relay| Idler { relay })?
            .with_swarm_config(idle)
            .build()
    };
    swarm.dial(relay.clone())?;
    let (reserve_tx, mut reserve_rx) = mpsc::unbounded_channel::<()>();
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                Some(()) = reserve_rx.recv() => {
                    if let Err(e) = swarm.listen_on(relay.clone().with(Protocol::P2pCircuit)) {
                        let _ = reports.send(Report::Failed(e.to_string()));
                    }
                }
                ev = swarm.select_next_some() => match ev {
                    SwarmEvent::ConnectionEstablished { .. } => {
                        let _ = reports.send(Report::Connected);
                    }
                    SwarmEvent::OutgoingConnectionError { error, .. } => {
                        let _ = reports.send(Report::Failed(error.to_string()));
                    }
                    SwarmEvent::Behaviour(IdlerEvent::Relay(
                        libp2p::relay::client::Event::ReservationReqAccepted { renewal: false, .. },
                    )) => {
                        let _ = reports.send(Report::Reserved);
                    }
                    SwarmEvent::ListenerClosed { reason: Err(_), .. } => {
                        let _ = reports.send(Report::NotReserved(index));
                    }
                    _ => {}
                },
            }
        }
    });
    Ok((task, reserve_tx))
}

/// Waits for `n` reports of the kind `want`; a failure ends the run. A
/// reservation refused without a reason (the relay dropped the request in
/// a burst) is asked again, at most `retries` times in all.
async fn await_reports(
    rx: &mut mpsc::UnboundedReceiver<Report>,
    n: usize,
    want: fn(&Report) -> bool,
    reserve: &[mpsc::UnboundedSender<()>],
    retries: &mut usize,
) -> anyhow::Result<()> {
    let mut got = 0;
    while got < n {
        let r = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .context("idle peers stopped reporting")?
            .context("idle peers gone")?;
        match r {
            Report::Failed(e) => anyhow::bail!("an idle peer failed: {e}"),
            Report::NotReserved(i) => {
                *retries += 1;
                anyhow::ensure!(*retries <= MAX_RETRIES, "reservations kept failing");
                tokio::time::sleep(Duration::from_millis(20)).await;
                let _ = reserve[i].send(());
            }
            r if want(&r) => got += 1,
            _ => {}
        }
    }
    Ok(())
}

/// Reservation requests asked again, in all, before the run gives up.
const MAX_RETRIES: usize = 10_000;

/// Lets the relay settle (identify, first pings) before its memory is read.
async fn settle() {
    tokio::time::sleep(Duration::from_secs(2)).await;
}

/// `n` idle peers, each connected to `relay` (in batches).
struct Idlers {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    reserve: Vec<mpsc::UnboundedSender<()>>,
    rx: mpsc::UnboundedReceiver<Report>,
    retries: usize,
}

impl Idlers {
    async fn connect(n: usize, relay: &Multiaddr) -> anyhow::Result<Idlers> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut me = Idlers {
            tasks: Vec::with_capacity(n),
            reserve: Vec::with_capacity(n),
            rx,
            retries: 0,
        };
        for batch in (0..n).collect::<Vec<_>>().chunks(BATCH) {
            for i in batch {
                let (task, r) = idler(*i, relay.clone(), tx.clone())?;
                me.tasks.push(task);
                me.reserve.push(r);
            }
            me.wait_for(batch.len(), |r| matches!(r, Report::Connected))
                .await?;
        }
        Ok(me)
    }

    async fn wait_for(&mut self, n: usize, want: fn(&Report) -> bool) -> anyhow::Result<()> {
        await_reports(&mut self.rx, n, want, &self.reserve, &mut self.retries).await
    }

    /// Every peer reserves (in batches).
    async fn reserve_all(&mut self) -> anyhow::Result<()> {
        for batch in (0..self.reserve.len()).collect::<Vec<_>>().chunks(BATCH) {
            for i in batch {
                let _ = self.reserve[*i].send(());
            }
            self.wait_for(batch.len(), |r| matches!(r, Report::Reserved))
                .await?;
        }
        Ok(())
    }
}

impl Drop for Idlers {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The relay's resident memory now, once it has settled.
async fn settled_rss(relay: &RelayProcess) -> anyhow::Result<u64> {
    settle().await;
    let pid = relay.child.id().context("relay pid")?.to_string();
    rss_kib_of(&pid).context("reading the relay's RSS")
}

/// RSS growth of a relay process per idle connection and per reservation,
/// then per idle QUIC connection on a fresh relay.
pub(super) async fn idle(n: usize) -> anyhow::Result<Value> {
    let max = (n * 2).to_string();
    let relay =
        RelayProcess::start_with(&["--max-connections", &max, "--max-reservations-per-ip", &max])
            .await?;
    let before = settled_rss(&relay).await?;
    let mut peers = Idlers::connect(n, &relay.tcp).await?;
    let connected = settled_rss(&relay).await?;
    peers.reserve_all().await?;
    let reserved = settled_rss(&relay).await?;
    let retries = peers.retries;
    drop(peers);
    relay.stop().await;

    // The same over QUIC (our transport on the relay's side).
    let relay = RelayProcess::start_with(&["--max-connections", &max]).await?;
    let quic_before = settled_rss(&relay).await?;
    let peers = Idlers::connect(n, &relay.quic).await?;
    let quic_connected = settled_rss(&relay).await?;
    drop(peers);
    relay.stop().await;

    let per = |a: u64, b: u64| round(b.saturating_sub(a) as f64 / n as f64, 1);
    Ok(json!({
        "peers": n,
        "relay_rss_kib_start": before,
        "relay_rss_kib_connected": connected,
        "relay_rss_kib_reserved": reserved,
        "rss_kib_per_connection": per(before, connected),
        "rss_kib_per_reservation": per(connected, reserved),
        // Reservation requests that failed without a reason and were asked
        // again (a relay that drops requests in a burst shows here).
        "reservation_retries": retries,
        "relay_rss_kib_quic_start": quic_before,
        "relay_rss_kib_quic_connected": quic_connected,
        "rss_kib_per_quic_connection": per(quic_before, quic_connected),
    }))
}
