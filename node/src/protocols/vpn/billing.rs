//! What crossing an exit costs a packet. A priced exit bills everything it
//! carries for a peer (out to the world and back, and to the exit host
//! itself: no address of the exit's is a free way through); it needs room
//! for each packet on the peer's account and bills it once the packet is
//! handed on. A client counts what it exchanges with its exit on its
//! meter, which is what it pays against: what it sent once it went, and
//! what it received as it came, if it answers a flow the client opened
//! (`ledgermesh_protocol::vpn::flows`: an exit cannot make it count what
//! nobody asked for).

use super::Vpn;
use crate::protocols::pay::Budget;
use ledgermesh_protocol::payment::book::Room;
use ledgermesh_protocol::vpn::Drop;
use libp2p::PeerId;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

impl Vpn {
    /// What `packet`, sent to `peer` or received from it as `way` says,
    /// costs (see the module docs); `unpaid` at a priced exit where the
    /// peer's account has no room for it.
    pub(super) fn charge(&self, peer: &PeerId, packet: &[u8], way: Way) -> Result<Charge, Drop> {
        let size = packet.len() as u64;
        let mut charge = Charge::default();
        if let Some((exit, meter)) = &self.inner.meter {
            if exit == peer {
                let mut flows = super::lock(&self.inner.flows);
                let now = std::time::Instant::now();
                match way {
                    Way::In if flows.answers(packet, now) => {
                        meter.fetch_add(size, Ordering::Relaxed);
                    }
                    Way::In => {}
                    Way::Out => {
                        flows.sent(packet, now);
                        charge.meter = Some((meter.clone(), size));
                    }
                }
            }
        }
        let Some(payees) = &self.inner.payees else {
            return Ok(charge);
        };
        let budget = payees.budget(peer).ok_or(Drop::Unpaid)?;
        let waker = futures::task::noop_waker_ref();
        match budget.poll_room(&mut std::task::Context::from_waker(waker)) {
            Room::Bytes(room) if room >= size => {
                charge.bill = Some((budget, size));
                Ok(charge)
            }
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

/// A packet's bill and count, paid once it is handed on.
#[must_use]
#[derive(Default)]
pub(crate) struct Charge {
    bill: Option<(Budget, u64)>,
    meter: Option<(Arc<AtomicU64>, u64)>,
}

impl Charge {
    /// The packet went on: bill it, count it.
    pub(crate) fn done(self) {
        if let Some((budget, size)) = self.bill {
            budget.served(size);
        }
        if let Some((meter, size)) = self.meter {
            meter.fetch_add(size, Ordering::Relaxed);
        }
    }
}
