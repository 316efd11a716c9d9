use super::*;

fn o(observer: &str, addr: &str) -> Observation {
    Observation {
        observer: observer.into(),
        addr: addr.parse().unwrap(),
        reachable: None,
    }
}

#[test]
fn quorum_is_two_thirds_rounded_up() {
    let p = ConsensusPolicy::default();
    assert_eq!(p.quorum_for(3), 2);
    assert_eq!(p.quorum_for(4), 3);
    assert_eq!(p.quorum_for(5), 4);
    assert_eq!(p.quorum_for(6), 4);
    assert_eq!(
        ConsensusPolicy {
            quorum: Some(3),
            ..Default::default()
        }
        .quorum_for(5),
        3
    );
}

#[test]
fn honest_observers_agree_on_ip_and_port() {
    let v = decide(
        &[
            o("a", "203.0.113.5:4001"),
            o("b", "203.0.113.5:4001"),
            o("c", "203.0.113.5:4001"),
        ],
        &Default::default(),
    );
    assert_eq!(v.ip, Some("203.0.113.5".parse().unwrap()));
    assert_eq!(v.addr, Some("203.0.113.5:4001".parse().unwrap()));
    assert_eq!(v.mapping, Mapping::EndpointIndependent);
    assert_eq!((v.observers, v.agreeing), (3, 3));
}

#[test]
fn a_lying_observer_among_five_changes_nothing() {
    let honest = "203.0.113.5:4001";
    for liar in ["198.51.100.66:4001", "203.0.113.5:9999", "192.0.2.1:1"] {
        let v = decide(
            &[
                o("a", honest),
                o("b", honest),
                o("c", liar),
                o("d", honest),
                o("e", honest),
            ],
            &Default::default(),
        );
        assert_eq!(v.addr, Some(honest.parse().unwrap()), "liar {liar}");
        assert_eq!(v.mapping, Mapping::EndpointIndependent);
    }
}

#[test]
fn two_colluding_liars_among_five_cannot_install_their_address() {
    let v = decide(
        &[
            o("a", "203.0.113.5:4001"),
            o("b", "203.0.113.5:4001"),
            o("c", "203.0.113.5:4001"),
            o("x", "198.51.100.66:4001"),
            o("y", "198.51.100.66:4001"),
        ],
        &Default::default(),
    );
    // 3 of 5 is below ⌈10/3⌉ = 4: no address rather than a contested one.
    assert_eq!(v.ip, None);
    assert_eq!(v.mapping, Mapping::Unknown);
    assert_eq!(v.reason, Reason::NoQuorum);
}

#[test]
fn three_disagreeing_observers_give_unknown_not_a_guess() {
    let v = decide(
        &[
            o("a", "203.0.113.5:4001"),
            o("b", "198.51.100.7:4001"),
            o("c", "192.0.2.9:4001"),
        ],
        &Default::default(),
    );
    assert_eq!(v.ip, None);
    assert_eq!(v.mapping, Mapping::Unknown);
    assert_eq!(v.reason, Reason::NoQuorum);
}

#[test]
fn too_few_observers_give_unknown() {
    let v = decide(
        &[o("a", "203.0.113.5:4001"), o("b", "203.0.113.5:4001")],
        &Default::default(),
    );
    assert_eq!(v.reason, Reason::TooFewObservers);
    assert_eq!(v.mapping, Mapping::Unknown);
    // The same observer twice counts once.
    let v = decide(
        &[
            o("a", "203.0.113.5:4001"),
            o("a", "203.0.113.5:4001"),
            o("b", "203.0.113.5:4001"),
        ],
        &Default::default(),
    );
    assert_eq!(v.reason, Reason::TooFewObservers);
}

#[test]
fn same_ip_different_ports_is_endpoint_dependent() {
    let v = decide(
        &[
            o("a", "203.0.113.5:40001"),
            o("b", "203.0.113.5:51234"),
            o("c", "203.0.113.5:33333"),
        ],
        &Default::default(),
    );
    assert_eq!(v.ip, Some("203.0.113.5".parse().unwrap()));
    assert_eq!(v.addr, None);
    assert_eq!(v.mapping, Mapping::EndpointDependent);
    assert!(!v.mapping.allows_direct());
}

#[test]
fn split_answers_without_quorum_give_unknown() {
    let v = decide(
        &[
            o("a", "203.0.113.5:4001"),
            o("b", "203.0.113.5:4001"),
            o("c", "198.51.100.7:4001"),
            o("d", "198.51.100.7:4001"),
        ],
        &Default::default(),
    );
    assert_eq!(v.ip, None);
    assert_eq!(v.agreeing, 2);
}

#[test]
fn ipv6_is_decided_like_ipv4() {
    let obs = [
        o("a", "[2001:db8::5]:4001"),
        o("b", "[2001:db8::5]:4001"),
        o("c", "[2001:db8::5]:4001"),
    ];
    let v6 = decide(&obs, &Default::default());
    assert_eq!(v6.addr, Some("[2001:db8::5]:4001".parse().unwrap()));
    assert_eq!(v6.mapping, Mapping::EndpointIndependent);
}

#[test]
fn the_quorum_is_over_the_observers_asked_not_the_answers() {
    // K = 5: two liars answer alike, two honest observers time out, one
    // honest answers. Over the answers (3) the liars would have 2 of 3.
    let answers = [
        o("liar1", "203.0.113.66:1"),
        o("liar2", "203.0.113.66:1"),
        o("honest", "198.51.100.7:4001"),
    ];
    let v = decide_among(5, &answers, &Default::default());
    assert_eq!(
        v.ip, None,
        "no quorum of 4 out of 5: never the liars' address"
    );
    assert_eq!((v.observers, v.answered, v.agreeing), (5, 3, 2));
    assert_eq!(v.reason, Reason::NoQuorum);
    // Over the answers alone they would have won: the bug this guards.
    assert_eq!(
        decide(&answers, &Default::default()).ip,
        Some("203.0.113.66".parse().unwrap())
    );
}

#[test]
fn reachability_needs_a_quorum_of_dial_backs() {
    let mut obs = vec![
        o("a", "203.0.113.5:4001"),
        o("b", "203.0.113.5:4001"),
        o("c", "203.0.113.5:4001"),
    ];
    obs[0].reachable = Some(false);
    obs[1].reachable = Some(false);
    obs[2].reachable = Some(true);
    assert_eq!(decide(&obs, &Default::default()).reachable, Some(false));
    obs[1].reachable = Some(true);
    assert_eq!(decide(&obs, &Default::default()).reachable, Some(true));
    obs[0].reachable = None;
    obs[1].reachable = Some(false);
    assert_eq!(
        decide(&obs, &Default::default()).reachable,
        None,
        "1 to 1 is no verdict"
    );
}

mod round_and_rechecks {
    use super::super::*;
    use crate::Machine;
    use libp2p_identity::PeerId;
    use std::time::{Duration, Instant};

    /// `ms` after this test run's start, on the virtual clock.
    fn t(ms: u64) -> Instant {
        static T0: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *T0.get_or_init(Instant::now) + Duration::from_millis(ms)
    }

    fn peers(n: usize) -> Vec<PeerId> {
        let mut v: Vec<PeerId> = (0..n).map(|_| PeerId::random()).collect();
        v.sort();
        v
    }

    const TCP4: Group = Group {
        udp: false,
        v6: Some(false),
    };
    const UDP4: Group = Group {
        udp: true,
        v6: Some(false),
    };

    fn over(group: Group, peers: &[PeerId]) -> Vec<(PeerId, Group)> {
        peers.iter().map(|p| (*p, group)).collect()
    }

    fn asks(round: &mut Round) -> Vec<PeerId> {
        std::iter::from_fn(|| round.poll_action())
            .map(|RoundAction::Ask { observer }| observer)
            .collect()
    }

    #[test]
    fn a_silent_observer_times_out_and_counts_against_every_address() {
        let me = PeerId::random();
        let obs = peers(4);
        let mut all = obs.clone();
        all.push(me);
        all.push(obs[0]);
        let mut round = Round::new(
            t(1_000),
            me,
            4,
            over(TCP4, &all),
            ConsensusPolicy::default(),
            Duration::from_millis(20_000),
        );
        let asked = asks(&mut round);
        assert_eq!(asked.len(), 4, "ourselves and the duplicate are skipped");
        let honest: std::net::SocketAddr = "198.51.100.7:4001".parse().unwrap();
        round.on_answer(obs[0], honest, false, Some(true));
        round.on_answer(obs[1], honest, false, Some(true));
        round.on_answer(obs[2], "203.0.113.66:1".parse().unwrap(), false, Some(true));
        // A stranger's answer and a second answer are ignored.
        round.on_answer(
            PeerId::random(),
            "203.0.113.66:1".parse().unwrap(),
            false,
            None,
        );
        round.on_answer(obs[2], honest, false, None);
        assert!(!round.is_done());
        assert_eq!(round.poll_timeout(), Some(t(21_000)));
        round.handle_timeout(t(20_999));
        assert!(!round.is_done(), "not before the deadline");
        round.handle_timeout(t(21_000));
        assert!(round.is_done());
        assert_eq!(round.poll_timeout(), None);
        let out = round.outcome();
        assert_eq!(out.answers.len(), 3);
        assert!(!out.udp);
        // Quorum over the 4 asked is 3: two honest answers are not enough,
        // and the liar's address is never taken.
        assert_eq!(out.verdict.addr, None);
        assert_eq!((out.verdict.observers, out.verdict.answered), (4, 3));
        assert_eq!(out.verdict.mapping, Mapping::Unknown);
    }

    #[test]
    fn the_transport_most_observers_were_asked_over_decides() {
        let me = PeerId::random();
        let obs = peers(4);
        let mut groups = over(UDP4, &obs[..3]);
        groups.extend(over(TCP4, &obs[3..]));
        let mut round = Round::new(
            t(0),
            me,
            4,
            groups,
            ConsensusPolicy::default(),
            Duration::from_millis(10),
        );
        asks(&mut round);
        let quic: std::net::SocketAddr = "198.51.100.7:5000".parse().unwrap();
        for o in &obs[..3] {
            round.on_answer(*o, quic, true, None);
        }
        round.on_answer(obs[3], "198.51.100.7:4001".parse().unwrap(), false, None);
        assert!(round.is_done());
        let out = round.outcome();
        assert!(out.udp);
        assert_eq!(out.answers.len(), 3);
        assert_eq!(out.verdict.addr, Some(quic));
    }

    #[test]
    fn an_answer_counts_only_in_the_group_it_was_asked_in() {
        // Three asked over TCP/IPv4: two liars answer with a QUIC address and
        // an IPv6 one, hoping to form or join a smaller group. Both count as
        // failures; the honest TCP answers decide (quorum 2 of 3).
        let me = PeerId::random();
        let obs = peers(4);
        let mut round = Round::new(
            t(0),
            me,
            4,
            over(TCP4, &obs),
            ConsensusPolicy::default(),
            Duration::from_millis(10),
        );
        asks(&mut round);
        let honest: std::net::SocketAddr = "198.51.100.7:4001".parse().unwrap();
        round.on_answer(obs[0], honest, false, None);
        round.on_answer(obs[1], honest, false, None);
        round.on_answer(obs[2], honest, false, None);
        round.on_answer(obs[3], "203.0.113.66:1".parse().unwrap(), true, None);
        let out = round.outcome();
        assert_eq!(
            out.answers.len(),
            3,
            "the UDP answer to a TCP ask is dropped"
        );
        assert_eq!(out.verdict.addr, Some(honest));
        let mut round = Round::new(
            t(0),
            me,
            3,
            over(TCP4, &obs[..3]),
            ConsensusPolicy::default(),
            Duration::from_millis(10),
        );
        asks(&mut round);
        round.on_answer(obs[0], honest, false, None);
        round.on_answer(obs[1], "[2001:db8::66]:1".parse().unwrap(), false, None);
        round.on_answer(obs[2], "[2001:db8::66]:1".parse().unwrap(), false, None);
        let out = round.outcome();
        assert_eq!(
            out.answers.len(),
            1,
            "IPv6 answers to IPv4 asks are dropped"
        );
        assert_eq!(out.verdict.ip, None);
        // IPv4 and IPv6 observers are decided apart: the family asked most wins.
        let v6 = Group {
            udp: false,
            v6: Some(true),
        };
        let mut groups = over(TCP4, &obs[..1]);
        groups.extend(over(v6, &obs[1..]));
        let mut round = Round::new(
            t(0),
            me,
            4,
            groups,
            ConsensusPolicy::default(),
            Duration::from_millis(10),
        );
        asks(&mut round);
        let six: std::net::SocketAddr = "[2001:db8::5]:4001".parse().unwrap();
        round.on_answer(obs[0], "203.0.113.5:4001".parse().unwrap(), false, None);
        for o in &obs[1..] {
            round.on_answer(*o, six, false, None);
        }
        assert_eq!(round.outcome().verdict.addr, Some(six));
    }

    #[test]
    fn groups_are_read_from_observer_addresses() {
        let g = |s: &str| Group::of(&s.parse().unwrap());
        assert_eq!(
            g("/ip4/192.0.2.1/tcp/1/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"),
            TCP4
        );
        assert_eq!(g("/ip4/192.0.2.1/udp/1/quic-v1"), UDP4);
        assert_eq!(
            g("/ip6/2001:db8::1/tcp/1"),
            Group {
                udp: false,
                v6: Some(true)
            }
        );
        assert_eq!(g("/dns4/example.invalid/tcp/1").v6, None);
    }

    #[test]
    fn too_few_observers_asks_nobody_and_says_why() {
        let mut round = Round::new(
            t(0),
            PeerId::random(),
            2,
            over(TCP4, &peers(2)),
            ConsensusPolicy::default(),
            Duration::from_millis(10),
        );
        assert!(asks(&mut round).is_empty());
        assert!(round.is_done());
        let out = round.outcome();
        assert_eq!(out.verdict.mapping, Mapping::Unknown);
        assert!(out.note.unwrap().contains("at least 3"));
    }

    #[test]
    fn failures_finish_the_round_without_a_verdict() {
        let obs = peers(3);
        let mut round = Round::new(
            t(0),
            PeerId::random(),
            3,
            over(TCP4, &obs),
            ConsensusPolicy::default(),
            Duration::from_millis(10),
        );
        asks(&mut round);
        for o in &obs {
            round.on_failure(*o);
        }
        assert!(round.is_done());
        assert_eq!(round.outcome().verdict.ip, None);
    }

    #[test]
    fn rechecks_come_early_on_failed_punches_and_address_changes() {
        let mut r = Rechecks::new(t(0), Duration::from_secs(300));
        let due = |r: &mut Rechecks, at: u64| {
            r.handle_timeout(t(at));
            r.poll_action()
        };
        assert_eq!(r.poll_timeout(), Some(t(300_000)));
        assert_eq!(due(&mut r, 299_999), None);
        r.on_direct_addrs(t(10), ["/ip4/10.0.0.2/tcp/1".to_string()]);
        assert_eq!(due(&mut r, 10), None, "the first report is no change");
        r.on_direct_addrs(
            t(20),
            [
                "/ip4/10.0.0.2/tcp/1".to_string(),
                "/ip4/10.0.0.2/tcp/1".to_string(),
            ],
        );
        assert_eq!(due(&mut r, 20), None, "same set");
        r.on_direct_addrs(t(30), ["/ip4/10.0.0.9/tcp/1".to_string()]);
        assert_eq!(
            due(&mut r, 30),
            Some(RecheckDue { with_quic: false }),
            "early: no QUIC round before its period"
        );
        assert_eq!(r.poll_timeout(), None, "nothing more is due while it runs");
        r.on_hole_punch_failed(t(35));
        assert_eq!(due(&mut r, 35), None);
        r.checked(t(40));
        assert_eq!(r.poll_timeout(), Some(t(300_040)));
        r.on_hole_punch_failed(t(50));
        assert_eq!(due(&mut r, 50), Some(RecheckDue { with_quic: false }));
        r.checked(t(60));
        assert_eq!(
            due(&mut r, 300_060),
            Some(RecheckDue { with_quic: true }),
            "a period after the first round, QUIC is asked again"
        );
    }

    #[test]
    fn dial_backs_are_capped_one_per_asker_and_ip_per_interval_and_time_out() {
        let (a, b, c, d) = (
            PeerId::random(),
            PeerId::random(),
            PeerId::random(),
            PeerId::random(),
        );
        let t0 = t;
        let ip = |s: &str| -> std::net::IpAddr { s.parse().unwrap() };
        let mut t: DialBacks<u32, &str> = DialBacks::new(DialBackLimits {
            max_concurrent: 2,
            timeout: Duration::from_secs(5),
            interval: Duration::from_secs(30),
            max_tracked: 100,
        });
        assert!(t.start(t0(0), 1, a, ip("8.8.8.8"), "a").is_ok());
        assert_eq!(
            t.start(t0(1), 2, a, ip("8.8.4.4"), "a again"),
            Err(("a again", NoProbe::TooSoon))
        );
        assert_eq!(
            t.start(t0(1), 2, b, ip("8.8.8.8"), "same ip"),
            Err(("same ip", NoProbe::TooSoon)),
            "one probe per target IP: many peer ids on one host cannot multiply probes"
        );
        assert!(t.start(t0(2), 3, b, ip("1.1.1.1"), "b").is_ok());
        assert_eq!(
            t.start(t0(3), 4, c, ip("9.9.9.9"), "c"),
            Err(("c", NoProbe::Busy)),
            "table full"
        );
        assert!(t.is_probe(3) && !t.is_probe(4));
        assert_eq!(t.finish(3, true), Some(("b", DialBackAnswer::Reachable)));
        assert_eq!(t.finish(3, true), None, "answered once");
        assert_eq!(t.poll_timeout(), Some(t0(5_000)));
        t.handle_timeout(t0(4_999));
        assert_eq!(t.poll_action(), None);
        t.handle_timeout(t0(5_000));
        assert_eq!(t.poll_action(), Some((1, "a")));
        assert_eq!(t.poll_action(), None);
        assert!(t.is_empty());
        // Finished or not, `a` waits out the interval.
        assert_eq!(
            t.start(t0(29_999), 5, a, ip("8.8.8.8"), "a"),
            Err(("a", NoProbe::TooSoon))
        );
        assert!(t.start(t0(30_000), 5, a, ip("8.8.8.8"), "a").is_ok());
        // The memory of recent askers is bounded: past it, no probe at all.
        let mut t: DialBacks<u32, ()> = DialBacks::new(DialBackLimits {
            max_concurrent: 100,
            max_tracked: 2,
            ..Default::default()
        });
        assert!(t.start(t0(0), 1, a, ip("8.8.8.8"), ()).is_ok());
        assert!(t.start(t0(0), 2, b, ip("8.8.4.4"), ()).is_ok());
        assert_eq!(
            t.start(t0(0), 3, d, ip("1.1.1.1"), ()),
            Err(((), NoProbe::Busy))
        );
    }
}

/// A round played against its observers on the two-party harness: the
/// observers are one machine standing for the crowd, answering each ask
/// after their own think time (or never).
mod on_the_harness {
    use super::super::*;
    use crate::harness::{Link, Pair};
    use crate::Machine;
    use libp2p_identity::PeerId;
    use std::collections::{HashMap, VecDeque};
    use std::net::SocketAddr;
    use std::time::{Duration, Instant};

    /// How one observer behaves.
    #[derive(Clone, Copy)]
    enum Says {
        Sees(&'static str, Duration),
        Fails(Duration),
        Silent,
    }

    /// The observers: each ask is answered after the observer's delay.
    struct Crowd {
        says: HashMap<PeerId, Says>,
        due: Vec<(Instant, PeerId, Option<SocketAddr>)>,
        out: VecDeque<(PeerId, Option<SocketAddr>)>,
    }

    impl Crowd {
        fn asked(&mut self, observer: PeerId, now: Instant) {
            match self.says[&observer] {
                Says::Sees(addr, after) => {
                    self.due
                        .push((now + after, observer, Some(addr.parse().unwrap())))
                }
                Says::Fails(after) => self.due.push((now + after, observer, None)),
                Says::Silent => {}
            }
        }
    }

    impl Machine for Crowd {
        type Action = (PeerId, Option<SocketAddr>);
        fn poll_action(&mut self) -> Option<Self::Action> {
            self.out.pop_front()
        }
        fn poll_timeout(&self) -> Option<Instant> {
            self.due.iter().map(|(t, _, _)| *t).min()
        }
        fn handle_timeout(&mut self, now: Instant) {
            let (ready, later) = self.due.drain(..).partition(|(t, _, _)| *t <= now);
            self.due = later;
            let ready: Vec<_> = ready;
            self.out.extend(ready.into_iter().map(|(_, o, a)| (o, a)));
        }
    }

    struct Wire;

    impl Link for Wire {
        type A = Round;
        type B = Crowd;
        type AtoB = PeerId;
        type BtoA = (PeerId, Option<SocketAddr>);
        fn a_sends(
            &mut self,
            RoundAction::Ask { observer }: RoundAction,
            _: Instant,
        ) -> Option<PeerId> {
            Some(observer)
        }
        fn b_sends(&mut self, answer: Self::BtoA, _: Instant) -> Option<Self::BtoA> {
            Some(answer)
        }
        fn b_takes(&mut self, crowd: &mut Crowd, observer: PeerId, now: Instant) {
            crowd.asked(observer, now);
        }
        fn a_takes(&mut self, round: &mut Round, (observer, seen): Self::BtoA, _: Instant) {
            match seen {
                Some(addr) => round.on_answer(observer, addr, false, Some(false)),
                None => round.on_failure(observer),
            }
        }
    }

    fn play(says: &[Says], rtt: Duration) -> Pair<Wire> {
        let t0 = Instant::now();
        let observers: Vec<PeerId> = says.iter().map(|_| PeerId::random()).collect();
        let group = Group {
            udp: false,
            v6: Some(false),
        };
        let round = Round::new(
            t0,
            PeerId::random(),
            says.len(),
            observers.iter().map(|o| (*o, group)),
            ConsensusPolicy::default(),
            Duration::from_secs(10),
        );
        let crowd = Crowd {
            says: observers
                .iter()
                .copied()
                .zip(says.iter().copied())
                .collect(),
            due: vec![],
            out: VecDeque::new(),
        };
        let mut pair = Pair::new(round, crowd, Wire, rtt / 2, t0);
        assert!(pair.run_for(Duration::from_secs(60)), "the round ends");
        pair
    }

    const HONEST: &str = "198.51.100.7:4001";
    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_silent_observer_holds_the_round_to_its_deadline_and_a_liar_is_outvoted() {
        let p = play(
            &[
                Says::Sees(HONEST, ms(5)),
                Says::Sees(HONEST, ms(300)),
                Says::Sees(HONEST, ms(40)),
                Says::Sees(HONEST, ms(2)),
                Says::Sees("203.0.113.66:1", ms(1)),
                Says::Silent,
            ],
            ms(100),
        );
        assert_eq!(p.elapsed(), Duration::from_secs(10), "up to the deadline");
        let out = p.a.outcome();
        // A quorum is two thirds of the six asked: the four honest answers.
        assert_eq!(out.verdict.addr, Some(HONEST.parse().unwrap()));
        assert_eq!((out.verdict.observers, out.verdict.answered), (6, 5));
    }

    #[test]
    fn a_round_whose_observers_all_answer_ends_with_the_slowest() {
        let p = play(
            &[
                Says::Sees(HONEST, ms(5)),
                Says::Sees(HONEST, ms(700)),
                Says::Fails(ms(20)),
                Says::Sees(HONEST, ms(60)),
            ],
            ms(80),
        );
        assert_eq!(p.elapsed(), ms(780), "the slowest answer's round trip");
        let out = p.a.outcome();
        assert_eq!(out.verdict.addr, Some(HONEST.parse().unwrap()));
        assert_eq!((out.verdict.observers, out.verdict.answered), (4, 3));
    }
}
