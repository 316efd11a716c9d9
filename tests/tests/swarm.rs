//! End-to-end tests with real swarms on loopback sockets: paths, DCUtR
//! upgrade, M×N delivery verified by SHA-256, and bad input on the ledger.

use futures::StreamExt;
use ledgermesh_e2e::*;
use ledgermesh_ledger::{Cursor, Ledger};
use ledgermesh_node::events::{Event, PathKind};
use ledgermesh_node::source::Source;
use ledgermesh_node::streams::{fetch, FetchPolicy, StreamError};
use ledgermesh_protocol::envelope::seal;
use ledgermesh_protocol::{RejectReason, ServiceRequest, Signal, Topic};

const MIB: u64 = 1 << 20;

fn is_error(e: &Event, what_: &str, reason_: &str) -> bool {
    matches!(e, Event::Error { what, reason: Some(reason), .. } if what == what_ && *reason == reason_)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_only_provider_is_reached_relayed_then_direct_after_dcutr() {
    let net = Net::new("dcutr").await;
    let len = 6 * MIB;
    let provider = net.provider("provider", len, 11, true).await;
    let mut consumer = net.consumer("consumer").await;
    let pid = provider.handle.peer_id().to_string();
    let relay_id = net.relay.handle.peer_id().to_string();

    let outcomes = net.consume(&consumer, vec![want(&provider, "feed")]).await;
    assert_delivered(
        &outcomes[0],
        truth(&Source::Random { len, seed: 11 }).await,
        len,
    );

    let connections = consumer
        .events
        .matching(|e| matches!(e, Event::Connected { peer_id, .. } if *peer_id == pid));
    let Some(Event::Connected { path, via, .. }) = connections.first() else {
        panic!("consumer never connected to the provider")
    };
    assert_eq!(
        *path,
        PathKind::Relayed,
        "first connection must go through the relay (the provider advertised only its circuit)"
    );
    assert_eq!(via.as_deref(), Some(relay_id.as_str()));
    let upgraded = consumer
        .events
        .wait_for(
            "upgraded",
            |e| matches!(e, Event::Upgraded { peer_id, .. } if *peer_id == pid),
        )
        .await;
    assert!(
        matches!(upgraded, Event::Upgraded { ms_after_relayed, .. } if ms_after_relayed < 60_000)
    );
    assert!(
        connections.iter().any(|e| matches!(
            e,
            Event::Connected {
                path: PathKind::Direct,
                ..
            }
        )),
        "a direct connection must follow: {connections:?}"
    );
    // The relayed connection is closed once the direct one is up.
    consumer
        .events
        .wait_for("relayed connection closed", |e| {
            matches!(e, Event::Disconnected { peer_id, path: PathKind::Relayed, .. } if *peer_id == pid)
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_consumer_receives_from_three_providers_at_once() {
    let net = Net::new("1x3").await;
    let len = 3 * MIB;
    let p1 = net.provider("p1", len, 1, false).await;
    let p2 = net.provider("p2", len, 2, false).await;
    let p3 = net.provider("p3", len, 3, true).await;
    let mut consumer = net.consumer("consumer").await;
    let outcomes = net
        .consume(
            &consumer,
            vec![want(&p1, "feed"), want(&p2, "feed"), want(&p3, "feed")],
        )
        .await;
    assert_eq!(outcomes.len(), 3);
    for (o, seed) in outcomes.iter().zip([1, 2, 3]) {
        assert_delivered(o, truth(&Source::Random { len, seed }).await, len);
    }
    let done = consumer
        .events
        .matching(|e| matches!(e, Event::StreamDone { verified: true, .. }));
    assert_eq!(done.len(), 3, "one stream_done per provider");
    for p in [&p1, &p2, &p3] {
        let id = p.handle.peer_id().to_string();
        assert!(
            !consumer
                .events
                .matching(|e| matches!(e, Event::Connected { peer_id, .. } if *peer_id == id))
                .is_empty(),
            "consumer connected to every provider"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_consumers_receive_from_one_provider_at_once() {
    let net = Net::new("3x1").await;
    let len = 3 * MIB;
    let mut provider = net.provider("provider", len, 9, false).await;
    let c1 = net.consumer("c1").await;
    let c2 = net.consumer("c2").await;
    let c3 = net.consumer("c3").await;
    let expected = truth(&Source::Random { len, seed: 9 }).await;
    let (a, b, c) = tokio::join!(
        net.consume(&c1, vec![want(&provider, "feed")]),
        net.consume(&c2, vec![want(&provider, "feed")]),
        net.consume(&c3, vec![want(&provider, "feed")]),
    );
    for o in [&a[0], &b[0], &c[0]] {
        assert_delivered(o, expected, len);
    }
    let served = provider
        .events
        .matching(|e| matches!(e, Event::StreamServed { .. }));
    let mut buyers: Vec<String> = served
        .iter()
        .filter_map(|e| match e {
            Event::StreamServed { peer_id, .. } => Some(peer_id.clone()),
            _ => None,
        })
        .collect();
    buyers.sort();
    buyers.dedup();
    assert_eq!(buyers.len(), 3, "provider served three distinct consumers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_sealed_to_another_peer_is_ignored_by_the_wrong_recipient() {
    let net = Net::new("wrong-recipient").await;
    let mut a = net.provider("a", MIB, 1, false).await;
    let b = net.provider("b", MIB, 2, false).await;
    let consumer = net.consumer("consumer").await;
    // A request sealed to B, posted on A's stdin topic.
    let signal = Signal::Request(ServiceRequest {
        addrs: vec![],
        streams: vec!["feed".into()],
        hire_secs: 0,
    });
    let sealed = seal(
        consumer.handle.keypair(),
        &b.handle.peer_id(),
        &signal,
        ledgermesh_node::events::now_ms(),
        60_000,
        &mut rand::rng(),
    )
    .unwrap();
    net.ledger_for(&consumer.handle)
        .post(Topic::stdin(&a.handle.peer_id()).0, sealed.bytes)
        .await
        .unwrap();
    a.events
        .wait_for("wrong_recipient error", |e| {
            is_error(e, "envelope", "wrong_recipient")
        })
        .await;
    assert!(
        a.events
            .matching(|e| matches!(e, Event::LedgerPost { .. }))
            .is_empty(),
        "A must not answer an envelope sealed to B"
    );
    // A keeps working for a genuine request.
    let outcomes = net.consume(&consumer, vec![want(&a, "feed")]).await;
    assert_delivered(
        &outcomes[0],
        truth(&Source::Random { len: MIB, seed: 1 }).await,
        MIB,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_request_is_rejected_and_reported() {
    let net = Net::new("replay").await;
    let mut provider = net.provider("provider", MIB, 4, false).await;
    let consumer = net.consumer("consumer").await;
    let outcomes = net.consume(&consumer, vec![want(&provider, "feed")]).await;
    assert_delivered(
        &outcomes[0],
        truth(&Source::Random { len: MIB, seed: 4 }).await,
        MIB,
    );

    // An eavesdropper copies the request off the public ledger and posts it again.
    let topic = Topic::stdin(&provider.handle.peer_id()).0;
    let original = net
        .board
        .follow(topic, Cursor::START)
        .next()
        .await
        .unwrap()
        .unwrap();
    net.board
        .account("eavesdropper")
        .post(topic, original.payload)
        .await
        .unwrap();
    provider
        .events
        .wait_for("replayed error", |e| is_error(e, "envelope", "replayed"))
        .await;
    let responses = provider
        .events
        .matching(|e| matches!(e, Event::LedgerPost { kind, .. } if kind == "service_response"));
    assert_eq!(responses.len(), 1, "the replay must not be answered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_envelopes_are_reported_and_the_provider_keeps_serving() {
    let net = Net::new("garbage").await;
    let mut provider = net.provider("provider", MIB, 5, false).await;
    let consumer = net.consumer("consumer").await;
    let topic = Topic::stdin(&provider.handle.peer_id()).0;
    let stranger = net.board.account("stranger");
    stranger
        .post(topic, b"not an envelope at all".to_vec())
        .await
        .unwrap();
    stranger.post(topic, vec![0xff; 8 * 1024]).await.unwrap();
    provider
        .events
        .wait_for("malformed error", |e| is_error(e, "envelope", "malformed"))
        .await;
    provider
        .events
        .wait_for("too_large error", |e| is_error(e, "envelope", "too_large"))
        .await;
    let outcomes = net.consume(&consumer, vec![want(&provider, "feed")]).await;
    assert_delivered(
        &outcomes[0],
        truth(&Source::Random { len: MIB, seed: 5 }).await,
        MIB,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_stream_is_refused_and_the_consumer_is_told_why() {
    let net = Net::new("unknown").await;
    let provider = net.provider("provider", MIB, 6, false).await;
    let mut consumer = net.consumer("consumer").await;
    let outcomes = net
        .consume(
            &consumer,
            vec![want(&provider, "no-such-stream"), want(&provider, "feed")],
        )
        .await;
    let err = outcomes[0]
        .result
        .as_ref()
        .expect_err("unknown stream must fail");
    match err {
        ledgermesh_node::consumer::BuyError::Refused(r) => {
            assert_eq!(r.reason, ledgermesh_protocol::RejectReason::UnknownStream)
        }
        other => panic!("refused as unknown, not {other:?}"),
    }
    let err = err.to_string();
    assert!(err.contains("no stream named \"no-such-stream\""), "{err}");
    assert!(
        !err.contains("feed"),
        "a refusal never lists what else is on sale: {err}"
    );
    assert!(!consumer
        .events
        .matching(|e| is_error(e, "stream_rejected", RejectReason::UnknownStream.as_str()))
        .is_empty());
    assert_delivered(
        &outcomes[1],
        truth(&Source::Random { len: MIB, seed: 6 }).await,
        MIB,
    );

    // Asking the stream protocol directly for a name no grant covers is
    // refused as not allowed: the peer cannot probe the catalog either.
    let direct = fetch(
        &consumer.handle,
        provider.handle.peer_id(),
        &[],
        "also-missing",
        &net.dir.0,
        &FetchPolicy::default(),
    )
    .await;
    match direct {
        Err(StreamError::Rejected(r)) => {
            assert_eq!(r.reason, RejectReason::NotAllowed);
            assert!(!r.detail.contains("feed"), "{}", r.detail);
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_relay_is_reported_and_the_node_keeps_working() {
    let net = Net::new("bad-relay").await;
    // Nothing listens on port 1 of loopback; the PeerId is a fresh one.
    let dead: libp2p::Multiaddr = format!(
        "/ip4/127.0.0.1/tcp/1/p2p/{}",
        libp2p::identity::Keypair::generate_ed25519()
            .public()
            .to_peer_id()
    )
    .parse()
    .unwrap();
    let mut provider = net
        .provider_with(
            "provider",
            vec![("feed".into(), Source::Random { len: MIB, seed: 7 })],
            false,
            Some(vec![dead, net.relay_addr.clone()]),
        )
        .await;
    provider
        .events
        .wait_for("relay error", |e| is_error(e, "relay", "unreachable"))
        .await;
    provider
        .events
        .wait_for("reservation on the good relay", |e| {
            matches!(e, Event::ReservationAccepted { .. })
        })
        .await;
    let consumer = net.consumer("consumer").await;
    let outcomes = net.consume(&consumer, vec![want(&provider, "feed")]).await;
    assert_delivered(
        &outcomes[0],
        truth(&Source::Random { len: MIB, seed: 7 }).await,
        MIB,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn address_consensus_over_loopback_agrees_and_dials_back() {
    use ledgermesh_node::observe::check;
    use ledgermesh_protocol::consensus::{ConsensusPolicy, Mapping};
    let net = Net::new("consensus").await;
    // Three observers besides the relay: any node answers the observe protocol.
    let mut observers = vec![net.relay_addr.clone()];
    let (more, _running) = observers_of(&net, 3).await;
    observers.extend(more);
    let mut asker = net.consumer("asker").await;
    let verdict = check(&asker.handle, &observers, ConsensusPolicy::default()).await;
    assert_eq!(verdict.observers, 4);
    assert_eq!(verdict.agreeing, 4);
    assert_eq!(verdict.ip, Some("127.0.0.1".parse().unwrap()));
    assert_eq!(
        verdict.mapping,
        Mapping::EndpointIndependent,
        "port reuse keeps the listen port"
    );
    assert_eq!(
        verdict.reachable,
        Some(true),
        "loopback is reachable: every dial-back got through"
    );
    let ev = asker
        .events
        .wait_for("public_address", |e| {
            matches!(e, Event::PublicAddress { .. })
        })
        .await;
    assert!(matches!(
        ev,
        Event::PublicAddress {
            observers: 4,
            agreeing: 4,
            ..
        }
    ));
    // The verdict is what the node now advertises.
    let snap = asker.handle.snapshot().await.unwrap();
    let public = snap.public.expect("verdict stored");
    assert_eq!(public.mapping, Mapping::EndpointIndependent);
    assert!(public.addr.is_some());

    // Too few observers: unknown, without asking anyone.
    let v = check(&asker.handle, &observers[..2], ConsensusPolicy::default()).await;
    assert_eq!(v.mapping, Mapping::Unknown);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lying_observers_never_install_their_address_even_when_honest_ones_are_silent() {
    use ledgermesh_e2e::liar::lying_observer;
    use ledgermesh_node::observe::check;
    use ledgermesh_protocol::consensus::{ConsensusPolicy, Mapping};
    let net = Net::new("liars").await;
    let lie: libp2p::Multiaddr = "/ip4/203.0.113.66/tcp/4001".parse().unwrap();
    let (liar1, liar2) = (
        lying_observer(lie.clone()).await,
        lying_observer(lie.clone()).await,
    );
    // Two observers that never answer: nothing listens on their ports.
    let silent = |port: u16| -> libp2p::Multiaddr {
        format!("/ip4/127.0.0.1/tcp/{port}/p2p/{}", libp2p::PeerId::random())
            .parse()
            .unwrap()
    };
    let closed = |_: ()| {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let observers = vec![
        net.relay_addr.clone(),
        liar1.clone(),
        liar2.clone(),
        silent(closed(())),
        silent(closed(())),
    ];
    let asker = net.consumer("asker").await;
    // Of five asked, three answer and two of those lie alike: the liars
    // would hold 2 of 3 answers, but the quorum is over the five asked.
    let v = check(&asker.handle, &observers, ConsensusPolicy::default()).await;
    assert_eq!((v.observers, v.answered), (5, 3), "{v:?}");
    assert_eq!(v.agreeing, 2);
    assert_eq!(v.ip, None, "no quorum of 4: never the liars' 203.0.113.66");
    assert_eq!(v.mapping, Mapping::Unknown);
    let public = asker.handle.snapshot().await.unwrap().public;
    assert!(
        public.is_none_or(|p| p.addr.is_none() && p.ip.is_none()),
        "nothing to advertise"
    );

    // Four honest observers and one liar: the honest address wins.
    let mut observers = vec![net.relay_addr.clone(), liar1];
    let (more, _running) = observers_of(&net, 3).await;
    observers.extend(more);
    let v = check(&asker.handle, &observers, ConsensusPolicy::default()).await;
    assert_eq!((v.observers, v.answered, v.agreeing), (5, 5, 4), "{v:?}");
    assert_eq!(v.ip, Some("127.0.0.1".parse().unwrap()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_a_node_neither_dials_nor_dials_back_private_addresses() {
    let net = Net::new("global-only").await;
    let mut c = net.dev.config("strict");
    c.relays.clear();
    c.allow_private_addrs = false;
    let strict = net.dev.spawn(c).await.unwrap();
    let target = net.consumer("target").await;
    let addrs = target.handle.wait_listening().await.unwrap().direct_addrs;
    // Whoever names a loopback address, the strict node will not dial it.
    let err = strict
        .dial(target.handle.peer_id(), addrs.clone())
        .await
        .expect_err("loopback is not dialed");
    assert!(
        err.to_string().contains("not a public address") && err.to_string().contains("--local"),
        "the refusal says why and what to do: {err}"
    );
    assert!(strict.dial_candidates(&addrs).is_empty());
    assert_eq!(
        target.handle.dial_candidates(&addrs).len(),
        addrs.len().min(16)
    );

    // Asked for a dial-back to a loopback address, it answers without one.
    let strict_addr = strict.wait_listening().await.unwrap().direct_addrs[0]
        .clone()
        .with(libp2p::multiaddr::Protocol::P2p(strict.peer_id()));
    target
        .handle
        .dial(strict.peer_id(), vec![strict_addr])
        .await
        .unwrap();
    let resp = target.handle.observe(strict.peer_id(), true).await.unwrap();
    assert!(!resp.observed.is_empty(), "it still says what it saw");
    assert_eq!(
        resp.dial_back,
        ledgermesh_proto::v1::DialBack::NotTried as i32,
        "but dials nothing back"
    );
    // A lab node (private addresses allowed) does dial back, once per interval.
    let lab = net.consumer("lab").await;
    let lab_addr = lab.handle.wait_listening().await.unwrap().direct_addrs[0]
        .clone()
        .with(libp2p::multiaddr::Protocol::P2p(lab.handle.peer_id()));
    target
        .handle
        .dial(lab.handle.peer_id(), vec![lab_addr])
        .await
        .unwrap();
    let first = target
        .handle
        .observe(lab.handle.peer_id(), true)
        .await
        .unwrap();
    assert_eq!(
        first.dial_back,
        ledgermesh_proto::v1::DialBack::Reachable as i32
    );
    let again = target
        .handle
        .observe(lab.handle.peer_id(), true)
        .await
        .unwrap();
    assert_eq!(
        again.dial_back,
        ledgermesh_proto::v1::DialBack::NotTried as i32,
        "one dial-back per asker per interval"
    );
}

/// `n` running nodes as address-consensus observers (any node answers the
/// observe protocol): their TCP addresses, and the nodes (keep them alive).
async fn observers_of(net: &Net, n: usize) -> (Vec<libp2p::Multiaddr>, Vec<TestNode>) {
    let (mut addrs, mut nodes) = (vec![], vec![]);
    for i in 0..n {
        let o = net.consumer(&format!("observer-{i}")).await;
        let snap = o.handle.wait_listening().await.unwrap();
        let tcp = snap
            .direct_addrs
            .iter()
            .find(|a| a.to_string().contains("/tcp/"))
            .unwrap()
            .clone();
        addrs.push(tcp.with(libp2p::multiaddr::Protocol::P2p(o.handle.peer_id())));
        nodes.push(o);
    }
    (addrs, nodes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_live_feed_keeps_its_buyer_with_heartbeats() {
    use ledgermesh_node::streams::live::LiveSpec;
    let net = Net::new("live-quiet").await;
    // Silent for 3 s, then one line, then the source ends (--exec-once).
    let mut pc = ledgermesh_node::provider::ProviderConfig::new(vec![(
        "ticks".into(),
        Source::Live(LiveSpec::Exec("sleep 3; echo hi".into())),
    )]);
    pc.exec_once = true;
    pc.serve_limits.live_heartbeat = std::time::Duration::from_millis(300);
    let p = net.provider_config("provider", pc, None).await;
    let c = net.consumer("consumer").await;
    // A buyer that takes 1 s of silence for a dead path.
    let outcomes = net
        .consume_with(&c, vec![want(&p, "ticks")], |cc| {
            cc.fetch.stall = std::time::Duration::from_secs(1)
        })
        .await;
    let f = outcomes[0].result.as_ref().expect("followed to its end");
    let live = f.live.as_ref().expect("a live stream");
    assert!(live.source_ended, "{live:?}");
    assert_eq!(
        f.resumes, 0,
        "heartbeats kept the subscription: no resubscribe"
    );
    assert_eq!(std::fs::read(&f.path).unwrap(), b"hi\n");
}
