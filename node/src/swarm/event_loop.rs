//! The one task that owns the swarm: it selects over swarm events and
//! commands and dispatches them. Decisions about connections are the
//! protocol crate's `PathSet`; the observe protocol is its own behaviour.

use super::behaviour::{Behaviour, BehaviourEvent};
use super::handle::{Command, ConnInfo, NetSignals, PublicView, Snapshot};
use super::listeners::Listeners;
use super::reservations::Reservations;
use super::NodeConfig;
use crate::events::{Emitter, Event};
use futures::StreamExt;
use ledgermesh_protocol::path::{PathSet, TransportKind};
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{dcutr, relay, PeerId, Swarm};
use std::collections::HashMap;
use std::time::Instant;
use tokio::sync::{mpsc, oneshot, watch};

pub(super) struct EventLoop {
    pub(super) swarm: Swarm<super::slim::Slim<Behaviour>>,
    pub(super) config: NodeConfig,
    pub(super) emitter: Emitter,
    pub(super) ops: std::sync::Arc<crate::ops::Ops>,
    pub(super) commands: mpsc::Receiver<Command>,
    pub(super) signals: watch::Sender<NetSignals>,
    pub(super) listeners: Listeners,
    pub(super) reservations: Reservations,
    pub(super) paths: PathSet<ConnectionId>,
    pub(super) pending_dials: HashMap<ConnectionId, (PeerId, super::connections::DialReply)>,
    pub(super) close_watchers: HashMap<PeerId, Vec<mpsc::Sender<()>>>,
    /// The addresses each peer was last dialed at (for re-routes).
    pub(super) dial_addrs: HashMap<PeerId, Vec<libp2p::Multiaddr>>,
    pub(super) public: Option<PublicView>,
    /// Peers a hard-NAT attempt may be offered to (the service takes them).
    pub(super) hard_nat: Option<mpsc::Sender<crate::protocols::hardnat::Offer>>,
    /// Who waits for a direct connection to a peer (hard-NAT attempts, so
    /// bounded by their limiter).
    pub(super) direct_waiters: HashMap<PeerId, Vec<oneshot::Sender<libp2p::Multiaddr>>>,
    /// Each Noise handshake's cipher, taken when its connection is up.
    pub(super) handshakes: super::noise::Handshakes,
    /// The Noise cipher of each connected peer's TCP and relayed connections.
    pub(super) noise_ciphers: HashMap<PeerId, super::noise::TransportCipher>,
}

/// What the event loop is made of, built by `swarm::spawn`.
pub(super) struct Parts {
    pub(super) swarm: Swarm<super::slim::Slim<Behaviour>>,
    pub(super) config: NodeConfig,
    pub(super) emitter: Emitter,
    pub(super) ops: std::sync::Arc<crate::ops::Ops>,
    pub(super) listeners: Listeners,
    pub(super) reservations: Reservations,
    pub(super) hard_nat: Option<mpsc::Sender<crate::protocols::hardnat::Offer>>,
    pub(super) handshakes: super::noise::Handshakes,
}

/// A running event loop: its task, and the ends the handle holds.
pub(super) struct Running {
    /// The loop alone: it outlives the node's tasks at shutdown, which stops
    /// those first and then tells the loop (Command::Shutdown) to close up.
    pub(super) task: crate::tasks::Tasks,
    pub(super) commands: mpsc::Sender<Command>,
    pub(super) signals: watch::Receiver<NetSignals>,
}

impl EventLoop {
    /// Starts the loop of node `peer_id` on its own task.
    pub(super) fn start(parts: Parts, peer_id: libp2p::PeerId) -> Running {
        let (commands_tx, commands) = mpsc::channel(256);
        let (signals_tx, signals) = watch::channel(Default::default());
        let config = parts.config;
        let me = EventLoop {
            swarm: parts.swarm,
            paths: ledgermesh_protocol::path::PathSet::new(config.close_relayed_after_upgrade),
            config,
            emitter: parts.emitter,
            ops: parts.ops,
            commands,
            signals: signals_tx,
            listeners: parts.listeners,
            reservations: parts.reservations,
            pending_dials: Default::default(),
            close_watchers: Default::default(),
            dial_addrs: Default::default(),
            public: None,
            hard_nat: parts.hard_nat,
            direct_waiters: Default::default(),
            handshakes: parts.handshakes,
            noise_ciphers: Default::default(),
        };
        let span = tracing::info_span!("node", name = %me.config.name, peer = %peer_id);
        let task = crate::tasks::Tasks::new();
        task.spawn_tracked(tracing::Instrument::instrument(me.run(), span));
        Running {
            task,
            commands: commands_tx,
            signals,
        }
    }

    pub(super) async fn run(mut self) {
        loop {
            // The relay plan's next back-off to end, if it waits on one.
            let wake = self
                .reservations
                .next_wake()
                .map(tokio::time::Instant::from_std);
            let relay_timer = async {
                match wake {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = relay_timer => {}
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                cmd = self.commands.recv() => match cmd {
                    None => break,
                    Some(Command::Shutdown) => {
                        self.close_all().await;
                        break;
                    }
                    Some(cmd) => self.on_command(cmd),
                },
            }
            self.carry_out_path_actions();
            (self.reservations).drive(&mut self.swarm, Instant::now(), &self.emitter);
        }
        tracing::debug!("event loop stopped");
    }

    /// Closes every connection (so peers see a clean close and our
    /// reservations end), waiting at most 2 s for them to go.
    async fn close_all(&mut self) {
        self.reservations.stop();
        let peers: std::collections::HashSet<PeerId> =
            self.swarm.connected_peers().copied().collect();
        for peer in peers {
            let _ = self.swarm.disconnect_peer_id(peer);
        }
        let deadline = tokio::time::sleep(std::time::Duration::from_secs(2));
        tokio::pin!(deadline);
        while self.swarm.network_info().num_peers() > 0 {
            tokio::select! {
                _ = &mut deadline => break,
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
            }
        }
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            direct_addrs: self.listeners.direct(),
            circuit_addrs: self.reservations.circuit_addrs(),
            connections: (self.paths.iter())
                .map(|(peer, conn)| ConnInfo {
                    peer: *peer,
                    noise_cipher: (conn.via.is_some() || conn.transport == TransportKind::Tcp)
                        .then(|| self.noise_ciphers.get(peer).copied())
                        .flatten(),
                    conn: conn.clone(),
                })
                .collect(),
            public: self.public.clone(),
        }
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Dial { peer, addrs, reply } => self.dial(peer, addrs, reply),
            Command::Snapshot(reply) => drop(reply.send(self.snapshot())),
            Command::WaitRelays(reply) => self.reservations.wait(reply),
            Command::Reserve(relay) => {
                self.reservations.allow(relay, Instant::now());
            }
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
            Command::WatchCloses(peer, tx) => self.watch_closes(peer, tx),
            Command::SetPublicQuic(quic) => {
                if let Some(p) = self.public.as_mut() {
                    p.quic = quic;
                }
                for peer in self.paths.relayed_only_peers() {
                    self.offer_hard_nat(peer);
                }
            }
            Command::DialAlso { peer, addr, reply } => self.dial_also(peer, addr, reply),
            Command::CloseConnection(id) => {
                self.swarm.close_connection(id);
            }
            Command::SetPublic(mut view) => {
                // A recheck of the main verdict keeps the QUIC one, on
                // the same IP only.
                let kept = (self.public.as_ref()).filter(|p| p.ip == view.ip && p.ip.is_some());
                view.quic = view.quic.or(kept.and_then(|p| p.quic.clone()));
                self.public = Some(view);
                // Peers already reached only through a relay may now be
                // worth a hard-NAT attempt.
                for peer in self.paths.relayed_only_peers() {
                    self.offer_hard_nat(peer);
                }
            }
            Command::DialFresh { peer, addr } => {
                let opts = libp2p::swarm::dial_opts::DialOpts::peer_id(peer)
                    .addresses(vec![addr])
                    .condition(libp2p::swarm::dial_opts::PeerCondition::Always)
                    .allocate_new_port()
                    .build();
                if let Err(e) = self.swarm.dial(opts) {
                    tracing::info!(%peer, error = %e, "fresh-port dial refused");
                }
            }
            Command::WaitDirect(peer, reply) => self.wait_direct(peer, reply),
            Command::Shutdown => {}
            Command::Disconnect(peer) => {
                let _ = self.swarm.disconnect_peer_id(peer);
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
        self.ops.metrics.record_swarm(&event);
        match &event {
            SwarmEvent::Behaviour(BehaviourEvent::Ping(e)) => self.ops.metrics.record_p2p(e),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(e)) => self.ops.metrics.record_p2p(e),
            SwarmEvent::Behaviour(BehaviourEvent::Dcutr(e)) => self.ops.metrics.record_p2p(e),
            _ => {}
        }
        match event {
            SwarmEvent::NewListenAddr {
                listener_id,
                address,
            } => self.on_new_listen_addr(listener_id, address),
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
                        crate::events::ErrorPart::Listen,
                        format!("a listener closed before reporting an address: {reason:?}"),
                    ));
                    let snap = self.snapshot();
                    self.listeners.wake(|| snap);
                }
                let detail = match reason {
                    Err(e) => with_sources(&e),
                    Ok(()) => "reservation listener closed".into(),
                };
                let now = Instant::now();
                (self.reservations).listener_closed(listener_id, detail, now, &self.emitter);
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
            } => self.on_closed(peer_id, connection_id, cause.map(|c| c.to_string())),
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                peer_id,
                error,
            } => self.on_dial_error(connection_id, peer_id, error),
            SwarmEvent::Behaviour(ev) => self.on_behaviour_event(ev),
            _ => {}
        }
    }

    fn on_new_listen_addr(
        &mut self,
        listener_id: libp2p::core::transport::ListenerId,
        address: libp2p::Multiaddr,
    ) {
        let announceable =
            ledgermesh_protocol::path::scope::dialable(&address, self.config.allow_private_addrs);
        if self.config.relay_server.is_some() && !crate::addr::is_circuit(&address) && announceable
        {
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
            BehaviourEvent::Ping(libp2p::ping::Event {
                peer,
                connection,
                result,
            }) => {
                let rtt = result.ok().map(|d| d.as_secs_f64() * 1000.0);
                self.paths.on_ping(Instant::now(), peer, connection, rtt);
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
                        reason: with_sources(&e),
                    });
                    self.signals.send_modify(|s| s.hole_punch_failures += 1);
                }
            },
            _ => {}
        }
    }
}

/// An error and every error under it, `outer: inner: …` (the relay
/// client's "Failed to get Reservation" says why only in its sources).
fn with_sources(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(inner) = next {
        let s = inner.to_string();
        if !text.contains(&s) {
            text = format!("{text}: {s}");
        }
        next = inner.source();
    }
    text
}
