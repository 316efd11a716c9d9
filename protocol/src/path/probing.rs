//! The easy side's probing in one hard-NAT attempt, once the hard side said
//! `Go`: the probe ports in waves (one wave every interval), stopped as soon
//! as a direct connection comes in; then the report to the hard side; then
//! a wait for the direct connection, at most an attempt's length.
//!
//! ```text
//!   wave ─(interval)─► wave ─ … ─► last wave ──► Report ──► wait ──up──► Done(direct)
//!     └──────────── up ─────────────────────────► Report ──► Done(direct)
//!                                                    wait ──attempt's length──► Done(no direct)
//! ```
//!
//! The driver sends each wave's probes (from the QUIC listen socket), the
//! report (`Probed`, with how many probes it queued) and says when the
//! direct connection is up.

use super::hardnat::{Plan, ATTEMPT};
use crate::Machine;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// What the driver does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeAction {
    /// Probe these ports of the hard side's address.
    Probe(Vec<u16>),
    /// Tell the hard side the probing is over, after `ms`.
    Report {
        /// From the first wave to the report.
        ms: u32,
    },
    /// The attempt's end: whether a direct connection came.
    Done {
        /// A direct connection is up.
        direct: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// The next wave goes at `at`.
    Waves {
        at: Instant,
    },
    /// Reported; a direct connection may come until `until`.
    Waiting {
        until: Instant,
    },
    Done,
}

/// The easy side's probing (see the module docs).
#[derive(Debug)]
pub struct Probing {
    ports: Vec<u16>,
    sent: usize,
    wave: usize,
    every: Duration,
    started: Instant,
    state: State,
    actions: VecDeque<ProbeAction>,
}

impl Probing {
    /// Starts at `now` with `ports` to probe, in `plan`'s waves; the first
    /// wave goes at once.
    pub fn new(now: Instant, ports: Vec<u16>, plan: &Plan) -> Self {
        let mut me = Self {
            ports,
            sent: 0,
            wave: usize::from(plan.wave.max(1)),
            every: Duration::from_millis(plan.wave_interval_ms),
            started: now,
            state: State::Waves { at: now },
            actions: VecDeque::new(),
        };
        me.handle_timeout(now);
        me
    }

    /// A direct connection to the hard side is up.
    pub fn handle_direct(&mut self, now: Instant) {
        match self.state {
            State::Waves { .. } => {
                self.report(now);
                self.finish(true);
            }
            State::Waiting { .. } => self.finish(true),
            State::Done => {}
        }
    }

    fn report(&mut self, now: Instant) {
        let ms = now.saturating_duration_since(self.started).as_millis();
        let ms = u32::try_from(ms).unwrap_or(u32::MAX);
        self.actions.push_back(ProbeAction::Report { ms });
    }

    fn finish(&mut self, direct: bool) {
        self.state = State::Done;
        self.actions.push_back(ProbeAction::Done { direct });
    }
}

impl Machine for Probing {
    type Action = ProbeAction;

    fn poll_action(&mut self) -> Option<ProbeAction> {
        self.actions.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Waves { at } => Some(at),
            State::Waiting { until } => Some(until),
            State::Done => None,
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        match self.state {
            State::Waves { at } if now >= at => {
                let end = (self.sent + self.wave).min(self.ports.len());
                let wave = self.ports[self.sent..end].to_vec();
                self.sent = end;
                if !wave.is_empty() {
                    self.actions.push_back(ProbeAction::Probe(wave));
                }
                if self.sent < self.ports.len() {
                    self.state = State::Waves {
                        at: at + self.every,
                    };
                } else {
                    self.report(now);
                    let until = now + ATTEMPT;
                    self.state = State::Waiting { until };
                }
            }
            State::Waiting { until } if now >= until => self.finish(false),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    /// Runs the machine on a virtual clock until it is done; the direct
    /// connection comes `up` after the start (if ever). Returns each action
    /// with its time from the start.
    fn run(ports: u16, plan: Plan, up: Option<Duration>) -> Vec<(Duration, ProbeAction)> {
        let t0 = Instant::now();
        let ports: Vec<u16> = (0..ports).map(|p| 10_000 + p).collect();
        let mut m = Probing::new(t0, ports, &plan);
        let mut up = up.map(|d| t0 + d);
        let mut log = vec![];
        let mut now = t0;
        loop {
            while let Some(a) = m.poll_action() {
                let done = matches!(a, ProbeAction::Done { .. });
                log.push((now - t0, a));
                if done {
                    return log;
                }
            }
            let timer = m
                .poll_timeout()
                .expect("a machine not done waits for something");
            match up {
                Some(at) if at <= timer => {
                    now = at;
                    up = None;
                    m.handle_direct(now);
                }
                _ => {
                    now = timer;
                    m.handle_timeout(now);
                }
            }
        }
    }

    fn plan(wave: u16, every_ms: u64) -> Plan {
        Plan {
            wave,
            wave_interval_ms: every_ms,
            ..Plan::new(256, 512)
        }
    }

    #[test]
    fn every_port_is_probed_in_waves_then_reported_and_a_late_connection_is_taken() {
        let log = run(300, plan(128, 25), Some(MS(2_000)));
        let waves: Vec<(Duration, usize)> = (log.iter())
            .filter_map(|(t, a)| match a {
                ProbeAction::Probe(p) => Some((*t, p.len())),
                _ => None,
            })
            .collect();
        assert_eq!(waves, [(MS(0), 128), (MS(25), 128), (MS(50), 44)]);
        let probed: Vec<u16> = (log.iter())
            .flat_map(|(_, a)| match a {
                ProbeAction::Probe(p) => p.clone(),
                _ => vec![],
            })
            .collect();
        assert_eq!(probed, (0..300).map(|p| 10_000 + p).collect::<Vec<_>>());
        assert_eq!(log[3], (MS(50), ProbeAction::Report { ms: 50 }));
        assert_eq!(log[4], (MS(2_000), ProbeAction::Done { direct: true }));
    }

    #[test]
    fn a_connection_during_the_waves_stops_the_probing_at_once() {
        let log = run(512, plan(128, 25), Some(MS(30)));
        assert_eq!(
            log,
            [
                (MS(0), ProbeAction::Probe((10_000..10_128).collect())),
                (MS(25), ProbeAction::Probe((10_128..10_256).collect())),
                (MS(30), ProbeAction::Report { ms: 30 }),
                (MS(30), ProbeAction::Done { direct: true }),
            ]
        );
    }

    #[test]
    fn without_a_connection_the_attempt_ends_an_attempts_length_after_the_report() {
        let log = run(256, plan(128, 25), None);
        let report = (MS(25), ProbeAction::Report { ms: 25 });
        assert_eq!(log[2], report);
        let end = MS(25) + ATTEMPT;
        assert_eq!(
            log.last(),
            Some(&(end, ProbeAction::Done { direct: false }))
        );
    }

    /// The probing against the hard side on the two-party harness: the
    /// hard side's NAT has mapped `mapped` ports; the first probe to hit
    /// one makes the direct connection, which the easy side learns of one
    /// link delay later. Probes already sent meanwhile still arrive.
    mod on_the_harness {
        use super::*;
        use crate::harness::{Link, Pair};
        use std::collections::HashSet;

        enum ToHard {
            Probes(Vec<u16>),
            Report(u32),
        }

        /// The hard side: which probes reached it, and the report.
        struct Hard {
            mapped: HashSet<u16>,
            probes_seen: usize,
            hit_at: Option<Instant>,
            reported: Option<u32>,
            up: bool,
        }

        impl Machine for Hard {
            /// The direct connection is up.
            type Action = ();
            fn poll_action(&mut self) -> Option<()> {
                std::mem::take(&mut self.up).then_some(())
            }
            fn poll_timeout(&self) -> Option<Instant> {
                None
            }
            fn handle_timeout(&mut self, _: Instant) {}
        }

        #[derive(Default)]
        struct Wire {
            done: Option<(Instant, bool)>,
        }

        impl Link for Wire {
            type A = Probing;
            type B = Hard;
            type AtoB = ToHard;
            type BtoA = ();
            fn a_sends(&mut self, action: ProbeAction, now: Instant) -> Option<ToHard> {
                match action {
                    ProbeAction::Probe(ports) => Some(ToHard::Probes(ports)),
                    ProbeAction::Report { ms } => Some(ToHard::Report(ms)),
                    ProbeAction::Done { direct } => {
                        self.done = Some((now, direct));
                        None
                    }
                }
            }
            fn b_sends(&mut self, (): (), _: Instant) -> Option<()> {
                Some(())
            }
            fn b_takes(&mut self, hard: &mut Hard, msg: ToHard, now: Instant) {
                match msg {
                    ToHard::Probes(ports) => {
                        hard.probes_seen += ports.len();
                        let hit = ports.iter().any(|p| hard.mapped.contains(p));
                        if hit && hard.hit_at.is_none() {
                            hard.hit_at = Some(now);
                            hard.up = true;
                        }
                    }
                    ToHard::Report(ms) => hard.reported = Some(ms),
                }
            }
            fn a_takes(&mut self, easy: &mut Probing, (): (), now: Instant) {
                easy.handle_direct(now);
            }
        }

        /// 1024 probe ports in waves of 128 every 25 ms, 40 ms each way.
        fn attempt(mapped: &[u16]) -> Pair<Wire> {
            let t0 = Instant::now();
            let ports: Vec<u16> = (0..1024).map(|p| 10_000 + p).collect();
            let easy = Probing::new(t0, ports, &plan(128, 25));
            let hard = Hard {
                mapped: mapped.iter().copied().collect(),
                probes_seen: 0,
                hit_at: None,
                reported: None,
                up: false,
            };
            let mut pair = Pair::new(easy, hard, Wire::default(), MS(40), t0);
            assert!(pair.run_for(Duration::from_secs(60)), "the attempt ends");
            pair
        }

        #[test]
        fn a_hit_in_the_second_wave_stops_the_waves_one_round_trip_later() {
            // Port 10_200 goes in the second wave (25 ms), reaches the hard
            // side at 65 ms; the easy side hears of the connection at
            // 105 ms, after the waves of 0, 25, 50, 75 and 100 ms.
            let pair = attempt(&[10_200, 10_900]);
            let t0 = pair.now() - pair.elapsed();
            let (done_at, direct) = pair.link.done.expect("done");
            assert!(direct);
            assert_eq!(done_at - t0, MS(105));
            assert_eq!(pair.b.hit_at.map(|t| t - t0), Some(MS(65)));
            assert_eq!(pair.b.probes_seen, 5 * 128, "no wave after the news");
            assert_eq!(pair.b.reported, Some(105));
        }

        #[test]
        fn no_hit_sends_every_probe_reports_and_ends_without_a_direct_path() {
            let pair = attempt(&[]);
            let t0 = pair.now() - pair.elapsed();
            let (done_at, direct) = pair.link.done.expect("done");
            assert!(!direct);
            assert_eq!(pair.b.probes_seen, 1024);
            assert_eq!(pair.b.reported, Some(175), "eight waves, 25 ms apart");
            assert_eq!(done_at - t0, MS(175) + ATTEMPT);
        }
    }
}
