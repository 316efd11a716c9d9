//! How a node is built: listen addresses, relays, the relay server's limits.

use crate::events::Emitter;
pub use crate::protocols::relay::limits::{
    Bill, RelayLimits, RelayPay, DEFAULT_CIRCUITS_PER_IP, DEFAULT_RESERVATIONS_PER_IP,
};
use libp2p::Multiaddr;
use std::time::Duration;

/// The identify protocol name of ledgermesh nodes.
pub const IDENTIFY_PROTOCOL: &str = "/ledgermesh/id/1";

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

/// Reservations a node holds at once by default (`--reservations`).
pub const DEFAULT_RESERVATIONS: usize = 2;

/// How to build a node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Label used in events and logs (`relay`, `provider-1`, ...).
    pub name: String,
    /// Addresses to listen on.
    pub listen: Vec<Multiaddr>,
    /// Relays to hold a reservation on (each must end in `/p2p/<relay id>`).
    pub relays: Vec<Multiaddr>,
    /// Ask for the reservations only when told ([`NodeHandle::reserve`]):
    /// a node that pays its relays attaches its channel first.
    ///
    /// [`NodeHandle::reserve`]: super::NodeHandle::reserve
    pub defer_reservations: bool,
    /// Reservations held at once: the first relays in `relays` that
    /// accept; a dead one is replaced by the next and asked again with
    /// back-off (`--reservations`).
    pub max_reservations: usize,
    /// How often each connection is pinged: the round trips and lost pings
    /// rate its health, and a red relayed path is re-routed (`--ping-secs`).
    pub ping_interval: std::time::Duration,
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
    /// Announce AESGCM for Noise's transport messages (used with peers that
    /// announce it too; ChaChaPoly with everyone else). Default: where this
    /// CPU has AES instructions. Off only to measure ChaChaPoly.
    pub noise_aesgcm: bool,
    /// QUIC's MTU ceiling: the largest UDP payload its MTU discovery tries,
    /// and what peers may send us (`--quic-mtu-ceiling`; see
    /// [`super::quic::Config::mtu_ceiling`]).
    pub quic_mtu_ceiling: u16,
    /// Hard-NAT traversal over QUIC (`--hard-nat`): offered when our mapping
    /// is endpoint-dependent, answered when it is endpoint-independent.
    pub hard_nat: bool,
    /// Sockets and probes of a hard-NAT attempt.
    pub hard_nat_plan: ledgermesh_protocol::path::hardnat::Plan,
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
            defer_reservations: false,
            max_reservations: DEFAULT_RESERVATIONS,
            ping_interval: std::time::Duration::from_secs(5),
            relay_server: None,
            external: vec![],
            close_relayed_after_upgrade: true,
            idle_timeout: Duration::from_secs(60),
            hole_punching: true,
            noise_aesgcm: super::aes_in_hardware(),
            quic_mtu_ceiling: super::quic::MTU_CEILING,
            hard_nat: true,
            hard_nat_plan: Default::default(),
            allow_private_addrs: false,
            limits: ConnectionCaps::default(),
            audit: None,
            emitter: None,
        }
    }
}
