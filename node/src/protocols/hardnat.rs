//! `/ledgermesh/hardnat/1`: a direct QUIC path through one hard
//! (endpoint-dependent) NAT, agreed over the relayed connection both peers
//! already share. The decisions, bounds and wire format are
//! `protocol::path::hardnat`; the sockets and probes are `swarm::punch`.
//!
//! The side behind the endpoint-dependent NAT offers (the event loop hands
//! it each peer it reaches only through a relay); the other side answers.
//! Each attempt ends in one `hard_nat` event on each side.

use crate::addr::quic_socket;
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
    epoch: Instant,
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
            epoch: Instant::now(),
        }
    }

    fn slot(&self, peer: &PeerId) -> Result<Slot, Decline> {
        let now_ms = self.epoch.elapsed().as_millis() as u64;
        let mut l = lock(&self.limiter);
        l.start(now_ms, peer)?;
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

    /// The endpoint-dependent side: carries out its [`Offers`] sequence.
    async fn hard(&self, handle: impl HardNatNet, Offer { peer, ip }: Offer) {
        let start = Instant::now();
        let mut seq = Offers::new(start);
        let mut _slot = None;
        let mut last = Err((Ended::Failed("no offer made".into()), Tally::default()));
        loop {
            let Some(step) = seq.poll_action() else {
                let Some(at) = seq.poll_timeout() else {
                    return; // every sequence ends in `Done`
                };
                tokio::time::sleep_until(at.into()).await;
                seq.handle_timeout(Instant::now());
                continue;
            };
            match step {
                Step::TakeSlot => {
                    let taken = self.slot(&peer).map(|s| _slot = Some(s));
                    seq.handle_slot(taken, Instant::now());
                }
                Step::Offer => {
                    let mut tally = Tally::default();
                    let r = self.hard_inner(&handle, peer, ip, &mut tally).await;
                    let how = match &r {
                        Ok(()) => Offered::Direct,
                        Err(Ended::Failed(why)) if tally.sockets == 0 => {
                            tracing::debug!(%peer, %why, "hard-NAT offer lost before the sockets opened");
                            Offered::LostEarly
                        }
                        Err(Ended::Declined(why)) if why == Decline::Busy.as_str() => {
                            Offered::PeerBusy
                        }
                        Err(_) => Offered::Ended,
                    };
                    last = match r {
                        Ok(()) => Ok(tally),
                        Err(e) => Err((e, tally)),
                    };
                    seq.handle_offer(how, Instant::now());
                }
                Step::Done(Finish::Quiet) => return,
                Step::Done(Finish::Declined(d)) => {
                    let declined = Err((Ended::Declined(d.as_str().into()), Tally::default()));
                    return self.report(&handle, peer, Role::Hard, start, declined);
                }
                Step::Done(Finish::Direct | Finish::Ended) => {
                    return self.report(&handle, peer, Role::Hard, start, last);
                }
            }
        }
    }

    async fn hard_inner(
        &self,
        handle: &impl HardNatNet,
        peer: PeerId,
        ip: IpAddr,
        tally: &mut Tally,
    ) -> Result<(), Ended> {
        let failed = |what: &str| Ended::Failed(what.to_string());
        let stream = tokio::time::timeout(
            STEP,
            handle
                .stream_control()
                .open_stream(peer, StreamProtocol::new(PROTOCOL)),
        )
        .await
        .map_err(|_| failed("timed out opening the stream"))?
        .map_err(|e| Ended::Declined(format!("unsupported: {e}")))?;
        let mut s = Wire(stream);
        let offer = Message::Offer {
            ip,
            sockets: self.plan.sockets,
        };
        s.send(offer).await.map_err(|e| failed(&e))?;
        let (addr, probes) = match s.recv().await.map_err(|e| failed(&e))? {
            Message::Accept { addr, probes } => (addr, probes),
            Message::Decline(d) => return Err(Ended::Declined(d.as_str().into())),
            other => return Err(failed(&format!("unexpected {other:?}"))),
        };
        let routable = self.allow_private || ledgermesh_protocol::path::scope::is_global(addr.ip());
        if !routable || addr.port() == 0 {
            return Err(failed("the peer's address may not be dialed"));
        }
        tally.probes = probes.min(hardnat::MAX_PROBES);
        let report = handle
            .spray(addr, self.plan)
            .ok_or_else(|| failed("too many sprays waiting"))?;
        let direct = handle
            .wait_direct(peer)
            .await
            .ok_or_else(|| failed("stopping"))?;
        let target = crate::addr::socket_to_multiaddr(addr, true).with(Protocol::P2p(peer));
        handle
            .dial_fresh(peer, target)
            .await
            .map_err(|_| failed("stopping"))?;
        tally.sockets = self.plan.sockets;
        s.send(Message::Go {
            sockets: self.plan.sockets,
        })
        .await
        .map_err(|e| failed(&e))?;
        let deadline = tokio::time::Instant::now() + Duration::from_millis(hardnat::ATTEMPT_MS);
        let direct = tokio::time::timeout_at(deadline, direct).await;
        tally.up_at = Some(Instant::now());
        // The peer's `Probed`, if it came: a direct connection may already
        // have closed the relayed one (and this stream), so only a short wait.
        let probed = tokio::time::timeout(Duration::from_millis(500), s.recv()).await;
        if let Ok(Ok(Message::Probed { probes, .. })) = probed {
            tally.probes = probes.min(hardnat::MAX_PROBES);
        }
        if let Ok(Ok(r)) = tokio::time::timeout(Duration::from_millis(500), report).await {
            tally.sockets = r.sockets;
        }
        match direct {
            Ok(Ok(remote)) => {
                tally.remote = Some(remote);
                Ok(())
            }
            _ => Err(failed("no probe met an open port in time")),
        }
    }

    /// The endpoint-independent side.
    async fn easy(&self, handle: impl HardNatNet, peer: PeerId, stream: libp2p::Stream) {
        let start = Instant::now();
        let mut tally = Tally::default();
        let mut s = Wire(stream);
        let ip = match s.recv().await {
            Ok(Message::Offer { ip, .. }) => ip,
            Ok(other) => {
                tracing::debug!(%peer, ?other, "hardnat: expected an offer");
                return;
            }
            Err(e) => {
                tracing::debug!(%peer, error = %e, "hardnat: no offer");
                return;
            }
        };
        let public = handle.snapshot().await.ok().and_then(|s| s.public);
        let me = EasySelf {
            enabled: self.enabled,
            mapping: public.as_ref().map_or(Mapping::Unknown, |p| p.mapping),
            // The main verdict's address when it is QUIC, else the QUIC
            // verdict decided beside a TCP one.
            quic_addr: public.as_ref().and_then(|p| {
                (p.addr.as_ref())
                    .and_then(quic_socket)
                    .or_else(|| p.quic.as_ref().and_then(quic_socket))
            }),
            allow_private: self.allow_private,
        };
        let admitted = answer(&me, ip).and_then(|addr| Ok((addr, self.slot(&peer)?)));
        let (addr, _slot) = match admitted {
            Ok(a) => a,
            Err(d) => {
                let _ = s.send(Message::Decline(d)).await;
                let declined = Err((Ended::Declined(d.as_str().into()), tally));
                self.report(&handle, peer, Role::Easy, start, declined);
                return;
            }
        };
        let result = match self
            .easy_inner(&handle, peer, ip, addr, &mut s, &mut tally)
            .await
        {
            Ok(()) => Ok(tally),
            Err(e) => Err((e, tally)),
        };
        self.report(&handle, peer, Role::Easy, start, result);
    }

    async fn easy_inner(
        &self,
        handle: &impl HardNatNet,
        peer: PeerId,
        ip: IpAddr,
        addr: SocketAddr,
        s: &mut Wire,
        tally: &mut Tally,
    ) -> Result<(), Ended> {
        let failed = |what: &str| Ended::Failed(what.to_string());
        let accept = Message::Accept {
            addr,
            probes: self.plan.probes,
        };
        s.send(accept).await.map_err(|e| failed(&e))?;
        match s.recv().await.map_err(|e| failed(&e))? {
            Message::Go { sockets } => tally.sockets = sockets.min(hardnat::MAX_SOCKETS),
            other => return Err(failed(&format!("unexpected {other:?}"))),
        }
        let mut direct = handle
            .wait_direct(peer)
            .await
            .ok_or_else(|| failed("stopping"))?;
        let ports = probe_ports_at(&self.salt, ip, self.plan.probes);
        let waves = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(self.plan.wave_interval_ms));
        for wave in ports.chunks(self.plan.wave.max(1).into()) {
            tick.tick().await;
            if let Ok(remote) = direct.try_recv() {
                // Up already: the peer's socket met an earlier wave.
                tally.remote = Some(remote);
                tally.up_at = Some(Instant::now());
                break;
            }
            let targets = wave.iter().map(|&p| SocketAddr::new(ip, p));
            tally.probes += handle.probe(targets, peer) as u16;
        }
        let ms = waves.elapsed().as_millis() as u32;
        let probed = Message::Probed {
            probes: tally.probes,
            ms,
        };
        let _ = tokio::time::timeout(Duration::from_millis(500), s.send(probed)).await;
        if tally.remote.is_some() {
            return Ok(());
        }
        let deadline = Duration::from_millis(hardnat::ATTEMPT_MS);
        match tokio::time::timeout(deadline, direct).await {
            Ok(Ok(remote)) => {
                tally.remote = Some(remote);
                tally.up_at = Some(Instant::now());
                Ok(())
            }
            _ => Err(failed("no direct connection came in time")),
        }
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
