//! Waiting for a payer's channel: a request (a priced stream's, a priced
//! relay's reservation) that arrives before its payer's attach over
//! `/ledgermesh/pay/1` waits for it, up to a deadline, and no longer.
//!
//! ```text
//!   new(now, wait) ── handle_paying(true) ──► Paid
//!          └──────── the deadline passes ────► Unpaid
//! ```

use std::time::{Duration, Instant};

/// What the wait decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayVerdict {
    /// The payer is bound to a paid-up channel: serve it, billed.
    Paid,
    /// No paid-up channel came in time: refuse, saying the terms.
    Unpaid,
}

/// One request's wait for its payer's channel.
#[derive(Debug)]
pub struct PayWait {
    deadline: Instant,
    decided: Option<PayVerdict>,
    told: bool,
}

impl PayWait {
    /// A request arrived at `now`; the payer's channel is awaited for `wait`.
    pub fn new(now: Instant, wait: Duration) -> Self {
        Self {
            deadline: now + wait,
            decided: None,
            told: false,
        }
    }

    /// Whether the payer is bound to a paid-up channel, as of now. Until
    /// the deadline has been handled, a payer found paying is served, even
    /// when the look came late (a busy node): the wait fails closed only
    /// when nothing was paid.
    pub fn handle_paying(&mut self, paying: bool) {
        if self.decided.is_none() && paying {
            self.decided = Some(PayVerdict::Paid);
        }
    }
}

impl crate::Machine for PayWait {
    type Action = PayVerdict;

    fn poll_action(&mut self) -> Option<PayVerdict> {
        if self.told {
            return None;
        }
        let d = self.decided?;
        self.told = true;
        Some(d)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.decided.is_none().then_some(self.deadline)
    }

    fn handle_timeout(&mut self, now: Instant) {
        if self.decided.is_none() && now >= self.deadline {
            self.decided = Some(PayVerdict::Unpaid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::{Link, Pair};
    use crate::Machine;
    use std::collections::VecDeque;

    /// The buyer attaches its channel `after` its request (never: `None`).
    struct Buyer {
        attach_at: Option<Instant>,
        out: VecDeque<()>,
    }

    impl Machine for Buyer {
        type Action = ();
        fn poll_action(&mut self) -> Option<()> {
            self.out.pop_front()
        }
        fn poll_timeout(&self) -> Option<Instant> {
            self.attach_at
        }
        fn handle_timeout(&mut self, now: Instant) {
            if self.attach_at.is_some_and(|t| t <= now) {
                self.attach_at = None;
                self.out.push_back(());
            }
        }
    }

    #[derive(Default)]
    struct Wire {
        decided: Option<(PayVerdict, Instant)>,
    }

    impl Link for Wire {
        type A = PayWait;
        type B = Buyer;
        type AtoB = ();
        type BtoA = ();
        fn a_sends(&mut self, p: PayVerdict, now: Instant) -> Option<()> {
            self.decided = Some((p, now));
            None
        }
        fn b_sends(&mut self, _: (), _: Instant) -> Option<()> {
            Some(()) // the attach travels to the seller
        }
        fn b_takes(&mut self, _: &mut Buyer, _: (), _: Instant) {}
        fn a_takes(&mut self, gate: &mut PayWait, _: (), _: Instant) {
            gate.handle_paying(true);
        }
    }

    fn play(attach_after: Option<Duration>) -> (PayVerdict, Duration) {
        let t0 = Instant::now();
        let gate = PayWait::new(t0, Duration::from_secs(5));
        let buyer = Buyer {
            attach_at: attach_after.map(|d| t0 + d),
            out: VecDeque::new(),
        };
        let mut p = Pair::new(gate, buyer, Wire::default(), Duration::from_millis(50), t0);
        assert!(p.run_for(Duration::from_secs(60)));
        let (d, at) = p.link.decided.expect("decided");
        (d, at - t0)
    }

    #[test]
    fn a_payer_whose_channel_comes_in_time_is_served_and_a_late_one_is_not() {
        let (d, at) = play(Some(Duration::from_millis(1_200)));
        assert_eq!((d, at), (PayVerdict::Paid, Duration::from_millis(1_250)));
        let (d, at) = play(Some(Duration::from_millis(4_960)));
        assert_eq!(d, PayVerdict::Unpaid);
        assert_eq!(
            at,
            Duration::from_secs(5),
            "the attach arrived after the deadline"
        );
        assert_eq!(play(None).0, PayVerdict::Unpaid, "never attached");
    }

    #[test]
    fn a_payer_paying_already_is_served_at_once_and_the_verdict_is_told_once() {
        let t0 = Instant::now();
        let mut g = PayWait::new(t0, Duration::from_secs(5));
        g.handle_paying(true);
        assert_eq!(g.poll_action(), Some(PayVerdict::Paid));
        assert_eq!(g.poll_action(), None);
        assert_eq!(g.poll_timeout(), None);
        g.handle_timeout(t0 + Duration::from_secs(9));
        assert_eq!(g.poll_action(), None, "decided once");
    }
}
