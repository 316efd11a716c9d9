//! The relay server's decisions, without I/O: who may reserve a slot, who
//! may open a circuit to whom, under which limits, and when reservations
//! end. The node's relay server speaks circuit relay v2 on the wire
//! ([`wire`]) and asks a [`Book`] before each step.

pub mod gate;
pub mod wire;

use crate::relay_caps::IpCaps;
use libp2p_identity::PeerId;
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// What one circuit may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitLimit {
    /// Longest life of the circuit.
    pub duration: Duration,
    /// Bytes it may carry in each direction (counted separately).
    pub bytes: u64,
}

impl CircuitLimit {
    /// Stock circuit relay v2 sizes: 2 minutes and 128 KiB per direction,
    /// enough to coordinate a hole punch and a small transfer.
    pub const STOCK: Self = Self {
        duration: Duration::from_secs(120),
        bytes: 128 << 10,
    };

    /// Lifted sizes, for data streams: 1 hour and 1 TiB per direction.
    pub const LIFTED: Self = Self {
        duration: Duration::from_secs(3600),
        bytes: 1 << 40,
    };
}

/// A circuit relay v2 status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Accepted.
    Ok,
    /// A reservation the relay will not grant (policy).
    ReservationRefused,
    /// The relay is full (reservations, circuits, per-peer or per-IP caps).
    ResourceLimitExceeded,
    /// The peer may not open this circuit (policy).
    PermissionDenied,
    /// The destination could not be reached or refused.
    ConnectionFailed,
    /// The destination holds no reservation here.
    NoReservation,
    /// The request did not decode.
    MalformedMessage,
    /// A message of the wrong type.
    UnexpectedMessage,
}

impl Status {
    /// The code on the wire.
    pub fn code(self) -> i32 {
        match self {
            Self::Ok => 100,
            Self::ReservationRefused => 200,
            Self::ResourceLimitExceeded => 201,
            Self::PermissionDenied => 202,
            Self::ConnectionFailed => 203,
            Self::NoReservation => 204,
            Self::MalformedMessage => 400,
            Self::UnexpectedMessage => 401,
        }
    }

    /// The spec's name (`RESERVATION_REFUSED`, ...), as events and the audit
    /// log report it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ok => "OK",
            Self::ReservationRefused => "RESERVATION_REFUSED",
            Self::ResourceLimitExceeded => "RESOURCE_LIMIT_EXCEEDED",
            Self::PermissionDenied => "PERMISSION_DENIED",
            Self::ConnectionFailed => "CONNECTION_FAILED",
            Self::NoReservation => "NO_RESERVATION",
            Self::MalformedMessage => "MALFORMED_MESSAGE",
            Self::UnexpectedMessage => "UNEXPECTED_MESSAGE",
        }
    }
}

/// Why the relay said no: the status on the wire and a reason for the
/// operator (events, audit log) and, once payments speak, for the peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// Every reservation slot is taken.
    #[error("the relay holds its maximum of {0} reservations")]
    ReservationsFull(usize),
    /// The peers behind this IP hold their share of reservations.
    #[error("the peers behind {0} hold their share of reservations")]
    ReservationsPerIp(IpAddr),
    /// Every circuit slot is taken.
    #[error("the relay carries its maximum of {0} circuits")]
    CircuitsFull(usize),
    /// The source has its share of circuits.
    #[error("the source already has {0} circuits")]
    CircuitsPerPeer(usize),
    /// The peers behind this IP have their share of circuits.
    #[error("the peers behind {0} have their share of circuits")]
    CircuitsPerIp(IpAddr),
    /// The destination holds no reservation here.
    #[error("the destination holds no reservation here")]
    NoReservation,
    /// A circuit from a peer to itself.
    #[error("a circuit to oneself")]
    ToItself,
    /// The relay's policy says no (an allowlist, an unpaid peer).
    #[error("{0}")]
    Policy(String),
}

impl Refusal {
    /// The status a reservation refused this way is answered with.
    pub fn reservation_status(&self) -> Status {
        match self {
            Self::Policy(_) => Status::ReservationRefused,
            _ => Status::ResourceLimitExceeded,
        }
    }

    /// The status a circuit refused this way is answered with.
    pub fn circuit_status(&self) -> Status {
        match self {
            Self::Policy(_) | Self::ToItself => Status::PermissionDenied,
            Self::NoReservation => Status::NoReservation,
            _ => Status::ResourceLimitExceeded,
        }
    }
}

/// The relay's capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BookLimits {
    /// Reservations held at once.
    pub max_reservations: usize,
    /// Circuits open at once.
    pub max_circuits: usize,
    /// Circuits one source peer may have open at once.
    pub max_circuits_per_peer: usize,
    /// How long a reservation lasts unless renewed.
    pub reservation_ttl: Duration,
}

impl Default for BookLimits {
    fn default() -> Self {
        Self {
            max_reservations: 1024,
            max_circuits: 256,
            max_circuits_per_peer: 16,
            reservation_ttl: Duration::from_secs(3600),
        }
    }
}

/// An accepted reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reserved {
    /// Whether the peer already held one (a renewal).
    pub renewed: bool,
    /// When it ends unless renewed again.
    pub expires: Instant,
}

/// The identity of an open circuit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CircuitId(pub u64);

/// Reservations and circuits held, with the relay's capacity and per-IP caps.
#[derive(Debug)]
pub struct Book {
    limits: BookLimits,
    reservations: HashMap<PeerId, Instant>,
    circuits: HashMap<CircuitId, (PeerId, PeerId)>,
    per_source: HashMap<PeerId, usize>,
    caps: IpCaps,
    next: u64,
}

impl Book {
    /// An empty book.
    pub fn new(limits: BookLimits, caps: IpCaps) -> Self {
        Self {
            limits,
            reservations: HashMap::new(),
            circuits: HashMap::new(),
            per_source: HashMap::new(),
            caps,
            next: 0,
        }
    }

    /// `peer`, connected from `ip` (`None`: through another relay), asks
    /// for a reservation (or to renew one).
    pub fn reserve(
        &mut self,
        peer: PeerId,
        ip: Option<IpAddr>,
        now: Instant,
    ) -> Result<Reserved, Refusal> {
        let renewed = self.reservations.contains_key(&peer);
        if !renewed && self.reservations.len() >= self.limits.max_reservations {
            return Err(Refusal::ReservationsFull(self.limits.max_reservations));
        }
        if let Some(ip) = ip {
            if !self.caps.ask_reservation(peer, ip) {
                return Err(Refusal::ReservationsPerIp(ip));
            }
            self.caps.reserved(peer);
        }
        let expires = now + self.limits.reservation_ttl;
        self.reservations.insert(peer, expires);
        Ok(Reserved { renewed, expires })
    }

    /// Whether `peer` holds a live reservation at `now`.
    pub fn is_reserved(&self, peer: &PeerId, now: Instant) -> bool {
        self.reservations.get(peer).is_some_and(|e| *e > now)
    }

    /// `src`, connected from `src_ip`, asks for a circuit to `dst`.
    pub fn connect(
        &mut self,
        src: PeerId,
        src_ip: Option<IpAddr>,
        dst: PeerId,
        now: Instant,
    ) -> Result<CircuitId, Refusal> {
        if src == dst {
            return Err(Refusal::ToItself);
        }
        if !self.is_reserved(&dst, now) {
            return Err(Refusal::NoReservation);
        }
        if self.circuits.len() >= self.limits.max_circuits {
            return Err(Refusal::CircuitsFull(self.limits.max_circuits));
        }
        let mine = self.per_source.get(&src).copied().unwrap_or(0);
        if mine >= self.limits.max_circuits_per_peer {
            return Err(Refusal::CircuitsPerPeer(mine));
        }
        if let Some(ip) = src_ip {
            if !self.caps.ask_circuit(src, ip) {
                return Err(Refusal::CircuitsPerIp(ip));
            }
            self.caps.circuit_opened(src, dst);
        }
        self.next += 1;
        let id = CircuitId(self.next);
        self.circuits.insert(id, (src, dst));
        *self.per_source.entry(src).or_default() += 1;
        Ok(id)
    }

    /// The circuit `id` ended; its source and destination.
    pub fn circuit_closed(&mut self, id: CircuitId) -> Option<(PeerId, PeerId)> {
        let (src, dst) = self.circuits.remove(&id)?;
        if let Some(n) = self.per_source.get_mut(&src) {
            *n -= 1;
            if *n == 0 {
                self.per_source.remove(&src);
            }
        }
        self.caps.circuit_closed(src, dst);
        Some((src, dst))
    }

    /// `peer`'s reservation ends (it left); whether it held one.
    pub fn unreserve(&mut self, peer: &PeerId) -> bool {
        let held = self.reservations.remove(peer).is_some();
        if held {
            self.caps.unreserved(*peer);
        }
        held
    }

    /// Ends the reservations not renewed by `now`; the peers that held them.
    pub fn expire(&mut self, now: Instant) -> Vec<PeerId> {
        let gone: Vec<PeerId> = (self.reservations.iter())
            .filter(|(_, e)| **e <= now)
            .map(|(p, _)| *p)
            .collect();
        for p in &gone {
            self.unreserve(p);
        }
        gone
    }

    /// The peers holding a reservation.
    pub fn reserved_peers(&self) -> impl Iterator<Item = &PeerId> {
        self.reservations.keys()
    }

    /// When the next reservation runs out.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.reservations.values().min().copied()
    }

    /// Reservations held.
    pub fn reservations(&self) -> usize {
        self.reservations.len()
    }

    /// Circuits open.
    pub fn circuits(&self) -> usize {
        self.circuits.len()
    }
}

/// The limits of a circuit from `src` to `dst`: lifted when the relay is
/// open or either end is one the operator lists (the reservation holder
/// is usually the one the operator knows); stock otherwise.
pub fn circuit_limit(
    open: bool,
    src_listed: bool,
    dst_listed: bool,
    stock: CircuitLimit,
    lifted: CircuitLimit,
) -> CircuitLimit {
    if open || src_listed || dst_listed {
        lifted
    } else {
        stock
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book(max_res: usize, max_circ: usize, per_peer: usize) -> Book {
        Book::new(
            BookLimits {
                max_reservations: max_res,
                max_circuits: max_circ,
                max_circuits_per_peer: per_peer,
                reservation_ttl: Duration::from_secs(60),
            },
            IpCaps::new(2, 3),
        )
    }

    #[test]
    fn reservations_are_capped_renewed_and_expire() {
        let t0 = Instant::now();
        let mut b = book(2, 10, 10);
        let (a, c, d) = (PeerId::random(), PeerId::random(), PeerId::random());
        let ip: IpAddr = "198.51.100.1".parse().unwrap();
        assert!(!b.reserve(a, Some(ip), t0).unwrap().renewed);
        assert!(!b.reserve(c, None, t0).unwrap().renewed);
        assert_eq!(b.reserve(d, None, t0), Err(Refusal::ReservationsFull(2)));
        let later = t0 + Duration::from_secs(30);
        let r = b.reserve(a, Some(ip), later).unwrap();
        assert!(r.renewed, "a renewal takes no new slot");
        assert_eq!(r.expires, later + Duration::from_secs(60));
        assert_eq!(b.next_expiry(), Some(t0 + Duration::from_secs(60)));
        assert_eq!(b.expire(t0 + Duration::from_secs(60)), vec![c]);
        assert!(b.is_reserved(&a, t0 + Duration::from_secs(60)));
        assert!(b.reserve(d, None, t0).is_ok(), "room again");
        assert!(b.unreserve(&a) && !b.unreserve(&a));
        assert_eq!(b.reservations(), 1);
    }

    #[test]
    fn one_host_cannot_take_every_reservation() {
        let t0 = Instant::now();
        let mut b = book(100, 10, 10);
        let ip: IpAddr = "198.51.100.7".parse().unwrap();
        let (p, q, r) = (PeerId::random(), PeerId::random(), PeerId::random());
        b.reserve(p, Some(ip), t0).unwrap();
        b.reserve(q, Some(ip), t0).unwrap();
        let refused = b.reserve(r, Some(ip), t0).unwrap_err();
        assert_eq!(refused, Refusal::ReservationsPerIp(ip));
        assert_eq!(refused.reservation_status(), Status::ResourceLimitExceeded);
        b.unreserve(&p);
        assert!(b.reserve(r, Some(ip), t0).is_ok());
    }

    #[test]
    fn circuits_need_a_live_reservation_and_are_capped() {
        let t0 = Instant::now();
        let mut b = book(10, 3, 2);
        let (dst, s1, s2) = (PeerId::random(), PeerId::random(), PeerId::random());
        let refused = b.connect(s1, None, dst, t0).unwrap_err();
        assert_eq!(refused.circuit_status(), Status::NoReservation);
        b.reserve(dst, None, t0).unwrap();
        assert_eq!(
            b.connect(dst, None, dst, t0).unwrap_err().circuit_status(),
            Status::PermissionDenied
        );
        let c1 = b.connect(s1, None, dst, t0).unwrap();
        let _c2 = b.connect(s1, None, dst, t0).unwrap();
        assert_eq!(
            b.connect(s1, None, dst, t0),
            Err(Refusal::CircuitsPerPeer(2))
        );
        let _c3 = b.connect(s2, None, dst, t0).unwrap();
        assert_eq!(b.connect(s2, None, dst, t0), Err(Refusal::CircuitsFull(3)));
        assert_eq!(b.circuit_closed(c1), Some((s1, dst)));
        assert_eq!(b.circuit_closed(c1), None, "closing twice is harmless");
        assert!(b.connect(s2, None, dst, t0).is_ok());
        // An expired reservation admits no circuit.
        assert_eq!(
            b.connect(s1, None, dst, t0 + Duration::from_secs(61)),
            Err(Refusal::NoReservation)
        );
    }

    #[test]
    fn circuits_per_ip_are_capped_and_freed() {
        let t0 = Instant::now();
        let mut b = book(10, 100, 100);
        let dst = PeerId::random();
        b.reserve(dst, None, t0).unwrap();
        let ip: IpAddr = "203.0.113.5".parse().unwrap();
        let ids: Vec<_> = (0..3)
            .map(|_| b.connect(PeerId::random(), Some(ip), dst, t0).unwrap())
            .collect();
        let more = b.connect(PeerId::random(), Some(ip), dst, t0);
        assert_eq!(more, Err(Refusal::CircuitsPerIp(ip)));
        b.circuit_closed(ids[0]);
        assert!(b.connect(PeerId::random(), Some(ip), dst, t0).is_ok());
        assert_eq!(b.circuits(), 3);
    }

    #[test]
    fn listed_peers_get_lifted_circuits_strangers_stock() {
        let (s, l) = (CircuitLimit::STOCK, CircuitLimit::LIFTED);
        assert_eq!(circuit_limit(false, false, false, s, l), s);
        assert_eq!(circuit_limit(false, false, true, s, l), l);
        assert_eq!(circuit_limit(false, true, false, s, l), l);
        assert_eq!(circuit_limit(true, false, false, s, l), l);
    }
}
