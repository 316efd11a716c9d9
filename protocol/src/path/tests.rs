use super::*;

/// `ms` into the test (every test's clock starts at one instant).
fn at(ms: u64) -> Instant {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *START.get_or_init(Instant::now) + Duration::from_millis(ms)
}

fn addr(s: &str) -> Multiaddr {
    s.parse().unwrap()
}

fn relayed(relay: PeerId) -> (PathKind, TransportKind, Option<PeerId>) {
    (PathKind::Relayed, TransportKind::Tcp, Some(relay))
}

const DIRECT_QUIC: (PathKind, TransportKind, Option<PeerId>) =
    (PathKind::Direct, TransportKind::Quic, None);

/// The actions, route changes left out (see [`changes`]).
fn drain(set: &mut PathSet<u32>) -> Vec<Action<u32>> {
    std::iter::from_fn(|| set.poll_action())
        .filter(|a| !matches!(a, Action::PathChanged { .. }))
        .collect()
}

/// The route changes only: (from, to, reason).
fn changes(set: &mut PathSet<u32>) -> Vec<(Option<Route>, Option<Route>, ChangeReason)> {
    std::iter::from_fn(|| set.poll_action())
        .filter_map(|a| match a {
            Action::PathChanged {
                from, to, reason, ..
            } => Some((from, to, reason)),
            _ => None,
        })
        .collect()
}

#[test]
fn classify_reads_relay_and_transport() {
    let relay = PeerId::random();
    let dst = PeerId::random();
    let a = addr(&format!(
        "/ip4/127.0.0.1/tcp/4001/p2p/{relay}/p2p-circuit/p2p/{dst}"
    ));
    assert_eq!(
        classify([&a]),
        (PathKind::Relayed, TransportKind::Tcp, Some(relay))
    );
    let local = addr("/ip4/127.0.0.1/udp/9/quic-v1");
    let remote = addr("/ip4/127.0.0.1/udp/10/quic-v1");
    assert_eq!(classify([&local, &remote]), DIRECT_QUIC);
    // An inbound relayed connection: the circuit is in the local address.
    let local = addr(&format!("/ip4/10.0.0.1/tcp/1/p2p/{relay}/p2p-circuit"));
    assert_eq!(
        classify([&local, &addr("/p2p-circuit")]).0,
        PathKind::Relayed
    );
}

#[test]
fn direct_after_relayed_is_one_upgrade_and_closes_the_relayed() {
    let (peer, relay) = (PeerId::random(), PeerId::random());
    let mut set = PathSet::new(true);
    set.on_established(at(1_000), peer, 1, relayed(relay), addr("/p2p-circuit"));
    set.on_established(at(1_200), peer, 2, relayed(relay), addr("/p2p-circuit"));
    assert!(drain(&mut set).is_empty(), "relayed alone is no upgrade");
    set.on_established(
        at(1_750),
        peer,
        3,
        DIRECT_QUIC,
        addr("/ip4/192.0.2.1/udp/1/quic-v1"),
    );
    assert_eq!(
        drain(&mut set),
        vec![
            Action::Upgraded {
                peer,
                transport: TransportKind::Quic,
                ms_after_relayed: 750
            },
            Action::Close { peer, id: 1 },
            Action::Close { peer, id: 2 },
        ]
    );
    // A second direct connection (TCP after QUIC) reports nothing new.
    set.on_established(
        at(1_800),
        peer,
        4,
        (PathKind::Direct, TransportKind::Tcp, None),
        addr("/ip4/192.0.2.1/tcp/1"),
    );
    assert!(drain(&mut set).is_empty());
    assert_eq!(set.best(&peer).map(|c| c.id), Some(3));
}

#[test]
fn keeping_relayed_connections_still_reports_the_upgrade_once() {
    let (peer, relay) = (PeerId::random(), PeerId::random());
    let mut set = PathSet::new(false);
    set.on_established(at(0), peer, 1, relayed(relay), addr("/p2p-circuit"));
    set.on_established(
        at(10),
        peer,
        2,
        DIRECT_QUIC,
        addr("/ip4/192.0.2.1/udp/1/quic-v1"),
    );
    assert_eq!(drain(&mut set).len(), 1);
    set.on_established(
        at(20),
        peer,
        3,
        DIRECT_QUIC,
        addr("/ip4/192.0.2.1/udp/2/quic-v1"),
    );
    assert!(drain(&mut set).is_empty(), "already upgraded");
    assert_eq!(set.get(&peer, 1).map(|c| c.upgraded), Some(true));
}

#[test]
fn a_closed_connection_wakes_resumes_with_what_is_left() {
    let (peer, relay) = (PeerId::random(), PeerId::random());
    let mut set = PathSet::new(false);
    set.on_established(at(0), peer, 1, relayed(relay), addr("/p2p-circuit"));
    set.on_established(
        at(5),
        peer,
        2,
        DIRECT_QUIC,
        addr("/ip4/192.0.2.1/udp/1/quic-v1"),
    );
    drain(&mut set);
    let closed = set.on_closed(at(0), peer, 2).expect("known");
    assert_eq!(closed.path, PathKind::Direct);
    assert_eq!(
        drain(&mut set),
        vec![Action::PathClosed {
            peer,
            path: PathKind::Direct,
            remaining: 1
        }]
    );
    assert_eq!(set.best(&peer).map(|c| c.path), Some(PathKind::Relayed));
    set.on_closed(at(0), peer, 1);
    assert_eq!(
        drain(&mut set),
        vec![Action::PathClosed {
            peer,
            path: PathKind::Relayed,
            remaining: 0
        }]
    );
    assert!(!set.is_connected(&peer));
    // A connection the set never saw (a dial-back probe) is ignored.
    assert!(set.on_closed(at(0), peer, 9).is_none());
    assert!(drain(&mut set).is_empty());
}

#[test]
fn a_direct_connection_right_after_the_remote_closed_the_relayed_one_is_the_upgrade() {
    // The remote upgraded first and closed the relayed connection: its close
    // reaches us a moment before the direct connection does (seen in the NAT
    // lab over QUIC).
    let (peer, relay) = (PeerId::random(), PeerId::random());
    let mut set = PathSet::new(true);
    set.on_established(at(1_000), peer, 1, relayed(relay), addr("/p2p-circuit"));
    set.on_closed(at(1_020), peer, 1);
    drain(&mut set);
    set.on_established(
        at(1_021),
        peer,
        2,
        DIRECT_QUIC,
        addr("/ip4/192.0.2.1/udp/1/quic-v1"),
    );
    assert_eq!(
        drain(&mut set),
        vec![Action::Upgraded {
            peer,
            transport: TransportKind::Quic,
            ms_after_relayed: 21
        }]
    );
    // Reported once: another direct connection is no second upgrade.
    set.on_established(
        at(1_030),
        peer,
        3,
        DIRECT_QUIC,
        addr("/ip4/192.0.2.1/udp/2/quic-v1"),
    );
    assert!(drain(&mut set).is_empty());

    // A direct connection long after a relayed one died is no upgrade.
    let other = PeerId::random();
    set.on_established(at(5_000), other, 4, relayed(relay), addr("/p2p-circuit"));
    set.on_closed(at(5_100), other, 4);
    drain(&mut set);
    set.on_established(
        at(5_101) + UPGRADE_RACE,
        other,
        5,
        DIRECT_QUIC,
        addr("/ip4/192.0.2.2/udp/1/quic-v1"),
    );
    assert!(drain(&mut set).is_empty());
}

#[test]
fn the_route_to_a_peer_changes_on_upgrade_relay_loss_and_reconnection() {
    let (peer, r1, r2) = (PeerId::random(), PeerId::random(), PeerId::random());
    let via = |r| {
        Some(Route {
            path: PathKind::Relayed,
            transport: TransportKind::Tcp,
            via: Some(r),
        })
    };
    let mut set = PathSet::new(false);
    set.on_established(at(0), peer, 1, relayed(r1), addr("/p2p-circuit"));
    assert!(
        changes(&mut set).is_empty(),
        "a first connection is no change"
    );
    // A second relayed path does not move the traffic (the oldest carries it).
    set.on_established(at(5), peer, 2, relayed(r2), addr("/p2p-circuit"));
    assert!(changes(&mut set).is_empty());
    // Relay 1 dies: the traffic moves to relay 2.
    set.on_closed(at(10), peer, 1);
    assert_eq!(
        changes(&mut set),
        [(via(r1), via(r2), ChangeReason::RelayLost)]
    );
    // Relay 2 dies too: no route.
    set.on_closed(at(20), peer, 2);
    assert_eq!(
        changes(&mut set),
        [(via(r2), None, ChangeReason::RelayLost)]
    );
    // Back through relay 1, then direct.
    set.on_established(at(30), peer, 3, relayed(r1), addr("/p2p-circuit"));
    assert_eq!(
        changes(&mut set),
        [(None, via(r1), ChangeReason::Reconnected)]
    );
    set.on_established(
        at(40),
        peer,
        4,
        DIRECT_QUIC,
        addr("/ip4/192.0.2.1/udp/1/quic-v1"),
    );
    let direct = Some(Route {
        path: PathKind::Direct,
        transport: TransportKind::Quic,
        via: None,
    });
    assert_eq!(
        changes(&mut set),
        [(via(r1), direct, ChangeReason::Upgraded)]
    );
    // The upgraded relayed connection closing changes nothing.
    set.on_closed(at(50), peer, 3);
    assert!(changes(&mut set).is_empty());
    set.on_closed(at(60), peer, 4);
    assert_eq!(
        changes(&mut set),
        [(direct, None, ChangeReason::DirectLost)]
    );
}

#[test]
fn a_degraded_relayed_path_is_rerouted_once_another_is_up_without_flapping() {
    let (peer, r1, r2) = (PeerId::random(), PeerId::random(), PeerId::random());
    let mut set = PathSet::new(false);
    set.on_established(at(0), peer, 1, relayed(r1), addr("/p2p-circuit"));
    drain(&mut set);
    let reroutes = |set: &mut PathSet<u32>| -> Vec<(u32, Option<PeerId>)> {
        std::iter::from_fn(|| set.poll_action())
            .filter_map(|a| match a {
                Action::Reroute { away_from, via, .. } => Some((away_from, via)),
                _ => None,
            })
            .collect()
    };
    // Healthy pings: nothing. Two red ones: not yet (hysteresis).
    set.on_ping(at(1_000), peer, 1, Some(30.0));
    set.on_ping(at(2_000), peer, 1, Some(2_000.0));
    set.on_ping(at(3_000), peer, 1, Some(2_000.0));
    assert!(reroutes(&mut set).is_empty());
    // The third red one in a row: look for another path.
    set.on_ping(at(4_000), peer, 1, Some(2_000.0));
    assert_eq!(reroutes(&mut set), [(1, Some(r1))]);
    set.on_ping(at(5_000), peer, 1, None);
    assert!(reroutes(&mut set).is_empty(), "asked once");
    // Another relay's path comes up: it takes the traffic, the degraded one closes.
    set.on_established(at(6_000), peer, 2, relayed(r2), addr("/p2p-circuit"));
    let actions: Vec<_> = std::iter::from_fn(|| set.poll_action()).collect();
    assert!(
        actions.contains(&Action::Close { peer, id: 1 }),
        "{actions:?}"
    );
    let changed = actions.iter().find_map(|a| match a {
        Action::PathChanged {
            from, to, reason, ..
        } => Some((from.unwrap().via, to.unwrap().via, *reason)),
        _ => None,
    });
    assert_eq!(changed, Some((Some(r1), Some(r2), ChangeReason::Degraded)));
    assert_eq!(set.best(&peer).map(|c| c.id), Some(2));
    set.on_closed(at(6_100), peer, 1);
    drain(&mut set);
    // The new path turns red at once: no re-route within the cool-down …
    for t in 0..5 {
        set.on_ping(at(7_000 + t * 1_000), peer, 2, Some(2_000.0));
    }
    assert!(reroutes(&mut set).is_empty(), "no flapping");
    // … and one after it.
    set.on_ping(at(4_000) + REROUTE_COOLDOWN, peer, 2, Some(2_000.0));
    assert_eq!(reroutes(&mut set), [(2, Some(r2))]);
}

#[test]
fn a_degraded_path_that_recovers_keeps_the_traffic_and_a_direct_one_is_never_rerouted() {
    let (peer, r1) = (PeerId::random(), PeerId::random());
    let mut set = PathSet::new(false);
    set.on_established(at(0), peer, 1, relayed(r1), addr("/p2p-circuit"));
    for t in 1..=3 {
        set.on_ping(at(t * 1_000), peer, 1, None);
    }
    assert!(set.get(&peer, 1).unwrap().degraded);
    for t in 4..=14 {
        set.on_ping(at(t * 1_000), peer, 1, Some(20.0));
    }
    assert!(!set.get(&peer, 1).unwrap().degraded, "recovered");
    let other = PeerId::random();
    set.on_established(
        at(0),
        other,
        5,
        DIRECT_QUIC,
        addr("/ip4/192.0.2.1/udp/1/quic-v1"),
    );
    for t in 1..=5 {
        set.on_ping(at(t * 1_000), other, 5, None);
    }
    let any_reroute = std::iter::from_fn(|| set.poll_action())
        .any(|a| matches!(a, Action::Reroute { peer, .. } if peer == other));
    assert!(!any_reroute, "a direct path has nowhere better to go");
}
