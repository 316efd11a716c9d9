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

use std::time::Instant;
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

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
    let mut relays = vec![];
    for r in &config.relays {
        let relay = crate::addr::peer_of(r).ok_or(NodeError::RelayAddrWithoutPeer(r.clone()))?;
        relays.push((relay, r.clone()));
    }
    let allow_private = config.allow_private_addrs;
    let emitter = config
        .emitter
        .clone()
        .unwrap_or_else(|| crate::events::Emitter::new(config.name.clone()));
    // Attached before the first event, so every event is counted.
    let ops = emitter
        .tap_or_attach(|| crate::ops::Ops::new(&config.name))
        .expect("an emitter's tap is the operator's view");
    // The relay server's state is shared by its swarm side and its streams.
    let relay = config.relay_server.as_ref().map(|limits| {
        let shared = relay_server::behaviour::State::new(limits.book());
        let reporter = relay_server::report::Reporter::new(emitter.clone(), config.audit.clone());
        (limits.clone(), shared, reporter)
    });
    let relay_behaviour = (relay.as_ref()).map(|(_, shared, reporter)| {
        relay_server::behaviour::Behaviour::new(shared.clone(), reporter.clone())
    });
    // A relay takes hop streams through its own bounded queue (see inbound.rs).
    let (hop_inbox, hop_incoming) = match relay {
        Some(_) => {
            let (b, rx) = inbound::Inbound::new(relay_server::HOP, HOP_QUEUE);
            ops.count_hop_drops_in(b.dropped());
            (Some(b), Some(rx))
        }
        None => (None, None),
    };
    // Data streams through a bounded queue too; offered once a stream
    // server takes them (NodeHandle::take_stream_inbox).
    let (stream_inbox, stream_incoming) =
        inbound::Inbound::new(crate::protocols::stream::STREAM_PROTOCOL, STREAM_QUEUE);
    let stream_accepting = stream_inbox.accepting();
    stream_accepting.store(false, std::sync::atomic::Ordering::Relaxed);
    let stream_drops = stream_inbox.dropped();
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
    let mut reservations = reservations::Reservations::new(
        &relays,
        config.max_reservations,
        config.defer_reservations,
    );
    reservations.drive(&mut swarm, 0, &emitter);
    let relay_list = relays.clone();
    let defers_reservations = config.defer_reservations;
    let control = swarm.behaviour().stream.new_control();
    let (commands_tx, commands) = mpsc::channel(256);
    let (signals_tx, signals) = watch::channel(Default::default());
    // Hard-NAT attempts: offered (when our mapping is endpoint-dependent)
    // only with QUIC listening; answered by every node (declined when off).
    let quic = config.listen.iter().any(crate::addr::is_quic);
    let offer_hard_nat = config.hard_nat && quic;
    let (hard_nat_tx, hard_nat_rx) = mpsc::channel(hardnat::QUEUE);
    let hard_nat_service = hardnat::Service::new(
        config.hard_nat && quic,
        config.hard_nat_plan,
        config.allow_private_addrs,
    );
    let event_loop = event_loop::EventLoop {
        swarm,
        paths: ledgermesh_protocol::path::PathSet::new(config.close_relayed_after_upgrade),
        config,
        emitter: emitter.clone(),
        ops: ops.clone(),
        commands,
        signals: signals_tx,
        listeners,
        reservations,
        pending_dials: Default::default(),
        close_watchers: Default::default(),
        dial_addrs: Default::default(),
        public: None,
        hard_nat: offer_hard_nat.then_some(hard_nat_tx),
        direct_waiters: Default::default(),
        handshakes,
        noise_ciphers: Default::default(),
        epoch: Instant::now(),
    };
    let span = tracing::info_span!("node", name = %event_loop.config.name, peer = %peer_id);
    // The event loop is not one of the node's tasks: shutdown stops those
    // first and then tells the loop (Command::Shutdown) to close up.
    let event_loop_task = crate::tasks::Tasks::new();
    event_loop_task.spawn_tracked(event_loop.run().instrument(span));
    let handle = NodeHandle {
        peer_id,
        keypair,
        commands: commands_tx,
        control,
        emitter,
        signals,
        allow_private,
        meters,
        stream_meters: Default::default(),
        ops,
        payers: Default::default(),
        relays: relay_list,
        defers_reservations,
        tasks: crate::tasks::Tasks::new(),
        event_loop: event_loop_task,
        punch,
        stream_inbox: std::sync::Arc::new(std::sync::Mutex::new(Some(handle::StreamInbox {
            incoming: stream_incoming,
            accepting: stream_accepting,
            dropped: stream_drops,
        }))),
        fair_in: crate::streams::fair::FairGate::new(Default::default()),
    };
    handle.spawn(hard_nat_service.run(handle.clone(), hard_nat_rx));
    if let Some(pay) = relay.as_ref().and_then(|(l, _, _)| l.pay.clone()) {
        handle.ops().report_payees(pay.payees.book_reader());
        handle.spawn(pay.payees.serve(handle.control.clone()));
    }
    if let Some((limits, shared, reporter)) = relay {
        relay_server::server::Server {
            incoming: hop_incoming,
            shared,
            limits,
            reporter,
            control: handle.control.clone(),
            local: peer_id,
            tasks: handle.tasks.clone(),
            handshakes: relay_server::server::handshake_permits(),
        }
        .start()
        .map_err(|e| NodeError::Build(format!("relay server: {e}")))?;
    }
    Ok(handle)
}
