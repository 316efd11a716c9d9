//! NAT traversal in the NAT lab: separate processes in network namespaces,
//! a fake internet on RFC 5737 addresses, nftables NAT routers, anvil in a
//! public namespace, signaling only through the chain.
//!
//! Each case runs several times and prints its counts (`NATLAB ...` lines).

use ledgermesh_e2e::chain::T;
use ledgermesh_e2e::natlab::world::*;
use ledgermesh_e2e::natlab::Nat;
use ledgermesh_e2e::procs::{event_is, Proc};
use ledgermesh_e2e::{file_sha256, truth};
use ledgermesh_node::source::Source;

/// eim + eim: relayed first, then direct through both NATs (DCUtR), and the
/// stream moves to the direct path.
fn eim_eim_upgrades(transport: Transport) {
    eim_eim_upgrades_with(transport, 0, 0.0)
}

fn eim_eim_upgrades_with(transport: Transport, delay_ms: u32, loss: f64) {
    let test = format!("eim_eim_{transport:?}_{delay_ms}ms_{loss}pct");
    let Some(w) = world_with(&test, Nat::Eim, Nat::Eim, transport, delay_ms, loss) else {
        return;
    };
    // A live feed of 4 s per run: time for DCUtR, and for a retry if its first punch misses.
    let (mut p, pid) = w.provider("h1", transport, true, "feed=paced:4M:1M:41");
    assert_consensus(
        &mut p,
        &format!("{test} provider"),
        "203.0.113.101",
        "endpoint-independent",
        Some(4001),
        Some(false),
    );
    let expected = futures::executor::block_on(truth(&Source::Random {
        len: 4 << 20,
        seed: 41,
    }));
    let mut upgrades = 0;
    let mut ms = vec![];
    for i in 0..RUNS {
        let (mut c, out) = w.consumer(i, transport, &format!("{pid}/feed"));
        assert_eq!(c.wait_exit(T), 0, "{test} run {i}: consumer failed");
        assert_eq!(
            file_sha256(&out.join(&pid).join("feed")),
            expected,
            "{test} run {i}: bytes"
        );
        if i == 0 {
            assert_consensus(
                &mut c,
                &format!("{test} consumer"),
                "203.0.113.102",
                "endpoint-independent",
                None,
                Some(false),
            );
        }
        let events = c.matching(|_| true);
        let conns = connections_to(&events, &pid);
        assert_eq!(
            conns.first().map(|v| v["path"].clone()),
            Some("relayed".into()),
            "{test} run {i}: starts relayed"
        );
        if let Some(up) = events
            .iter()
            .find(|v| event_is(v, "upgraded") && v["peer_id"] == pid.as_str())
        {
            upgrades += 1;
            ms.push(up["ms_after_relayed"].as_u64().unwrap());
            let direct = conns
                .iter()
                .find(|v| v["path"] == "direct")
                .expect("a direct connection");
            assert!(
                direct["remote_addr"].as_str().unwrap().contains("203.0.113.101"),
                "{test} run {i}: the direct path goes to the provider NAT's public address: {direct}"
            );
            // The relayed connection is closed at the upgrade, so the stream
            // last opened (fresh, or resumed from its offset) runs direct.
            let last_open = events
                .iter()
                .rev()
                .find(|v| event_is(v, "stream_opened"))
                .expect("stream opened");
            assert!(
                last_open["ts_ms"].as_u64() >= up["ts_ms"].as_u64(),
                "{test} run {i}: the stream continued on the direct path: {last_open} vs {up}"
            );
        } else {
            // Why not: what each side said about the punch and the paths.
            let punch = |v: &serde_json::Value| {
                ["hole_punch_failed", "connected", "disconnected", "upgraded"]
                    .iter()
                    .any(|k| event_is(v, k))
            };
            let said: Vec<_> = events.iter().filter(|v| punch(v)).collect();
            let provider_said = p.matching(|v| event_is(v, "hole_punch_failed"));
            println!("NATLAB {test} run {i}: no upgrade; consumer: {said:?}; provider: {provider_said:?}");
        }
    }
    ms.sort();
    println!("NATLAB {test}: upgraded to direct {upgrades}/{RUNS}; ms relayed→upgraded {ms:?}");
    // Every run delivers verified bytes; on a loaded two-core CI machine a
    // punch can miss its sync window, so one miss in five is tolerated (and
    // shows in the printed count).
    assert!(
        upgrades >= RUNS - 1,
        "{test}: upgraded only {upgrades}/{RUNS}"
    );
}

/// edm + edm: the punch fails and is reported; the stream completes on the relay.
fn edm_edm_stays_relayed(transport: Transport) {
    let test = format!("edm_edm_{transport:?}");
    // The relay charges for what it carries: the provider pays it.
    let Some(mut w) = world_priced(&test, Nat::Edm, Nat::Edm, transport, RELAY_PRICE) else {
        return;
    };
    // A live feed long enough to outlast every hole-punch attempt.
    let (mut p, pid) = w.provider("h1", transport, true, "feed=paced:2M:48K:43");
    assert_consensus(
        &mut p,
        &format!("{test} provider"),
        "203.0.113.101",
        "endpoint-dependent",
        None,
        Some(false),
    );
    let expected = futures::executor::block_on(truth(&Source::Random {
        len: 2 << 20,
        seed: 43,
    }));
    let mut consumers: Vec<(Proc, std::path::PathBuf)> = (0..RUNS)
        .map(|i| w.consumer(i, transport, &format!("{pid}/feed")))
        .collect();
    let mut failed_punch = 0;
    for (i, (c, out)) in consumers.iter_mut().enumerate() {
        let events = finished_whole(&format!("{test} run {i}"), c, out, &pid, &expected);
        assert!(
            !events.iter().any(|v| event_is(v, "upgraded")),
            "{test} run {i}: no direct path through two EDM NATs"
        );
        assert!(
            connections_to(&events, &pid)
                .iter()
                .all(|v| v["path"] == "relayed"),
            "{test} run {i}: only relayed connections"
        );
    }
    let reported = p.matching(|v| event_is(v, "hole_punch_failed"));
    for (c, _) in consumers.iter_mut() {
        failed_punch += usize::from(!c.matching(|v| event_is(v, "hole_punch_failed")).is_empty());
    }
    println!(
        "NATLAB {test}: direct 0/{RUNS}; hole_punch_failed reported by the provider {} times, by consumers {failed_punch}/{RUNS}",
        reported.len()
    );
    assert!(
        !reported.is_empty() || failed_punch > 0,
        "{test}: the failed punch is reported"
    );
    paid_for_every_relayed_byte(&test, &mut w, &mut p, &pid);
}

/// Wei per MiB the NAT lab's relay charges in the edm+edm cases.
const RELAY_PRICE: u128 = 1_000_000_000_000;

/// The provider behind the priced relay paid for every byte its circuits
/// carried: once every circuit has closed, the relay's last voucher covers
/// the bytes it metered on them, and what it claims on chain when it stops
/// is exactly that voucher.
fn paid_for_every_relayed_byte(test: &str, w: &mut World, p: &mut Proc, pid: &str) {
    let relay = &mut w._relay;
    let circuits = |relay: &mut Proc, outcome: &str| {
        relay.matching(|v| {
            event_is(v, "relay_circuit") && v["dst"] == pid && v["outcome"] == outcome
        })
    };
    while circuits(relay, "closed").len() < circuits(relay, "opened").len() {
        relay.wait_for_next("a circuit closing", T, |v| {
            event_is(v, "relay_circuit") && v["outcome"] == "closed"
        });
    }
    let metered: u64 = circuits(relay, "closed")
        .iter()
        .map(|v| v["bytes_to_dst"].as_u64().unwrap() + v["bytes_to_src"].as_u64().unwrap())
        .sum();
    let last = relay.wait_for("the voucher for every metered byte", T, |v| {
        event_is(v, "voucher_received") && v["bytes"].as_u64().unwrap() >= metered
    });
    let paid: u128 = last["cumulative"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        paid,
        u128::from(metered) * RELAY_PRICE / (1 << 20),
        "{test}: priced to the wei"
    );
    let sent = p.matching(|v| event_is(v, "voucher_sent"));
    assert!(
        sent.iter().any(|v| v["cumulative"] == paid.to_string()),
        "{test}: the provider signed it"
    );
    relay.terminate();
    assert_eq!(relay.wait_exit(T), 0);
    let claimed: u128 = relay
        .matching(|v| event_is(v, "claimed"))
        .iter()
        .map(|v| v["amount"].as_str().unwrap().parse::<u128>().unwrap())
        .sum();
    assert_eq!(
        claimed, paid,
        "{test}: claimed on chain what the vouchers say"
    );
    println!("NATLAB {test}: relay metered {metered} bytes, paid and claimed {paid} wei");
}

/// A publicly reachable provider: the consumer connects directly, no relay.
fn public_provider_is_direct(transport: Transport) {
    let test = format!("public_{transport:?}");
    let Some(w) = world(&test, Nat::Eim, Nat::Eim, transport) else {
        return;
    };
    let (mut p, pid) = w.provider("pub", transport, false, "feed=random:1M:44");
    assert_consensus(
        &mut p,
        &format!("{test} provider"),
        "203.0.113.30",
        "endpoint-independent",
        Some(4001),
        Some(true),
    );
    let expected = futures::executor::block_on(truth(&Source::Random {
        len: 1 << 20,
        seed: 44,
    }));
    let mut direct = 0;
    for i in 0..RUNS {
        let (mut c, out) = w.consumer(i, transport, &format!("{pid}/feed"));
        assert_eq!(c.wait_exit(T), 0, "{test} run {i}: consumer failed");
        assert_eq!(file_sha256(&out.join(&pid).join("feed")), expected);
        let events = c.matching(|_| true);
        let conns = connections_to(&events, &pid);
        let first = conns.first().expect("connected");
        if first["path"] == "direct"
            && first["remote_addr"]
                .as_str()
                .unwrap()
                .contains("203.0.113.30")
        {
            direct += 1;
        }
        assert!(
            conns.iter().all(|v| v["path"] == "direct"),
            "{test} run {i}: no relayed connection: {conns:?}"
        );
    }
    println!("NATLAB {test}: direct without relay {direct}/{RUNS}");
    assert_eq!(direct, RUNS);
}

#[test]
fn natlab_eim_eim_tcp_upgrades_to_direct() {
    eim_eim_upgrades(Transport::Tcp);
}

#[test]
fn natlab_edm_edm_tcp_stays_on_the_relay() {
    edm_edm_stays_relayed(Transport::Tcp);
}

#[test]
fn natlab_public_provider_tcp_is_direct() {
    public_provider_is_direct(Transport::Tcp);
}

#[test]
fn natlab_eim_eim_quic_upgrades_to_direct() {
    eim_eim_upgrades(Transport::Quic);
}

#[test]
fn natlab_edm_edm_quic_stays_on_the_relay() {
    edm_edm_stays_relayed(Transport::Quic);
}

#[test]
fn natlab_public_provider_quic_is_direct() {
    public_provider_is_direct(Transport::Quic);
}

#[test]
fn natlab_eim_eim_tcp_with_40ms_delay_still_upgrades() {
    eim_eim_upgrades_with(Transport::Tcp, 40, 0.0);
}

#[test]
fn natlab_streams_complete_verified_with_40ms_delay_and_1pct_loss() {
    // Every run upgrades or stays relayed; every stream must arrive whole.
    eim_eim_upgrades_with(Transport::Tcp, 40, 1.0);
}

/// edm + edm with two relays: the relay carrying a stream dies mid-stream;
/// the stream moves to the other relay and completes verified, the move and
/// the stall reported.
#[test]
fn natlab_relay_death_mid_stream_moves_to_the_second_relay() {
    let test = "relay_death";
    let Some(mut w) = world_two_relays(test, Nat::Edm, Nat::Edm, Transport::Tcp) else {
        return;
    };
    let (_p, pid) = w.provider("h1", Transport::Tcp, true, "feed=paced:4M:1M:47");
    let (mut c, out) = w.consumer(0, Transport::Tcp, &format!("{pid}/feed"));
    let file = out.join(&pid).join("feed");
    let carrier = carrier_once_flowing(test, &mut c, &pid, &file, 512 << 10);
    let (relay2, a2) = w.relay2.as_mut().expect("two relays");
    let other = if a2.ends_with(&carrier) {
        relay2.stop();
        w.relay_addr.rsplit('/').next().unwrap().to_string()
    } else {
        w._relay.stop();
        a2.rsplit('/').next().unwrap().to_string()
    };
    let moved = c.wait_for("path_changed", T, |v| {
        event_is(v, "path_changed")
            && v["peer_id"] == pid.as_str()
            && v["from"]["via"] == carrier.as_str()
    });
    assert_eq!(moved["reason"], "relay_lost", "{moved}");
    assert_eq!(c.wait_exit(T), 0, "{test}: the stream completed");
    let resumed = c.wait_for("stream_resumed", T, |v| event_is(v, "stream_resumed"));
    let on_other = c.matching(|v| {
        event_is(v, "connected") && v["peer_id"] == pid.as_str() && v["via"] == other.as_str()
    });
    assert!(
        !on_other.is_empty(),
        "{test}: reconnected through the other relay"
    );
    let expected = futures::executor::block_on(truth(&Source::Random {
        len: 4 << 20,
        seed: 47,
    }));
    assert_eq!(file_sha256(&file), expected, "{test}: every byte once");
    println!(
        "NATLAB {test}: moved off {carrier} ({}), stalled {} ms",
        moved["reason"], resumed["stalled_ms"]
    );
}

/// Runs of each hard-NAT case (the acceptance asks for 18 direct in 20).
const HARD_RUNS: usize = 20;
/// Consumers at once in the hard-NAT cases (the provider's limiter runs
/// four attempts at once).
const HARD_BATCH: usize = 4;

/// Hard NAT, one side: the provider behind `provider_nat`, the consumers
/// behind `consumer_nat` (one endpoint-independent, the other
/// endpoint-dependent with fully random ports), over QUIC. DCUtR cannot
/// pass such a pair; the hard-NAT attempt (sockets on the hard side, probes
/// from the easy side) must find a direct path in at least 18 of 20 runs,
/// and every stream arrives whole either way.
fn hard_nat_goes_direct(
    provider_nat: Nat,
    consumer_nat: Nat,
    transport: Transport,
    at_least: usize,
) {
    let test =
        format!("hard_nat_provider_{provider_nat:?}_consumer_{consumer_nat:?}_{transport:?}");
    let Some(w) = world(&test, provider_nat, consumer_nat, transport) else {
        return;
    };
    let mapping = |n: Nat| match n {
        Nat::Eim => "endpoint-independent",
        Nat::Edm => "endpoint-dependent",
    };
    let role = |n: Nat| match n {
        Nat::Eim => "easy",
        Nat::Edm => "hard",
    };
    // Paced over 6 s: a consumer is still running when a late attempt ends
    // (over a second on a loaded machine), so its own events tell of it;
    // with 3 s, a consumer done relayed first sometimes left before its
    // `hard_nat` or QUIC-verdict event while the provider saw the direct path.
    let (mut p, pid) = w.provider("h1", transport, true, "feed=paced:6M:1M:48");
    assert_consensus(
        &mut p,
        &format!("{test} provider"),
        "203.0.113.101",
        mapping(provider_nat),
        None,
        Some(false),
    );
    // Observers written by TCP address: the endpoint-independent side asked
    // them over QUIC as well, and has a QUIC verdict beside the TCP one
    // (the hard side needs none).
    let has_quic_verdict = |events: &[serde_json::Value]| {
        events.iter().any(|v| {
            event_is(v, "public_address")
                && v["addr"]
                    .as_str()
                    .is_some_and(|a| a.contains("/udp/") && a.ends_with("/quic-v1"))
        })
    };
    if transport == Transport::TcpWritten && provider_nat == Nat::Eim {
        let quic = p.wait_for("the QUIC verdict", T, |v| {
            event_is(v, "public_address") && v["addr"].as_str().is_some_and(|a| a.contains("/udp/"))
        });
        assert!(
            quic["addr"]
                .as_str()
                .unwrap()
                .contains("/ip4/203.0.113.101/udp/"),
            "{test}: {quic}"
        );
    }
    let expected = futures::executor::block_on(truth(&Source::Random {
        len: 6 << 20,
        seed: 48,
    }));
    // The control: the same pair with `--hard-nat off` on the consumer
    // stays relayed (DCUtR alone cannot pass it). It runs first, on NATs
    // with no state yet: the runs' thousands of probes leave the provider's
    // NAT open to that many ports of the consumer's for a while, and a
    // DCUtR dial from a fresh port that happens to be one of them gets in.
    let (mut c, out) = w.consumer_with(
        HARD_RUNS,
        transport,
        &format!("{pid}/feed"),
        true,
        &["--hard-nat", "off"],
    );
    assert_eq!(c.wait_exit(T), 0, "{test} control: consumer failed");
    assert_eq!(file_sha256(&out.join(&pid).join("feed")), expected);
    let events = c.matching(|_| true);
    assert!(
        connections_to(&events, &pid)
            .iter()
            .all(|v| v["path"] == "relayed"),
        "{test} control: no direct path without hard-NAT traversal"
    );
    let attempts: Vec<_> = events.iter().filter(|v| event_is(v, "hard_nat")).collect();
    match consumer_nat {
        // The hard side switched off offers nothing.
        Nat::Edm => assert!(attempts.is_empty(), "{test} control: {attempts:?}"),
        // The easy side switched off declines the provider's offer.
        Nat::Eim => assert!(
            attempts
                .iter()
                .all(|v| v["outcome"] == "declined" && v["reason"] == "disabled"),
            "{test} control: {attempts:?}"
        ),
    }
    let (mut direct, mut ms, mut tallies) = (0, vec![], vec![]);
    let runs: Vec<usize> = (0..HARD_RUNS).collect();
    for batch in runs.chunks(HARD_BATCH) {
        let mut consumers: Vec<_> = (batch.iter())
            .map(|&i| {
                let want = format!("{pid}/feed");
                (i, w.consumer_with(i, transport, &want, true, &[]))
            })
            .collect();
        for (i, (c, out)) in consumers.iter_mut() {
            let events = finished_whole(&format!("{test} run {i}"), c, out, &pid, &expected);
            if transport == Transport::TcpWritten && consumer_nat == Nat::Eim {
                assert!(has_quic_verdict(&events), "{test} run {i}: a QUIC verdict");
            }
            let verdict = events.iter().find(|v| event_is(v, "public_address"));
            assert_eq!(
                verdict.map(|v| v["mapping"].clone()),
                Some(mapping(consumer_nat).into()),
                "{test} run {i}: the consumer knows its mapping"
            );
            let conns = connections_to(&events, &pid);
            assert_eq!(
                conns.first().map(|v| v["path"].clone()),
                Some("relayed".into()),
                "{test} run {i}: starts relayed"
            );
            let attempt = events
                .iter()
                .find(|v| event_is(v, "hard_nat") && v["peer_id"] == pid.as_str());
            let up = conns.iter().find(|v| v["path"] == "direct");
            match (attempt, up) {
                (Some(a), Some(up)) if a["outcome"] == "direct" => {
                    assert_eq!(a["role"], role(consumer_nat), "{test} run {i}: {a}");
                    assert_eq!(up["transport"], "quic", "{test} run {i}: {up}");
                    assert!(
                        up["remote_addr"]
                            .as_str()
                            .unwrap()
                            .contains("/ip4/203.0.113.101/udp/"),
                        "{test} run {i}: direct to the provider NAT's public address: {up}"
                    );
                    direct += 1;
                    ms.push(a["ms"].as_u64().unwrap());
                    tallies.push((a["sockets"].clone(), a["probes"].clone()));
                }
                _ => println!(
                    "NATLAB {test} run {i}: no direct path; attempt {attempt:?}; connections {conns:?}"
                ),
            }
        }
    }
    let said = p.matching(|v| event_is(v, "hard_nat"));
    let provider_direct = said.iter().filter(|v| v["outcome"] == "direct").count();
    assert!(
        said.iter().all(|v| v["role"] == role(provider_nat)),
        "{test}: the provider played its side: {said:?}"
    );
    ms.sort();
    println!(
        "NATLAB {test}: direct {direct}/{HARD_RUNS} (provider saw {provider_direct}); \
         ms offer→direct {ms:?}; (sockets, probes) per direct run {:?}",
        tallies.first()
    );
    assert!(
        direct >= at_least,
        "{test}: direct only {direct}/{HARD_RUNS}"
    );
}

#[test]
fn natlab_hard_nat_consumer_behind_edm_goes_direct_over_quic() {
    hard_nat_goes_direct(Nat::Eim, Nat::Edm, Transport::Quic, HARD_RUNS - 2);
}

#[test]
fn natlab_hard_nat_provider_behind_edm_goes_direct_over_quic() {
    hard_nat_goes_direct(Nat::Edm, Nat::Eim, Transport::Quic, HARD_RUNS - 2);
}

/// The same pairs with the relay and the observers written by their TCP
/// address, as a user copies them from the log: the nodes learn each
/// observer's QUIC address from its answer, ask over QUIC as well, and so
/// have the QUIC verdict the hard-NAT path needs.
/// Held to the QUIC-written cases' floor (18 of 20): under a loaded
/// machine a consumer now and then ends its 3 s stream before its offer
/// is answered, as there.
#[test]
fn natlab_hard_nat_consumer_behind_edm_goes_direct_with_tcp_written_relays() {
    hard_nat_goes_direct(Nat::Eim, Nat::Edm, Transport::TcpWritten, HARD_RUNS - 2);
}

/// The provider-hard direction shares the provider's four attempt slots
/// between the batch's consumers: it misses as the QUIC-written case does
/// (18–20 of 20), so it is held to the same floor.
#[test]
fn natlab_hard_nat_provider_behind_edm_goes_direct_with_tcp_written_relays() {
    hard_nat_goes_direct(Nat::Edm, Nat::Eim, Transport::TcpWritten, HARD_RUNS - 2);
}

/// edm + edm with two relays on the lab's switch: mid-stream, the link of
/// the relay carrying the stream turns slow and lossy (300 ms one way, 5 %
/// loss). The consumer's pings rate the hop red, it re-routes through the
/// healthy relay, reports `path_changed` with `degraded`, and the stream
/// completes verified, every byte once.
#[test]
fn natlab_degraded_relay_mid_stream_moves_to_the_healthy_relay() {
    let test = "degraded_relay";
    let Some(w) = world_two_relays_switched(test, Nat::Edm, Nat::Edm, Transport::Tcp) else {
        return;
    };
    let (_p, pid) = w.provider("h1", Transport::Tcp, true, "feed=paced:10M:1M:49");
    let want = format!("{pid}/feed");
    let (mut c, out) = w.consumer_with(0, Transport::Tcp, &want, false, &["--ping-secs", "1"]);
    let file = out.join(&pid).join("feed");
    let carrier = carrier_once_flowing(test, &mut c, &pid, &file, 1 << 20);
    let (_, a2) = w.relay2.as_ref().expect("two relays");
    let (bad_host, other) = if a2.ends_with(&carrier) {
        (
            "relay2",
            w.relay_addr.rsplit('/').next().unwrap().to_string(),
        )
    } else {
        ("relay", a2.rsplit('/').next().unwrap().to_string())
    };
    w.lab.impair(bad_host, 300, 5.0);
    let moved = c.wait_for("path_changed", T, |v| {
        event_is(v, "path_changed")
            && v["peer_id"] == pid.as_str()
            && v["from"]["via"] == carrier.as_str()
    });
    assert_eq!(moved["reason"], "degraded", "{moved}");
    assert_eq!(
        moved["to"]["via"],
        other.as_str(),
        "{test}: onto the healthy relay: {moved}"
    );
    let degraded = c.matching(|v| event_is(v, "path_degraded") && v["peer_id"] == pid.as_str());
    assert!(
        !degraded.is_empty(),
        "{test}: the degraded hop was reported"
    );
    assert_eq!(c.wait_exit(T), 0, "{test}: the stream completed");
    let expected = futures::executor::block_on(truth(&Source::Random {
        len: 10 << 20,
        seed: 49,
    }));
    assert_eq!(file_sha256(&file), expected, "{test}: every byte once");
    let resumed = c.matching(|v| event_is(v, "stream_resumed"));
    println!(
        "NATLAB {test}: moved off {carrier} ({}) after {:?}; resumed {:?}",
        moved["reason"],
        degraded
            .first()
            .map(|d| (d["rtt_ms"].clone(), d["loss_pct"].clone())),
        resumed.first().map(|r| r["stalled_ms"].clone())
    );
}

/// The relay carrying the consumer's first (relayed) connection to `pid`,
/// once `min` bytes of the stream are on disk.
fn carrier_once_flowing(
    test: &str,
    c: &mut Proc,
    pid: &str,
    file: &std::path::Path,
    min: u64,
) -> String {
    let first = c.wait_for("connected", T, |v| {
        event_is(v, "connected") && v["peer_id"] == pid && v["path"] == "relayed"
    });
    let deadline = std::time::Instant::now() + T;
    while std::fs::metadata(file).map(|m| m.len()).unwrap_or(0) < min {
        assert!(std::time::Instant::now() < deadline, "{test}: no data");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    first["via"].as_str().unwrap().to_string()
}

/// Waits for a consumer to exit 0 with `pid`'s `feed` whole on disk
/// (its SHA-256 is `expected`); returns the consumer's events.
fn finished_whole(
    what: &str,
    c: &mut Proc,
    out: &std::path::Path,
    pid: &str,
    expected: &[u8; 32],
) -> Vec<serde_json::Value> {
    let code = c.wait_exit(T);
    let said = c.matching(|v| event_is(v, "error") || event_is(v, "hard_nat"));
    assert_eq!(code, 0, "{what}: consumer failed: {said:#?}");
    assert_eq!(
        &file_sha256(&out.join(pid).join("feed")),
        expected,
        "{what}: bytes"
    );
    c.matching(|_| true)
}
