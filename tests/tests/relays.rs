//! Several relays, separate processes on loopback: a relay that goes away
//! and comes back is reserved on again without restarting the provider, and
//! a dead relay is replaced by the next one in line; each time a buyer then
//! fetches through the new circuit, verified.

use ledgermesh_e2e::procs::*;
use ledgermesh_e2e::{file_sha256, open_acl, temp_dir, truth, TempDir};
use ledgermesh_node::source::Source;
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

/// A relay process on a fixed port with the identity in `name`'s key file
/// (made on first use), so it can come back as itself; its dialable address.
fn relay(dir: &TempDir, name: &str, port: u16) -> (Proc, String) {
    let key_file = dir.0.join(format!("{name}.key"));
    let (key, id) = if key_file.exists() {
        let id = std::fs::read_to_string(dir.0.join(format!("{name}.id"))).unwrap();
        (key_file.to_str().unwrap().to_string(), id)
    } else {
        let (key, id) = keygen(&dir.0, name);
        std::fs::write(dir.0.join(format!("{name}.id")), &id).unwrap();
        (key, id)
    };
    let listen = format!("/ip4/127.0.0.1/tcp/{port}");
    let mut p = Proc::start(
        name,
        &dir.0,
        &[
            "relay", "--json", "--open", "--key", &key, "--listen", &listen,
        ],
    );
    p.wait_for("listening", T, |v| event_is(v, "listening"));
    (p, format!("{listen}/p2p/{id}"))
}

fn provider(dir: &TempDir, relays: &[&str], extra: &[&str]) -> (Proc, String) {
    provider_of(dir, "data=random:256K:5", relays, extra)
}

/// A provider of `stream` (open to all, reached only through `relays`).
fn provider_of(dir: &TempDir, stream: &str, relays: &[&str], extra: &[&str]) -> (Proc, String) {
    let (key, id) = keygen(&dir.0, "provider");
    let acl = open_acl(&dir.0);
    let mut args = vec![
        "provide",
        "--json",
        "--key",
        &key,
        "--relay-only",
        "--no-hole-punch",
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        "--acl",
        acl.to_str().unwrap(),
        "--stream",
        stream,
        "--relay",
    ];
    args.extend_from_slice(relays);
    args.extend_from_slice(extra);
    (Proc::start("provider", &dir.0, &args), id)
}

/// A buyer fetching `data` through `relay`'s circuit to `pid`, verified.
fn fetch_through(dir: &TempDir, name: &str, relay: &str, pid: &str) {
    let out = dir.0.join(format!("{name}-out"));
    let circuit = format!("{relay}/p2p-circuit/p2p/{pid}");
    let mut c = Proc::start(
        name,
        &dir.0,
        &[
            "consume",
            "--json",
            "--no-hole-punch",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--provider-addr",
            &circuit,
            "--want",
            &format!("{pid}/data"),
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let code = c.wait_exit(T);
    let said = c.matching(|v| event_is(v, "error"));
    assert_eq!(code, 0, "{name}: fetch through {relay}: {said:?}");
    let expected = futures::executor::block_on(truth(&Source::Random {
        len: 256 << 10,
        seed: 5,
    }));
    assert_eq!(file_sha256(&out.join(pid).join("data")), expected);
}

/// Waits until the provider serves streams: it follows its ledger inbox
/// only after (its reservations can be accepted before it is ready).
fn serving(p: &mut Proc) {
    p.wait_for("serving", T, |v| event_is(v, "ledger_following"));
}

/// A provider of `stream` holding reservations on both relays, serving.
fn provider_on_two(dir: &TempDir, stream: &str, a1: &str, a2: &str) -> (Proc, String) {
    let (mut p, pid) = provider_of(dir, stream, &[a1, a2], &[]);
    for _ in 0..2 {
        p.wait_for_next("reservations", T, |v| event_is(v, "reservation_accepted"));
    }
    serving(&mut p);
    (p, pid)
}

/// A buyer of `feed` from `pid` at `circuits` (no ledger, no hole punch);
/// it and the file the stream goes to.
fn buyer(
    dir: &TempDir,
    pid: &str,
    circuits: &[String],
    extra: &[&str],
) -> (Proc, std::path::PathBuf) {
    let out = dir.0.join("out");
    let want = format!("{pid}/feed");
    let mut args = vec![
        "consume",
        "--json",
        "--no-hole-punch",
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        "--want",
        &want,
        "--out",
        out.to_str().unwrap(),
        "--provider-addr",
    ];
    args.extend(circuits.iter().map(String::as_str));
    args.extend_from_slice(extra);
    (
        Proc::start("buyer", &dir.0, &args),
        out.join(pid).join("feed"),
    )
}

/// Waits until `file` holds `n` bytes (no event per chunk: the file says).
fn wait_bytes(c: &mut Proc, file: &std::path::Path, n: u64) {
    let deadline = std::time::Instant::now() + T;
    while std::fs::metadata(file).map(|m| m.len()).unwrap_or(0) < n {
        assert!(
            std::time::Instant::now() < deadline,
            "no data: {:#?}",
            c.matching(|_| true)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn accepted_on(p: &mut Proc, relay: &str) -> usize {
    let id = relay.rsplit('/').next().unwrap();
    p.matching(|v| event_is(v, "reservation_accepted") && v["relay"] == id)
        .len()
}

#[test]
fn a_relay_that_comes_back_is_reserved_on_again_without_a_restart() {
    let dir = temp_dir("relay-back");
    let port = free_port();
    let (mut r, raddr) = relay(&dir, "relay", port);
    let (mut p, pid) = provider(&dir, &[&raddr], &[]);
    p.wait_for("reservation", T, |v| event_is(v, "reservation_accepted"));
    serving(&mut p);
    fetch_through(&dir, "before", &raddr, &pid);

    r.stop();
    let lost = p.wait_for_next("reservation lost", T, |v| {
        event_is(v, "error") && v["reason"] == "reservation_lost"
    });
    assert!(
        lost["detail"].as_str().unwrap().contains("asking again"),
        "{lost}"
    );
    // The same relay, back on its port: reserved on again, no restart.
    let (_r, again) = relay(&dir, "relay", port);
    assert_eq!(again, raddr);
    p.wait_for_next("reservation again", T, |v| {
        event_is(v, "reservation_accepted")
    });
    assert_eq!(accepted_on(&mut p, &raddr), 2);
    fetch_through(&dir, "after", &raddr, &pid);
}

#[test]
fn a_dead_relay_is_replaced_by_the_next_one_in_line() {
    let dir = temp_dir("relay-next");
    let (mut r1, a1) = relay(&dir, "relay-1", free_port());
    let (_r2, a2) = relay(&dir, "relay-2", free_port());
    // One reservation at a time: the first in line, the second stands by.
    let (mut p, pid) = provider(&dir, &[&a1, &a2], &["--reservations", "1"]);
    p.wait_for("reservation", T, |v| event_is(v, "reservation_accepted"));
    serving(&mut p);
    assert_eq!((accepted_on(&mut p, &a1), accepted_on(&mut p, &a2)), (1, 0));

    r1.stop();
    let id2 = a2.rsplit('/').next().unwrap().to_string();
    p.wait_for_next("the next relay", T, |v| {
        event_is(v, "reservation_accepted") && v["relay"] == id2.as_str()
    });
    fetch_through(&dir, "buyer", &a2, &pid);
}

#[test]
fn a_relay_killed_mid_stream_moves_the_stream_to_the_other_relay_without_loss() {
    let dir = temp_dir("relay-migrate");
    let (mut r1, a1) = relay(&dir, "relay-1", free_port());
    let (mut r2, a2) = relay(&dir, "relay-2", free_port());
    // 2 MiB at 512 KiB/s: a stream still flowing when its relay dies.
    let (_p, pid) = provider_on_two(&dir, "feed=paced:2M:512K:9", &a1, &a2);
    let circuits = [
        format!("{a1}/p2p-circuit/p2p/{pid}"),
        format!("{a2}/p2p-circuit/p2p/{pid}"),
    ];
    let (mut c, file) = buyer(&dir, &pid, &circuits, &[]);
    wait_bytes(&mut c, &file, 256 << 10);
    // The oldest connection carries the traffic: stop its relay.
    let first = c.wait_for("connected", T, |v| {
        event_is(v, "connected") && v["peer_id"] == pid.as_str()
    });
    let carrier = first["via"].as_str().expect("relayed").to_string();
    let id1 = a1.rsplit('/').next().unwrap().to_string();
    if carrier == id1 {
        r1.stop();
    } else {
        r2.stop();
    }
    let moved = c.wait_for("path_changed", T, |v| {
        event_is(v, "path_changed")
            && v["peer_id"] == pid.as_str()
            && v["from"]["via"] == carrier.as_str()
    });
    assert_eq!(moved["reason"], "relay_lost", "{moved}");
    assert_eq!(c.wait_exit(T), 0);
    let resumed = c.wait_for("stream_resumed", T, |v| event_is(v, "stream_resumed"));
    assert!(resumed["stalled_ms"].as_u64().is_some(), "{resumed}");
    println!(
        "RELAY migration: {moved} then resumed after {} ms",
        resumed["stalled_ms"]
    );
    let expected = futures::executor::block_on(truth(&Source::Random {
        len: 2 << 20,
        seed: 9,
    }));
    assert_eq!(file_sha256(&file), expected, "every byte once, verified");
}

/// A TCP proxy on loopback in front of `target` that holds every piece it
/// forwards, each way, for `delay` ms (0 at first): a relay link gone slow.
fn slow_proxy(target: std::net::SocketAddr) -> (u16, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicU64, Ordering};
    let delay = std::sync::Arc::new(AtomicU64::new(0));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let d = delay.clone();
    std::thread::spawn(move || {
        for inbound in listener.incoming() {
            let Ok(inbound) = inbound else { break };
            let Ok(outbound) = std::net::TcpStream::connect(target) else {
                continue;
            };
            for (mut from, mut to) in [
                (inbound.try_clone().unwrap(), outbound.try_clone().unwrap()),
                (outbound, inbound),
            ] {
                let d = d.clone();
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 64 << 10];
                    loop {
                        let n = match from.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        let ms = d.load(Ordering::Relaxed);
                        if ms > 0 {
                            std::thread::sleep(Duration::from_millis(ms));
                        }
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = to.shutdown(std::net::Shutdown::Write);
                });
            }
        }
    });
    (port, delay)
}

#[test]
fn a_relayed_path_gone_slow_is_rerouted_to_a_healthy_relay_without_loss() {
    let dir = temp_dir("relay-degraded");
    let (p1, p2) = (free_port(), free_port());
    let (_r1, a1) = relay(&dir, "relay-1", p1);
    let (_r2, a2) = relay(&dir, "relay-2", p2);
    let (_p, pid) = provider_on_two(&dir, "feed=paced:3M:512K:11", &a1, &a2);
    // The buyer reaches each relay through its own proxy (its link to it).
    let id = |a: &str| a.rsplit('/').next().unwrap().to_string();
    let (x1, d1) = slow_proxy(format!("127.0.0.1:{p1}").parse().unwrap());
    let (x2, d2) = slow_proxy(format!("127.0.0.1:{p2}").parse().unwrap());
    let circuit = |port: u16, relay: &str| {
        format!(
            "/ip4/127.0.0.1/tcp/{port}/p2p/{}/p2p-circuit/p2p/{pid}",
            id(relay)
        )
    };
    let circuits = [circuit(x1, &a1), circuit(x2, &a2)];
    let (mut c, file) = buyer(&dir, &pid, &circuits, &["--ping-secs", "1"]);
    let first = c.wait_for("connected", T, |v| {
        event_is(v, "connected") && v["peer_id"] == pid.as_str()
    });
    let carrier = first["via"].as_str().expect("relayed").to_string();
    wait_bytes(&mut c, &file, 256 << 10);
    // The carrying relay's link turns slow: 400 ms each way.
    let (slow, healthy) = if carrier == id(&a1) {
        (d1, id(&a2))
    } else {
        (d2, id(&a1))
    };
    slow.store(400, std::sync::atomic::Ordering::Relaxed);
    let degraded = c.wait_for("path_degraded", T, |v| event_is(v, "path_degraded"));
    assert_eq!(degraded["via"], carrier.as_str(), "{degraded}");
    assert!(
        degraded["rtt_ms"].as_u64().unwrap() >= 400 || degraded["loss_pct"].as_u64().unwrap() > 10,
        "{degraded}"
    );
    let moved = c.wait_for("path_changed", T, |v| {
        event_is(v, "path_changed") && v["reason"] == "degraded"
    });
    assert_eq!(moved["from"]["via"], carrier.as_str(), "{moved}");
    assert_eq!(moved["to"]["via"], healthy.as_str(), "{moved}");
    assert_eq!(c.wait_exit(T), 0);
    println!("RELAY degraded: {degraded} then {moved}");
    let expected = futures::executor::block_on(truth(&Source::Random {
        len: 3 << 20,
        seed: 11,
    }));
    assert_eq!(file_sha256(&file), expected, "every byte once, verified");
}

/// A burst of reservations from many stock rust-libp2p clients at once is
/// answered in full: none is dropped unanswered (libp2p-stream's one-slot
/// inbound channel used to drop hop streams that arrived together, and a
/// stock client then saw only "Failed to get Reservation").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_stock_clients_all_get_their_reservations() {
    use futures::StreamExt;
    use libp2p::multiaddr::Protocol;
    use libp2p::swarm::SwarmEvent;
    const N: usize = 100;
    let dir = temp_dir("relay-burst");
    let mut relay = Proc::start(
        "relay",
        &dir.0,
        &[
            "relay",
            "--json",
            "--open",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--max-reservations-per-ip",
            "1000",
        ],
    );
    let l = relay.wait_for("relay listening", T, |v| event_is(v, "listening"));
    let addr: libp2p::Multiaddr = format!(
        "{}/p2p/{}",
        l["addrs"][0].as_str().unwrap(),
        l["peer_id"].as_str().unwrap()
    )
    .parse()
    .unwrap();
    // Every client connects first; then all ask at once.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Result<(), String>>();
    let (go, go_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for _ in 0..N {
        let mut swarm = libp2p::SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_tcp(
                libp2p::tcp::Config::default(),
                libp2p::noise::Config::new,
                libp2p::yamux::Config::default,
            )
            .unwrap()
            .with_relay_client(libp2p::noise::Config::new, libp2p::yamux::Config::default)
            .unwrap()
            .with_behaviour(|_, relay| relay)
            .unwrap()
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build();
        swarm.dial(addr.clone()).unwrap();
        let (tx, mut go, addr) = (tx.clone(), go_rx.clone(), addr.clone());
        tasks.push(tokio::spawn(async move {
            // Connected first.
            loop {
                if let SwarmEvent::ConnectionEstablished { .. } = swarm.select_next_some().await {
                    break;
                }
            }
            let _ = tx.send(Ok(()));
            loop {
                tokio::select! {
                    _ = go.wait_for(|go| *go) => break,
                    _ = swarm.select_next_some() => {}
                }
            }
            swarm.listen_on(addr.with(Protocol::P2pCircuit)).unwrap();
            loop {
                match swarm.select_next_some().await {
                    SwarmEvent::Behaviour(
                        libp2p::relay::client::Event::ReservationReqAccepted { .. },
                    ) => {
                        let _ = tx.send(Ok(()));
                    }
                    SwarmEvent::ListenerClosed { reason: Err(e), .. } => {
                        let _ = tx.send(Err(e.to_string()));
                    }
                    _ => {}
                }
            }
        }));
    }
    for _ in 0..N {
        tokio::time::timeout(T, rx.recv())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
    go.send_replace(true);
    let mut accepted = 0;
    let mut failed = Vec::new();
    while accepted + failed.len() < N {
        match tokio::time::timeout(T, rx.recv()).await.unwrap().unwrap() {
            Ok(()) => accepted += 1,
            Err(e) => failed.push(e),
        }
    }
    assert_eq!(
        accepted, N,
        "every reservation answered and accepted; failed: {failed:?}"
    );
    for t in tasks {
        t.abort();
    }
    relay.stop();
}

/// A relay started on one host without `--local` has no public address to
/// offer and refuses every reservation; the relay protocol carries no
/// reason, so the client says the likely one, naming the flag.
#[test]
fn a_relay_on_a_private_address_without_local_refuses_and_the_client_says_why() {
    let dir = temp_dir("relay-private");
    let (key, id) = keygen(&dir.0, "relay");
    let listen = "/ip4/127.0.0.1/tcp/0";
    let mut r = Proc::start_env(
        "relay",
        &dir.0,
        &[
            "relay", "--json", "--open", "--key", &key, "--listen", listen,
        ],
        &[("LEDGERMESH_ALLOW_PRIVATE_ADDRS", "false")],
    );
    let l = r.wait_for("listening", T, |v| event_is(v, "listening"));
    let addr = format!("{}/p2p/{id}", l["addrs"][0].as_str().unwrap());
    let (mut p, pid) = provider(&dir, &[&addr], &[]);
    let refused = r.wait_for("the relay's refusal", T, |v| {
        event_is(v, "relay_reservation") && v["peer_id"] == pid.as_str()
    });
    assert!(
        refused["reason"]
            .as_str()
            .unwrap_or("")
            .contains("no public address"),
        "{refused}"
    );
    let told = p.wait_for("the provider told", T, |v| {
        event_is(v, "reservation_refused")
    });
    let why = told["reason"].as_str().unwrap();
    assert!(why.contains("--local"), "{told}");
}
