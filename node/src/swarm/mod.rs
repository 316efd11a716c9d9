//! The libp2p swarm and the one event loop that owns it.
//!
//! ```text
//!   NodeHandle ──Command──► event_loop ──► Swarm<Behaviour>
//!       ▲                      │  ├─ relay client / server, dcutr, identify, ping
//!       │ oneshot replies      │  ├─ stream (libp2p-stream: data bypasses the loop)
//!       │                      │  └─ observe (address consensus, dial-backs)
//!       └── watch: NetSignals ◄┤
//!   CloseWatch (per peer)  ◄───┤  PathSet (protocol crate): upgrades, closes, resumes
//!   Emitter (telemetry) ◄──────┘
//! ```
//!
//! Everything else talks to the swarm through a cloneable [`NodeHandle`].
//! The loop tracks every connection's path (direct or relayed, over which
//! relay, on which transport) in a [`PathSet`](ledgermesh_protocol::path::PathSet),
//! which reports when DCUtR replaces a relayed connection with a direct one
//! and has the relayed one closed, so the data moves and the relay is freed.

mod behaviour;
mod config;
mod connections;
mod event_loop;
mod faces;
mod handle;
pub mod inbound;
mod listeners;
pub mod mux;
pub mod noise;
pub mod punch;
pub mod quic;
mod reservations;
pub mod slim;

pub use behaviour::{Behaviour, BehaviourEvent};
pub use config::{
    Bill, ConnectionCaps, NodeConfig, RelayLimits, RelayPay, DEFAULT_CIRCUITS_PER_IP,
    DEFAULT_RESERVATIONS, DEFAULT_RESERVATIONS_PER_IP, IDENTIFY_PROTOCOL,
};
pub use handle::{
    CloseWatch, ConnInfo, DialError, NetSignals, NodeError, NodeHandle, PublicView, Snapshot,
    StreamInbox, MAX_DIAL_CANDIDATES,
};
pub use ledgermesh_protocol::path::{classify, PathKind, TransportKind};

use crate::protocols::hardnat;
use crate::protocols::relay as relay_server;
use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId};

use tokio::sync::mpsc;

/// Hop streams a relay queues before its server takes them (the server
/// then bounds the handshakes it runs at once).
const HOP_QUEUE: usize = 1024;
/// Data streams waiting for the stream server (which then takes a slot or
/// answers busy); each connection holds at most 32 more of its own.
const STREAM_QUEUE: usize = 1024;

/// Whether this CPU has AES instructions (then AES-GCM beats ChaCha20-Poly1305
/// several times over): QUIC offers AES-GCM first, Noise announces AESGCM.
pub fn aes_in_hardware() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

/// Starts a node: builds the swarm, opens listeners, asks for relay
/// reservations, and spawns the event loop.
pub async fn spawn(config: NodeConfig, keypair: Keypair) -> Result<NodeHandle, NodeError> {
    let peer_id = keypair.public().to_peer_id();
    let relays = relays_of(&config)?;
    let allow_private = config.allow_private_addrs;
    let (emitter, ops) = emitter_and_ops(&config);
    let (relay, relay_behaviour, hop_inbox, hop_incoming) = match &config.relay_server {
        Some(limits) => {
            let (parts, behaviour, inbox, incoming) = relay_parts(limits, &config, &emitter, &ops);
            (Some(parts), Some(behaviour), Some(inbox), Some(incoming))
        }
        None => (None, None, None, None),
    };
    let (stream_inbox, stream_taken) = stream_queue();
    let meters = crate::ops::metered::RelayMeters::default();
    let punch = punch::PunchHandle::default();
    let handshakes = noise::Handshakes::default();
    let mut swarm = behaviour::build(
        &config,
        keypair.clone(),
        relay_behaviour,
        hop_inbox,
        stream_inbox,
        behaviour::TransportHooks {
            meters: meters.clone(),
            punch: punch.clone(),
            handshakes: handshakes.clone(),
        },
    )?;
    let listeners = listen(&mut swarm, &config)?;
    let mut reservations = reservations::Reservations::new(
        &relays,
        config.max_reservations,
        config.defer_reservations,
    );
    reservations.drive(&mut swarm, std::time::Instant::now(), &emitter);
    let relay_list = relays.clone();
    let defers_reservations = config.defer_reservations;
    let control = swarm.behaviour().stream.new_control();
    let (hard_nat_offers, hard_nat_rx, hard_nat_service) = hard_nat(&config);
    let running = event_loop::EventLoop::start(
        event_loop::Parts {
            swarm,
            config,
            emitter: emitter.clone(),
            ops: ops.clone(),
            listeners,
            reservations,
            hard_nat: hard_nat_offers,
            handshakes,
        },
        peer_id,
    );
    let handle = NodeHandle {
        peer_id,
        keypair,
        commands: running.commands,
        control,
        emitter,
        signals: running.signals,
        allow_private,
        meters,
        stream_meters: Default::default(),
        ops,
        payers: Default::default(),
        relays: relay_list,
        defers_reservations,
        tasks: crate::tasks::Tasks::new(),
        event_loop: running.task,
        punch,
        stream_inbox: std::sync::Arc::new(std::sync::Mutex::new(Some(stream_taken))),
        fair_in: crate::streams::fair::FairGate::new(Default::default()),
    };
    handle.spawn(hard_nat_service.run(handle.clone(), hard_nat_rx));
    if let Some((limits, shared, reporter)) = relay {
        start_relay(&handle, limits, shared, reporter, hop_incoming)?;
    }
    Ok(handle)
}

/// The relays of `config`, each with its peer id.
fn relays_of(config: &NodeConfig) -> Result<Vec<(PeerId, Multiaddr)>, NodeError> {
    (config.relays.iter())
        .map(|r| match crate::addr::peer_of(r) {
            Some(relay) => Ok((relay, r.clone())),
            None => Err(NodeError::RelayAddrWithoutPeer(r.clone())),
        })
        .collect()
}

/// The node's emitter (the one given, else its own) and the operator's
/// view, attached before the first event, so every event is counted.
fn emitter_and_ops(
    config: &NodeConfig,
) -> (crate::events::Emitter, std::sync::Arc<crate::ops::Ops>) {
    let emitter = (config.emitter.clone())
        .unwrap_or_else(|| crate::events::Emitter::new(config.name.clone()));
    let ops = emitter
        .tap_or_attach(|| crate::ops::Ops::new(&config.name))
        .expect("an emitter's tap is the operator's view");
    (emitter, ops)
}

/// Data streams through a bounded queue; offered once a stream server
/// takes them (NodeHandle::take_stream_inbox).
fn stream_queue() -> (inbound::Inbound, StreamInbox) {
    let (inbox, incoming) =
        inbound::Inbound::new(crate::protocols::stream::STREAM_PROTOCOL, STREAM_QUEUE);
    let accepting = inbox.accepting();
    accepting.store(false, std::sync::atomic::Ordering::Relaxed);
    let dropped = inbox.dropped();
    let taken = StreamInbox {
        incoming,
        accepting,
        dropped,
    };
    (inbox, taken)
}

/// Hard-NAT attempts: offered (when our mapping is endpoint-dependent)
/// only with QUIC listening; answered by every node (declined when off).
fn hard_nat(
    config: &NodeConfig,
) -> (
    Option<mpsc::Sender<hardnat::Offer>>,
    mpsc::Receiver<hardnat::Offer>,
    hardnat::Service,
) {
    let quic = config.listen.iter().any(crate::addr::is_quic);
    let on = config.hard_nat && quic;
    let (tx, rx) = mpsc::channel(hardnat::QUEUE);
    let service = hardnat::Service::new(on, config.hard_nat_plan, config.allow_private_addrs);
    (on.then_some(tx), rx, service)
}

/// A relay server's limits, the state its swarm side and its streams
/// share, and its reporter; its swarm side; and its own bounded queue of
/// hop streams (see inbound.rs).
type RelayParts = (
    RelayLimits,
    relay_server::behaviour::Shared,
    relay_server::report::Reporter,
);

fn relay_parts(
    limits: &RelayLimits,
    config: &NodeConfig,
    emitter: &crate::events::Emitter,
    ops: &crate::ops::Ops,
) -> (
    RelayParts,
    relay_server::behaviour::Behaviour,
    inbound::Inbound,
    crate::net::Incoming,
) {
    let shared = relay_server::behaviour::State::new(limits.book());
    let reporter = relay_server::report::Reporter::new(emitter.clone(), config.audit.clone());
    let behaviour = relay_server::behaviour::Behaviour::new(shared.clone(), reporter.clone());
    let (inbox, incoming) = inbound::Inbound::new(relay_server::HOP, HOP_QUEUE);
    ops.count_hop_drops_in(inbox.dropped());
    (
        (limits.clone(), shared, reporter),
        behaviour,
        inbox,
        incoming,
    )
}

/// Opens every listener of `config` and adds its external addresses.
fn listen(
    swarm: &mut libp2p::Swarm<slim::Slim<Behaviour>>,
    config: &NodeConfig,
) -> Result<listeners::Listeners, NodeError> {
    let mut listeners = listeners::Listeners::default();
    for addr in &config.listen {
        let id = swarm
            .listen_on(addr.clone())
            .map_err(|source| NodeError::Listen {
                addr: addr.clone(),
                source,
            })?;
        listeners.opened(id);
    }
    for addr in &config.external {
        swarm.add_external_address(addr.clone());
    }
    Ok(listeners)
}

/// The relay server's streams, as the node's tasks (and, priced, its
/// payees' pay streams).
fn start_relay(
    handle: &NodeHandle,
    limits: RelayLimits,
    shared: relay_server::behaviour::Shared,
    reporter: relay_server::report::Reporter,
    hop_incoming: Option<crate::net::Incoming>,
) -> Result<(), NodeError> {
    if let Some(pay) = limits.pay.clone() {
        handle.ops().report_payees(pay.payees.book_reader());
        handle.spawn(pay.payees.serve(handle.control.clone()));
    }
    relay_server::server::Server {
        incoming: hop_incoming,
        shared,
        limits,
        reporter,
        control: handle.control.clone(),
        local: handle.peer_id,
        tasks: handle.tasks.clone(),
        handshakes: relay_server::server::handshake_permits(),
    }
    .start()
    .map_err(|e| NodeError::Build(format!("relay server: {e}")))
}
