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
    use libp2p_identity::PeerId;

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
            1_000,
            me,
            4,
            over(TCP4, &all),
            ConsensusPolicy::default(),
            20_000,
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
        assert_eq!(round.poll_timeout(), Some(21_000));
        round.handle_timeout(20_999);
        assert!(!round.is_done(), "not before the deadline");
        round.handle_timeout(21_000);
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
        let mut round = Round::new(0, me, 4, groups, ConsensusPolicy::default(), 10);
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
        let mut round = Round::new(0, me, 4, over(TCP4, &obs), ConsensusPolicy::default(), 10);
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
            0,
            me,
            3,
            over(TCP4, &obs[..3]),
            ConsensusPolicy::default(),
            10,
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
        let mut round = Round::new(0, me, 4, groups, ConsensusPolicy::default(), 10);
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
            0,
            PeerId::random(),
            2,
            over(TCP4, &peers(2)),
            ConsensusPolicy::default(),
            10,
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
            0,
            PeerId::random(),
            3,
            over(TCP4, &obs),
            ConsensusPolicy::default(),
            10,
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
        let mut r = Rechecks::new(0, 300_000);
        assert!(!r.is_due(299_999));
        assert!(r.is_due(300_000));
        r.on_direct_addrs(10, ["/ip4/10.0.0.2/tcp/1".to_string()]);
        assert!(!r.is_due(10), "the first report is no change");
        r.on_direct_addrs(
            20,
            [
                "/ip4/10.0.0.2/tcp/1".to_string(),
                "/ip4/10.0.0.2/tcp/1".to_string(),
            ],
        );
        assert!(!r.is_due(20), "same set");
        r.on_direct_addrs(30, ["/ip4/10.0.0.9/tcp/1".to_string()]);
        assert!(r.is_due(30));
        r.checked(40);
        assert_eq!(r.poll_timeout(), 300_040);
        r.on_hole_punch_failed(50);
        assert!(r.is_due(50));
    }

    #[test]
    fn dial_backs_are_capped_one_per_asker_and_ip_per_interval_and_time_out() {
        let (a, b, c, d) = (
            PeerId::random(),
            PeerId::random(),
            PeerId::random(),
            PeerId::random(),
        );
        let ip = |s: &str| -> std::net::IpAddr { s.parse().unwrap() };
        let mut t: DialBacks<u32, &str> = DialBacks::new(DialBackLimits {
            max_concurrent: 2,
            timeout_ms: 5_000,
            interval_ms: 30_000,
            max_tracked: 100,
        });
        assert!(t.start(0, 1, a, ip("8.8.8.8"), "a").is_ok());
        assert_eq!(
            t.start(1, 2, a, ip("8.8.4.4"), "a again"),
            Err(("a again", NoProbe::TooSoon))
        );
        assert_eq!(
            t.start(1, 2, b, ip("8.8.8.8"), "same ip"),
            Err(("same ip", NoProbe::TooSoon)),
            "one probe per target IP: many peer ids on one host cannot multiply probes"
        );
        assert!(t.start(2, 3, b, ip("1.1.1.1"), "b").is_ok());
        assert_eq!(
            t.start(3, 4, c, ip("9.9.9.9"), "c"),
            Err(("c", NoProbe::Busy)),
            "table full"
        );
        assert!(t.is_probe(3) && !t.is_probe(4));
        assert_eq!(t.finish(3, true), Some(("b", DialBackAnswer::Reachable)));
        assert_eq!(t.finish(3, true), None, "answered once");
        assert_eq!(t.poll_timeout(), Some(5_000));
        assert!(t.handle_timeout(4_999).is_empty());
        assert_eq!(t.handle_timeout(5_000), vec![(1, "a")]);
        assert!(t.is_empty());
        // Finished or not, `a` waits out the interval.
        assert_eq!(
            t.start(29_999, 5, a, ip("8.8.8.8"), "a"),
            Err(("a", NoProbe::TooSoon))
        );
        assert!(t.start(30_000, 5, a, ip("8.8.8.8"), "a").is_ok());
        // The memory of recent askers is bounded: past it, no probe at all.
        let mut t: DialBacks<u32, ()> = DialBacks::new(DialBackLimits {
            max_concurrent: 100,
            max_tracked: 2,
            ..Default::default()
        });
        assert!(t.start(0, 1, a, ip("8.8.8.8"), ()).is_ok());
        assert!(t.start(0, 2, b, ip("8.8.4.4"), ()).is_ok());
        assert_eq!(
            t.start(0, 3, d, ip("1.1.1.1"), ()),
            Err(((), NoProbe::Busy))
        );
    }
}
