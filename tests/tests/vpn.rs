//! The mesh VPN's packets between real nodes on loopback: what one node's
//! device sends arrives byte for byte at the other's, and what a stranger,
//! a spoofer or a broken framer sends is dropped, counted and told while
//! the tunnel carries on. (The TUN device itself is the `vpn` role's; here
//! each device is a pair of channels.)

use futures::AsyncWriteExt;
use ledgermesh_e2e::*;
use ledgermesh_node::events::Event;
use ledgermesh_node::protocols::vpn::{Device, Vpn, PROTOCOL};
use ledgermesh_protocol::vpn::{address_of, Peer, Router};
use libp2p::{PeerId, StreamProtocol};
use std::net::Ipv6Addr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

const MTU: usize = 1280;

/// An IPv6 packet (UDP) from `src` to `dst` whose payload is `fill`.
fn packet(src: Ipv6Addr, dst: Ipv6Addr, payload: usize, fill: u8) -> Vec<u8> {
    let mut p = vec![fill; 40 + payload];
    p[0] = 0x60;
    p[1..4].fill(0);
    p[4..6].copy_from_slice(&(payload as u16).to_be_bytes());
    p[6] = 17;
    p[7] = 64;
    p[8..24].copy_from_slice(&src.octets());
    p[24..40].copy_from_slice(&dst.octets());
    p
}

/// A node's tunnel: its device's two ends.
struct Tunnel {
    send: mpsc::Sender<Vec<u8>>,
    recv: mpsc::Receiver<Vec<u8>>,
}

/// Starts a tunnel on `node` that allows `peers`.
fn tunnel(node: &TestNode, peers: &[PeerId]) -> Tunnel {
    let mut router = Router::new(&node.handle.peer_id(), &[], MTU);
    for p in peers {
        router.allow(Peer::new(*p)).unwrap();
    }
    let (send, from) = mpsc::channel(1024);
    let (to, recv) = mpsc::channel(1024);
    Vpn::new(router, MTU)
        .start(node.handle.clone(), Device { from, to })
        .expect("the tunnel starts");
    Tunnel { send, recv }
}

async fn connect(a: &TestNode, b: &TestNode) {
    let snap = b.handle.wait_listening().await.unwrap();
    a.handle
        .dial(b.handle.peer_id(), snap.direct_addrs)
        .await
        .expect("a reaches b");
}

async fn next(t: &mut Tunnel) -> Vec<u8> {
    tokio::time::timeout(Duration::from_secs(20), t.recv.recv())
        .await
        .expect("a packet arrives")
        .expect("the device is open")
}

fn dropped(e: &Event, peer: &PeerId, reason_: &str) -> bool {
    matches!(e, Event::VpnDropped { peer_id: Some(p), reason, .. }
        if *p == peer.to_string() && *reason == reason_)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packets_cross_between_two_nodes_byte_for_byte_and_in_order() {
    let net = Net::new("vpn-pair").await;
    let (mut a, b) = (net.consumer("a").await, net.consumer("b").await);
    let (ia, ib) = (a.handle.peer_id(), b.handle.peer_id());
    let (mut ta, mut tb) = (tunnel(&a, &[ib]), tunnel(&b, &[ia]));
    connect(&a, &b).await;
    let (aa, ab) = (address_of(&ia), address_of(&ib));
    let sent: Vec<Vec<u8>> = (0..300u32)
        .map(|i| packet(aa, ab, 1 + (i as usize * 37) % 1200, i as u8))
        .collect();
    // In bursts that fit the queues (a burst beyond them is dropped as
    // `congested`, as a router drops what it cannot carry).
    for (burst, packets) in sent.chunks(100).enumerate() {
        for p in packets {
            ta.send.send(p.clone()).await.unwrap();
        }
        for (i, p) in packets.iter().enumerate() {
            assert_eq!(&next(&mut tb).await, p, "burst {burst}, packet {i}");
        }
    }
    // And back.
    let reply = packet(ab, aa, 64, 0xab);
    tb.send.send(reply.clone()).await.unwrap();
    assert_eq!(next(&mut ta).await, reply);
    a.events
        .wait_for("a's stream to b is up", |e| {
            matches!(e, Event::VpnPeer { peer_id, state: "up", direction: "out", address }
                if *peer_id == ib.to_string() && *address == ab.to_string())
        })
        .await;
    // Counted exactly: every packet, every byte, each way.
    let bytes: usize = sent.iter().map(Vec::len).sum();
    let (ma, mb) = (metrics_of(&a), metrics_of(&b));
    for line in [
        "ledgermesh_vpn_packets_total{direction=\"out\"} 300".to_string(),
        format!("ledgermesh_vpn_bytes_total{{direction=\"out\"}} {bytes}"),
        "ledgermesh_vpn_packets_total{direction=\"in\"} 1".to_string(),
    ] {
        assert!(ma.lines().any(|l| l == line), "a: {line}\n{ma}");
    }
    let line = "ledgermesh_vpn_packets_total{direction=\"in\"} 300";
    assert!(mb.lines().any(|l| l == line), "b: {line}\n{mb}");
}

/// A node's metrics as a scrape shows them.
fn metrics_of(node: &TestNode) -> String {
    let ops = node.handle.ops();
    ops.metrics
        .encode(&ledgermesh_node::ops::metrics::Now::default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_a_spoofer_and_a_broken_framer_are_dropped_and_the_tunnel_runs_on() {
    let net = Net::new("vpn-hostile").await;
    let (a, mut b, c) = (
        net.consumer("a").await,
        net.consumer("b").await,
        net.consumer("c").await,
    );
    let (ia, ib, ic) = (a.handle.peer_id(), b.handle.peer_id(), c.handle.peer_id());
    let mut ta = tunnel(&a, &[ib]);
    let mut tb = tunnel(&b, &[ia]);
    connect(&a, &b).await;
    connect(&c, &b).await;
    let (aa, ab, ac) = (address_of(&ia), address_of(&ib), address_of(&ic));
    let frame = |p: &[u8]| {
        let mut f = (p.len() as u16).to_be_bytes().to_vec();
        f.extend_from_slice(p);
        f
    };
    // A stranger's stream: refused before a byte is read.
    let mut from_c = c
        .handle
        .stream_control()
        .open_stream(ib, StreamProtocol::new(PROTOCOL))
        .await
        .unwrap();
    let _ = from_c.write_all(&frame(&packet(ac, ab, 10, 1))).await;
    b.events
        .wait_for("the stranger is not allowed", |e| {
            dropped(e, &ic, "not_allowed")
        })
        .await;
    // An allowed peer that lies about its source, sends a packet whose
    // header lies about its length, then a frame over the MTU.
    let mut rogue = a
        .handle
        .stream_control()
        .open_stream(ib, StreamProtocol::new(PROTOCOL))
        .await
        .unwrap();
    let mut bad = frame(&packet(ac, ab, 10, 2));
    let mut lying = packet(aa, ab, 10, 3);
    lying[5] = 99;
    bad.extend(frame(&lying));
    bad.extend((MTU as u16 + 1).to_be_bytes());
    rogue.write_all(&bad).await.unwrap();
    for reason in ["spoofed_source", "malformed", "too_big"] {
        b.events.wait_for(reason, |e| dropped(e, &ia, reason)).await;
    }
    // Nothing of it reached b's device, and a's own tunnel still works.
    let good = packet(aa, ab, 100, 7);
    ta.send.send(good.clone()).await.unwrap();
    assert_eq!(
        next(&mut tb).await,
        good,
        "the first packet b's device sees"
    );
    let back = packet(ab, aa, 100, 8);
    tb.send.send(back.clone()).await.unwrap();
    assert_eq!(next(&mut ta).await, back);
    // Every drop is counted, told or not.
    let mb = metrics_of(&b);
    for reason in ["not_allowed", "spoofed_source", "malformed", "too_big"] {
        let line = format!("ledgermesh_vpn_dropped_total{{reason=\"{reason}\"}} 1");
        assert!(mb.lines().any(|l| l == line), "{line}\n{mb}");
    }
    // A packet of b's device to nobody allowed goes nowhere, and is told.
    tb.send.send(packet(ab, ac, 10, 9)).await.unwrap();
    b.events
        .wait_for("no route to c", |e| {
            matches!(
                e,
                Event::VpnDropped {
                    peer_id: None,
                    reason: "no_route",
                    count: 1
                }
            )
        })
        .await;
}

/// An IPv6 UDP packet from `src`:`sport` to `dst`:`dport`.
fn udp6(src: Ipv6Addr, sport: u16, dst: Ipv6Addr, dport: u16, payload: usize) -> Vec<u8> {
    let mut p = packet(src, dst, payload.max(8), 0);
    p[40..42].copy_from_slice(&sport.to_be_bytes());
    p[42..44].copy_from_slice(&dport.to_be_bytes());
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_counts_what_it_exchanges_with_its_exit_but_not_what_the_exit_makes_up() {
    use ledgermesh_node::protocols::vpn::Options;
    use std::sync::atomic::{AtomicU64, Ordering};
    let net = Net::new("vpn-meter").await;
    let (client, exit) = (net.consumer("client").await, net.consumer("exit").await);
    let (ic, ix) = (client.handle.peer_id(), exit.handle.peer_id());
    // The client sends everything through the exit, and meters it.
    let mut router = Router::new(&ic, &[], MTU);
    router
        .allow(Peer {
            id: ix,
            allowed_ips: vec!["::/0".parse().unwrap()],
        })
        .unwrap();
    let meter = Arc::new(AtomicU64::new(0));
    let (send, from) = mpsc::channel(64);
    let (to, mut recv) = mpsc::channel(64);
    let options = Options {
        meter: Some((ix, meter.clone())),
        ..Default::default()
    };
    Vpn::with(router, MTU, options)
        .start(client.handle.clone(), Device { from, to })
        .unwrap();
    connect(&client, &exit).await;
    let (me, web): (Ipv6Addr, Ipv6Addr) = (address_of(&ic), "2001:db8::7".parse().unwrap());
    // The exit's side: it reads what the client sends, and writes back what
    // it likes on a stream of its own.
    let mut incoming = exit
        .handle
        .stream_control()
        .accept(StreamProtocol::new(PROTOCOL))
        .unwrap();
    let ours = udp6(me, 5353, web, 53, 100);
    send.send(ours.clone()).await.unwrap();
    let (_, mut from_client) = futures::StreamExt::next(&mut incoming).await.unwrap();
    let mut got = vec![0u8; 2 + ours.len()];
    futures::AsyncReadExt::read_exact(&mut from_client, &mut got)
        .await
        .unwrap();
    assert_eq!(&got[2..], &ours[..]);
    let frame = |p: &[u8]| {
        let mut f = (p.len() as u16).to_be_bytes().to_vec();
        f.extend_from_slice(p);
        f
    };
    let answer = udp6(web, 53, me, 5353, 200);
    let made_up = udp6(web, 53, me, 5354, 1000);
    let mut to_client = exit
        .handle
        .stream_control()
        .open_stream(ic, StreamProtocol::new(PROTOCOL))
        .await
        .unwrap();
    let mut both = frame(&made_up);
    both.extend(frame(&answer));
    to_client.write_all(&both).await.unwrap();
    // Both reach the device (the host's own stack refuses the one nobody
    // asked for), but only what the client sent and the answer count.
    for _ in 0..2 {
        tokio::time::timeout(Duration::from_secs(10), recv.recv())
            .await
            .expect("delivered")
            .unwrap();
    }
    assert_eq!(
        meter.load(Ordering::Relaxed),
        (ours.len() + answer.len()) as u64,
        "the made-up packet is not on the client's meter"
    );
    // The exit pings the client unbidden: the host's own echo reply goes
    // (and counts: it was sent), but opens no flow, so the next ping the
    // exit makes up counts no more than the first.
    let echo = |src: Ipv6Addr, dst: Ipv6Addr, kind: u8| {
        let mut p = packet(src, dst, 16, 0);
        p[6] = 58;
        p[40] = kind;
        p[44..46].copy_from_slice(&7u16.to_be_bytes());
        p
    };
    let before = meter.load(Ordering::Relaxed);
    to_client
        .write_all(&frame(&echo(web, me, 128)))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), recv.recv())
        .await
        .unwrap();
    let reply = echo(me, web, 129);
    send.send(reply.clone()).await.unwrap();
    let mut got = vec![0u8; 2 + reply.len()];
    futures::AsyncReadExt::read_exact(&mut from_client, &mut got)
        .await
        .unwrap();
    to_client
        .write_all(&frame(&echo(web, me, 128)))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), recv.recv())
        .await
        .unwrap();
    assert_eq!(
        meter.load(Ordering::Relaxed),
        before + reply.len() as u64,
        "only the reply the host sent counts, not the pings it was sent"
    );
}

/// `ping` from `host` of `lab` to `addr` (IPv6 or IPv4): how many of
/// `count` came back.
fn ping6(lab: &ledgermesh_e2e::natlab::Lab, host: &str, addr: &str, count: u32) -> u32 {
    let family = if addr.contains(':') { "-6" } else { "-4" };
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &lab.ns(host), "ping", family, "-n", "-q"])
        .args(["-c", &count.to_string(), "-i", "0.2", "-W", "5", addr])
        .output()
        .expect("run ping");
    let text = String::from_utf8_lossy(&out.stdout);
    // "3 packets transmitted, 3 received, 0% packet loss, time 402ms"
    text.split(", ")
        .find_map(|part| part.strip_suffix(" received"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// Starts `ledgermesh vpn` on `host` with `args` and waits for its device.
fn vpn_on(
    lab: &ledgermesh_e2e::natlab::Lab,
    host: &str,
    dir: &std::path::Path,
    key: &str,
    args: &[&str],
) -> ledgermesh_e2e::procs::Proc {
    let mut all = vec![
        "vpn",
        "--json",
        "--key",
        key,
        "--listen",
        "/ip4/0.0.0.0/udp/4001/quic-v1",
        "/ip4/0.0.0.0/tcp/4001",
    ];
    all.extend_from_slice(args);
    let mut p = lab.start(host, host, dir, &all);
    let up = p.wait_for("vpn_up", Duration::from_secs(30), |v| {
        ledgermesh_e2e::procs::event_is(v, "vpn_up")
    });
    assert_eq!(up["tun"], "ledgermesh0", "{up}");
    p
}

/// A process killed when dropped.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// 16 MiB nobody could guess, written to `dir/www/blob`.
fn blob_in(dir: &std::path::Path) -> (std::path::PathBuf, Vec<u8>) {
    let root = dir.join("www");
    std::fs::create_dir_all(&root).unwrap();
    let mut blob = vec![0u8; 16 << 20];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for b in blob.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    std::fs::write(root.join("blob"), &blob).unwrap();
    (root, blob)
}

/// An HTTP server on `host` at `addr`:8000 serving `root`, its request
/// log (one line per request, the client's address first) in `log`.
fn http_server(
    lab: &ledgermesh_e2e::natlab::Lab,
    host: &str,
    addr: &str,
    root: &std::path::Path,
    log: &std::path::Path,
) -> Killed {
    use std::process::{Command, Stdio};
    Killed(
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &lab.ns(host),
                "python3",
                "-m",
                "http.server",
            ])
            .args([
                "--bind",
                addr,
                "8000",
                "--directory",
                root.to_str().unwrap(),
            ])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .expect("start the HTTP server"),
    )
}

/// curl on `client` for `url` into `out`, given `secs` in all (retried
/// while the server starts: a refusal comes back at once).
fn curl(
    lab: &ledgermesh_e2e::natlab::Lab,
    client: &str,
    url: &str,
    out: &std::path::Path,
    secs: u32,
) -> bool {
    std::process::Command::new("ip")
        .args(["netns", "exec", &lab.ns(client), "curl", "-sS", "-g"])
        .args([
            "--max-time",
            &secs.to_string(),
            "--retry",
            "30",
            "--retry-connrefused",
        ])
        .args(["--retry-delay", "1", "--retry-max-time", &secs.to_string()])
        .args(["-o", out.to_str().unwrap(), url])
        .status()
        .expect("run curl")
        .success()
}

/// Serves a 16 MiB file over HTTP on `server`'s mesh address and fetches
/// it from `client` with curl; whether it arrived byte for byte.
fn tcp_through_the_tunnel(
    lab: &ledgermesh_e2e::natlab::Lab,
    dir: &std::path::Path,
    (server, addr): (&str, &str),
    client: &str,
) -> bool {
    let (root, blob) = blob_in(dir);
    let _server = http_server(lab, server, addr, &root, &dir.join("http.log"));
    let got = dir.join("got");
    let url = format!("http://[{addr}]:8000/blob");
    curl(lab, client, &url, &got, 60) && std::fs::read(&got).is_ok_and(|g| g == blob)
}

/// The addresses the HTTP server's log says requests came from.
fn requesters(log: &std::path::Path) -> Vec<String> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    (text.lines())
        .filter(|l| l.contains("\"GET "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// What of ours `host`'s namespace still holds: an nftables table, a
/// rule at our preferences, a route in the exit's table, forwarding left on.
fn host_holds_ours(lab: &ledgermesh_e2e::natlab::Lab, host: &str) -> String {
    let sh = |args: &[&str]| {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &lab.ns(host)])
            .args(args)
            .output()
            .expect("run");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let mut left: Vec<String> = (sh(&["nft", "list", "tables"]).lines())
        .filter(|l| l.contains("ledgermesh"))
        .map(String::from)
        .collect();
    for family in ["-4", "-6"] {
        let rules = sh(&["ip", family, "rule"]);
        left.extend(
            rules
                .lines()
                .filter(|l| l.starts_with("530"))
                .map(String::from),
        );
        let routes = sh(&["ip", family, "route", "show", "table", "19533"]);
        left.extend(routes.lines().map(String::from));
    }
    let forwarding = sh(&["cat", "/proc/sys/net/ipv4/ip_forward"]);
    if forwarding.trim() != "0" {
        left.push(format!("ip_forward {}", forwarding.trim()));
    }
    left.join("\n")
}

/// Counts, on `host`, the packets that come from `from` (an nftables
/// counter of the test's own), and reads the count.
fn count_from(lab: &ledgermesh_e2e::natlab::Lab, host: &str, from: &str) -> impl Fn() -> u64 {
    let ns = lab.ns(host);
    let table = format!("count_{}", from.replace('.', "_"));
    let script = format!(
        "table inet {table} {{\n chain count {{\n type filter hook input priority -300; \
         policy accept;\n ip saddr {from} counter\n }}\n}}\n"
    );
    let mut nft = std::process::Command::new("ip")
        .args(["netns", "exec", &ns, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("run nft");
    use std::io::Write;
    (nft.stdin.take().unwrap())
        .write_all(script.as_bytes())
        .unwrap();
    let ok = nft.wait().expect("nft ends");
    assert!(ok.success(), "the counter is set up");
    move || {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &ns, "nft", "list", "table", "inet", &table])
            .output()
            .expect("run nft");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        text.split("packets ")
            .nth(1)
            .and_then(|t| t.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .expect("a counter")
    }
}

#[test]
fn natlab_vpn_hosts_ping_by_key_derived_address_and_a_stranger_gets_nothing() {
    use ledgermesh_e2e::natlab::{Lab, Nat};
    use ledgermesh_e2e::procs::{event_is, keygen};
    let Some(lab) = Lab::up("vpn-ping", Nat::Eim, Nat::Eim) else {
        return;
    };
    let dir = temp_dir("vpn-lab");
    let (ka, ida) = keygen(dir.path(), "a");
    let (kb, idb) = keygen(dir.path(), "b");
    let (kc, idc) = keygen(dir.path(), "c");
    let addr_of = |id: &str| address_of(&id.parse().unwrap()).to_string();
    let b_at = format!("/ip4/203.0.113.11/udp/4001/quic-v1/p2p/{idb}");
    // b (on obs1) allows a only; a (on pub) and c (on obs2) both reach b.
    // a and b also have IPv4 addresses inside the tunnel, each the other's
    // allowed IP, as WireGuard maps them.
    let a_is = format!("{ida}=10.7.0.1/32");
    let b_is = format!("{idb}=10.7.0.2/32");
    let audit = dir.path().join("b-audit.jsonl");
    let mut b = vpn_on(
        &lab,
        "obs1",
        dir.path(),
        &kb,
        &[
            "--peer",
            &a_is,
            "--address-v4",
            "10.7.0.2/24",
            "--audit-log",
            audit.to_str().unwrap(),
            "--api",
            "127.0.0.1:7001",
        ],
    );
    let mut a = vpn_on(
        &lab,
        "pub",
        dir.path(),
        &ka,
        &[
            "--peer-addr",
            &b_at,
            "--peer",
            &b_is,
            "--address-v4",
            "10.7.0.1/24",
        ],
    );
    let mut c = vpn_on(&lab, "obs2", dir.path(), &kc, &["--peer-addr", &b_at]);
    assert_eq!(
        a.wait_for("a's address", T, |v| event_is(v, "vpn_up"))["address"],
        addr_of(&ida)
    );
    // Both ways, through each side's TUN device and the tunnel.
    assert_eq!(ping6(&lab, "pub", &addr_of(&idb), 5), 5, "a → b");
    assert_eq!(ping6(&lab, "obs1", &addr_of(&ida), 5), 5, "b → a");
    assert_eq!(ping6(&lab, "pub", "10.7.0.2", 5), 5, "a → b over IPv4");
    assert_eq!(ping6(&lab, "obs1", "10.7.0.1", 5), 5, "b → a over IPv4");
    b.wait_for("a's stream", T, |v| {
        event_is(v, "vpn_peer") && v["peer_id"] == ida && v["state"] == "up"
    });
    // TCP through the tunnel (and through the device's offloads): 16 MiB
    // over HTTP from b's address to a, byte for byte.
    let served = tcp_through_the_tunnel(&lab, dir.path(), ("obs1", &addr_of(&idb)), "pub");
    assert!(served, "the file crossed the tunnel intact");
    // b's operator sees a: its address, its direct path, what was carried.
    let status = |json: bool| {
        let mut cmd = std::process::Command::new("ip");
        cmd.args(["netns", "exec", &lab.ns("obs1")])
            .arg(ledgermesh_e2e::procs::bin_path())
            .args(["vpn", "status", "--api", "127.0.0.1:7001"]);
        if json {
            cmd.arg("--json");
        }
        let out = cmd.output().expect("run vpn status");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let view: serde_json::Value = serde_json::from_str(&status(true)).unwrap();
    assert_eq!(view["addresses"][0], addr_of(&idb), "{view}");
    assert_eq!(view["addresses"][1], "10.7.0.2", "{view}");
    let a_seen = (view["peers"].as_array().unwrap().iter())
        .find(|p| p["peer_id"] == ida)
        .cloned()
        .expect("a is listed");
    assert_eq!(a_seen["address"], addr_of(&ida), "{a_seen}");
    assert_eq!(
        a_seen["allowed_ips"],
        serde_json::json!(["10.7.0.1/32"]),
        "{a_seen}"
    );
    assert_eq!(a_seen["connected"], true, "{a_seen}");
    assert_eq!(a_seen["path"], "direct", "{a_seen}");
    assert!(a_seen["bytes_out"].as_u64().unwrap() > 16 << 20, "{a_seen}");
    assert!(a_seen["packets_in"].as_u64().unwrap() > 10, "{a_seen}");
    let table = status(false);
    assert!(
        table.contains("ADDRESS") && table.contains(&addr_of(&ida)),
        "{table}"
    );
    // c is connected to b, but b never allowed it: nothing comes back.
    assert_eq!(ping6(&lab, "obs2", &addr_of(&idb), 2), 0, "c → b");
    b.wait_for("c refused", T, |v| {
        event_is(v, "vpn_dropped") && v["peer_id"] == idc && v["reason"] == "not_allowed"
    });
    // … and written to b's audit log, once.
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&audit)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let refusals: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["event"] == "refuse" && l["peer_id"] == idc)
        .collect();
    assert_eq!(refusals.len(), 1, "{lines:?}");
    assert_eq!(refusals[0]["stream"], "vpn");
    assert_eq!(refusals[0]["reason"], "not_allowed");
    for p in [&mut a, &mut b, &mut c] {
        p.stop();
    }
}

#[test]
fn natlab_vpn_hosts_behind_two_nats_meet_through_a_relay_and_ping_both_ways() {
    use ledgermesh_e2e::natlab::{Lab, Nat};
    use ledgermesh_e2e::procs::{event_is, keygen};
    let Some(lab) = Lab::up("vpn-nat", Nat::Eim, Nat::Eim) else {
        return;
    };
    let dir = temp_dir("vpn-nat");
    let (mut relay, relay_at) = ledgermesh_e2e::natlab::world::lab_relay(&lab, dir.path());
    let (ka, ida) = keygen(dir.path(), "a");
    let (kb, idb) = keygen(dir.path(), "b");
    let addr_of = |id: &str| address_of(&id.parse().unwrap()).to_string();
    // b, behind one NAT, holds a reservation on the relay and allows a.
    let mut b = vpn_on(
        &lab,
        "h2",
        dir.path(),
        &kb,
        &["--relay", &relay_at, "--peer", &ida],
    );
    b.wait_for("b's reservation", T, |v| {
        event_is(v, "reservation_accepted")
    });
    // a, behind the other, knows only b's PeerId and the relay.
    let b_via_relay = format!("{relay_at}/p2p-circuit/p2p/{idb}");
    let mut a = vpn_on(
        &lab,
        "h1",
        dir.path(),
        &ka,
        &["--relay", &relay_at, "--peer-addr", &b_via_relay],
    );
    let first = a.wait_for("a reaches b", T, |v| {
        event_is(v, "connected") && v["peer_id"] == idb
    });
    assert_eq!(first["path"], "relayed", "{first}");
    // Through the relay while the nodes punch through, then direct: the
    // tunnel's stream moves to the direct path with the traffic. Pings sent
    // while the path changes may be lost (as on any path change), so the
    // first round only needs one answer, and the second all of them.
    assert!(ping6(&lab, "h1", &addr_of(&idb), 10) > 0, "a → b at all");
    a.wait_for("a's path to b upgraded", T, |v| {
        event_is(v, "upgraded") && v["peer_id"] == idb
    });
    assert_eq!(ping6(&lab, "h1", &addr_of(&idb), 5), 5, "a → b, direct");
    assert_eq!(ping6(&lab, "h2", &addr_of(&ida), 5), 5, "b → a, direct");
    for p in [&mut a, &mut b, &mut relay] {
        p.stop();
    }
}

#[test]
fn natlab_vpn_exit_carries_a_nated_hosts_traffic_and_the_kill_switch_holds_it_when_the_exit_dies() {
    use ledgermesh_e2e::natlab::{Lab, Nat};
    use ledgermesh_e2e::procs::{event_is, keygen};
    let Some(lab) = Lab::up("vpn-exit", Nat::Eim, Nat::Eim) else {
        return;
    };
    let dir = temp_dir("vpn-exit");
    let (kx, idx) = keygen(dir.path(), "exit");
    let (k1, id1) = keygen(dir.path(), "c1");
    let (k2, id2) = keygen(dir.path(), "c2");
    // The exit, public (obs1, 203.0.113.11), allows both clients.
    let exit_args = ["--exit", "--peer", &id1, "--peer", &id2];
    let mut exit = vpn_on(&lab, "obs1", dir.path(), &kx, &exit_args);
    exit.wait_for("the exit", T, |v| {
        event_is(v, "vpn_exit") && v["state"] == "gateway"
    });
    // Two clients behind NATs send everything through it: h1 with the
    // kill switch, h2 without.
    let exit_at = format!("/ip4/203.0.113.11/udp/4001/quic-v1/p2p/{idx}");
    let client = |host: &str, key: &str, kill: bool| {
        let mut args = vec!["--peer-addr", &exit_at, "--exit", &idx];
        if kill {
            args.push("--kill-switch");
        }
        vpn_on(&lab, host, dir.path(), key, &args)
    };
    let mut c1 = client("h1", &k1, true);
    let mut c2 = client("h2", &k2, false);
    let up = |p: &mut ledgermesh_e2e::procs::Proc| {
        let v = p.wait_for_next("the exit up", T, |v| {
            event_is(v, "vpn_exit") && v["state"] == "up"
        });
        assert_eq!(v["peer_id"], idx, "{v}");
        assert_eq!(v["routes"], serde_json::json!(["0.0.0.0/0", "::/0"]), "{v}");
    };
    up(&mut c1);
    up(&mut c2);
    // A server on the internet (pub, 203.0.113.30) sees the exit, not the
    // clients' NATs (203.0.113.101 and .102), and the bytes arrive intact.
    let (root, blob) = blob_in(dir.path());
    let log = dir.path().join("http.log");
    let _server = http_server(&lab, "pub", "203.0.113.30", &root, &log);
    let url = "http://203.0.113.30:8000/blob";
    for (host, n) in [("h1", 1), ("h2", 2)] {
        let got = dir.path().join(format!("got-{host}"));
        assert!(
            curl(&lab, host, url, &got, 60),
            "{host} fetched through the exit"
        );
        assert!(
            std::fs::read(&got).is_ok_and(|g| g == blob),
            "{host}: byte for byte"
        );
        assert_eq!(requesters(&log).len(), n, "{:?}", requesters(&log));
    }
    assert_eq!(
        requesters(&log),
        vec!["203.0.113.11"; 2],
        "only the exit was seen"
    );
    // The exit host's own services are not its clients' (no --exit-lan),
    // though the world reaches them.
    let own_log = dir.path().join("exit-own.log");
    let _own = http_server(&lab, "obs1", "0.0.0.0", &root, &own_log);
    let exit_own = "http://203.0.113.11:8000/blob";
    let reached = curl(&lab, "pub", exit_own, &dir.path().join("got-own"), 30);
    assert!(reached, "the world reaches the exit host's service");
    let reached = curl(&lab, "h1", exit_own, &dir.path().join("got-own-1"), 5);
    assert!(!reached, "a client does not");
    // The exit dies (no clean-up, no goodbye): both clients lose it.
    exit.kill();
    for p in [&mut c1, &mut c2] {
        p.wait_for_next("the exit down", T, |v| {
            event_is(v, "vpn_exit") && v["state"] == "down"
        });
    }
    // Without the kill switch, h2's traffic takes its own routes again
    // (its NAT's address); with it, nothing of h1's leaves the host: no
    // packet from its NAT's address reaches the server's host, whether
    // TCP, a ping or UDP.
    let leaked = count_from(&lab, "pub", "203.0.113.101");
    let fell_back = count_from(&lab, "pub", "203.0.113.102");
    let got = dir.path().join("got-direct");
    assert!(
        curl(&lab, "h2", url, &got, 30),
        "h2 falls back to its own routes"
    );
    assert_eq!(
        requesters(&log).last().map(String::as_str),
        Some("203.0.113.102")
    );
    let seen = requesters(&log).len();
    assert!(
        !curl(&lab, "h1", url, &dir.path().join("got-held"), 5),
        "h1 is held"
    );
    assert_eq!(
        ping6(&lab, "h1", "203.0.113.30", 2),
        0,
        "h1's pings are held"
    );
    // Refused at once by the kill switch, or sent: the counter says.
    let _ = std::process::Command::new("ip")
        .args(["netns", "exec", &lab.ns("h1"), "python3", "-c"])
        .arg("import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('203.0.113.30', 53))")
        .status();
    assert_eq!(leaked(), 0, "no packet of h1's left by its own NAT");
    assert!(
        fell_back() > 0,
        "the counter counts: h2's packets came by its NAT"
    );
    assert_eq!(
        requesters(&log).len(),
        seen,
        "nothing of h1's reached the server"
    );
    // The exit is back (with the same key): the clients find it again and
    // their traffic goes through it.
    let mut exit = vpn_on(&lab, "obs1", dir.path(), &kx, &exit_args);
    up(&mut c1);
    let got = dir.path().join("got-again");
    assert!(curl(&lab, "h1", url, &got, 60), "h1 through the exit again");
    assert_eq!(
        requesters(&log).last().map(String::as_str),
        Some("203.0.113.11")
    );
    // Stopped, each leaves its host as it found it.
    for p in [&mut c1, &mut c2, &mut exit] {
        p.stop();
    }
    for host in ["h1", "h2", "obs1"] {
        assert_eq!(
            host_holds_ours(&lab, host),
            "",
            "{host} was left with rules"
        );
    }
}

/// Wei per MiB the priced exit charges.
const EXIT_PRICE: u128 = 1_000_000_000_000;

#[test]
fn natlab_vpn_priced_exit_is_paid_to_the_wei_and_carries_nothing_for_an_unpaid_peer() {
    use ledgermesh_e2e::natlab::{Lab, Nat};
    use ledgermesh_e2e::procs::{event_is, keygen};
    let Some(lab) = Lab::up("vpn-paid", Nat::Eim, Nat::Eim) else {
        return;
    };
    let dir = temp_dir("vpn-paid");
    let (_chain, ready) = ledgermesh_e2e::natlab::world::lab_chain(&lab, dir.path());
    let (kx, idx) = keygen(dir.path(), "exit");
    let (k1, id1) = keygen(dir.path(), "payer");
    let (k2, id2) = keygen(dir.path(), "freeloader");
    let price = EXIT_PRICE.to_string();
    let exit_key = ready.keys.last().unwrap().clone();
    // The exit (obs1) charges per MiB, paid to the devchain's last key; it
    // allows both clients.
    let mut exit = vpn_on(
        &lab,
        "obs1",
        dir.path(),
        &kx,
        &[
            "--exit",
            "--peer",
            &id1,
            "--peer",
            &id2,
            "--ledger",
            &ready.spec,
            "--ledger-key",
            &exit_key,
            "--price-per-mib",
            &price,
        ],
    );
    let exit_at = format!("/ip4/203.0.113.11/udp/4001/quic-v1/p2p/{idx}");
    // One client pays from a channel; the other is allowed but pays nothing.
    let mut payer = vpn_on(
        &lab,
        "h1",
        dir.path(),
        &k1,
        &[
            "--peer-addr",
            &exit_at,
            "--exit",
            &idx,
            "--ledger",
            &ready.spec,
            "--ledger-key",
            &ready.keys[0],
            "--deposit",
            "10000000000000000",
        ],
    );
    let mut free = vpn_on(
        &lab,
        "h2",
        dir.path(),
        &k2,
        &["--peer-addr", &exit_at, "--exit", &idx],
    );
    for p in [&mut payer, &mut free] {
        p.wait_for("the exit up", T, |v| {
            event_is(v, "vpn_exit") && v["state"] == "up"
        });
    }
    // The freeloader is told why, and gets nothing through.
    let told = free.wait_for("the price told", T, |v| {
        event_is(v, "payment_refused") && v["reason"] == "exit_payment"
    });
    assert!(
        told["detail"].as_str().unwrap().contains("--deposit"),
        "{told}"
    );
    let (root, blob) = blob_in(dir.path());
    let log = dir.path().join("http.log");
    let _server = http_server(&lab, "pub", "203.0.113.30", &root, &log);
    let url = "http://203.0.113.30:8000/blob";
    assert!(
        !curl(&lab, "h2", url, &dir.path().join("got-free"), 5),
        "unpaid: nothing"
    );
    exit.wait_for("the freeloader's packets dropped", T, |v| {
        event_is(v, "vpn_dropped") && v["peer_id"] == id2 && v["reason"] == "unpaid"
    });
    // The payer's fetch crosses the exit, byte for byte, once its channel
    // is open …
    payer.wait_for("the payer's channel", T, |v| event_is(v, "channel_opened"));
    let got = dir.path().join("got");
    assert!(
        curl(&lab, "h1", url, &got, 90),
        "the payer fetched through the exit"
    );
    assert!(
        std::fs::read(&got).is_ok_and(|g| g == blob),
        "byte for byte"
    );
    assert_eq!(
        requesters(&log),
        vec!["203.0.113.11"],
        "only the payer, by the exit"
    );
    // … and once the traffic pauses, everything the exit metered is
    // invoiced and paid, priced to the wei.
    let full = exit.wait_for("a voucher for every byte metered", T, |v| {
        let bytes = v["bytes"].as_u64().unwrap_or(0);
        event_is(v, "voucher_received")
            && v["payer"] == id1
            && bytes >= blob.len() as u64
            && v["cumulative"] == (u128::from(bytes) * EXIT_PRICE / (1 << 20)).to_string()
    });
    let bytes = full["bytes"].as_u64().unwrap();
    // Headers and acknowledgements of 16 MiB of TCP at this MTU: a few %.
    assert!(
        bytes < blob.len() as u64 * 115 / 100,
        "{bytes} bytes metered"
    );
    let paid = full["cumulative"].as_str().unwrap().to_string();
    assert!(
        payer
            .matching(|v| event_is(v, "voucher_sent"))
            .iter()
            .any(|v| v["cumulative"] == paid),
        "the payer signed {paid}"
    );
    // Stopped, the exit claims on chain what its last voucher says.
    payer.stop();
    exit.terminate();
    assert_eq!(exit.wait_exit(Duration::from_secs(60)), 0);
    let last: u128 = exit
        .matching(|v| event_is(v, "voucher_received"))
        .iter()
        .map(|v| v["cumulative"].as_str().unwrap().parse::<u128>().unwrap())
        .max()
        .unwrap();
    let claimed: u128 = exit
        .matching(|v| event_is(v, "claimed"))
        .iter()
        .map(|v| v["amount"].as_str().unwrap().parse::<u128>().unwrap())
        .sum();
    assert_eq!(claimed, last, "claimed on chain what the vouchers say");
    assert!(last >= paid.parse::<u128>().unwrap());
    println!(
        "NATLAB vpn priced exit: {bytes} bytes metered for 16 MiB, paid and claimed {claimed} wei"
    );
    free.stop();
}

#[test]
fn natlab_vpn_hosts_behind_two_nats_find_each_other_on_the_ledger_by_peer_id_alone() {
    use ledgermesh_e2e::natlab::{Lab, Nat};
    use ledgermesh_e2e::procs::{event_is, keygen};
    let Some(lab) = Lab::up("vpn-ledger", Nat::Eim, Nat::Eim) else {
        return;
    };
    let dir = temp_dir("vpn-ledger");
    let (_chain, ready) = ledgermesh_e2e::natlab::world::lab_chain(&lab, dir.path());
    let (mut relay, relay_at) = ledgermesh_e2e::natlab::world::lab_relay(&lab, dir.path());
    let (ka, ida) = keygen(dir.path(), "a");
    let (kb, idb) = keygen(dir.path(), "b");
    let (kc, idc) = keygen(dir.path(), "c");
    let addr_of = |id: &str| address_of(&id.parse().unwrap()).to_string();
    let (spec, via) = (ready.spec.as_str(), relay_at.as_str());
    fn on_ledger<'a>(spec: &'a str, key: &'a str, relay: &'a str) -> Vec<&'a str> {
        vec!["--ledger", spec, "--ledger-key", key, "--relay", relay]
    }
    // Each behind its own NAT, each knowing the other's PeerId, the ledger
    // and a relay: nothing else.
    let audit = dir.path().join("b-audit.jsonl");
    let mut b_args = on_ledger(spec, &ready.keys[1], via);
    b_args.extend(["--peer", &ida, "--audit-log", audit.to_str().unwrap()]);
    let mut b = vpn_on(&lab, "h2", dir.path(), &kb, &b_args);
    let mut a_args = on_ledger(spec, &ready.keys[0], via);
    a_args.extend(["--peer", &idb]);
    let mut a = vpn_on(&lab, "h1", dir.path(), &ka, &a_args);
    // A stranger (public, on the ledger too) asks b as well.
    let mut c_args = on_ledger(spec, &ready.keys[2], via);
    c_args.extend(["--peer", &idb]);
    let mut c = vpn_on(&lab, "pub", dir.path(), &kc, &c_args);
    let met = a.wait_for("a meets b", Duration::from_secs(90), |v| {
        event_is(v, "connected") && v["peer_id"] == idb
    });
    println!(
        "NATLAB vpn over the ledger: a met b {} ({})",
        met["path"], met["transport"]
    );
    // Through the tunnel both ways; all of them once the path is direct.
    assert!(ping6(&lab, "h1", &addr_of(&idb), 10) > 0, "a → b at all");
    let direct = |v: &serde_json::Value| {
        (event_is(v, "upgraded") || (event_is(v, "connected") && v["path"] == "direct"))
            && v["peer_id"] == idb
    };
    a.wait_for("a's path to b direct", T, direct);
    assert_eq!(ping6(&lab, "h1", &addr_of(&idb), 5), 5, "a → b, direct");
    assert_eq!(ping6(&lab, "h2", &addr_of(&ida), 5), 5, "b → a, direct");
    // The stranger's request was read, left unanswered and audited.
    let refused = || {
        (std::fs::read_to_string(&audit).unwrap_or_default().lines())
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .any(|l| l["event"] == "refuse" && l["peer_id"] == idc && l["stream"] == "vpn")
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !refused() && std::time::Instant::now() < deadline {
        // The audit log has no event to wait on but its own lines.
        b.wait_for_next("b's next event", Duration::from_secs(5), |_| true);
    }
    assert!(refused(), "b audited the stranger's request");
    // … and never answered it: the stranger never learnt where b is.
    let met_b = c.matching(|v| event_is(v, "connected") && v["peer_id"] == idb);
    assert!(met_b.is_empty(), "the stranger reached b: {met_b:?}");
    assert_eq!(
        ping6(&lab, "pub", &addr_of(&idb), 2),
        0,
        "the stranger gets nothing"
    );
    for p in [&mut a, &mut b, &mut c, &mut relay] {
        p.stop();
    }
}

const T: Duration = Duration::from_secs(30);
