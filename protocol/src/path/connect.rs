//! How a buyer connects to a provider: its direct addresses first, with a
//! head start, then every address at once (relay circuits included), so
//! that a reachable provider is never reached through a relay by accident
//! of timing and an unreachable one costs only the head start. A provider
//! that is restarting (or re-reserving on its relay) is unreachable for a
//! moment: a few rounds, backing off, before giving up. A failure that
//! asking again cannot mend (every address private, where only a flag can
//! help) ends it at once.
//!
//! The driver dials what [`ConnectAction::Dial`] says, dropping a dial
//! still running when a new one is asked for, and reports each dial's end.

use crate::Machine;
use std::time::{Duration, Instant};

/// How long direct addresses are tried alone.
pub const DIRECT_HEAD_START: Duration = Duration::from_millis(500);
/// Rounds of dialing before giving up (0.5 + 1 + 2 + 4 s apart).
pub const CONNECT_ATTEMPTS: u32 = 5;
/// The first pause between rounds; each next one doubles.
pub const FIRST_BACK_OFF: Duration = Duration::from_millis(500);

/// Which of the provider's addresses to dial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Addrs {
    /// Its direct addresses alone.
    Direct,
    /// Every address, circuits included.
    All,
}

/// How a dial ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialed {
    /// The provider is connected.
    Up,
    /// It failed; another round may succeed.
    Failed,
    /// It failed in a way no further round can mend.
    FailedForGood,
}

/// What the driver does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectAction {
    /// Dial these addresses (dropping a dial still running).
    Dial(Addrs),
    /// Connected: done.
    Connected,
    /// Given up: the last dial's error is the answer.
    GaveUp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Direct addresses alone, until the head start ends.
    HeadStart {
        until: Instant,
    },
    /// Every address; waiting for the dial's end.
    All,
    /// Between rounds.
    Pausing {
        until: Instant,
    },
    Done,
}

/// One connection attempt to a provider.
#[derive(Debug)]
pub struct Connect {
    has_direct: bool,
    round: u32,
    pause: Duration,
    state: State,
    next: Option<ConnectAction>,
}

impl Connect {
    /// Starts connecting at `now`; `has_direct`: the provider has addresses
    /// other than relay circuits.
    pub fn new(now: Instant, has_direct: bool) -> Self {
        let mut me = Self {
            has_direct,
            round: 1,
            pause: FIRST_BACK_OFF,
            state: State::Done,
            next: None,
        };
        me.start_round(now);
        me
    }

    fn start_round(&mut self, now: Instant) {
        if self.has_direct {
            self.state = State::HeadStart {
                until: now + DIRECT_HEAD_START,
            };
            self.next = Some(ConnectAction::Dial(Addrs::Direct));
        } else {
            self.state = State::All;
            self.next = Some(ConnectAction::Dial(Addrs::All));
        }
    }

    fn finish(&mut self, action: ConnectAction) {
        self.state = State::Done;
        self.next = Some(action);
    }

    /// The dial of `addrs` ended at `now` as `how`. A direct dial that
    /// fails inside its head start moves on to every address at once.
    pub fn handle_dialed(&mut self, now: Instant, addrs: Addrs, how: Dialed) {
        match (self.state, addrs, how) {
            (State::Done, ..) => {}
            (_, _, Dialed::Up) => self.finish(ConnectAction::Connected),
            (State::HeadStart { .. }, Addrs::Direct, _) => {
                self.state = State::All;
                self.next = Some(ConnectAction::Dial(Addrs::All));
            }
            (State::All, Addrs::All, _) if how == Dialed::FailedForGood => {
                self.finish(ConnectAction::GaveUp)
            }
            (State::All, Addrs::All, _) if self.round >= CONNECT_ATTEMPTS => {
                self.finish(ConnectAction::GaveUp)
            }
            (State::All, Addrs::All, _) => {
                self.state = State::Pausing {
                    until: now + self.pause,
                };
                self.pause *= 2;
                self.round += 1;
            }
            // A stale report (a dial already dropped).
            _ => {}
        }
    }

    /// Which round this is (from 1).
    pub fn round(&self) -> u32 {
        self.round
    }
}

impl Machine for Connect {
    type Action = ConnectAction;

    fn poll_action(&mut self) -> Option<ConnectAction> {
        self.next.take()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::HeadStart { until } | State::Pausing { until } => Some(until),
            State::All | State::Done => None,
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        match self.state {
            State::HeadStart { until } if now >= until => {
                self.state = State::All;
                self.next = Some(ConnectAction::Dial(Addrs::All));
            }
            State::Pausing { until } if now >= until => self.start_round(now),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::{Link, Pair};

    const MS: fn(u64) -> Duration = Duration::from_millis;

    /// The network as the buyer's dials meet it, on the two-party harness:
    /// a dial of `addrs` in round `round` ends after `answer(round, addrs)`
    /// (or never); a new dial drops the one still running.
    /// How the network answers a dial: after how long, and how.
    type Answer = Box<dyn Fn(u32, Addrs) -> Option<(Duration, Dialed)>>;

    struct Network {
        answer: Answer,
        round: u32,
        last: Option<Addrs>,
        running: Option<(Instant, Addrs, Dialed)>,
        ended: Option<(Addrs, Dialed)>,
    }

    impl Network {
        /// A dial starts: a direct one opens a round, and so does a dial
        /// of every address that no direct one went before.
        fn dial(&mut self, addrs: Addrs, now: Instant) {
            if addrs == Addrs::Direct || self.last != Some(Addrs::Direct) {
                self.round += 1;
            }
            self.last = Some(addrs);
            self.running =
                (self.answer)(self.round, addrs).map(|(after, how)| (now + after, addrs, how));
        }
    }

    impl Machine for Network {
        type Action = (Addrs, Dialed);
        fn poll_action(&mut self) -> Option<(Addrs, Dialed)> {
            self.ended.take()
        }
        fn poll_timeout(&self) -> Option<Instant> {
            self.running.map(|(at, ..)| at)
        }
        fn handle_timeout(&mut self, now: Instant) {
            if let Some((at, addrs, how)) = self.running {
                if at <= now {
                    self.running = None;
                    self.ended = Some((addrs, how));
                }
            }
        }
    }

    /// Records the buyer's actions with their time from the start.
    struct Log {
        t0: Instant,
        actions: Vec<(Duration, ConnectAction)>,
        over: bool,
    }

    impl Link for Log {
        type A = Connect;
        type B = Network;
        type AtoB = Addrs;
        type BtoA = (Addrs, Dialed);
        fn a_sends(&mut self, action: ConnectAction, now: Instant) -> Option<Addrs> {
            self.actions.push((now - self.t0, action));
            match action {
                ConnectAction::Dial(addrs) => Some(addrs),
                ConnectAction::Connected | ConnectAction::GaveUp => {
                    self.over = true;
                    None
                }
            }
        }
        fn b_sends(&mut self, ended: (Addrs, Dialed), _: Instant) -> Option<(Addrs, Dialed)> {
            Some(ended)
        }
        fn b_takes(&mut self, net: &mut Network, addrs: Addrs, now: Instant) {
            net.dial(addrs, now);
        }
        fn a_takes(&mut self, m: &mut Connect, (addrs, how): (Addrs, Dialed), now: Instant) {
            m.handle_dialed(now, addrs, how);
        }
    }

    /// Plays the buyer against a network that answers as `answer` says
    /// (dials and their ends take no extra time on the link); the actions
    /// with the virtual time they were taken at, from the start.
    fn play(
        has_direct: bool,
        answer: impl Fn(u32, Addrs) -> Option<(Duration, Dialed)> + 'static,
    ) -> Vec<(Duration, ConnectAction)> {
        let t0 = Instant::now();
        let net = Network {
            answer: Box::new(answer),
            round: 0,
            last: None,
            running: None,
            ended: None,
        };
        let log = Log {
            t0,
            actions: vec![],
            over: false,
        };
        let mut pair = Pair::new(Connect::new(t0, has_direct), net, log, Duration::ZERO, t0);
        let over = pair.run_until_done(Duration::from_secs(60), |p| p.link.over);
        assert!(over, "no end: {:?}", pair.link.actions);
        pair.link.actions
    }

    use ConnectAction::*;

    #[test]
    fn a_direct_answer_inside_the_head_start_never_dials_the_circuits() {
        let log = play(true, |_, addrs| match addrs {
            Addrs::Direct => Some((MS(120), Dialed::Up)),
            Addrs::All => panic!("circuits dialed"),
        });
        assert_eq!(log, [(MS(0), Dial(Addrs::Direct)), (MS(120), Connected)]);
    }

    #[test]
    fn a_silent_direct_address_costs_only_the_head_start() {
        let log = play(true, |_, addrs| match addrs {
            Addrs::Direct => None,
            Addrs::All => Some((MS(80), Dialed::Up)),
        });
        assert_eq!(
            log,
            [
                (MS(0), Dial(Addrs::Direct)),
                (DIRECT_HEAD_START, Dial(Addrs::All)),
                (DIRECT_HEAD_START + MS(80), Connected)
            ]
        );
    }

    #[test]
    fn a_quick_direct_refusal_moves_on_to_every_address_at_once() {
        let log = play(true, |_, addrs| match addrs {
            Addrs::Direct => Some((MS(5), Dialed::Failed)),
            Addrs::All => Some((MS(50), Dialed::Up)),
        });
        assert_eq!(
            log,
            [
                (MS(0), Dial(Addrs::Direct)),
                (MS(5), Dial(Addrs::All)),
                (MS(55), Connected)
            ]
        );
    }

    #[test]
    fn a_provider_coming_back_is_reached_in_a_later_round_after_backing_off() {
        // Down for the first three rounds, up in the fourth.
        let log = play(false, |round, _| match round {
            1..=3 => Some((MS(10), Dialed::Failed)),
            _ => Some((MS(10), Dialed::Up)),
        });
        let dials: Vec<Duration> = (log.iter())
            .filter(|(_, a)| *a == Dial(Addrs::All))
            .map(|(t, _)| *t)
            .collect();
        // Each round: a 10 ms dial, then 0.5, 1, 2 s apart.
        assert_eq!(dials, [MS(0), MS(510), MS(1520), MS(3530)]);
        assert_eq!(log.last(), Some(&(MS(3540), Connected)));
    }

    #[test]
    fn it_gives_up_after_five_rounds() {
        let log = play(true, |_, _| Some((MS(1), Dialed::Failed)));
        let rounds = (log.iter()).filter(|(_, a)| *a == Dial(Addrs::All)).count();
        assert_eq!(rounds as u32, CONNECT_ATTEMPTS);
        assert_eq!(log.last().map(|(_, a)| *a), Some(GaveUp));
    }

    #[test]
    fn a_failure_no_round_can_mend_gives_up_at_once() {
        let log = play(false, |_, _| Some((MS(1), Dialed::FailedForGood)));
        assert_eq!(log, [(MS(0), Dial(Addrs::All)), (MS(1), GaveUp)]);
    }
}
