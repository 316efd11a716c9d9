//! Which relays to hold reservations on, and when to ask again.
//!
//! A node is given relays in order of preference and holds reservations on
//! up to `target` of them at once. A relay that fails or drops a
//! reservation waits out a back-off and is asked again while fewer than
//! `target` are held; meanwhile the next relay in line takes its place. A
//! relay that refused (policy, payment, capacity) waits longer.
//!
//! ```text
//!   Standby ──fill──► Pending ──accepted──► Held ──lost──► Waiting(1 s…)
//!                        │                                     │ until ≤ now, below target
//!                        └──failed──► Waiting(250 ms, 500 ms, … 30 s; refused: 60 s) ──► Pending
//! ```

use crate::Machine;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// First back-off after a failure; it doubles per failure in a row.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// Longest back-off after failures.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Back-off after the relay refused.
pub const REFUSED_BACKOFF: Duration = Duration::from_secs(60);
/// Back-off after a held reservation was lost (the relay restarting, say).
pub const LOST_BACKOFF: Duration = Duration::from_secs(1);
/// Failures in a row after which a relay no longer holds up
/// [`RelayPlan::settled`] (the first ones are quick: a busy relay can drop
/// a hop stream).
pub const SETTLE_FAILURES: u32 = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Not asked (beyond the target, or deferred until allowed).
    Standby,
    Pending,
    Held,
    Waiting {
        until: Instant,
    },
}

#[derive(Debug, Clone)]
struct Relay<R> {
    id: R,
    state: State,
    /// May be asked (a deferred relay waits for [`RelayPlan::allow`]).
    allowed: bool,
    failures: u32,
    refused: bool,
}

/// What the plan asks its owner to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayAction<R> {
    /// Ask this relay for a reservation.
    Reserve(R),
}

/// The relays and their reservations (see the module docs).
#[derive(Debug, Clone)]
pub struct RelayPlan<R> {
    relays: Vec<Relay<R>>,
    target: usize,
    actions: VecDeque<RelayAction<R>>,
}

impl<R: Copy + Eq> RelayPlan<R> {
    /// Relays in order of preference; reservations on up to `target` at
    /// once. With `deferred`, none is asked until [`Self::allow`]ed.
    pub fn new(relays: impl IntoIterator<Item = R>, target: usize, deferred: bool) -> Self {
        Self {
            relays: relays
                .into_iter()
                .map(|id| Relay {
                    id,
                    state: State::Standby,
                    allowed: !deferred,
                    failures: 0,
                    refused: false,
                })
                .collect(),
            target: target.max(1),
            actions: VecDeque::new(),
        }
    }

    fn get(&mut self, id: R) -> Option<&mut Relay<R>> {
        self.relays.iter_mut().find(|r| r.id == id)
    }

    /// A deferred relay may be asked now (its payment is in place); a
    /// refusal or back-off before is forgotten.
    pub fn allow(&mut self, id: R, now: Instant) {
        if let Some(r) = self.get(id) {
            r.allowed = true;
            r.refused = false;
            if let State::Waiting { .. } = r.state {
                r.state = State::Standby;
            }
        }
        self.fill(now);
    }

    /// `id` accepted (or renewed) our reservation.
    pub fn on_accepted(&mut self, id: R) {
        if let Some(r) = self.get(id) {
            r.state = State::Held;
            r.failures = 0;
            r.refused = false;
        }
    }

    /// Asking `id` failed (`refused`: the relay said no).
    pub fn on_failed(&mut self, id: R, refused: bool, now: Instant) {
        if let Some(r) = self.get(id) {
            r.failures = r.failures.saturating_add(1);
            r.refused = refused;
            let wait = if refused {
                REFUSED_BACKOFF
            } else {
                (FIRST_BACKOFF * (1 << (r.failures - 1).min(16))).min(MAX_BACKOFF)
            };
            r.state = State::Waiting { until: now + wait };
        }
        self.fill(now);
    }

    /// A held reservation on `id` ended (the relay went away).
    pub fn on_lost(&mut self, id: R, now: Instant) {
        if let Some(r) = self.get(id) {
            r.state = State::Waiting {
                until: now + LOST_BACKOFF,
            };
            r.failures = 0;
        }
        self.fill(now);
    }

    /// Asks relays, in order of preference, while fewer than the target are
    /// held or pending: a standby one, or one whose back-off is over.
    fn fill(&mut self, now: Instant) {
        let active = |rs: &[Relay<R>]| {
            rs.iter()
                .filter(|r| matches!(r.state, State::Pending | State::Held))
                .count()
        };
        while active(&self.relays) < self.target {
            let next = self.relays.iter_mut().find(|r| {
                r.allowed
                    && match r.state {
                        State::Standby => true,
                        State::Waiting { until } => until <= now,
                        _ => false,
                    }
            });
            let Some(r) = next else { break };
            r.state = State::Pending;
            self.actions.push_back(RelayAction::Reserve(r.id));
        }
    }

    /// The end of the earliest back-off, while fewer than the target are
    /// held or pending.
    fn next_wake(&self) -> Option<Instant> {
        let active = (self.relays.iter())
            .filter(|r| matches!(r.state, State::Pending | State::Held))
            .count();
        if active >= self.target {
            return None;
        }
        (self.relays.iter())
            .filter(|r| r.allowed)
            .filter_map(|r| match r.state {
                State::Waiting { until } => Some(until),
                _ => None,
            })
            .min()
    }

    /// Whether the first round has played out: no relay is being asked, and
    /// none is in its quick retries (after a refusal, or
    /// [`SETTLE_FAILURES`] failures in a row, a relay counts as settled).
    pub fn settled(&self) -> bool {
        self.relays
            .iter()
            .filter(|r| r.allowed)
            .all(|r| match r.state {
                State::Pending => false,
                State::Waiting { .. } => r.refused || r.failures >= SETTLE_FAILURES,
                State::Held | State::Standby => true,
            })
    }

    /// The relays reservations are held on.
    pub fn held(&self) -> impl Iterator<Item = R> + '_ {
        (self.relays.iter())
            .filter(|r| r.state == State::Held)
            .map(|r| r.id)
    }

    /// Whether `id` is held.
    pub fn is_held(&self, id: R) -> bool {
        self.relays
            .iter()
            .any(|r| r.id == id && r.state == State::Held)
    }
}

impl<R: Copy + Eq> Machine for RelayPlan<R> {
    type Action = RelayAction<R>;

    fn poll_action(&mut self) -> Option<RelayAction<R>> {
        self.actions.pop_front()
    }

    /// When a back-off ends while fewer than the target are held or pending.
    fn poll_timeout(&self) -> Option<Instant> {
        self.next_wake()
    }

    /// Relays whose back-off is over (and standby ones, while below the
    /// target) are asked.
    fn handle_timeout(&mut self, now: Instant) {
        self.fill(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ms` after the test's start.
    fn at(ms: u64) -> Instant {
        start() + Duration::from_millis(ms)
    }

    fn start() -> Instant {
        static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *START.get_or_init(Instant::now)
    }

    fn drain(p: &mut RelayPlan<u8>) -> Vec<u8> {
        std::iter::from_fn(|| p.poll_action())
            .map(|RelayAction::Reserve(r)| r)
            .collect()
    }

    #[test]
    fn holds_the_target_and_replaces_a_dead_relay_with_the_next() {
        let mut p = RelayPlan::new([1u8, 2, 3], 2, false);
        p.handle_timeout(at(0));
        assert_eq!(drain(&mut p), [1, 2], "the first two, in order");
        p.on_accepted(1);
        p.on_accepted(2);
        assert!(p.settled());
        assert_eq!(p.poll_timeout(), None, "at the target: nothing to wake for");
        // Relay 1 dies: relay 3 takes its place at once.
        p.on_lost(1, at(10_000));
        assert_eq!(drain(&mut p), [3]);
        p.on_accepted(3);
        assert_eq!(p.held().collect::<Vec<_>>(), [2, 3]);
        // Back at the target, relay 1 is not asked even after its back-off.
        p.handle_timeout(at(60_000));
        assert!(drain(&mut p).is_empty());
        // Relay 2 fails too: relay 1's back-off is over, so it is asked.
        p.on_lost(2, at(61_000));
        assert_eq!(drain(&mut p), [1]);
    }

    #[test]
    fn a_relay_that_comes_back_is_asked_again_with_back_off() {
        let mut p = RelayPlan::new([7u8], 2, false);
        p.handle_timeout(at(0));
        assert_eq!(drain(&mut p), [7]);
        p.on_accepted(7);
        p.on_lost(7, at(1_000));
        assert!(drain(&mut p).is_empty(), "waits out the back-off");
        assert_eq!(p.poll_timeout(), Some(at(1_000) + LOST_BACKOFF));
        p.handle_timeout(at(2_000));
        assert_eq!(drain(&mut p), [7]);
        // Still down: 250 ms, 500 ms, 1 s, … capped at 30 s.
        let mut now = 2_000;
        let mut waits = vec![];
        for _ in 0..10 {
            p.on_failed(7, false, at(now));
            let wake = p.poll_timeout().unwrap();
            waits.push(wake - at(now));
            now = (wake - start()).as_millis() as u64;
            p.handle_timeout(wake);
            assert_eq!(drain(&mut p), [7]);
        }
        assert_eq!(
            waits[..4],
            [250, 500, 1_000, 2_000].map(Duration::from_millis)
        );
        assert_eq!(*waits.last().unwrap(), MAX_BACKOFF);
        // Back: held, and the failures forgotten.
        p.on_accepted(7);
        assert!(p.is_held(7));
        p.on_failed(7, false, at(now));
        assert_eq!(p.poll_timeout(), Some(at(now) + FIRST_BACKOFF));
    }

    #[test]
    fn settled_after_a_refusal_or_the_quick_retries() {
        let mut p = RelayPlan::new([1u8, 2], 2, false);
        p.handle_timeout(at(0));
        drain(&mut p);
        assert!(!p.settled());
        p.on_failed(1, true, at(0));
        assert_eq!(p.poll_timeout(), Some(at(0) + REFUSED_BACKOFF));
        assert!(!p.settled(), "relay 2 is still being asked");
        // Relay 2's quick retries (all within relay 1's minute).
        let mut now = 0;
        for i in 0..SETTLE_FAILURES {
            assert!(!p.settled(), "after {i} failures");
            p.on_failed(2, false, at(now));
            now += 5_000;
            p.handle_timeout(at(now));
            assert_eq!(drain(&mut p), [2]);
        }
        p.on_failed(2, false, at(now));
        assert!(p.settled());
    }

    #[test]
    fn deferred_relays_wait_until_allowed() {
        let mut p = RelayPlan::new([1u8, 2], 2, true);
        p.handle_timeout(at(0));
        assert!(drain(&mut p).is_empty());
        assert!(p.settled(), "nothing asked yet");
        p.allow(2, at(5));
        assert_eq!(drain(&mut p), [2]);
        // Refused (not paid yet), then allowed again once paid: asked at once.
        p.on_failed(2, true, at(10));
        p.allow(2, at(20));
        assert_eq!(drain(&mut p), [2]);
    }
}
