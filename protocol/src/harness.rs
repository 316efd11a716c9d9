//! Two machines on one virtual clock: the test bench of the
//! [machine contract](crate::Machine).
//!
//! A [`Link`] says what each side's actions send to the other and how the
//! other takes a message in; [`Pair`] carries the messages with a one-way
//! delay, fires timers, and jumps the clock straight to whatever is due
//! next, so a minute of protocol runs in microseconds and every run is the
//! same. A side with many peers (a node and its observers) is one machine
//! standing for the crowd.
//!
//! ```text
//!   A ──poll_action──► Link::a_sends ──(delay)──► Link::b_takes ──► B
//!   A ◄── Link::a_takes ◄──(delay)── Link::b_sends ◄──poll_action── B
//!   clock: now → min(next delivery, A.poll_timeout, B.poll_timeout)
//! ```

use crate::Machine;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How a scenario joins two machines.
pub trait Link {
    /// One side.
    type A: Machine;
    /// The other side.
    type B: Machine;
    /// A message from A to B.
    type AtoB;
    /// A message from B to A.
    type BtoA;
    /// What A's `action` sends to B; `None` for an effect that stays local
    /// (the link may record it), or a message the link loses.
    fn a_sends(&mut self, action: <Self::A as Machine>::Action, now: Instant)
        -> Option<Self::AtoB>;
    /// What B's `action` sends to A (as [`Link::a_sends`]).
    fn b_sends(&mut self, action: <Self::B as Machine>::Action, now: Instant)
        -> Option<Self::BtoA>;
    /// B takes in a message from A.
    fn b_takes(&mut self, b: &mut Self::B, msg: Self::AtoB, now: Instant);
    /// A takes in a message from B.
    fn a_takes(&mut self, a: &mut Self::A, msg: Self::BtoA, now: Instant);
}

/// Steps at one instant before the harness calls a machine stuck: a timer
/// that stays due after it fired, or two sides answering each other
/// forever without time passing.
const STEPS_PER_INSTANT: usize = 100_000;

/// Two machines, their link and a virtual clock.
pub struct Pair<L: Link> {
    /// Side A.
    pub a: L::A,
    /// Side B.
    pub b: L::B,
    /// The link (and whatever the scenario records in it).
    pub link: L,
    /// One-way delay of every message.
    pub delay: Duration,
    start: Instant,
    now: Instant,
    for_b: VecDeque<(Instant, L::AtoB)>,
    for_a: VecDeque<(Instant, L::BtoA)>,
    delivered: u64,
}

impl<L: Link> Pair<L> {
    /// Joins `a` and `b` by `link`, messages taking `delay` each way; the
    /// clock starts at `start` (pass the instant the machines were made at).
    pub fn new(a: L::A, b: L::B, link: L, delay: Duration, start: Instant) -> Self {
        Self {
            a,
            b,
            link,
            delay,
            start,
            now: start,
            for_b: VecDeque::new(),
            for_a: VecDeque::new(),
            delivered: 0,
        }
    }

    /// The virtual time now.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Virtual time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// Messages delivered so far, both ways.
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// Messages in flight now.
    pub fn in_flight(&self) -> usize {
        self.for_a.len() + self.for_b.len()
    }

    /// Runs until nothing is left to do (no action, no message in flight,
    /// no timer) or the clock would pass `start + limit`; returns whether
    /// it went quiet.
    pub fn run_for(&mut self, limit: Duration) -> bool {
        let until = self.now + limit;
        self.run_until(until, |_| false)
    }

    /// Runs until `done` holds (checked after every step), everything is
    /// quiet, or the clock would pass `until`; returns whether `done` held.
    pub fn run_until_done(&mut self, limit: Duration, done: impl FnMut(&Self) -> bool) -> bool {
        let until = self.now + limit;
        let mut done = done;
        self.run_until(until, &mut done);
        done(self)
    }

    fn run_until(&mut self, until: Instant, mut done: impl FnMut(&Self) -> bool) -> bool {
        let mut steps_here = 0;
        loop {
            if done(self) {
                return false;
            }
            if self.step_now() {
                steps_here += 1;
                assert!(
                    steps_here < STEPS_PER_INSTANT,
                    "the machines never let time pass at {:?}",
                    self.elapsed()
                );
                continue;
            }
            let next = [
                self.for_b.front().map(|(t, _)| *t),
                self.for_a.front().map(|(t, _)| *t),
                self.a.poll_timeout(),
                self.b.poll_timeout(),
            ]
            .into_iter()
            .flatten()
            .min();
            match next {
                None => return true,
                Some(t) if t > until => {
                    self.now = until;
                    return false;
                }
                Some(t) => {
                    if t > self.now {
                        self.now = t;
                        steps_here = 0;
                    }
                }
            }
        }
    }

    /// Does whatever is due at this instant; whether anything was.
    fn step_now(&mut self) -> bool {
        let now = self.now;
        let mut did = false;
        while let Some(action) = self.a.poll_action() {
            did = true;
            if let Some(m) = self.link.a_sends(action, now) {
                self.for_b.push_back((now + self.delay, m));
            }
        }
        while let Some(action) = self.b.poll_action() {
            did = true;
            if let Some(m) = self.link.b_sends(action, now) {
                self.for_a.push_back((now + self.delay, m));
            }
        }
        if self.for_b.front().is_some_and(|(t, _)| *t <= now) {
            let (_, m) = self.for_b.pop_front().expect("checked");
            self.link.b_takes(&mut self.b, m, now);
            self.delivered += 1;
            return true;
        }
        if self.for_a.front().is_some_and(|(t, _)| *t <= now) {
            let (_, m) = self.for_a.pop_front().expect("checked");
            self.link.a_takes(&mut self.a, m, now);
            self.delivered += 1;
            return true;
        }
        if self.a.poll_timeout().is_some_and(|t| t <= now) {
            self.a.handle_timeout(now);
            return true;
        }
        if self.b.poll_timeout().is_some_and(|t| t <= now) {
            self.b.handle_timeout(now);
            return true;
        }
        did
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends `n` pings, one per `every`; each is answered with a pong.
    struct Pinger {
        next: Option<Instant>,
        every: Duration,
        left: u32,
        out: VecDeque<u32>,
        pongs: Vec<(u32, Instant)>,
    }

    impl Machine for Pinger {
        type Action = u32;
        fn poll_action(&mut self) -> Option<u32> {
            self.out.pop_front()
        }
        fn poll_timeout(&self) -> Option<Instant> {
            self.next
        }
        fn handle_timeout(&mut self, now: Instant) {
            if self.next.is_some_and(|t| t <= now) {
                self.out.push_back(self.left);
                self.left -= 1;
                self.next = (self.left > 0).then(|| now + self.every);
            }
        }
    }

    /// Answers each ping at once.
    #[derive(Default)]
    struct Ponger(VecDeque<u32>);

    impl Machine for Ponger {
        type Action = u32;
        fn poll_action(&mut self) -> Option<u32> {
            self.0.pop_front()
        }
        fn poll_timeout(&self) -> Option<Instant> {
            None
        }
        fn handle_timeout(&mut self, _: Instant) {}
    }

    struct Wire {
        lose_every: u32,
    }

    impl Link for Wire {
        type A = Pinger;
        type B = Ponger;
        type AtoB = u32;
        type BtoA = u32;
        fn a_sends(&mut self, n: u32, _: Instant) -> Option<u32> {
            (self.lose_every == 0 || !n.is_multiple_of(self.lose_every)).then_some(n)
        }
        fn b_sends(&mut self, n: u32, _: Instant) -> Option<u32> {
            Some(n)
        }
        fn b_takes(&mut self, b: &mut Ponger, n: u32, _: Instant) {
            b.0.push_back(n);
        }
        fn a_takes(&mut self, a: &mut Pinger, n: u32, now: Instant) {
            a.pongs.push((n, now));
        }
    }

    fn pair(lose_every: u32) -> Pair<Wire> {
        let t0 = Instant::now();
        let a = Pinger {
            next: Some(t0),
            every: Duration::from_secs(10),
            left: 6,
            out: VecDeque::new(),
            pongs: vec![],
        };
        Pair::new(
            a,
            Ponger::default(),
            Wire { lose_every },
            Duration::from_millis(40),
            t0,
        )
    }

    #[test]
    fn time_jumps_to_each_deadline_and_delivery() {
        let mut p = pair(0);
        assert!(p.run_for(Duration::from_secs(3600)), "it goes quiet");
        let rtts: Vec<Duration> = p.a.pongs.iter().map(|(_, at)| *at - p.start).collect();
        let want: Vec<Duration> = (0..6)
            .map(|i| Duration::from_secs(10 * i) + Duration::from_millis(80))
            .collect();
        assert_eq!(rtts, want, "each pong one round trip after its ping");
        assert_eq!(p.elapsed(), Duration::from_millis(50_080));
        assert_eq!(p.delivered(), 12);
    }

    #[test]
    fn a_link_may_lose_messages_and_a_run_stops_at_its_limit() {
        let mut p = pair(2);
        assert!(!p.run_for(Duration::from_secs(25)), "still busy at 25 s");
        assert_eq!(p.elapsed(), Duration::from_secs(25));
        assert!(p.run_for(Duration::from_secs(3600)));
        let got: Vec<u32> = p.a.pongs.iter().map(|(n, _)| *n).collect();
        assert_eq!(got, vec![5, 3, 1], "the even pings were lost");
        let mut q = pair(0);
        assert!(q.run_until_done(Duration::from_secs(3600), |p| p.a.pongs.len() == 2));
        assert_eq!(q.elapsed(), Duration::from_millis(10_080));
    }

    #[test]
    #[should_panic(expected = "never let time pass")]
    fn a_timer_that_stays_due_is_caught() {
        struct Stuck(Instant);
        impl Machine for Stuck {
            type Action = u32;
            fn poll_action(&mut self) -> Option<u32> {
                None
            }
            fn poll_timeout(&self) -> Option<Instant> {
                Some(self.0)
            }
            fn handle_timeout(&mut self, _: Instant) {}
        }
        struct Nothing;
        impl Link for Nothing {
            type A = Stuck;
            type B = Ponger;
            type AtoB = u32;
            type BtoA = u32;
            fn a_sends(&mut self, n: u32, _: Instant) -> Option<u32> {
                Some(n)
            }
            fn b_sends(&mut self, n: u32, _: Instant) -> Option<u32> {
                Some(n)
            }
            fn b_takes(&mut self, _: &mut Ponger, _: u32, _: Instant) {}
            fn a_takes(&mut self, _: &mut Stuck, _: u32, _: Instant) {}
        }
        let t0 = Instant::now();
        let mut p = Pair::new(Stuck(t0), Ponger::default(), Nothing, Duration::ZERO, t0);
        p.run_for(Duration::from_secs(1));
    }
}
