//! The connection side of the event loop: dials, established and closed
//! connections, and carrying out the `PathSet`'s actions.

use super::event_loop::EventLoop;
use super::handle::DialError;
use crate::events::Event;
use ledgermesh_protocol::path::{classify, hardnat, Action, PathKind, TransportKind};
use libp2p::core::ConnectedPoint;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::ConnectionId;
use libp2p::{Multiaddr, PeerId};
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};

/// Who waits for a dial, and what they hear once the peer is up (by this
/// connection or another) or the dial failed.
pub(super) enum DialReply {
    /// That the peer is up.
    Up(oneshot::Sender<Result<(), DialError>>),
    /// The id of the connection dialed.
    WithId(oneshot::Sender<Result<ConnectionId, DialError>>),
}

impl DialReply {
    fn send(self, id: ConnectionId, result: Result<(), DialError>) {
        // Whoever asked may have gone: nothing to tell then.
        match self {
            Self::Up(tx) => drop(tx.send(result)),
            Self::WithId(tx) => drop(tx.send(result.map(|()| id))),
        }
    }
}

impl EventLoop {
    pub(super) fn dial(
        &mut self,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        reply: oneshot::Sender<Result<(), DialError>>,
    ) {
        // Remembered: a re-route away from a degraded path dials the others.
        if self.dial_addrs.len() >= MAX_DIAL_MEMORY {
            let paths = &self.paths;
            self.dial_addrs.retain(|p, _| paths.is_connected(p));
        }
        if self.dial_addrs.len() < MAX_DIAL_MEMORY {
            self.dial_addrs.insert(peer, addrs.clone());
        }
        if self.paths.is_connected(&peer) {
            let _ = reply.send(Ok(()));
            return;
        }
        if let Some(private) = self.private_only(&addrs) {
            // The transport would refuse each ("Multiaddr is not supported"):
            // say why, and what to do about it.
            let _ = reply.send(Err(DialError::PrivateOnly(private)));
            return;
        }
        self.start_dial(peer, addrs, DialReply::Up(reply));
    }

    /// A connection to `peer` over `addr` beside those already open;
    /// `reply` hears its id once it is up.
    pub(super) fn dial_also(
        &mut self,
        peer: PeerId,
        addr: Multiaddr,
        reply: oneshot::Sender<Result<ConnectionId, DialError>>,
    ) {
        if let Some(private) = self.private_only(std::slice::from_ref(&addr)) {
            let _ = reply.send(Err(DialError::PrivateOnly(private)));
            return;
        }
        self.start_dial(peer, vec![addr], DialReply::WithId(reply));
    }

    /// Dials `peer` at `addrs` (a connection whatever is open already);
    /// `reply` hears when it is up or failed. Returns its id.
    fn start_dial(&mut self, peer: PeerId, addrs: Vec<Multiaddr>, reply: DialReply) {
        let opts = DialOpts::peer_id(peer)
            .addresses(addrs)
            .condition(PeerCondition::Always)
            .build();
        let id = opts.connection_id();
        match self.swarm.dial(opts) {
            Ok(()) => drop(self.pending_dials.insert(id, (peer, reply))),
            Err(e) => reply.send(id, Err(e.into())),
        }
    }

    /// The first of `addrs` when every one of them is outside the global
    /// internet and this node keeps to it (no `--local`).
    fn private_only(&self, addrs: &[Multiaddr]) -> Option<Multiaddr> {
        use ledgermesh_protocol::path::scope::{ip_of, is_global};
        let private = |a: &Multiaddr| ip_of(a).is_some_and(|ip| !is_global(ip));
        (!self.config.allow_private_addrs && !addrs.is_empty() && addrs.iter().all(private))
            .then(|| addrs[0].clone())
    }

    /// The path to `peer` through `via` is degraded: dial the peer's other
    /// addresses (the path machine closes the degraded one once one is up).
    fn reroute(&mut self, peer: PeerId, via: Option<PeerId>, rtt_ms: Option<u64>, loss_pct: u32) {
        self.emitter.emit(Event::PathDegraded {
            peer_id: peer.to_string(),
            via: via.map(|v| v.to_string()),
            rtt_ms,
            loss_pct,
        });
        let others: Vec<Multiaddr> = (self.dial_addrs.get(&peer).into_iter().flatten())
            .filter(|a| via.is_none_or(|v| !relayed_via(a, v)))
            .cloned()
            .collect();
        if others.is_empty() {
            tracing::info!(%peer, ?via, "degraded path and no other address to try");
            return;
        }
        tracing::info!(%peer, ?via, n = others.len(), "degraded path: dialing the others");
        let opts = DialOpts::peer_id(peer)
            .addresses(others)
            .condition(PeerCondition::Always)
            .build();
        if let Err(e) = self.swarm.dial(opts) {
            tracing::info!(%peer, error = %e, "re-route dial failed");
        }
    }

    pub(super) fn on_dial_error(
        &mut self,
        id: ConnectionId,
        peer: Option<PeerId>,
        error: libp2p::swarm::DialError,
    ) {
        tracing::debug!(?peer, %error, "outgoing connection failed");
        if let Some(peer) = peer.filter(|p| self.reservations.is_pending(p)) {
            let now = Instant::now();
            (self.reservations).failed(peer, error.to_string(), now, &self.emitter);
        }
        if let Some((peer, reply)) = self.pending_dials.remove(&id) {
            let result = match self.paths.is_connected(&peer) {
                true => Ok(()),
                false => Err(error.into()),
            };
            reply.send(id, result);
        }
    }

    pub(super) fn watch_closes(&mut self, peer: PeerId, tx: mpsc::Sender<()>) {
        let watchers = self.close_watchers.entry(peer).or_default();
        watchers.retain(|w| !w.is_closed());
        watchers.push(tx);
    }

    pub(super) fn on_established(
        &mut self,
        peer: PeerId,
        id: ConnectionId,
        endpoint: &ConnectedPoint,
    ) {
        if self.swarm.behaviour().observe.is_probe(id) {
            return; // a dial-back probe: the observe behaviour closes it
        }
        let (remote, addrs) = match endpoint {
            ConnectedPoint::Dialer { address, .. } => (address, vec![address]),
            ConnectedPoint::Listener {
                local_addr,
                send_back_addr,
            } => (send_back_addr, vec![local_addr, send_back_addr]),
        };
        let (path, transport, via) = classify(addrs);
        tracing::debug!(%peer, ?path, ?transport, ?via, %remote, "connected");
        if via.is_some() || transport == TransportKind::Tcp {
            if let Some(cipher) = self.handshakes.take(&peer) {
                self.noise_ciphers.insert(peer, cipher);
            }
        }
        self.emitter.emit(Event::Connected {
            peer_id: peer.to_string(),
            path,
            transport,
            via: via.map(|v| v.to_string()),
            dialer: endpoint.is_dialer(),
            remote_addr: remote.to_string(),
        });
        let remote = remote.clone();
        self.paths.on_established(
            Instant::now(),
            peer,
            id,
            (path, transport, via),
            remote.clone(),
        );
        match path {
            PathKind::Relayed => self.offer_hard_nat(peer),
            PathKind::Direct => {
                for w in self.direct_waiters.remove(&peer).into_iter().flatten() {
                    let _ = w.send(remote.clone());
                }
            }
        }
        let ids: Vec<ConnectionId> = (self.pending_dials.iter())
            .filter(|(_, (p, _))| *p == peer)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            if let Some((_, reply)) = self.pending_dials.remove(&id) {
                reply.send(id, Ok(()));
            }
        }
    }

    /// Hands `peer` to the hard-NAT service when we are the side that
    /// offers (endpoint-dependent, QUIC, `--hard-nat on`) and no direct
    /// path to it is up. The service's limiter decides whether it runs.
    pub(super) fn offer_hard_nat(&mut self, peer: PeerId) {
        let (Some(tx), Some(public)) = (&self.hard_nat, &self.public) else {
            return;
        };
        let Some(ip) = public
            .ip
            .filter(|_| hardnat::should_offer(true, public.mapping, true))
        else {
            return;
        };
        if self.paths.direct(&peer).is_none() {
            // A full queue: the service is busy with enough attempts already.
            let _ = tx.try_send(crate::protocols::hardnat::Offer { peer, ip });
        }
    }

    pub(super) fn wait_direct(&mut self, peer: PeerId, reply: oneshot::Sender<Multiaddr>) {
        if let Some(addr) = self.paths.direct(&peer) {
            let _ = reply.send(addr.clone());
            return;
        }
        // Waiters whose attempt gave up are dropped as new ones come.
        self.direct_waiters.retain(|_, ws| {
            ws.retain(|w| !w.is_closed());
            !ws.is_empty()
        });
        self.direct_waiters.entry(peer).or_default().push(reply);
    }

    pub(super) fn on_closed(&mut self, peer: PeerId, id: ConnectionId, cause: Option<String>) {
        let closed = self.paths.on_closed(Instant::now(), peer, id);
        if !self.paths.is_connected(&peer) {
            self.noise_ciphers.remove(&peer);
        }
        if let Some(conn) = closed {
            self.emitter.emit(Event::Disconnected {
                peer_id: peer.to_string(),
                path: conn.path,
                cause,
            });
        }
    }

    pub(super) fn carry_out_path_actions(&mut self) {
        while let Some(action) = self.paths.poll_action() {
            match action {
                Action::Upgraded {
                    peer,
                    transport,
                    ms_after_relayed,
                } => self.emitter.emit(Event::Upgraded {
                    peer_id: peer.to_string(),
                    transport,
                    ms_after_relayed,
                }),
                Action::Close { id, .. } => drop(self.swarm.close_connection(id)),
                Action::Reroute {
                    peer,
                    via,
                    rtt_ms,
                    loss_pct,
                    ..
                } => self.reroute(peer, via, rtt_ms, loss_pct),
                Action::PathChanged {
                    peer,
                    from,
                    to,
                    reason,
                } => self.emitter.emit(Event::PathChanged {
                    peer_id: peer.to_string(),
                    from,
                    to,
                    reason,
                }),
                Action::PathClosed { peer, .. } => {
                    if let Some(watchers) = self.close_watchers.get_mut(&peer) {
                        // A full channel already holds a wake: that is enough.
                        watchers.retain(|w| {
                            !matches!(w.try_send(()), Err(mpsc::error::TrySendError::Closed(_)))
                        });
                        if watchers.is_empty() {
                            self.close_watchers.remove(&peer);
                        }
                    }
                }
            }
        }
    }
}

/// Peers whose dial addresses are remembered for re-routes.
const MAX_DIAL_MEMORY: usize = 4096;

/// Whether `addr` is a circuit through relay `via`.
fn relayed_via(addr: &Multiaddr, via: PeerId) -> bool {
    let (path, _, relay) = ledgermesh_protocol::path::classify([addr]);
    path == ledgermesh_protocol::path::PathKind::Relayed && relay == Some(via)
}
