//! A priced relay's payment gate for one circuit: which end is billed,
//! whether that peer pays, and at which limits the circuit runs. A
//! decision on the book as it stands, with no time in it: a function, not
//! a machine.
//!
//! ```text
//!   billed = dst (Bill::Destination) | src (Bill::Source)
//!   billed has no paid-up channel ─────────────► Refused(Unpaid)  (NO_RESERVATION | PERMISSION_DENIED)
//!   dst billed, did not consent to pay for src ─► Unbilled        (the free limits)
//!   otherwise ──────────────────────────────────► Billed(billed)  (the paid limits, metered)
//! ```

use super::Status;
use libp2p_identity::PeerId;

/// Which end of a circuit a priced relay bills.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Bill {
    /// The reservation holder (the peer reachable only through the relay).
    #[default]
    Destination,
    /// The peer that dials the circuit.
    Source,
}

/// What the gate reads of the payee's accounts.
pub trait Payers {
    /// Whether `peer` is bound to a paid-up channel.
    fn is_paying(&self, peer: &PeerId) -> bool;
    /// Whether `dst`, billed as a circuit's destination, pays for `src`.
    fn consents_to(&self, dst: &PeerId, src: &PeerId) -> bool;
}

impl Payers for crate::payment::book::Book {
    fn is_paying(&self, peer: &PeerId) -> bool {
        crate::payment::book::Book::is_paying(self, peer)
    }
    fn consents_to(&self, dst: &PeerId, src: &PeerId) -> bool {
        crate::payment::book::Book::consents_to(self, dst, src)
    }
}

/// Why a circuit is refused for want of payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GateRefusal {
    /// The billed peer has no paid-up channel.
    #[error("{billed}, who pays for this circuit, has no paid-up channel")]
    Unpaid {
        /// The peer the circuit would be billed to.
        billed: PeerId,
        /// Which end that is.
        bill: Bill,
    },
}

impl GateRefusal {
    /// The peer told why (over the payment protocol).
    pub fn billed(&self) -> PeerId {
        match self {
            GateRefusal::Unpaid { billed, .. } => *billed,
        }
    }

    /// The circuit relay v2 status the circuit's source is answered with: a
    /// destination without a channel is as good as one without a
    /// reservation; a source without one may not open circuits.
    pub fn status(&self) -> Status {
        match self {
            GateRefusal::Unpaid {
                bill: Bill::Destination,
                ..
            } => Status::NoReservation,
            GateRefusal::Unpaid {
                bill: Bill::Source, ..
            } => Status::PermissionDenied,
        }
    }
}

/// How a circuit through a priced relay runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Billed to `billed`'s channel, at the paid limits.
    Billed {
        /// Whose channel pays.
        billed: PeerId,
    },
    /// Carried free, at the free limits: a destination pays only for the
    /// sources it consented to, and this is not one.
    Unbilled,
    /// Refused.
    Refused(GateRefusal),
}

impl Gate {
    /// What the circuit's `opened` event says of an unbilled circuit.
    pub const UNBILLED: &'static str =
        "unbilled: the destination did not consent to pay for this source";
}

/// The gate for a circuit from `src` to `dst` on a relay billing `bill`.
pub fn gate(bill: Bill, src: PeerId, dst: PeerId, payers: &impl Payers) -> Gate {
    let billed = match bill {
        Bill::Destination => dst,
        Bill::Source => src,
    };
    if !payers.is_paying(&billed) {
        return Gate::Refused(GateRefusal::Unpaid { billed, bill });
    }
    match bill {
        Bill::Destination if !payers.consents_to(&dst, &src) => Gate::Unbilled,
        _ => Gate::Billed { billed },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    struct Fake {
        paying: HashSet<PeerId>,
        consents: HashSet<(PeerId, PeerId)>,
    }

    impl Payers for Fake {
        fn is_paying(&self, peer: &PeerId) -> bool {
            self.paying.contains(peer)
        }
        fn consents_to(&self, dst: &PeerId, src: &PeerId) -> bool {
            self.consents.contains(&(*dst, *src))
        }
    }

    #[test]
    fn the_billed_end_pays_or_the_circuit_is_refused_and_strangers_ride_free_only() {
        let (a, b, stranger) = (PeerId::random(), PeerId::random(), PeerId::random());
        let book = Fake {
            paying: [b].into(),
            consents: [(b, a)].into(),
        };
        // The destination pays for the source it consented to.
        assert_eq!(
            gate(Bill::Destination, a, b, &book),
            Gate::Billed { billed: b }
        );
        // A stranger cannot make the destination pay: it rides at the free limits.
        assert_eq!(gate(Bill::Destination, stranger, b, &book), Gate::Unbilled);
        // A destination without a channel: refused as if it held no reservation.
        let r = gate(Bill::Destination, b, a, &book);
        let Gate::Refused(why) = r else {
            panic!("{r:?}")
        };
        assert_eq!((why.billed(), why.status()), (a, Status::NoReservation));
        assert!(why.to_string().contains("has no paid-up channel"));
        // Billing sources: the source pays, whatever the destination said.
        assert_eq!(
            gate(Bill::Source, b, stranger, &book),
            Gate::Billed { billed: b }
        );
        let Gate::Refused(why) = gate(Bill::Source, stranger, b, &book) else {
            panic!("a source without a channel")
        };
        assert_eq!(
            (why.billed(), why.status()),
            (stranger, Status::PermissionDenied)
        );
    }
}
