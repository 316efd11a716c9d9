//! How a node is built: listen addresses, relays, the relay server's limits.

use crate::events::Emitter;
use ledgermesh_protocol::access::Acl;
use ledgermesh_protocol::relay::CircuitLimit;
use ledgermesh_protocol::relay_caps::IpCaps;
use libp2p::Multiaddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Reservations the peers behind one IP may hold at once.
pub const DEFAULT_RESERVATIONS_PER_IP: usize = 8;

/// Circuits the peers behind one IP may hold at once.
pub const DEFAULT_CIRCUITS_PER_IP: usize = 32;

/// The identify protocol name of ledgermesh nodes.
pub const IDENTIFY_PROTOCOL: &str = "/ledgermesh/id/1";

/// Limits of the relay server role.
#[derive(Debug, Clone)]
pub struct RelayLimits {
    /// What a circuit may carry when neither end is listed (and the relay
    /// is not open): stock circuit relay v2 sizes by default.
    pub stock: CircuitLimit,
    /// What a circuit may carry when an end is listed in `allow`, or for
    /// everyone when `open`.
    pub lifted: CircuitLimit,
    /// Every peer gets `lifted` circuits (an open relay).
    pub open: bool,
    /// Concurrent circuits.
    pub max_circuits: usize,
    /// Concurrent circuits per source peer.
    pub max_circuits_per_peer: usize,
    /// Concurrent reservations.
    pub max_reservations: usize,
    /// How long a reservation lasts unless renewed (clients renew at 3/4).
    pub reservation_ttl: Duration,
    /// Peers this ACL allows (stream `*` or `relay`) get `lifted` circuits;
    /// others get `stock` ones. Shared, so a reload takes effect.
    pub allow: Option<Arc<RwLock<Acl>>>,
    /// Reservations the peers behind one IP may hold at once.
    pub reservations_per_ip: usize,
    /// Circuits the peers behind one IP may hold at once.
    pub circuits_per_ip: usize,
    /// A priced relay: who pays and how (`None`: free).
    pub pay: Option<RelayPay>,
}

pub use ledgermesh_protocol::relay::gate::Bill;

/// A priced relay's payees and billing.
#[derive(Clone)]
pub struct RelayPay {
    /// The accounts of paying peers.
    pub payees: crate::protocols::pay::Payees,
    /// Who pays for a circuit.
    pub bill: Bill,
}

impl std::fmt::Debug for RelayPay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayPay")
            .field("terms", &self.payees.terms())
            .field("bill", &self.bill)
            .finish()
    }
}

impl Default for RelayLimits {
    /// A relay that is no free proxy: stock-sized circuits (2 minutes and
    /// 128 KiB per direction) for everyone, enough for hole-punch
    /// coordination and a small transfer.
    fn default() -> Self {
        Self {
            stock: CircuitLimit::STOCK,
            lifted: CircuitLimit::LIFTED,
            open: false,
            max_circuits: 256,
            max_circuits_per_peer: 16,
            max_reservations: 1024,
            reservation_ttl: Duration::from_secs(3600),
            allow: None,
            reservations_per_ip: DEFAULT_RESERVATIONS_PER_IP,
            circuits_per_ip: DEFAULT_CIRCUITS_PER_IP,
            pay: None,
        }
    }
}

impl RelayLimits {
    /// An open relay: lifted limits (1 hour and 1 TiB per direction) for
    /// every peer (`relay --open`, the demo, the tests).
    pub fn lifted() -> Self {
        Self {
            open: true,
            ..Self::default()
        }
    }

    /// Whether `peer` is listed (gets lifted circuits).
    pub fn listed(&self, peer: &libp2p::PeerId) -> bool {
        self.allow.as_ref().is_some_and(|acl| {
            let acl = acl.read().unwrap_or_else(|p| p.into_inner());
            acl.allowed_until(crate::clock::now_ms(), peer, "relay")
                .is_some()
        })
    }

    /// The limits of a circuit from `src` to `dst` (a paying end counts
    /// as listed).
    pub fn circuit_limit(&self, src: &libp2p::PeerId, dst: &libp2p::PeerId) -> CircuitLimit {
        let known = |p: &libp2p::PeerId| {
            self.listed(p) || self.pay.as_ref().is_some_and(|pay| pay.payees.is_paying(p))
        };
        ledgermesh_protocol::relay::circuit_limit(
            self.open,
            known(src),
            known(dst),
            self.stock,
            self.lifted,
        )
    }

    /// The limits of a circuit nobody pays for: lifted only by the
    /// operator's own policy (`--open`, `--allow`).
    pub fn free_circuit_limit(&self, src: &libp2p::PeerId, dst: &libp2p::PeerId) -> CircuitLimit {
        ledgermesh_protocol::relay::circuit_limit(
            self.open,
            self.listed(src),
            self.listed(dst),
            self.stock,
            self.lifted,
        )
    }

    /// The relay's capacity, for its book.
    pub fn book(&self) -> ledgermesh_protocol::relay::Book {
        use ledgermesh_protocol::relay::{Book, BookLimits};
        Book::new(
            BookLimits {
                max_reservations: self.max_reservations,
                max_circuits: self.max_circuits,
                max_circuits_per_peer: self.max_circuits_per_peer,
                reservation_ttl: self.reservation_ttl,
            },
            IpCaps::new(self.reservations_per_ip, self.circuits_per_ip),
        )
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
