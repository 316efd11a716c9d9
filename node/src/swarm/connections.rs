//! The connection side of the event loop: dials, established and closed
//! connections, and carrying out the `PathSet`'s actions.

use super::event_loop::EventLoop;
use super::handle::DialError;
use crate::events::Event;
use ledgermesh_protocol::path::{classify, Action};
use libp2p::core::ConnectedPoint;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::ConnectionId;
use libp2p::{Multiaddr, PeerId};
use tokio::sync::{mpsc, oneshot};

impl EventLoop {
    pub(super) fn dial(
        &mut self,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        reply: oneshot::Sender<Result<(), DialError>>,
    ) {
        if self.paths.is_connected(&peer) {
            let _ = reply.send(Ok(()));
            return;
        }
        let opts = DialOpts::peer_id(peer)
            .addresses(addrs)
            .condition(PeerCondition::Always)
            .build();
        let id = opts.connection_id();
        match self.swarm.dial(opts) {
            Ok(()) => drop(self.pending_dials.insert(id, (peer, reply))),
            Err(e) => drop(reply.send(Err(e.into()))),
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
            (self.reservations).failed(peer, error.to_string(), &self.emitter);
        }
        if let Some((peer, reply)) = self.pending_dials.remove(&id) {
            let result = match self.paths.is_connected(&peer) {
                true => Ok(()),
                false => Err(error.into()),
            };
            let _ = reply.send(result);
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
        self.emitter.emit(Event::Connected {
            peer_id: peer.to_string(),
            path,
            transport,
            via: via.map(|v| v.to_string()),
            dialer: endpoint.is_dialer(),
            remote_addr: remote.to_string(),
        });
        let now_ms = self.epoch.elapsed().as_millis() as u64;
        let remote = remote.clone();
        self.paths
            .on_established(now_ms, peer, id, (path, transport, via), remote);
        let ids: Vec<ConnectionId> = (self.pending_dials.iter())
            .filter(|(_, (p, _))| *p == peer)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            if let Some((_, reply)) = self.pending_dials.remove(&id) {
                let _ = reply.send(Ok(()));
            }
        }
    }

    pub(super) fn on_closed(&mut self, peer: PeerId, id: ConnectionId, cause: Option<String>) {
        if let Some(conn) = self.paths.on_closed(peer, id) {
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
