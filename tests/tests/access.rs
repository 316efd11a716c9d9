//! Grants and refusals end to end, with real swarms on loopback sockets: a
//! stranger asking the stream protocol directly gets `not_allowed` and no
//! bytes; a hired stream ends with `grant_expired` when the grant runs out,
//! keeps what arrived, and resumes from its offset after a renewal.

use ledgermesh_e2e::*;
use ledgermesh_node::access::audit_log::AuditLog;
use ledgermesh_node::events::Event;
use ledgermesh_node::provider::ProviderConfig;
use ledgermesh_node::source::Source;
use ledgermesh_node::streams::{fetch, output_path, FetchPolicy, StreamError};
use ledgermesh_protocol::RejectReason;
use serde_json::Value;

const KIB: u64 = 1 << 10;

fn audit_lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("audit lines are JSON"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_asking_directly_is_refused_not_allowed_with_no_bytes_and_no_catalog() {
    let net = Net::new("stranger").await;
    let audit_path = net.dir.0.join("provider-audit.jsonl");
    let mut pc = ProviderConfig::new(vec![(
        "feed".into(),
        Source::Random {
            len: 256 * KIB,
            seed: 4,
        },
    )]);
    pc.audit = Some(AuditLog::open(&audit_path, 1 << 20, 2).unwrap());
    let mut provider = net.provider_config("provider", pc, None).await;
    let pid = provider.handle.peer_id();
    let addrs = provider.handle.wait_listening().await.unwrap().direct_addrs;

    // The stranger never posted a request: it dials and asks.
    let stranger = net.consumer("stranger").await;
    let sid = stranger.handle.peer_id();
    stranger
        .handle
        .dial(pid, addrs.clone())
        .await
        .expect("dial");
    for name in ["feed", "not-on-sale"] {
        let r = fetch(
            &stranger.handle,
            pid,
            &addrs,
            name,
            &net.dir.0,
            &FetchPolicy::default(),
        )
        .await;
        match r {
            Err(StreamError::Rejected(rej)) => {
                assert_eq!(rej.reason, RejectReason::NotAllowed, "{name}: {rej:?}");
                assert!(
                    !rej.detail.contains("feed") && !rej.detail.contains("262144"),
                    "the refusal reveals nothing: {}",
                    rej.detail
                );
            }
            other => panic!("{name}: expected not_allowed, got {other:?}"),
        }
        let file = output_path(&net.dir.0, &pid, name);
        assert_eq!(
            std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0),
            0,
            "{name}: no byte reached the stranger"
        );
    }
    let refused = provider
        .events
        .wait_for("access_refused", |e| {
            matches!(e, Event::AccessRefused { peer_id, stream, reason }
                if *peer_id == sid.to_string() && stream == "feed" && reason == "not_allowed")
        })
        .await;
    assert!(matches!(refused, Event::AccessRefused { .. }));
    assert!(
        provider
            .events
            .matching(|e| matches!(e, Event::StreamServed { .. }))
            .is_empty(),
        "nothing was served"
    );
    let lines = audit_lines(&audit_path);
    let refusal = lines
        .iter()
        .find(|l| {
            l["event"] == "refuse" && l["peer_id"] == sid.to_string() && l["stream"] == "feed"
        })
        .unwrap_or_else(|| panic!("audit log holds the refusal: {lines:#?}"));
    assert_eq!(refusal["reason"], "not_allowed");
    assert!(refusal["ts_ms"].as_u64().unwrap() > 0);
    assert!(!lines.iter().any(|l| l["event"] == "serve_start"));

    // A paying consumer on the same provider is served meanwhile.
    let consumer = net.consumer("consumer").await;
    let outcomes = net.consume(&consumer, vec![want(&provider, "feed")]).await;
    assert_delivered(
        &outcomes[0],
        truth(&Source::Random {
            len: 256 * KIB,
            seed: 4,
        })
        .await,
        256 * KIB,
    );
    let lines = audit_lines(&audit_path);
    let cid = consumer.handle.peer_id().to_string();
    for ev in ["grant", "serve_start", "serve_end"] {
        assert!(
            lines
                .iter()
                .any(|l| l["event"] == ev && l["peer_id"] == cid),
            "audit {ev} for the consumer: {lines:#?}"
        );
    }
}

/// A live feed that takes 3 s to send; it is hired for [`HIRE_SECS`], which
/// leaves a second of set-up on a loaded machine before the first byte.
fn paced() -> Source {
    Source::Paced {
        len: LIVE_LEN,
        rate: 160 * KIB,
        seed: 21,
    }
}

const LIVE_LEN: u64 = 480 * KIB;
const HIRE_SECS: u64 = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_grant_ends_the_stream_and_keeps_what_arrived() {
    let net = Net::new("expire").await;
    let provider = net
        .provider_with("provider", vec![("live".into(), paced())], false, None)
        .await;
    let mut consumer = net.consumer("consumer").await;
    let outcomes = net
        .consume_with(&consumer, vec![want(&provider, "live")], |cc| {
            cc.hire_secs = HIRE_SECS
        })
        .await;
    let err = outcomes[0]
        .result
        .as_ref()
        .expect_err("the grant ran out mid-stream");
    match err {
        ledgermesh_node::consumer::BuyError::Stream(e) => match &**e {
            StreamError::Rejected(r) => assert_eq!(r.reason, RejectReason::GrantExpired),
            other => panic!("refused grant_expired, not {other}"),
        },
        other => panic!("the stream was cut, not {other:?}"),
    }
    let told = consumer
        .events
        .wait_for("grant_expired", |e| {
            matches!(
                e,
                Event::GrantExpired {
                    offset: Some(_),
                    ..
                }
            )
        })
        .await;
    let Event::GrantExpired {
        offset: Some(kept),
        path: Some(path),
        ..
    } = told
    else {
        unreachable!()
    };
    assert!(
        kept > 0 && kept < LIVE_LEN,
        "part of the stream arrived: {kept}"
    );
    // The bytes kept are exactly the stream's first `kept` bytes.
    let on_disk = std::fs::read(&path).expect("partial file kept");
    assert_eq!(on_disk.len() as u64, kept);
    let mut truth_bytes = vec![0u8; kept as usize];
    let mut r = paced().open_at(0, LIVE_LEN).await.unwrap();
    tokio::io::AsyncReadExt::read_exact(&mut r, &mut truth_bytes)
        .await
        .unwrap();
    assert!(on_disk == truth_bytes, "the kept prefix matches the source");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_request_resumes_an_expired_stream_from_its_offset() {
    let net = Net::new("renew").await;
    let mut provider = net
        .provider_with("provider", vec![("live".into(), paced())], false, None)
        .await;
    let mut consumer = net.consumer("consumer").await;
    let outcomes = net
        .consume_with(&consumer, vec![want(&provider, "live")], |cc| {
            cc.hire_secs = HIRE_SECS;
            cc.renew = true;
        })
        .await;
    assert_delivered(&outcomes[0], truth(&paced()).await, LIVE_LEN);
    let expired = consumer
        .events
        .matching(|e| matches!(e, Event::GrantExpired { offset: Some(o), .. } if *o > 0));
    assert!(!expired.is_empty(), "the grant ran out at least once");
    let grants = consumer
        .events
        .matching(|e| matches!(e, Event::Grant { .. }));
    assert!(grants.len() >= 2, "first grant and a renewal: {grants:?}");
    // The stream resumed from where it stopped, never from 0.
    let Event::GrantExpired {
        offset: Some(first_cut),
        ..
    } = expired[0]
    else {
        unreachable!()
    };
    let reopened = consumer
        .events
        .matching(|e| matches!(e, Event::StreamOpened { offset, .. } if *offset == first_cut));
    assert!(
        !reopened.is_empty(),
        "a stream reopened at offset {first_cut}"
    );
    assert!(outcomes[0].result.as_ref().unwrap().resumes >= 1);
    // The provider cut the stream at expiry and saw the renewal.
    provider
        .events
        .wait_for("grant_expired", |e| matches!(e, Event::GrantExpired { .. }))
        .await;
    assert!(
        provider
            .events
            .matching(|e| matches!(e, Event::Grant { .. }))
            .len()
            >= 2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_writes_its_reservations_and_circuits_to_its_audit_log() {
    let net = Net::new("relay-audit").await;
    let audit_path = net.dir.0.join("relay-audit.jsonl");
    let mut c = net.dev.config("audited-relay");
    let mut relay_events = Recorder::new(c.emitter.as_ref().unwrap());
    c.relays.clear();
    c.relay_server = Some(ledgermesh_node::swarm::RelayLimits::lifted());
    c.audit = Some(AuditLog::open(&audit_path, 1 << 20, 2).unwrap());
    let relay = net.dev.spawn(c).await.expect("relay starts");
    let relay_addr = ledgermesh_node::relay::dial_addr(&relay).await.unwrap();

    // A provider reachable only through the audited relay, and a buyer.
    let provider = net
        .provider_with(
            "provider",
            vec![(
                "feed".into(),
                Source::Random {
                    len: 64 * KIB,
                    seed: 9,
                },
            )],
            true,
            Some(vec![relay_addr]),
        )
        .await;
    provider.handle.wait_relays().await.unwrap();
    let (pid, cid) = (provider.handle.peer_id(), net.consumer("buyer").await);
    let outcomes = net.consume(&cid, vec![want(&provider, "feed")]).await;
    assert!(outcomes[0].result.is_ok(), "{:?}", outcomes[0].result);
    let cid = cid.handle.peer_id();
    relay_events
        .wait_for("the circuit to be reported", |e| {
            matches!(e, Event::RelayCircuit { src, dst, outcome, .. }
                if *src == cid.to_string() && *dst == pid.to_string() && outcome == "opened")
        })
        .await;

    let lines = audit_lines(&audit_path);
    let reservation = lines
        .iter()
        .find(|l| l["event"] == "reservation")
        .unwrap_or_else(|| panic!("no reservation line in {lines:?}"));
    assert_eq!(reservation["peer_id"], pid.to_string());
    assert_eq!(reservation["node"], "audited-relay");
    let circuit = lines
        .iter()
        .find(|l| l["event"] == "circuit_open")
        .unwrap_or_else(|| panic!("no circuit line in {lines:?}"));
    assert_eq!(circuit["peer_id"], cid.to_string());
    assert_eq!(circuit["detail"], format!("to {pid}"));
    assert!(circuit["ts_ms"].as_u64().unwrap() >= reservation["ts_ms"].as_u64().unwrap());
    assert!(
        lines
            .iter()
            .filter(|l| l["event"] == "reservation_end")
            .all(|l| l["peer_id"] == pid.to_string()),
        "only a peer that held a reservation can end one: {lines:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_sold_before_a_provider_restart_are_honoured_after_it() {
    use ledgermesh_node::swarm::NodeHandle;
    let net = Net::new("grant-restart").await;
    let data = net.dir.0.join("provider-data");
    let key = libp2p::identity::Keypair::generate_ed25519();
    let src = Source::Random {
        len: 64 * KIB,
        seed: 3,
    };
    let start = |name: &'static str| {
        let mut c = net.dev.config(name);
        c.relays = vec![net.relay_addr.clone()];
        let mut pc = ProviderConfig::new(vec![("feed".into(), src.clone())]);
        pc.data_dir = Some(data.clone());
        let (dev, key) = (&net.dev, key.clone());
        let mut events = Recorder::new(c.emitter.as_ref().unwrap());
        async move {
            let h = ledgermesh_node::swarm::spawn(c, key).await.unwrap();
            dev.provide(&h, None, pc);
            // Its stream server is up before it follows the ledger.
            events
                .wait_for("following", |e| matches!(e, Event::LedgerFollowing { .. }))
                .await;
            h
        }
    };
    let first = start("provider").await;
    let buyer = net.consumer("buyer").await;
    let pid = first.peer_id();
    let bought = net
        .consume(
            &buyer,
            vec![ledgermesh_node::consumer::Want {
                peer: pid,
                stream: "feed".into(),
            }],
        )
        .await;
    assert!(bought[0].result.is_ok(), "bought: {:?}", bought[0].result);
    first.shutdown().await;
    // Restarted with the same identity and data directory, it honours the
    // grant without a new request; a peer that bought nothing is refused.
    let again: NodeHandle = start("provider-again").await;
    let addrs = again.wait_listening().await.unwrap().direct_addrs;
    let ask = |who: &NodeHandle, dir: std::path::PathBuf| {
        let (who, addrs) = (who.clone(), addrs.clone());
        async move {
            who.dial(pid, addrs.clone()).await.expect("dial");
            fetch(&who, pid, &addrs, "feed", &dir, &FetchPolicy::default()).await
        }
    };
    let got = ask(&buyer.handle, net.dir.0.join("again"))
        .await
        .expect("the buyer's grant survived the restart");
    assert_eq!(got.bytes, 64 * KIB);
    assert_eq!(got.sha256, truth(&src).await);
    let stranger = net.consumer("stranger").await;
    match ask(&stranger.handle, net.dir.0.join("stranger")).await {
        Err(StreamError::Rejected(r)) => assert_eq!(r.reason, RejectReason::NotAllowed),
        other => panic!("a stranger is refused, got {other:?}"),
    }
}
