//! `/ledgermesh/hardnat/1`: a direct QUIC path through one hard
//! (endpoint-dependent) NAT, agreed over the relayed connection both peers
//! already share. The decisions, bounds and wire format are
//! `protocol::path::hardnat`; the sockets and probes are `swarm::punch`.
//!
//! The side behind the endpoint-dependent NAT offers (the event loop hands
//! it each peer it reaches only through a relay); the other side answers.
//! Each attempt ends in one `hard_nat` event on each side.

use crate::addr::quic_socket;
mod easy;
mod hard;

use crate::events::{Event, HardNatOutcome};
use crate::net::{Net, NodeError};
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use ledgermesh_protocol::consensus::Mapping;
use ledgermesh_protocol::path::hardnat::{
    self, answer, probe_ports_at, Decline, EasySelf, Limiter, Message, Plan, Role, PROTOCOL,
};
use ledgermesh_protocol::path::offers::{Finish, Offered, Offers, Step};
use ledgermesh_protocol::Machine;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId, StreamProtocol};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Semaphore};

/// How a spray went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SprayReport {
    /// Sockets opened (each sent QUIC Initials toward the target).
    pub sockets: u16,
}

/// What a hard-NAT attempt asks of the node beyond [`Net`]: the QUIC
/// transport's sprays and probes, and word of a direct connection.
pub trait HardNatNet: Net {
    /// The next fresh-port dial toward `addr` sprays `plan.sockets`
    /// sockets; `None` when too many sprays are already waiting.
    fn spray(
        &self,
        addr: SocketAddr,
        plan: Plan,
    ) -> Option<tokio::sync::oneshot::Receiver<SprayReport>>;
    /// Queues one probe packet from the QUIC listen socket to each target
    /// (`peer` is who we expect there); returns how many were queued.
    fn probe(&self, targets: impl IntoIterator<Item = SocketAddr>, peer: PeerId) -> usize;
    /// Dials `peer` at `addr` from a fresh port (from many, with a spray
    /// registered for `addr`).
    fn dial_fresh(
        &self,
        peer: PeerId,
        addr: Multiaddr,
    ) -> impl std::future::Future<Output = Result<(), NodeError>> + Send;
    /// The remote address of a direct connection to `peer` once one is up
    /// (at once if one is); `None` when the node has stopped.
    fn wait_direct(
        &self,
        peer: PeerId,
    ) -> impl std::future::Future<Output = Option<tokio::sync::oneshot::Receiver<Multiaddr>>> + Send;
}

/// Offers waiting for the service, at most (more are dropped: enough run).
pub const QUEUE: usize = 64;
/// Streams (both roles) handled at once; the limiter admits fewer attempts.
const MAX_STREAMS: usize = 16;
/// The longest wait for the peer's next message.
const STEP: Duration = Duration::from_secs(5);

/// A peer to offer an attempt to, and our public IP (from consensus).
#[derive(Debug, Clone, Copy)]
pub struct Offer {
    /// The peer, reached through a relay.
    pub peer: PeerId,
    /// Our public IP.
    pub ip: IpAddr,
}

/// Why an attempt ended without a direct path.
enum Ended {
    Declined(String),
    Failed(String),
}

/// What an attempt did.
#[derive(Default)]
struct Tally {
    sockets: u16,
    probes: u16,
    remote: Option<Multiaddr>,
    /// When the direct connection was seen to be up.
    up_at: Option<Instant>,
}

/// The service: answers offers, makes them.
#[derive(Clone)]
pub struct Service {
    enabled: bool,
    plan: Plan,
    allow_private: bool,
    limiter: Arc<Mutex<Limiter<PeerId>>>,
    /// The secret behind each IP's probe ports (`hardnat::probe_seed`).
    salt: [u8; 32],
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// An attempt's slot in the limiter, given back on drop.
struct Slot(Arc<Mutex<Limiter<PeerId>>>);

impl Drop for Slot {
    fn drop(&mut self) {
        lock(&self.0).finish();
    }
}

impl Service {
    /// `enabled`: `--hard-nat on` and a QUIC listener.
    pub fn new(enabled: bool, plan: Plan, allow_private: bool) -> Service {
        Service {
            enabled,
            plan,
            allow_private,
            limiter: Arc::new(Mutex::new(Limiter::new())),
            salt: rand::random(),
        }
    }

    fn slot(&self, peer: &PeerId) -> Result<Slot, Decline> {
        let mut l = lock(&self.limiter);
        l.start(Instant::now(), peer)?;
        Ok(Slot(self.limiter.clone()))
    }

    /// Serves the protocol and makes the offers the event loop sends, until
    /// the node stops.
    pub async fn run(self, handle: impl HardNatNet, mut offers: mpsc::Receiver<Offer>) {
        let mut control = handle.stream_control();
        let mut incoming = match control.accept(StreamProtocol::new(PROTOCOL)) {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(error = %e, "hardnat protocol already served");
                return;
            }
        };
        let permits = Arc::new(Semaphore::new(MAX_STREAMS));
        loop {
            tokio::select! {
                next = incoming.next() => {
                    let Some((peer, stream)) = next else { break };
                    let Ok(permit) = permits.clone().try_acquire_owned() else {
                        tracing::debug!(%peer, "too many hardnat streams; dropped");
                        continue;
                    };
                    let (me, h) = (self.clone(), handle.clone());
                    handle.spawn(async move {
                        let _permit = permit;
                        me.easy(h, peer, stream).await;
                    });
                }
                offer = offers.recv() => {
                    let Some(offer) = offer else { break };
                    let Ok(permit) = permits.clone().try_acquire_owned() else { continue };
                    let (me, h) = (self.clone(), handle.clone());
                    handle.spawn(async move {
                        let _permit = permit;
                        me.hard(h, offer).await;
                    });
                }
            }
        }
    }

    fn report(
        &self,
        handle: &impl HardNatNet,
        peer: PeerId,
        role: Role,
        start: Instant,
        result: Result<Tally, (Ended, Tally)>,
    ) {
        let (outcome, reason, tally) = match result {
            Ok(t) => (HardNatOutcome::Direct, None, t),
            Err((Ended::Declined(r), t)) => (HardNatOutcome::Declined, Some(r), t),
            Err((Ended::Failed(r), t)) => (HardNatOutcome::Failed, Some(r), t),
        };
        tracing::info!(%peer, role = role.as_str(), %outcome, ?reason, "hard-NAT attempt ended");
        handle.emit(Event::HardNat {
            peer_id: peer.to_string(),
            role: role.as_str(),
            outcome,
            reason,
            sockets: tally.sockets,
            probes: tally.probes,
            chance: (hardnat::success_probability(tally.sockets, tally.probes) * 1e4).round() / 1e4,
            ms: (tally.up_at.unwrap_or_else(Instant::now))
                .saturating_duration_since(start)
                .as_millis() as u64,
            remote_addr: tally.remote.map(|a| a.to_string()),
        });
    }
}

/// One stream of the protocol: a length byte, then the body.
struct Wire(libp2p::Stream);

impl Wire {
    async fn send(&mut self, m: Message) -> Result<(), String> {
        let body = m.encode();
        let mut frame = Vec::with_capacity(1 + body.len());
        frame.push(body.len() as u8);
        frame.extend_from_slice(&body);
        let io = async {
            self.0.write_all(&frame).await?;
            self.0.flush().await
        };
        match tokio::time::timeout(STEP, io).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("sending: {e}")),
            Err(_) => Err("sending timed out".into()),
        }
    }

    async fn recv(&mut self) -> Result<Message, String> {
        let io = async {
            let mut len = [0u8; 1];
            self.0.read_exact(&mut len).await?;
            let len = usize::from(len[0]);
            if len == 0 || len > hardnat::MAX_MESSAGE {
                return Err(std::io::Error::other(format!("a {len}-byte message")));
            }
            let mut body = vec![0u8; len];
            self.0.read_exact(&mut body).await?;
            Ok(body)
        };
        match tokio::time::timeout(STEP, io).await {
            Ok(Ok(body)) => Message::decode(&body).map_err(|e| e.to_string()),
            Ok(Err(e)) => Err(format!("reading: {e}")),
            Err(_) => Err("the peer said nothing in time".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quic_addresses_round_trip_and_others_are_refused() {
        let a: SocketAddr = "203.0.113.101:4001".parse().unwrap();
        assert_eq!(
            quic_socket(&crate::addr::socket_to_multiaddr(a, true)),
            Some(a)
        );
        let tcp: Multiaddr = "/ip4/203.0.113.101/tcp/4001".parse().unwrap();
        assert_eq!(quic_socket(&tcp), None);
        let udp_only: Multiaddr = "/ip4/203.0.113.101/udp/4001".parse().unwrap();
        assert_eq!(quic_socket(&udp_only), None);
    }
}
