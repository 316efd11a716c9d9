//! How a node is built: listen addresses, relays, the relay server's limits.

use crate::events::Emitter;
use ledgermesh_protocol::access::Acl;
use ledgermesh_protocol::relay_caps::IpCaps;
use libp2p::Multiaddr;
use std::sync::{Arc, Mutex, RwLock};

/// Reservations the peers behind one IP may hold at once.
pub const DEFAULT_RESERVATIONS_PER_IP: usize = 8;

/// Circuits the peers behind one IP may hold at once.
pub const DEFAULT_CIRCUITS_PER_IP: usize = 32;
use std::time::Duration;

/// The identify protocol name of ledgermesh nodes.
pub const IDENTIFY_PROTOCOL: &str = "/ledgermesh/id/1";

/// Limits of the relay server role.
#[derive(Debug, Clone)]
pub struct RelayLimits {
    /// Longest life of one circuit.
    pub max_circuit_duration: Duration,
    /// Bytes one circuit may carry, both directions together (libp2p-relay
    /// counts the two directions summed).
    pub max_circuit_bytes: u64,
    /// Concurrent circuits.
    pub max_circuits: usize,
    /// Concurrent circuits per peer.
    pub max_circuits_per_peer: usize,
    /// Concurrent reservations.
    pub max_reservations: usize,
    /// Only peers this ACL allows (stream `*` or `relay`) may reserve or
    /// open circuits; `None`: every peer. Shared, so a reload takes effect.
    pub allow: Option<Arc<RwLock<Acl>>>,
    /// Reservations and circuits held at once by the peers behind one IP
    /// (shared between the relay's gate and its event reports).
    pub ip_caps: Arc<Mutex<IpCaps>>,
}

impl Default for RelayLimits {
    /// Stock circuit relay v2 sizes: 2 minutes and 128 KiB per circuit,
    /// enough for hole-punch coordination and a small transfer, not a free
    /// proxy. Per source peer and IP, libp2p-relay also rate-limits
    /// reservations and circuits.
    fn default() -> Self {
        Self {
            max_circuit_duration: Duration::from_secs(120),
            max_circuit_bytes: 128 << 10,
            max_circuits: 256,
            max_circuits_per_peer: 16,
            max_reservations: 1024,
            allow: None,
            ip_caps: Arc::new(Mutex::new(IpCaps::new(
                DEFAULT_RESERVATIONS_PER_IP,
                DEFAULT_CIRCUITS_PER_IP,
            ))),
        }
    }
}

impl RelayLimits {
    /// Lifted limits, for data streams: 1 hour and 1 TiB per circuit. For an
    /// open relay (`relay --open`) or one whose peers are all allowlisted.
    pub fn lifted() -> Self {
        Self {
            max_circuit_duration: Duration::from_secs(3600),
            max_circuit_bytes: 1 << 40,
            ..Self::default()
        }
    }

    /// Whether `peer`, connected from `addr`, may take a reservation now.
    pub fn admits_reservation(&self, peer: &libp2p::PeerId, addr: &Multiaddr) -> bool {
        self.admits(peer) && self.ip_ok(addr, |caps, ip| caps.ask_reservation(*peer, ip))
    }

    /// Whether `peer`, connected from `addr`, may open a circuit now.
    pub fn admits_circuit(&self, peer: &libp2p::PeerId, addr: &Multiaddr) -> bool {
        self.admits(peer) && self.ip_ok(addr, |caps, ip| caps.ask_circuit(*peer, ip))
    }

    fn ip_ok(
        &self,
        addr: &Multiaddr,
        ask: impl FnOnce(&mut IpCaps, std::net::IpAddr) -> bool,
    ) -> bool {
        // A relayed requester has no IP of its own here: no per-IP cap.
        let Some(ip) = ledgermesh_protocol::path::scope::ip_of(addr) else {
            return true;
        };
        ask(
            &mut self.ip_caps.lock().unwrap_or_else(|p| p.into_inner()),
            ip,
        )
    }

    /// Whether `peer` may use the relay now.
    pub fn admits(&self, peer: &libp2p::PeerId) -> bool {
        self.allow.as_ref().is_none_or(|acl| {
            let acl = acl.read().unwrap_or_else(|p| p.into_inner());
            acl.allowed_until(crate::events::now_ms(), peer, "relay")
                .is_some()
        })
    }
}

/// Ceilings on connections, enforced by libp2p's connection-limits and
/// memory-connection-limits behaviours: a connection over one is denied.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConnectionCaps {
    /// Established connections, all peers together.
    pub max_connections: u32,
    /// Established connections to one peer.
    pub max_connections_per_peer: u32,
    /// Incoming connections still in their handshake.
    pub max_pending_incoming: u32,
    /// New connections are denied while the process uses more memory than
    /// this many bytes (`None`: 90 % of the machine's memory).
    pub max_memory_bytes: Option<usize>,
}

impl Default for ConnectionCaps {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_connections_per_peer: 8,
            max_pending_incoming: 256,
            max_memory_bytes: None,
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
    /// Dial, dial back and announce private, loopback and other non-global
    /// addresses too (labs, tests, the demo). Off: only globally routable ones.
    pub allow_private_addrs: bool,
    /// Connection and memory ceilings (a stranger can open connections).
    pub limits: ConnectionCaps,
    /// (Relay role) where reservation and circuit decisions are written.
    pub audit: Option<crate::access::audit_log::AuditLog>,
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
            allow_private_addrs: false,
            limits: ConnectionCaps::default(),
            audit: None,
            emitter: None,
        }
    }
}
