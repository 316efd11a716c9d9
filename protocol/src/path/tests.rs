use super::*;

fn addr(s: &str) -> Multiaddr {
    s.parse().unwrap()
}

fn relayed(relay: PeerId) -> (PathKind, TransportKind, Option<PeerId>) {
    (PathKind::Relayed, TransportKind::Tcp, Some(relay))
}

const DIRECT_QUIC: (PathKind, TransportKind, Option<PeerId>) =
    (PathKind::Direct, TransportKind::Quic, None);

fn drain(set: &mut PathSet<u32>) -> Vec<Action<u32>> {
    std::iter::from_fn(|| set.poll_action()).collect()
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
    set.on_established(1_000, peer, 1, relayed(relay), addr("/p2p-circuit"));
    set.on_established(1_200, peer, 2, relayed(relay), addr("/p2p-circuit"));
    assert!(drain(&mut set).is_empty(), "relayed alone is no upgrade");
    set.on_established(
        1_750,
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
        1_800,
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
    set.on_established(0, peer, 1, relayed(relay), addr("/p2p-circuit"));
    set.on_established(
        10,
        peer,
        2,
        DIRECT_QUIC,
        addr("/ip4/192.0.2.1/udp/1/quic-v1"),
    );
    assert_eq!(drain(&mut set).len(), 1);
    set.on_established(
        20,
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
    set.on_established(0, peer, 1, relayed(relay), addr("/p2p-circuit"));
    set.on_established(
        5,
        peer,
        2,
        DIRECT_QUIC,
        addr("/ip4/192.0.2.1/udp/1/quic-v1"),
    );
    drain(&mut set);
    let closed = set.on_closed(peer, 2).expect("known");
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
    set.on_closed(peer, 1);
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
    assert!(set.on_closed(peer, 9).is_none());
    assert!(drain(&mut set).is_empty());
}
