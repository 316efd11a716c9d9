//! Per-IP ceilings of a relay: how many reservations and circuits the peers
//! behind one IP address may hold at once, so one host cannot take the whole
//! relay by minting peer ids. libp2p-relay asks before each reservation or
//! circuit ([`IpCaps::ask_reservation`], [`IpCaps::ask_circuit`]); the relay's
//! events say when they start and end.

use libp2p_identity::PeerId;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

/// Peers remembered with their IP beyond those holding something.
const MAX_REMEMBERED: usize = 8_192;

/// Reservations and circuits held, by IP.
#[derive(Debug)]
pub struct IpCaps {
    max_reservations: usize,
    max_circuits: usize,
    ip_of: HashMap<PeerId, IpAddr>,
    reservations: HashMap<IpAddr, HashSet<PeerId>>,
    circuits: HashMap<IpAddr, usize>,
    /// Open circuits by (source, destination): the source IP of each.
    open: HashMap<(PeerId, PeerId), Vec<IpAddr>>,
}

impl IpCaps {
    /// At most `max_reservations` reservations and `max_circuits` circuits
    /// per source IP.
    pub fn new(max_reservations: usize, max_circuits: usize) -> Self {
        Self {
            max_reservations: max_reservations.max(1),
            max_circuits: max_circuits.max(1),
            ip_of: HashMap::new(),
            reservations: HashMap::new(),
            circuits: HashMap::new(),
            open: HashMap::new(),
        }
    }

    fn remember(&mut self, peer: PeerId, ip: IpAddr) {
        if self.ip_of.len() >= MAX_REMEMBERED && !self.ip_of.contains_key(&peer) {
            let holding: HashSet<PeerId> = (self.reservations.values().flatten().copied())
                .chain(self.open.keys().map(|(src, _)| *src))
                .collect();
            self.ip_of.retain(|p, _| holding.contains(p));
        }
        self.ip_of.insert(peer, ip);
    }

    /// May `peer`, connected from `ip`, hold a reservation?
    pub fn ask_reservation(&mut self, peer: PeerId, ip: IpAddr) -> bool {
        self.remember(peer, ip);
        let held = self.reservations.get(&ip);
        held.is_none_or(|s| s.contains(&peer) || s.len() < self.max_reservations)
    }

    /// `peer`'s reservation was accepted.
    pub fn reserved(&mut self, peer: PeerId) {
        if let Some(ip) = self.ip_of.get(&peer).copied() {
            self.reservations.entry(ip).or_default().insert(peer);
        }
    }

    /// `peer`'s reservation ended.
    pub fn unreserved(&mut self, peer: PeerId) {
        if let Some(ip) = self.ip_of.get(&peer).copied() {
            if let Some(set) = self.reservations.get_mut(&ip) {
                set.remove(&peer);
                if set.is_empty() {
                    self.reservations.remove(&ip);
                }
            }
        }
    }

    /// May `src`, connected from `ip`, open a circuit?
    pub fn ask_circuit(&mut self, src: PeerId, ip: IpAddr) -> bool {
        self.remember(src, ip);
        self.circuits.get(&ip).copied().unwrap_or(0) < self.max_circuits
    }

    /// A circuit from `src` to `dst` opened.
    pub fn circuit_opened(&mut self, src: PeerId, dst: PeerId) {
        if let Some(ip) = self.ip_of.get(&src).copied() {
            *self.circuits.entry(ip).or_default() += 1;
            self.open.entry((src, dst)).or_default().push(ip);
        }
    }

    /// A circuit from `src` to `dst` closed.
    pub fn circuit_closed(&mut self, src: PeerId, dst: PeerId) {
        let Some(ips) = self.open.get_mut(&(src, dst)) else {
            return;
        };
        let ip = ips.pop();
        if ips.is_empty() {
            self.open.remove(&(src, dst));
        }
        if let Some(ip) = ip {
            if let Some(n) = self.circuits.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    self.circuits.remove(&ip);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_host_minting_peer_ids_is_held_to_its_caps() {
        let ip: IpAddr = "198.51.100.9".parse().unwrap();
        let other: IpAddr = "198.51.100.10".parse().unwrap();
        let mut caps = IpCaps::new(2, 1);
        let (a, b, c) = (PeerId::random(), PeerId::random(), PeerId::random());
        for p in [a, b] {
            assert!(caps.ask_reservation(p, ip));
            caps.reserved(p);
        }
        assert!(
            !caps.ask_reservation(c, ip),
            "a third peer id from the same host"
        );
        assert!(
            caps.ask_reservation(a, ip),
            "a renewal is not a new reservation"
        );
        assert!(caps.ask_reservation(c, other), "another host is unaffected");
        caps.unreserved(a);
        assert!(caps.ask_reservation(c, ip), "room again once one ends");
        // Circuits.
        let dst = PeerId::random();
        assert!(caps.ask_circuit(b, ip));
        caps.circuit_opened(b, dst);
        assert!(!caps.ask_circuit(c, ip));
        caps.circuit_closed(b, dst);
        assert!(caps.ask_circuit(c, ip));
        caps.circuit_closed(b, dst); // unknown: nothing happens
        assert!(caps.circuits.is_empty() && caps.open.is_empty());
    }
}
