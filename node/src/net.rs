//! The libp2p swarm and the one event loop that owns it.
//!
//! Everything else talks to the swarm through a cloneable [`NodeHandle`]:
//! commands go in over a bounded channel with oneshot replies, events come out
//! through the node's [`Emitter`]. Data streams bypass the loop entirely
//! (`libp2p-stream`'s `Control` is usable from any task).
//!
//! The loop also tracks the path of every connection (direct or relayed, over
//! which relay, on which transport), reports when DCUtR replaces a relayed
//! connection with a direct one, and then closes the relayed connection so
//! the data moves to the direct path and the relay is freed.

use crate::events::{Emitter, Event, PathKind, TransportKind};
use futures::StreamExt;
use libp2p::core::ConnectedPoint;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{
    dcutr, identify, identity::Keypair, noise, ping, relay, tcp, Multiaddr, PeerId, Swarm,
};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

/// The identify protocol name of ledgermesh nodes.
pub const IDENTIFY_PROTOCOL: &str = "/ledgermesh/id/1";

/// Limits of the relay server role.
#[derive(Debug, Clone)]
pub struct RelayLimits {
    /// Longest life of one circuit.
    pub max_circuit_duration: Duration,
    /// Bytes one circuit may carry per direction.
    pub max_circuit_bytes: u64,
    /// Concurrent circuits.
    pub max_circuits: usize,
    /// Concurrent circuits per peer.
    pub max_circuits_per_peer: usize,
    /// Concurrent reservations.
    pub max_reservations: usize,
}

impl Default for RelayLimits {
    /// Stock circuit relay v2 allows 2 minutes and 128 KiB per circuit, sized
    /// for hole-punch coordination. A ledgermesh relay carries data streams,
    /// so it lifts both (the paid-relay work meters them per peer).
    fn default() -> Self {
        Self {
            max_circuit_duration: Duration::from_secs(3600),
            max_circuit_bytes: 1 << 40,
            max_circuits: 256,
            max_circuits_per_peer: 16,
            max_reservations: 1024,
        }
    }
}

/// How to build a node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Label used in events and logs (`relay`, `provider-1`, ...).
    pub name: String,
    /// Addresses to listen on.
    pub listen: Vec<Multiaddr>,
    /// Relays to hold a reservation on (each must end in `/p2p/<relay id>`).
    pub relays: Vec<Multiaddr>,
    /// Run the relay server role with these limits.
    pub relay_server: Option<RelayLimits>,
    /// Addresses to announce as confirmed external (a public relay's own).
    pub external: Vec<Multiaddr>,
    /// After a DCUtR upgrade, close the relayed connection to that peer.
    pub close_relayed_after_upgrade: bool,
    /// Idle connections are closed after this long.
    pub idle_timeout: Duration,
    /// Take part in DCUtR hole punching (off only to measure the relayed path).
    pub hole_punching: bool,
    /// Publish events here (subscribe before spawning to miss none); a new
    /// emitter labelled `name` when `None`.
    pub emitter: Option<Emitter>,
}

impl NodeConfig {
    /// Defaults for a node labelled `name`, listening on loopback TCP and QUIC.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            listen: vec![
                "/ip4/127.0.0.1/tcp/0".parse().expect("valid"),
                "/ip4/127.0.0.1/udp/0/quic-v1".parse().expect("valid"),
            ],
            relays: vec![],
            relay_server: None,
            external: vec![],
            close_relayed_after_upgrade: true,
            idle_timeout: Duration::from_secs(60),
            hole_punching: true,
            emitter: None,
        }
    }
}

/// Errors starting a node.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The transport could not be built.
    #[error("building the swarm failed: {0}")]
    Build(String),
    /// No listen address could be opened.
    #[error("cannot listen on {addr}: {detail}")]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// Why.
        detail: String,
    },
    /// A relay address without `/p2p/<id>`.
    #[error("relay address {0} must end in /p2p/<relay peer id>")]
    RelayAddrWithoutPeer(Multiaddr),
    /// The event loop has stopped.
    #[error("node has shut down")]
    Stopped,
}

pub use composed::{Behaviour, BehaviourEvent};

/// The derive below generates an undocumented event enum; keep it contained.
#[allow(missing_docs)]
mod composed {
    use libp2p::swarm::{behaviour::toggle::Toggle, NetworkBehaviour};
    use libp2p::{dcutr, identify, ping, relay};

    /// The composed behaviour of every ledgermesh node.
    #[derive(NetworkBehaviour)]
    pub struct Behaviour {
        pub(crate) relay_client: relay::client::Behaviour,
        pub(crate) relay_server: Toggle<relay::Behaviour>,
        pub(crate) dcutr: Toggle<dcutr::Behaviour>,
        pub(crate) identify: identify::Behaviour,
        pub(crate) ping: ping::Behaviour,
        pub(crate) stream: libp2p_stream::Behaviour,
        pub(crate) observe: libp2p::request_response::Behaviour<crate::observe::ObserveCodec>,
    }
}

/// Facts about one live connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// Which connection.
    pub id: ConnectionId,
    /// Remote peer.
    pub peer: PeerId,
    /// Direct or relayed.
    pub path: PathKind,
    /// Transport.
    pub transport: TransportKind,
    /// Relay, when relayed.
    pub via: Option<PeerId>,
    /// When it was established.
    pub since: Instant,
    /// The remote address (for an inbound connection: where it came from).
    pub remote: Multiaddr,
}

/// What a node knows about itself right now.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Direct listen addresses (loopback and interfaces).
    pub direct_addrs: Vec<Multiaddr>,
    /// Relay circuit addresses with an accepted reservation, ending in `/p2p/<self>`.
    pub circuit_addrs: Vec<Multiaddr>,
    /// Live connections.
    pub connections: Vec<ConnInfo>,
    /// The address-consensus verdict, once one was reached: the accepted
    /// public address (only with endpoint-independent mapping) and the mapping.
    pub public: Option<PublicView>,
}

/// What address consensus decided, as the node uses it.
#[derive(Debug, Clone)]
pub struct PublicView {
    /// The accepted public address, when the mapping lets peers reach it.
    pub addr: Option<Multiaddr>,
    /// The accepted public IP.
    pub ip: Option<std::net::IpAddr>,
    /// The NAT mapping.
    pub mapping: ledgermesh_protocol::consensus::Mapping,
}

enum Command {
    Dial {
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        reply: oneshot::Sender<Result<(), String>>,
    },
    Snapshot(oneshot::Sender<Snapshot>),
    WaitRelays {
        reply: oneshot::Sender<()>,
    },
    WaitListening(oneshot::Sender<Snapshot>),
    Observe {
        peer: PeerId,
        dial_back: bool,
        reply: oneshot::Sender<Result<ledgermesh_proto::v1::ObserveResponse, String>>,
    },
    SetPublic(PublicView),
    Shutdown,
}

/// A cloneable handle on a running node.
#[derive(Clone)]
pub struct NodeHandle {
    peer_id: PeerId,
    keypair: Keypair,
    commands: mpsc::Sender<Command>,
    control: libp2p_stream::Control,
    emitter: Emitter,
}

impl std::fmt::Debug for NodeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeHandle")
            .field("peer_id", &self.peer_id)
            .field("name", &self.emitter.node())
            .finish_non_exhaustive()
    }
}

impl NodeHandle {
    /// This node's PeerId.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// This node's identity key.
    pub fn keypair(&self) -> &Keypair {
        &self.keypair
    }

    /// The node's event emitter.
    pub fn emitter(&self) -> &Emitter {
        &self.emitter
    }

    /// Publishes an event under this node's label.
    pub fn emit(&self, event: Event) {
        self.emitter.emit(event);
    }

    /// A control for opening and accepting data streams.
    pub fn stream_control(&self) -> libp2p_stream::Control {
        self.control.clone()
    }

    /// Dials `peer` at all `addrs` at once; resolves when any connection to it is up.
    pub async fn dial(&self, peer: PeerId, addrs: Vec<Multiaddr>) -> Result<(), String> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Dial { peer, addrs, reply })
            .await
            .map_err(|_| NodeError::Stopped.to_string())?;
        rx.await.map_err(|_| NodeError::Stopped.to_string())?
    }

    /// The node's addresses and connections.
    pub async fn snapshot(&self) -> Result<Snapshot, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Snapshot(tx))
            .await
            .map_err(|_| NodeError::Stopped)?;
        rx.await.map_err(|_| NodeError::Stopped)
    }

    /// Resolves once every configured relay accepted or refused our reservation.
    pub async fn wait_relays(&self) -> Result<(), NodeError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::WaitRelays { reply })
            .await
            .map_err(|_| NodeError::Stopped)?;
        rx.await.map_err(|_| NodeError::Stopped)
    }

    /// Resolves once every configured listener reported an address.
    pub async fn wait_listening(&self) -> Result<Snapshot, NodeError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::WaitListening(reply))
            .await
            .map_err(|_| NodeError::Stopped)?;
        rx.await.map_err(|_| NodeError::Stopped)
    }

    /// Asks a connected `peer` which address it sees us at (and to dial it back).
    pub async fn observe(
        &self,
        peer: PeerId,
        dial_back: bool,
    ) -> Result<ledgermesh_proto::v1::ObserveResponse, String> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Observe {
                peer,
                dial_back,
                reply,
            })
            .await
            .map_err(|_| NodeError::Stopped.to_string())?;
        rx.await.map_err(|_| NodeError::Stopped.to_string())?
    }

    /// Records an address-consensus verdict (see [`crate::observe::check`]).
    pub async fn set_public(&self, verdict: ledgermesh_protocol::consensus::Verdict, udp: bool) {
        let view = PublicView {
            addr: verdict
                .addr
                .map(|a| crate::addr::socket_to_multiaddr(a, udp)),
            ip: verdict.ip,
            mapping: verdict.mapping,
        };
        let _ = self.commands.send(Command::SetPublic(view)).await;
    }

    /// Stops the event loop (connections close).
    pub async fn shutdown(&self) {
        let _ = self.commands.send(Command::Shutdown).await;
    }
}

/// The path, transport and relay of a connection, read from its endpoint.
pub fn classify(endpoint: &ConnectedPoint) -> (PathKind, TransportKind, Option<PeerId>) {
    let addrs: Vec<&Multiaddr> = match endpoint {
        ConnectedPoint::Dialer { address, .. } => vec![address],
        ConnectedPoint::Listener {
            local_addr,
            send_back_addr,
        } => vec![local_addr, send_back_addr],
    };
    let relayed = addrs
        .iter()
        .any(|a| a.iter().any(|p| p == Protocol::P2pCircuit));
    let mut transport = TransportKind::Other;
    let mut via = None;
    for a in &addrs {
        let mut last_peer = None;
        for p in a.iter() {
            match p {
                Protocol::Tcp(_) if transport == TransportKind::Other => {
                    transport = TransportKind::Tcp
                }
                Protocol::QuicV1 => transport = TransportKind::Quic,
                Protocol::P2p(id) => last_peer = Some(id),
                Protocol::P2pCircuit if via.is_none() => via = last_peer,
                _ => {}
            }
        }
    }
    let path = if relayed {
        PathKind::Relayed
    } else {
        PathKind::Direct
    };
    (path, transport, via)
}

/// Starts a node: builds the swarm, opens listeners, asks for relay
/// reservations, and spawns the event loop.
pub async fn spawn(config: NodeConfig, keypair: Keypair) -> Result<NodeHandle, NodeError> {
    let peer_id = keypair.public().to_peer_id();
    for r in &config.relays {
        if crate::addr::peer_of(r).is_none() {
            return Err(NodeError::RelayAddrWithoutPeer(r.clone()));
        }
    }
    let relay_limits = config.relay_server.clone();
    let hole_punching = config.hole_punching;
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair.clone())
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            crate::mux::Config::new,
        )
        .map_err(|e| NodeError::Build(e.to_string()))?
        .with_quic()
        .with_relay_client(noise::Config::new, crate::mux::Config::new)
        .map_err(|e| NodeError::Build(e.to_string()))?
        .with_behaviour(|key, relay_client| {
            let relay_server = relay_limits.map(|l| {
                let cfg = relay::Config {
                    max_reservations: l.max_reservations,
                    max_circuits: l.max_circuits,
                    max_circuits_per_peer: l.max_circuits_per_peer,
                    max_circuit_duration: l.max_circuit_duration,
                    max_circuit_bytes: l.max_circuit_bytes,
                    ..Default::default()
                };
                relay::Behaviour::new(key.public().to_peer_id(), cfg)
            });
            Behaviour {
                relay_client,
                relay_server: Toggle::from(relay_server),
                dcutr: Toggle::from(
                    hole_punching.then(|| dcutr::Behaviour::new(key.public().to_peer_id())),
                ),
                identify: identify::Behaviour::new(identify::Config::new(
                    IDENTIFY_PROTOCOL.into(),
                    key.public(),
                )),
                ping: ping::Behaviour::new(ping::Config::new()),
                stream: libp2p_stream::Behaviour::new(),
                observe: libp2p::request_response::Behaviour::with_codec(
                    crate::observe::ObserveCodec,
                    [(
                        crate::observe::OBSERVE_PROTOCOL,
                        libp2p::request_response::ProtocolSupport::Full,
                    )],
                    libp2p::request_response::Config::default()
                        .with_request_timeout(Duration::from_secs(20)),
                ),
            }
        })
        .map_err(|e| NodeError::Build(e.to_string()))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(config.idle_timeout))
        .build();

    let mut listeners = HashSet::new();
    for addr in &config.listen {
        let id = swarm
            .listen_on(addr.clone())
            .map_err(|e| NodeError::Listen {
                addr: addr.clone(),
                detail: e.to_string(),
            })?;
        listeners.insert(id);
    }
    for addr in &config.external {
        swarm.add_external_address(addr.clone());
    }
    let control = swarm.behaviour().stream.new_control();
    let emitter = config
        .emitter
        .clone()
        .unwrap_or_else(|| Emitter::new(config.name.clone()));
    let (tx, rx) = mpsc::channel(256);
    let mut event_loop = EventLoop {
        swarm,
        config,
        emitter: emitter.clone(),
        commands: rx,
        pending_dials: HashMap::new(),
        connections: HashMap::new(),
        upgraded: HashSet::new(),
        listen_addrs: Vec::new(),
        relays: HashMap::new(),
        relay_waiters: Vec::new(),
        silent_listeners: listeners,
        relay_listeners: HashMap::new(),
        pending_observe: HashMap::new(),
        dial_backs: HashMap::new(),
        public: None,
        listen_waiters: Vec::new(),
    };
    event_loop.start_listeners_and_relays();
    let span = tracing::info_span!("node", name = %event_loop.config.name, peer = %peer_id);
    tokio::spawn(event_loop.run().instrument(span));
    Ok(NodeHandle {
        peer_id,
        keypair,
        commands: tx,
        control,
        emitter,
    })
}

#[derive(Debug)]
enum RelayState {
    Pending,
    Accepted(Multiaddr),
    Failed,
}

struct EventLoop {
    swarm: Swarm<Behaviour>,
    config: NodeConfig,
    emitter: Emitter,
    commands: mpsc::Receiver<Command>,
    pending_dials: HashMap<ConnectionId, (PeerId, oneshot::Sender<Result<(), String>>)>,
    connections: HashMap<PeerId, Vec<ConnInfo>>,
    /// Relayed connections already reported as upgraded.
    upgraded: HashSet<ConnectionId>,
    listen_addrs: Vec<Multiaddr>,
    relays: HashMap<PeerId, (Multiaddr, RelayState)>,
    relay_waiters: Vec<oneshot::Sender<()>>,
    /// Configured listeners that have not reported an address yet.
    silent_listeners: HashSet<libp2p::core::transport::ListenerId>,
    listen_waiters: Vec<oneshot::Sender<Snapshot>>,
    /// Circuit listeners, by the relay they reserve on.
    relay_listeners: HashMap<libp2p::core::transport::ListenerId, PeerId>,
    /// Our outstanding observe requests.
    pending_observe: HashMap<
        libp2p::request_response::OutboundRequestId,
        oneshot::Sender<Result<ledgermesh_proto::v1::ObserveResponse, String>>,
    >,
    /// Dial-backs we are trying for askers: the answer waits for the dial.
    dial_backs: HashMap<
        ConnectionId,
        (
            libp2p::request_response::ResponseChannel<ledgermesh_proto::v1::ObserveResponse>,
            Vec<u8>,
            Instant,
        ),
    >,
    /// The latest address-consensus verdict.
    public: Option<PublicView>,
}

impl EventLoop {
    fn start_listeners_and_relays(&mut self) {
        for addr in self.config.relays.clone() {
            let relay = crate::addr::peer_of(&addr).expect("checked in spawn");
            self.relays
                .insert(relay, (addr.clone(), RelayState::Pending));
            let circuit = addr.clone().with(Protocol::P2pCircuit);
            match self.swarm.listen_on(circuit) {
                Ok(id) => {
                    self.relay_listeners.insert(id, relay);
                }
                Err(e) => self.relay_failed(relay, e.to_string()),
            }
        }
    }

    async fn run(mut self) {
        let mut housekeeping = tokio::time::interval(Duration::from_secs(1));
        housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = housekeeping.tick() => self.expire_dial_backs(),
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                cmd = self.commands.recv() => match cmd {
                    None | Some(Command::Shutdown) => break,
                    Some(cmd) => self.on_command(cmd),
                },
            }
        }
        tracing::debug!("event loop stopped");
    }

    fn relays_settled(&self) -> bool {
        self.relays
            .values()
            .all(|(_, s)| !matches!(s, RelayState::Pending))
    }

    fn wake_relay_waiters(&mut self) {
        if self.relays_settled() {
            for w in self.relay_waiters.drain(..) {
                let _ = w.send(());
            }
        }
    }

    fn wake_listen_waiters(&mut self) {
        if self.silent_listeners.is_empty() {
            let snap = self.snapshot();
            for w in self.listen_waiters.drain(..) {
                let _ = w.send(snap.clone());
            }
        }
    }

    fn relay_failed(&mut self, relay: PeerId, detail: String) {
        if let Some((addr, state)) = self.relays.get_mut(&relay) {
            let (reason, what) = match state {
                RelayState::Pending => ("unreachable", "no reservation on relay"),
                RelayState::Accepted(_) => ("reservation_lost", "lost the reservation on relay"),
                RelayState::Failed => return self.wake_relay_waiters(),
            };
            *state = RelayState::Failed;
            self.emitter.emit(Event::Error {
                what: "relay".into(),
                detail: format!("{what} {addr}: {detail}"),
                reason: Some(reason.into()),
                peer_id: Some(relay.to_string()),
            });
        }
        self.wake_relay_waiters();
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            direct_addrs: self
                .listen_addrs
                .iter()
                .filter(|a| !crate::addr::is_circuit(a))
                .cloned()
                .collect(),
            circuit_addrs: self
                .relays
                .values()
                .filter_map(|(_, s)| match s {
                    RelayState::Accepted(circuit) => Some(circuit.clone()),
                    _ => None,
                })
                .collect(),
            connections: self.connections.values().flatten().cloned().collect(),
            public: self.public.clone(),
        }
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Dial { peer, addrs, reply } => {
                if self.connections.get(&peer).is_some_and(|c| !c.is_empty()) {
                    let _ = reply.send(Ok(()));
                    return;
                }
                let opts = DialOpts::peer_id(peer)
                    .addresses(addrs)
                    .condition(PeerCondition::Always)
                    .build();
                let id = opts.connection_id();
                match self.swarm.dial(opts) {
                    Ok(()) => {
                        self.pending_dials.insert(id, (peer, reply));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e.to_string()));
                    }
                }
            }
            Command::Snapshot(reply) => {
                let _ = reply.send(self.snapshot());
            }
            Command::WaitRelays { reply } => {
                self.relay_waiters.push(reply);
                self.wake_relay_waiters();
            }
            Command::WaitListening(reply) => {
                self.listen_waiters.push(reply);
                self.wake_listen_waiters();
            }
            Command::Observe {
                peer,
                dial_back,
                reply,
            } => {
                let id = self
                    .swarm
                    .behaviour_mut()
                    .observe
                    .send_request(&peer, ledgermesh_proto::v1::ObserveRequest { dial_back });
                self.pending_observe.insert(id, reply);
            }
            Command::SetPublic(view) => self.public = Some(view),
            Command::Shutdown => {}
        }
    }

    fn resolve_dials_to(&mut self, peer: PeerId) {
        let ids: Vec<ConnectionId> = self
            .pending_dials
            .iter()
            .filter(|(_, (p, _))| *p == peer)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            if let Some((_, reply)) = self.pending_dials.remove(&id) {
                let _ = reply.send(Ok(()));
            }
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr {
                listener_id,
                address,
            } => {
                let circuit = crate::addr::is_circuit(&address);
                if self.config.relay_server.is_some() && !circuit {
                    // A relay is public by definition: its listen addresses are
                    // what it puts in reservations.
                    self.swarm.add_external_address(address.clone());
                }
                if !self.listen_addrs.contains(&address) {
                    self.listen_addrs.push(address);
                }
                self.silent_listeners.remove(&listener_id);
                self.emitter.emit(Event::Listening {
                    peer_id: self.swarm.local_peer_id().to_string(),
                    addrs: self.listen_addrs.iter().map(|a| a.to_string()).collect(),
                });
                self.wake_listen_waiters();
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.listen_addrs.retain(|a| a != &address);
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                addresses,
                reason,
            } => {
                self.listen_addrs.retain(|a| !addresses.contains(a));
                if self.silent_listeners.remove(&listener_id) {
                    self.emitter.emit(Event::error(
                        "listen",
                        format!("a listener closed before reporting an address: {reason:?}"),
                    ));
                    self.wake_listen_waiters();
                }
                if let Some(relay) = self.relay_listeners.remove(&listener_id) {
                    let detail = match reason {
                        Err(e) => e.to_string(),
                        Ok(()) => "reservation listener closed".into(),
                    };
                    self.relay_failed(relay, detail);
                }
            }
            SwarmEvent::ListenerError { error, .. } => {
                tracing::warn!(%error, "listener error");
            }
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
                if let Some(conns) = self.connections.get_mut(&peer_id) {
                    if let Some(pos) = conns.iter().position(|c| c.id == connection_id) {
                        let info = conns.remove(pos);
                        self.emitter.emit(Event::Disconnected {
                            peer_id: peer_id.to_string(),
                            path: info.path,
                            cause: cause.map(|c| c.to_string()),
                        });
                    }
                    if conns.is_empty() {
                        self.connections.remove(&peer_id);
                    }
                }
                self.upgraded.remove(&connection_id);
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                peer_id,
                error,
            } => {
                tracing::debug!(?peer_id, %error, "outgoing connection failed");
                self.answer_dial_back(connection_id, false);
                if let Some((peer, reply)) = self.pending_dials.remove(&connection_id) {
                    if self.connections.contains_key(&peer) {
                        let _ = reply.send(Ok(()));
                    } else {
                        let _ = reply.send(Err(error.to_string()));
                    }
                }
                if let Some(peer) = peer_id {
                    if matches!(self.relays.get(&peer), Some((_, RelayState::Pending))) {
                        self.relay_failed(peer, error.to_string());
                    }
                }
            }
            SwarmEvent::Behaviour(ev) => self.on_behaviour_event(ev),
            _ => {}
        }
    }

    /// How long an observer tries to dial an asker back.
    const DIAL_BACK_TIMEOUT: Duration = Duration::from_secs(5);

    fn answer_dial_back(&mut self, id: ConnectionId, reachable: bool) {
        if let Some((channel, observed, _)) = self.dial_backs.remove(&id) {
            use ledgermesh_proto::v1::{DialBack, ObserveResponse};
            let dial_back = if reachable {
                DialBack::Reachable
            } else {
                DialBack::Unreachable
            };
            let _ = self.swarm.behaviour_mut().observe.send_response(
                channel,
                ObserveResponse {
                    observed,
                    dial_back: dial_back as i32,
                },
            );
        }
    }

    fn expire_dial_backs(&mut self) {
        let late: Vec<ConnectionId> = self
            .dial_backs
            .iter()
            .filter(|(_, (_, _, t))| t.elapsed() > Self::DIAL_BACK_TIMEOUT)
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            self.answer_dial_back(id, false);
        }
    }

    /// Answers "what address do you see me at" from the connection's real
    /// remote address, never from anything the asker says.
    fn on_observe_request(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        request: ledgermesh_proto::v1::ObserveRequest,
        channel: libp2p::request_response::ResponseChannel<ledgermesh_proto::v1::ObserveResponse>,
    ) {
        use ledgermesh_proto::v1::{DialBack, ObserveResponse};
        let conn = self
            .connections
            .get(&peer)
            .and_then(|c| c.iter().find(|c| c.id == connection))
            .cloned();
        let observed: Option<Multiaddr> = conn.filter(|c| c.path == PathKind::Direct).map(|c| {
            c.remote
                .iter()
                .filter(|p| !matches!(p, Protocol::P2p(_)))
                .collect()
        });
        let Some(observed) = observed else {
            let _ = self
                .swarm
                .behaviour_mut()
                .observe
                .send_response(channel, ObserveResponse::default());
            return;
        };
        if !request.dial_back {
            let _ = self.swarm.behaviour_mut().observe.send_response(
                channel,
                ObserveResponse {
                    observed: observed.to_vec(),
                    dial_back: DialBack::NotTried as i32,
                },
            );
            return;
        }
        let opts = DialOpts::peer_id(peer)
            .addresses(vec![observed.clone()])
            .condition(PeerCondition::Always)
            .allocate_new_port()
            .build();
        let id = opts.connection_id();
        self.dial_backs
            .insert(id, (channel, observed.to_vec(), Instant::now()));
        if self.swarm.dial(opts).is_err() {
            self.answer_dial_back(id, false);
        }
    }

    fn on_established(&mut self, peer: PeerId, id: ConnectionId, endpoint: &ConnectedPoint) {
        if self.dial_backs.contains_key(&id) {
            // A dial-back that got through: the asker is reachable there.
            self.answer_dial_back(id, true);
            self.swarm.close_connection(id);
            return;
        }
        let (path, transport, via) = classify(endpoint);
        let remote_addr = match endpoint {
            ConnectedPoint::Dialer { address, .. } => address.clone(),
            ConnectedPoint::Listener { send_back_addr, .. } => send_back_addr.clone(),
        };
        tracing::debug!(%peer, ?path, ?transport, ?via, %remote_addr, "connected");
        self.emitter.emit(Event::Connected {
            peer_id: peer.to_string(),
            path,
            transport,
            via: via.map(|v| v.to_string()),
            dialer: endpoint.is_dialer(),
            remote_addr: remote_addr.to_string(),
        });
        let now = Instant::now();
        let conns = self.connections.entry(peer).or_default();
        conns.push(ConnInfo {
            id,
            peer,
            path,
            transport,
            via,
            since: now,
            remote: remote_addr.clone(),
        });
        if path == PathKind::Direct {
            let relayed: Vec<ConnInfo> = conns
                .iter()
                .filter(|c| c.path == PathKind::Relayed && !self.upgraded.contains(&c.id))
                .cloned()
                .collect();
            if let Some(first) = relayed.iter().min_by_key(|c| c.since) {
                self.emitter.emit(Event::Upgraded {
                    peer_id: peer.to_string(),
                    transport,
                    ms_after_relayed: now.duration_since(first.since).as_millis() as u64,
                });
                for c in &relayed {
                    self.upgraded.insert(c.id);
                    if self.config.close_relayed_after_upgrade {
                        self.swarm.close_connection(c.id);
                    }
                }
            }
        }
        self.resolve_dials_to(peer);
    }

    fn on_behaviour_event(&mut self, ev: BehaviourEvent) {
        match ev {
            BehaviourEvent::RelayClient(relay::client::Event::ReservationReqAccepted {
                relay_peer_id,
                renewal,
                ..
            }) => {
                if let Some((addr, state)) = self.relays.get_mut(&relay_peer_id) {
                    let circuit = addr
                        .clone()
                        .with(Protocol::P2pCircuit)
                        .with(Protocol::P2p(*self.swarm.local_peer_id()));
                    if !renewal || !matches!(state, RelayState::Accepted(_)) {
                        self.emitter.emit(Event::ReservationAccepted {
                            relay: relay_peer_id.to_string(),
                            addr: circuit.to_string(),
                        });
                    }
                    *state = RelayState::Accepted(circuit);
                }
                self.wake_relay_waiters();
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
                }
            },
            BehaviourEvent::Observe(libp2p::request_response::Event::Message {
                peer,
                connection_id,
                message,
            }) => match message {
                libp2p::request_response::Message::Request {
                    request, channel, ..
                } => self.on_observe_request(peer, connection_id, request, channel),
                libp2p::request_response::Message::Response {
                    request_id,
                    response,
                } => {
                    if let Some(reply) = self.pending_observe.remove(&request_id) {
                        let _ = reply.send(Ok(response));
                    }
                }
            },
            BehaviourEvent::Observe(libp2p::request_response::Event::OutboundFailure {
                request_id,
                error,
                ..
            }) => {
                if let Some(reply) = self.pending_observe.remove(&request_id) {
                    let _ = reply.send(Err(error.to_string()));
                }
            }
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                tracing::debug!(%peer_id, observed = %info.observed_addr, "identify");
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_reads_relay_and_transport() {
        let relay: PeerId = PeerId::random();
        let dst: PeerId = PeerId::random();
        let addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/4001/p2p/{relay}/p2p-circuit/p2p/{dst}")
            .parse()
            .unwrap();
        let ep = ConnectedPoint::Dialer {
            address: addr,
            role_override: libp2p::core::Endpoint::Dialer,
            port_use: libp2p::core::transport::PortUse::Reuse,
        };
        assert_eq!(
            classify(&ep),
            (PathKind::Relayed, TransportKind::Tcp, Some(relay))
        );
        let ep = ConnectedPoint::Listener {
            local_addr: "/ip4/127.0.0.1/udp/9/quic-v1".parse().unwrap(),
            send_back_addr: "/ip4/127.0.0.1/udp/10/quic-v1".parse().unwrap(),
        };
        assert_eq!(classify(&ep), (PathKind::Direct, TransportKind::Quic, None));
    }
}
