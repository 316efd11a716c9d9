//! What crossing an exit costs a packet: a client counts it on its meter
//! (what it pays against); an exit needs room for it on the peer's account
//! and bills it once the packet is handed on.

use super::Vpn;
use crate::protocols::pay::Budget;
use ledgermesh_protocol::payment::book::Room;
use ledgermesh_protocol::vpn::packet::header;
use ledgermesh_protocol::vpn::{is_mesh, Drop};
use libp2p::PeerId;
use std::net::IpAddr;
use std::sync::atomic::Ordering;

impl Vpn {
    /// What crossing an exit costs `packet`, sent to `peer` or received
    /// from it as `way` says: a client counts it on its meter at once; an
    /// exit needs room for it on the peer's account (`unpaid` without),
    /// billed once the packet is handed on ([`Charge::done`]). Only packets
    /// whose far end is outside: through a client's exit, those from or to
    /// no mesh address; at an exit, those it forwards (from or to none of
    /// its own addresses).
    pub(super) fn charge(&self, peer: &PeerId, packet: &[u8], way: Way) -> Result<Charge, Drop> {
        let (meter, payees) = (&self.inner.meter, &self.inner.payees);
        if meter.is_none() && payees.is_none() {
            return Ok(Charge(None));
        }
        // The router read this header already: it cannot fail here.
        let Ok(h) = header(packet) else {
            return Ok(Charge(None));
        };
        let size = packet.len() as u64;
        if let Some((exit, meter)) = meter {
            let far = if way == Way::In { h.src } else { h.dst };
            if exit == peer && !matches!(far, IpAddr::V6(a) if is_mesh(&a)) {
                meter.fetch_add(size, Ordering::Relaxed);
            }
        }
        let Some(payees) = payees else {
            return Ok(Charge(None));
        };
        let world = if way == Way::In { h.dst } else { h.src };
        if self.router().own().contains(&world) {
            return Ok(Charge(None));
        }
        let budget = payees.budget(peer).ok_or(Drop::Unpaid)?;
        let waker = futures::task::noop_waker_ref();
        match budget.poll_room(&mut std::task::Context::from_waker(waker)) {
            Room::Bytes(room) if room >= size => Ok(Charge(Some((budget, size)))),
            _ => Err(Drop::Unpaid),
        }
    }
}

/// Which way a packet goes between us and a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Way {
    /// From the peer.
    In,
    /// To the peer.
    Out,
}

/// A packet's bill at an exit, paid once it is handed on.
#[must_use]
pub(crate) struct Charge(Option<(Budget, u64)>);

impl Charge {
    /// The packet went on: bill it.
    pub(crate) fn done(self) {
        if let Some((budget, size)) = self.0 {
            budget.served(size);
        }
    }
}
