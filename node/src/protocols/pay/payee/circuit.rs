//! A priced relay's circuits: which end pays (the protocol crate's gate),
//! read with the payer's budget on one look at the book.

use super::{Budget, Payees};
use libp2p::PeerId;

/// How a circuit through a priced relay runs, decided on one look at the
/// book (the gate and the budget together: an account cannot go between).
pub enum CircuitPay {
    /// Billed to `billed`'s channel, metered by `budget`.
    Billed {
        /// Whose channel pays.
        billed: PeerId,
        /// What it has paid for.
        budget: Budget,
    },
    /// Carried free, at the free limits.
    Unbilled,
    /// Refused.
    Refused(ledgermesh_protocol::relay::gate::GateRefusal),
}

impl Payees {
    /// The circuit payment gate for a circuit from `src` to `dst`, billed
    /// as `bill` says, and the billed peer's budget, under one lock.
    pub fn circuit_pay(
        &self,
        bill: ledgermesh_protocol::relay::gate::Bill,
        src: PeerId,
        dst: PeerId,
    ) -> CircuitPay {
        use ledgermesh_protocol::relay::gate::{gate, Gate, GateRefusal};
        let st = self.lock();
        match gate(bill, src, dst, &st.book) {
            Gate::Billed { billed } if st.book.channel_of(&billed).is_some() => {
                let budget = Budget::new(self.clone(), billed);
                CircuitPay::Billed { billed, budget }
            }
            // Paying by the gate's look, yet bound to no channel: refused,
            // never carried unmetered.
            Gate::Billed { billed } => CircuitPay::Refused(GateRefusal::Unpaid { billed, bill }),
            Gate::Unbilled => CircuitPay::Unbilled,
            Gate::Refused(refusal) => CircuitPay::Refused(refusal),
        }
    }
}

impl ledgermesh_protocol::relay::gate::Payers for Payees {
    fn is_paying(&self, peer: &PeerId) -> bool {
        Payees::is_paying(self, peer)
    }
    fn consents_to(&self, dst: &PeerId, src: &PeerId) -> bool {
        Payees::consents_to(self, dst, src)
    }
}
