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
mod handle;
mod listeners;
pub mod mux;
mod relay_server;
mod reservations;

pub use behaviour::{Behaviour, BehaviourEvent};
pub use config::{
    ConnectionCaps, NodeConfig, RelayLimits, DEFAULT_CIRCUITS_PER_IP, DEFAULT_RESERVATIONS_PER_IP,
    IDENTIFY_PROTOCOL,
};
pub use handle::{
    CloseWatch, ConnInfo, DialError, NetSignals, NodeError, NodeHandle, PublicView, Snapshot,
    MAX_DIAL_CANDIDATES,
};
pub use ledgermesh_protocol::path::{classify, PathKind, TransportKind};

use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use std::time::Instant;
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

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
    let mut swarm = behaviour::build(&config, keypair.clone())?;
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
    let emitter = config
        .emitter
        .clone()
        .unwrap_or_else(|| crate::events::Emitter::new(config.name.clone()));
    let mut reservations = reservations::Reservations::default();
    for (relay, addr) in relays {
        let listener = swarm.listen_on(addr.clone().with(Protocol::P2pCircuit));
        reservations.asked(relay, addr, listener, &emitter);
    }
    let control = swarm.behaviour().stream.new_control();
    let (commands_tx, commands) = mpsc::channel(256);
    let (signals_tx, signals) = watch::channel(Default::default());
    let relay_audit = (config.relay_server.as_ref())
        .and(config.audit.clone())
        .map(|log| relay_server::AuditWriter::start(log, emitter.clone()));
    let event_loop = event_loop::EventLoop {
        swarm,
        paths: ledgermesh_protocol::path::PathSet::new(config.close_relayed_after_upgrade),
        config,
        emitter: emitter.clone(),
        commands,
        signals: signals_tx,
        listeners,
        reservations,
        pending_dials: Default::default(),
        close_watchers: Default::default(),
        public: None,
        reserved: Default::default(),
        relay_audit,
        epoch: Instant::now(),
    };
    let span = tracing::info_span!("node", name = %event_loop.config.name, peer = %peer_id);
    tokio::spawn(event_loop.run().instrument(span));
    Ok(NodeHandle {
        peer_id,
        keypair,
        commands: commands_tx,
        control,
        emitter,
        signals,
        allow_private,
        tasks: tokio_util::task::TaskTracker::new(),
        cancel: tokio_util::sync::CancellationToken::new(),
    })
}
