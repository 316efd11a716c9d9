//! The QUIC transport with the two moves hard-NAT traversal needs
//! (`protocol::path::hardnat`), both made with the QUIC transport's own dials so
//! that the connection that wins is an ordinary swarm connection:
//!
//! * **spray** (hard side): a swarm dial with a fresh port toward an address
//!   registered with [`PunchHandle::spray`] becomes N dials, each from its
//!   own new UDP socket (so N mappings open on an endpoint-dependent NAT),
//!   started in paced waves; the first handshake that completes is the
//!   dial's result and the others are dropped (their sockets close).
//! * **probe** (easy side): [`PunchHandle::probe`] sends one small packet
//!   from the QUIC listen socket to each of M targets. It uses the
//!   transport's dial-as-listener puncher, but keeps each target for under
//!   the puncher's shortest pause (10 ms), so each target gets one packet, not
//!   a stream of them until the handshake timeout. A connection that
//!   arrives from a target inside that window is handed to the swarm as an
//!   incoming one, like any other.

use super::quic::{self, QuicError};
use crate::addr::socket_to_multiaddr;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::task::AtomicWaker;
use futures::{FutureExt, StreamExt};
use ledgermesh_protocol::path::hardnat::Plan;
use libp2p::core::transport::{DialOpts, ListenerId, PortUse, TransportError, TransportEvent};
use libp2p::core::{Endpoint, Transport};
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::oneshot;

type Output = (PeerId, quic::Connection);
type Upgrade = BoxFuture<'static, Result<Output, QuicError>>;

/// Registered sprays waiting for their dial, at most (a spray is registered
/// only by our own attempts, which the limiter bounds; this is a backstop).
const MAX_SPRAYS: usize = 16;
/// Probe targets queued at most.
const MAX_QUEUED_PROBES: usize = 2 * ledgermesh_protocol::path::hardnat::MAX_PROBES as usize;

pub use crate::protocols::hardnat::SprayReport;

struct Spray {
    plan: Plan,
    report: oneshot::Sender<SprayReport>,
}

#[derive(Default)]
struct Shared {
    sprays: HashMap<SocketAddr, Spray>,
    probes: VecDeque<(SocketAddr, PeerId)>,
}

#[derive(Default)]
struct Inner {
    state: Mutex<Shared>,
    /// Probes wait for the transport's poll: the
    /// swarm polls the transport all the time, and only then is the lock
    /// taken.
    work: AtomicBool,
    waker: AtomicWaker,
}

/// Drives [`Punch`] from outside the swarm (cloneable).
#[derive(Clone, Default)]
pub struct PunchHandle {
    inner: Arc<Inner>,
}

impl PunchHandle {
    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Work is waiting for the transport's poll: wake it.
    fn wake(&self) {
        self.inner.work.store(true, Ordering::Release);
        self.inner.waker.wake();
    }

    /// The next fresh-port dial toward `addr` sprays `plan.sockets` sockets.
    /// `None` when too many sprays are already waiting.
    pub fn spray(&self, addr: SocketAddr, plan: Plan) -> Option<oneshot::Receiver<SprayReport>> {
        let mut s = self.lock();
        s.sprays.retain(|_, sp| !sp.report.is_closed());
        if s.sprays.len() >= MAX_SPRAYS {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        s.sprays.insert(addr, Spray { plan, report: tx });
        Some(rx)
    }

    /// Queues one probe packet from the QUIC listen socket to each target
    /// (`peer` is who we expect there). Returns how many were queued.
    pub fn probe(&self, targets: impl IntoIterator<Item = SocketAddr>, peer: PeerId) -> usize {
        let mut s = self.lock();
        let room = MAX_QUEUED_PROBES.saturating_sub(s.probes.len());
        let before = s.probes.len();
        s.probes
            .extend(targets.into_iter().take(room).map(|t| (t, peer)));
        let queued = s.probes.len() - before;
        drop(s);
        self.wake();
        queued
    }
}

/// Our QUIC transport, with sprays and probes.
pub struct Punch {
    inner: quic::Transport,
    handle: PunchHandle,
    probe_life: Duration,
    /// The QUIC listeners and one of their addresses (for caught connections).
    listeners: HashMap<ListenerId, Multiaddr>,
    /// Probes in flight, each for at most `probe_life`: polled with the
    /// transport (at most a queue's worth per batch), so no task of their own.
    probing: FuturesUnordered<BoxFuture<'static, Option<(Output, SocketAddr)>>>,
    /// Connections that answered a probe inside its window.
    caught: VecDeque<(Output, SocketAddr)>,
}

impl Punch {
    /// Wraps `inner`; `handle` drives it.
    pub fn new(inner: quic::Transport, handle: PunchHandle) -> Punch {
        Punch {
            inner,
            handle,
            probe_life: Duration::from_millis(Plan::default().probe_life_ms),
            listeners: HashMap::new(),
            probing: FuturesUnordered::new(),
            caught: VecDeque::new(),
        }
    }

    fn start_spray(&mut self, addr: Multiaddr, spray: Spray) -> Upgrade {
        let fresh = DialOpts {
            role: Endpoint::Dialer,
            port_use: PortUse::New,
        };
        let Spray { plan, report } = spray;
        // Each dial binds its socket now; its first Initial leaves when the
        // future is first polled, which the waves below pace.
        let mut dials: VecDeque<_> = (0..plan.sockets)
            .filter_map(|i| self.inner.dial(addr.clone(), fresh).ok().map(|d| (i, d)))
            .collect();
        let opened = dials.len() as u16;
        async move {
            let mut running = FuturesUnordered::new();
            let mut tick = tokio::time::interval(Duration::from_millis(plan.wave_interval_ms));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let result = loop {
                tokio::select! {
                    _ = tick.tick(), if !dials.is_empty() => {
                        for (i, d) in dials.drain(..dials.len().min(plan.wave.into())) {
                            running.push(d.map(move |r| (i, r)));
                        }
                    }
                    Some((i, r)) = running.next() => match r {
                        Ok(out) => break Ok(out),
                        Err(e) if running.is_empty() && dials.is_empty() => break Err(e),
                        Err(e) => tracing::trace!(socket = i, error = %e, "spray socket gave up"),
                    },
                    else => break Err(QuicError::HandshakeTimedOut),
                }
            };
            let _ = report.send(SprayReport { sockets: opened });
            result
        }
        .boxed()
    }

    fn start_probes(&mut self) {
        let probes: Vec<_> = self.handle.lock().probes.drain(..).collect();
        let punch = DialOpts {
            role: Endpoint::Listener,
            port_use: PortUse::New,
        };
        for (target, peer) in probes {
            let addr = socket_to_multiaddr(target, true).with(Protocol::P2p(peer));
            let Ok(dial) = self.inner.dial(addr, punch) else {
                continue; // no QUIC listener, or already punching there
            };
            let life = self.probe_life;
            self.probing.push(
                async move {
                    match tokio::time::timeout(life, dial).await {
                        Ok(Ok(out)) => Some((out, target)),
                        _ => None,
                    }
                }
                .boxed(),
            );
        }
    }
}

impl Transport for Punch {
    type Output = Output;
    type Error = QuicError;
    type ListenerUpgrade = Upgrade;
    type Dial = Upgrade;

    fn listen_on(
        &mut self,
        id: ListenerId,
        addr: Multiaddr,
    ) -> Result<(), TransportError<Self::Error>> {
        self.inner.listen_on(id, addr)
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        self.inner.remove_listener(id)
    }

    fn dial(
        &mut self,
        addr: Multiaddr,
        opts: DialOpts,
    ) -> Result<Self::Dial, TransportError<Self::Error>> {
        if opts.role == Endpoint::Dialer && opts.port_use == PortUse::New {
            let spray = quic::quic_socket(&addr).and_then(|s| self.handle.lock().sprays.remove(&s));
            if let Some(spray) = spray {
                return Ok(self.start_spray(addr, spray));
            }
        }
        self.inner.dial(addr, opts)
    }

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<TransportEvent<Self::ListenerUpgrade, Self::Error>> {
        let this = &mut *self;
        this.handle.inner.waker.register(cx.waker());
        if this.handle.inner.work.swap(false, Ordering::AcqRel) {
            this.start_probes();
        }
        // Polled after new probes joined, so each has its wake-up set.
        while let Poll::Ready(Some(answered)) = this.probing.poll_next_unpin(cx) {
            if let Some(caught) = answered {
                this.caught.push_back(caught);
            }
        }
        if let Some((out, from)) = this.caught.pop_front() {
            // More may wait: look again on the next poll.
            cx.waker().wake_by_ref();
            if let Some((id, local)) = this.listeners.iter().next() {
                return Poll::Ready(TransportEvent::Incoming {
                    listener_id: *id,
                    upgrade: futures::future::ready(Ok(out)).boxed(),
                    local_addr: local.clone(),
                    send_back_addr: socket_to_multiaddr(from, true),
                });
            }
        }
        match Pin::new(&mut this.inner).poll(cx) {
            Poll::Ready(event) => {
                match &event {
                    TransportEvent::NewAddress {
                        listener_id,
                        listen_addr,
                    } => {
                        this.listeners.insert(*listener_id, listen_addr.clone());
                    }
                    TransportEvent::ListenerClosed { listener_id, .. } => {
                        this.listeners.remove(listener_id);
                    }
                    _ => {}
                }
                Poll::Ready(event.map_upgrade(|u| u.boxed()))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_socket_addresses_are_read_from_quic_multiaddrs() {
        let a: Multiaddr = "/ip4/203.0.113.101/udp/4001/quic-v1".parse().unwrap();
        assert_eq!(
            quic::quic_socket(&a),
            Some("203.0.113.101:4001".parse().unwrap())
        );
        let t: Multiaddr = "/ip4/203.0.113.101/tcp/4001".parse().unwrap();
        assert_eq!(quic::quic_socket(&t), None);
    }

    #[test]
    fn sprays_and_probes_are_bounded() {
        let h = PunchHandle::default();
        let mut held = vec![];
        for port in 0..MAX_SPRAYS as u16 {
            let addr = SocketAddr::from(([203, 0, 113, 1], 1000 + port));
            held.push(h.spray(addr, Plan::default()).expect("room"));
        }
        let one_more = SocketAddr::from(([203, 0, 113, 1], 9));
        assert!(h.spray(one_more, Plan::default()).is_none());
        // A spray whose attempt gave up frees its slot.
        held.pop();
        assert!(h.spray(one_more, Plan::default()).is_some());
        let peer = PeerId::random();
        let targets = (0..u16::MAX).map(|p| SocketAddr::from(([203, 0, 113, 2], p)));
        assert_eq!(h.probe(targets, peer), MAX_QUEUED_PROBES);
        assert_eq!(h.probe([one_more], peer), 0);
    }
}
