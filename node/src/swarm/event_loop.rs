//! The one task that owns the swarm: it selects over swarm events and
//! commands and dispatches them. Decisions about connections are the
//! protocol crate's `PathSet`; the observe protocol is its own behaviour.

use super::behaviour::{Behaviour, BehaviourEvent};
use super::handle::{Command, ConnInfo, DialError, NetSignals, PublicView, Snapshot};
use super::listeners::Listeners;
use super::reservations::Reservations;
use super::NodeConfig;
use crate::events::{Emitter, Event};
use futures::StreamExt;
use ledgermesh_protocol::path::{classify, Action, PathSet};
use libp2p::core::ConnectedPoint;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{dcutr, relay, PeerId, Swarm};
use std::collections::HashMap;
use std::time::Instant;
use tokio::sync::{mpsc, oneshot, watch};

pub(super) struct EventLoop {
    pub(super) swarm: Swarm<Behaviour>,
    pub(super) config: NodeConfig,
    pub(super) emitter: Emitter,
    pub(super) commands: mpsc::Receiver<Command>,
    pub(super) signals: watch::Sender<NetSignals>,
    pub(super) listeners: Listeners,
    pub(super) reservations: Reservations,
    pub(super) paths: PathSet<ConnectionId>,
    pub(super) pending_dials:
        HashMap<ConnectionId, (PeerId, oneshot::Sender<Result<(), DialError>>)>,
    pub(super) close_watchers: HashMap<PeerId, Vec<mpsc::Sender<()>>>,
    pub(super) public: Option<PublicView>,
    pub(super) epoch: Instant,
}

impl EventLoop {
    pub(super) async fn run(mut self) {
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                cmd = self.commands.recv() => match cmd {
                    None | Some(Command::Shutdown) => break,
                    Some(cmd) => self.on_command(cmd),
                },
            }
            self.carry_out_path_actions();
        }
        tracing::debug!("event loop stopped");
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            direct_addrs: self.listeners.direct(),
            circuit_addrs: self.reservations.circuit_addrs(),
            connections: (self.paths.iter())
                .map(|(peer, conn)| ConnInfo {
                    peer: *peer,
                    conn: conn.clone(),
                })
                .collect(),
            public: self.public.clone(),
        }
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Dial { peer, addrs, reply } => {
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
            Command::Snapshot(reply) => drop(reply.send(self.snapshot())),
            Command::WaitRelays(reply) => self.reservations.wait(reply),
            Command::WaitListening(reply) => {
                self.listeners.wait(reply);
                let snap = self.snapshot();
                self.listeners.wake(|| snap);
            }
            Command::Observe {
                peer,
                dial_back,
                reply,
            } => self
                .swarm
                .behaviour_mut()
                .observe
                .ask(peer, dial_back, reply),
            Command::WatchCloses(peer, tx) => {
                let watchers = self.close_watchers.entry(peer).or_default();
                watchers.retain(|w| !w.is_closed());
                watchers.push(tx);
            }
            Command::SetPublic(view) => self.public = Some(view),
            Command::Shutdown => {}
        }
    }

    fn carry_out_path_actions(&mut self) {
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

    fn publish_addrs(&mut self) {
        let direct = self.listeners.direct();
        self.signals.send_if_modified(|s| {
            let changed = s.direct_addrs != direct;
            s.direct_addrs = direct;
            changed
        });
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr {
                listener_id,
                address,
            } => {
                if self.config.relay_server.is_some() && !crate::addr::is_circuit(&address) {
                    // A relay is public by definition: its listen addresses are
                    // what it puts in reservations.
                    self.swarm.add_external_address(address.clone());
                }
                self.listeners.new_addr(listener_id, address);
                self.emitter.emit(Event::Listening {
                    peer_id: self.swarm.local_peer_id().to_string(),
                    addrs: self.listeners.addrs.iter().map(|a| a.to_string()).collect(),
                });
                let snap = self.snapshot();
                self.listeners.wake(|| snap);
                self.publish_addrs();
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.listeners.expired(&address);
                self.publish_addrs();
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                addresses,
                reason,
            } => {
                if self.listeners.closed(listener_id, &addresses) {
                    self.emitter.emit(Event::error(
                        "listen",
                        format!("a listener closed before reporting an address: {reason:?}"),
                    ));
                    let snap = self.snapshot();
                    self.listeners.wake(|| snap);
                }
                if let Some(relay) = self.reservations.listener_closed(listener_id) {
                    let detail = match reason {
                        Err(e) => e.to_string(),
                        Ok(()) => "reservation listener closed".into(),
                    };
                    self.reservations.failed(relay, detail, &self.emitter);
                }
                self.publish_addrs();
            }
            SwarmEvent::ListenerError { error, .. } => tracing::warn!(%error, "listener error"),
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => self.on_established(peer_id, connection_id, &endpoint),
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                cause,
                ..
            } => {
                if let Some(conn) = self.paths.on_closed(peer_id, connection_id) {
                    self.emitter.emit(Event::Disconnected {
                        peer_id: peer_id.to_string(),
                        path: conn.path,
                        cause: cause.map(|c| c.to_string()),
                    });
                }
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                peer_id,
                error,
            } => {
                tracing::debug!(?peer_id, %error, "outgoing connection failed");
                if let Some(peer) = peer_id.filter(|p| self.reservations.is_pending(p)) {
                    self.reservations
                        .failed(peer, error.to_string(), &self.emitter);
                }
                if let Some((peer, reply)) = self.pending_dials.remove(&connection_id) {
                    let result = match self.paths.is_connected(&peer) {
                        true => Ok(()),
                        false => Err(error.into()),
                    };
                    let _ = reply.send(result);
                }
            }
            SwarmEvent::Behaviour(ev) => self.on_behaviour_event(ev),
            _ => {}
        }
    }

    fn on_established(&mut self, peer: PeerId, id: ConnectionId, endpoint: &ConnectedPoint) {
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

    fn on_behaviour_event(&mut self, ev: BehaviourEvent) {
        match ev {
            BehaviourEvent::RelayClient(relay::client::Event::ReservationReqAccepted {
                relay_peer_id,
                renewal,
                ..
            }) => {
                let local = *self.swarm.local_peer_id();
                (self.reservations).accepted(relay_peer_id, renewal, local, &self.emitter);
            }
            BehaviourEvent::Dcutr(dcutr::Event {
                remote_peer_id,
                result,
            }) => match result {
                Ok(_) => tracing::debug!(peer = %remote_peer_id, "hole punch succeeded"),
                Err(e) => {
                    tracing::info!(peer = %remote_peer_id, error = %e, "hole punch failed");
                    self.emitter.emit(Event::HolePunchFailed {
                        peer_id: remote_peer_id.to_string(),
                        reason: e.to_string(),
                    });
                    self.signals.send_modify(|s| s.hole_punch_failures += 1);
                }
            },
            _ => {}
        }
    }
}
