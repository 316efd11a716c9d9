//! The relay server's limits: circuit sizes for strangers and for listed
//! or paying peers, caps on circuits and reservations (in all, per peer,
//! per IP), and a priced relay's payees.

use ledgermesh_protocol::access::Acl;
use ledgermesh_protocol::relay::CircuitLimit;
use ledgermesh_protocol::relay_caps::IpCaps;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Reservations the peers behind one IP may hold at once.
pub const DEFAULT_RESERVATIONS_PER_IP: usize = 8;

/// Circuits the peers behind one IP may hold at once.
pub const DEFAULT_CIRCUITS_PER_IP: usize = 32;

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
