//! Throwaway identities: a bare swarm (TCP, Noise, Yamux and streams, no
//! node around it) with a fresh key, cheap enough to make thousands of, for
//! the cheater who mints a PeerId per attempt.

use futures::StreamExt;
use libp2p::{identity::Keypair, Multiaddr, PeerId, Stream, StreamProtocol};
use std::time::Duration;

/// A fresh identity connected to `peer`: its PeerId and a stream of
/// `protocol` opened to `peer`. The swarm lives as long as the task that
/// drives it; dropping the returned guard ends it (and the connection).
pub async fn open(
    peer: PeerId,
    addrs: &[Multiaddr],
    protocol: StreamProtocol,
) -> anyhow::Result<(PeerId, Stream, Guard)> {
    let kp = Keypair::generate_ed25519();
    let me = kp.public().to_peer_id();
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(kp)
        .with_tokio()
        .with_tcp(
            libp2p::tcp::Config::default().nodelay(true),
            libp2p::noise::Config::new,
            libp2p::yamux::Config::default,
        )?
        .with_behaviour(|_| libp2p_stream::Behaviour::new())?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(30)))
        .build();
    let mut control = swarm.behaviour().new_control();
    swarm.dial(
        libp2p::swarm::dial_opts::DialOpts::peer_id(peer)
            .addresses(addrs.to_vec())
            .build(),
    )?;
    // What the swarm saw, for the error when no stream comes.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let log = seen.clone();
    let task = tokio::spawn(async move {
        loop {
            let ev = swarm.select_next_some().await;
            let mut log = log.lock().unwrap();
            if log.len() < 16 {
                log.push(format!("{ev:?}"));
            }
        }
    });
    let guard = Guard(task);
    let stream = tokio::time::timeout(Duration::from_secs(5), control.open_stream(peer, protocol))
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "no stream in time; the swarm saw {:?}",
                seen.lock().unwrap()
            )
        })??;
    Ok((me, stream, guard))
}

/// Ends the throwaway swarm when dropped.
pub struct Guard(tokio::task::JoinHandle<()>);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.abort();
    }
}
