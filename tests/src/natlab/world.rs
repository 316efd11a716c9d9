//! The scenario world of the NAT lab cases: hosts behind NATs, a chain, a
//! relay and observers as processes, and checks of what they report.

use crate::natlab::{Lab, Nat};
use crate::procs::{event_is, keygen, DevchainReady, Proc};
use crate::{temp_dir, TempDir};
use serde_json::Value;
use std::time::Duration;

/// How long any one wait on a process may take.
pub const T: Duration = Duration::from_secs(120);
/// The relay's address on the lab's fake internet.
pub const RELAY_IP: &str = "203.0.113.10";
/// A second relay's (worlds built with [`world_two_relays`]).
pub const RELAY2_IP: &str = "203.0.113.14";
/// How many times each case runs.
pub const RUNS: usize = 5;

/// The transport a case runs over.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Transport {
    Tcp,
    Quic,
    /// Every node listens on TCP and QUIC, and relays and observers are
    /// written by their TCP address (as a user copies them from the log).
    TcpWritten,
}

impl Transport {
    /// The `--listen` values of a node on any address.
    pub fn listen(self, port: u16) -> Vec<String> {
        self.listen_at("0.0.0.0", port)
    }
    /// The `--listen` values of a node on `ip`.
    pub fn listen_at(self, ip: &str, port: u16) -> Vec<String> {
        let tcp = format!("/ip4/{ip}/tcp/{port}");
        let quic = format!("/ip4/{ip}/udp/{port}/quic-v1");
        match self {
            Transport::Tcp => vec![tcp],
            Transport::Quic => vec![quic],
            Transport::TcpWritten => vec![tcp, quic],
        }
    }
    /// How peers write a node's address on `ip`.
    pub fn at(self, ip: &str, port: u16) -> String {
        match self {
            Transport::Tcp | Transport::TcpWritten => format!("/ip4/{ip}/tcp/{port}"),
            Transport::Quic => format!("/ip4/{ip}/udp/{port}/quic-v1"),
        }
    }
}

/// A lab with two NATed hosts, a chain, a relay and observers, ready for a case.
pub struct World {
    pub lab: Lab,
    pub dir: TempDir,
    pub _chain: Proc,
    pub _relay: Proc,
    pub spec: String,
    pub keys: Vec<String>,
    pub relay_addr: String,
    /// The second relay and its address, when the world has one.
    pub relay2: Option<(Proc, String)>,
    pub _observer_procs: Vec<Proc>,
    pub observers: Vec<String>,
    /// Wei per MiB the relay charges (nodes pay it from channels); 0: free.
    pub relay_price: u128,
}

/// [`world_with`] without delay or loss.
pub fn world(test: &str, nat1: Nat, nat2: Nat, transport: Transport) -> Option<World> {
    world_with(test, nat1, nat2, transport, 0, 0.0)
}

/// [`world`] with a relay that charges `price` wei per MiB, paid to the
/// devchain's last key; providers and consumers pay it from channels.
pub fn world_priced(
    test: &str,
    nat1: Nat,
    nat2: Nat,
    transport: Transport,
    price: u128,
) -> Option<World> {
    let extras = Extras {
        relay_price: price,
        ..Default::default()
    };
    build(test, nat1, nat2, transport, extras)
}

/// Builds the world for `test` (None when namespaces are unavailable outside CI).
pub fn world_with(
    test: &str,
    nat1: Nat,
    nat2: Nat,
    transport: Transport,
    delay_ms: u32,
    loss: f64,
) -> Option<World> {
    let extras = Extras {
        delay_ms,
        loss,
        ..Default::default()
    };
    build(test, nat1, nat2, transport, extras)
}

/// [`world`] with a second open relay: providers reserve on both.
pub fn world_two_relays(test: &str, nat1: Nat, nat2: Nat, transport: Transport) -> Option<World> {
    let extras = Extras {
        second_relay: true,
        ..Default::default()
    };
    build(test, nat1, nat2, transport, extras)
}

/// [`world_two_relays`] on the user-space switch, so that one relay's link
/// can be made slow and lossy mid-test ([`Lab::impair`](crate::natlab::Lab::impair)).
pub fn world_two_relays_switched(
    test: &str,
    nat1: Nat,
    nat2: Nat,
    transport: Transport,
) -> Option<World> {
    let extras = Extras {
        second_relay: true,
        switch: true,
        ..Default::default()
    };
    build(test, nat1, nat2, transport, extras)
}

/// How a world differs from the plain one.
#[derive(Default)]
struct Extras {
    delay_ms: u32,
    loss: f64,
    relay_price: u128,
    second_relay: bool,
    switch: bool,
}

/// A devchain (anvil and SignalBoard) on `lab`'s `chain` host
/// (203.0.113.20:8545), its funded keys under `dir`.
pub fn lab_chain(lab: &Lab, dir: &std::path::Path) -> (Proc, DevchainReady) {
    let keydir = dir.join("keys");
    let args = [
        "devchain",
        "--json",
        "--host",
        "203.0.113.20",
        "--port",
        "8545",
    ];
    let mut args: Vec<&str> = args.to_vec();
    args.extend(["--dir", keydir.to_str().unwrap()]);
    let mut chain = lab.start("chain", "devchain", dir, &args);
    let ready = DevchainReady::wait(&mut chain, T);
    (chain, ready)
}

/// A free relay on `lab`'s `relay` host, over QUIC: it and its address.
pub fn lab_relay(lab: &Lab, dir: &std::path::Path) -> (Proc, String) {
    let listen = format!("/ip4/{RELAY_IP}/udp/4001/quic-v1");
    let mut relay = lab.start(
        "relay",
        "relay",
        dir,
        &["relay", "--json", "--listen", &listen],
    );
    let listening = relay.wait_for("relay listening", T, |v| event_is(v, "listening"));
    let at = format!("{listen}/p2p/{}", listening["peer_id"].as_str().unwrap());
    (relay, at)
}

fn build(test: &str, nat1: Nat, nat2: Nat, transport: Transport, extras: Extras) -> Option<World> {
    let Extras {
        delay_ms,
        loss,
        relay_price,
        second_relay,
        switch,
    } = extras;
    let lab = Lab::up_opts(test, nat1, nat2, delay_ms, loss, switch)?;
    let dir = temp_dir(test);
    let (chain, ready) = lab_chain(&lab, &dir.0);
    let relay_listen = transport.at(RELAY_IP, 4001);
    let relay_listens = transport.listen_at(RELAY_IP, 4001);
    let price = relay_price.to_string();
    let relay_key = ready.keys.last().expect("devchain keys").clone();
    let mut relay_args = vec!["relay", "--json", "--open", "--listen"];
    relay_args.extend(relay_listens.iter().map(String::as_str));
    if relay_price > 0 {
        relay_args.extend([
            "--ledger",
            &ready.spec,
            "--ledger-key",
            &relay_key,
            "--price-per-mib",
            &price,
        ]);
    }
    // Streams cross this relay for minutes: an open relay (or a paid one).
    let mut relay = lab.start("relay", "relay", &dir.0, &relay_args);
    let listening = relay.wait_for("relay listening", T, |v| event_is(v, "listening"));
    let relay_addr = format!(
        "{relay_listen}/p2p/{}",
        listening["peer_id"].as_str().unwrap()
    );
    let relay2 = second_relay.then(|| {
        let listen = transport.at(RELAY2_IP, 4001);
        let listens = transport.listen_at(RELAY2_IP, 4001);
        let mut args = vec!["relay", "--json", "--open", "--listen"];
        args.extend(listens.iter().map(String::as_str));
        let mut p = lab.start("relay2", "relay2", &dir.0, &args);
        let l = p.wait_for("relay2 listening", T, |v| event_is(v, "listening"));
        let addr = format!("{listen}/p2p/{}", l["peer_id"].as_str().unwrap());
        (p, addr)
    });
    // Three more public observers for address consensus (K = 4 with the relay).
    let mut observer_procs = vec![];
    let mut observers = vec![];
    for (host, ip) in [
        ("obs1", "203.0.113.11"),
        ("obs2", "203.0.113.12"),
        ("obs3", "203.0.113.13"),
    ] {
        let listen = transport.at(ip, 4001);
        let listens = transport.listen_at(ip, 4001);
        let mut args = vec!["relay", "--json", "--listen"];
        args.extend(listens.iter().map(String::as_str));
        let mut p = lab.start(host, host, &dir.0, &args);
        let l = p.wait_for("observer listening", T, |v| event_is(v, "listening"));
        observers.push(format!("{listen}/p2p/{}", l["peer_id"].as_str().unwrap()));
        observer_procs.push(p);
    }
    Some(World {
        lab,
        dir,
        _chain: chain,
        _relay: relay,
        spec: ready.spec,
        keys: ready.keys,
        relay_addr,
        relay2,
        _observer_procs: observer_procs,
        observers,
        relay_price,
    })
}

impl World {
    pub fn provider(
        &self,
        host: &str,
        transport: Transport,
        relay_only: bool,
        stream: &str,
    ) -> (Proc, String) {
        let (key, id) = keygen(&self.dir.0, "provider");
        let listen = transport.listen(4001);
        let mut args = vec![
            "provide",
            "--json",
            "--key",
            &key,
            "--ledger",
            &self.spec,
            "--ledger-key",
            &self.keys[0],
            "--relay",
            &self.relay_addr,
        ];
        if let Some((_, a2)) = &self.relay2 {
            args.push(a2);
        }
        args.push("--listen");
        args.extend(listen.iter().map(String::as_str));
        args.extend(["--stream", stream]);
        if relay_only {
            args.push("--relay-only");
        }
        let deposit = (1_000 * self.relay_price).to_string();
        if self.relay_price > 0 {
            args.extend(["--relay-deposit", &deposit]);
        }
        args.push("--observer");
        args.extend(self.observers.iter().map(String::as_str));
        let mut p = self.lab.start(host, "provider", &self.dir.0, &args);
        p.wait_for("reservation", T, |v| event_is(v, "reservation_accepted"));
        p.wait_for("following", T, |v| event_is(v, "ledger_following"));
        (p, id)
    }

    pub fn consumer(
        &self,
        i: usize,
        transport: Transport,
        want: &str,
    ) -> (Proc, std::path::PathBuf) {
        self.consumer_with(i, transport, want, i == 0, &[])
    }

    /// [`World::consumer`] that runs address consensus when `observe` (the
    /// first consumer always does), with `extra` arguments.
    pub fn consumer_with(
        &self,
        i: usize,
        transport: Transport,
        want: &str,
        observe: bool,
        extra: &[&str],
    ) -> (Proc, std::path::PathBuf) {
        let (key, _) = keygen(&self.dir.0, &format!("consumer-{i}"));
        let out = self.dir.0.join(format!("out-{i}"));
        let listen = transport.listen(0);
        let mut args = vec![
            "consume",
            "--json",
            "--key",
            &key,
            "--ledger",
            &self.spec,
            "--ledger-key",
            &self.keys[1 + i % 7],
            "--relay",
            &self.relay_addr,
            "--out",
            out.to_str().unwrap(),
            "--listen",
        ];
        args.extend(listen.iter().map(String::as_str));
        let deposit = (1_000 * self.relay_price).to_string();
        if self.relay_price > 0 {
            args.extend(["--relay-deposit", &deposit]);
        }
        if observe {
            // The first consumer also finds its public address (the others skip the round).
            args.push("--observer");
            args.extend(self.observers.iter().map(String::as_str));
        }
        args.extend(extra);
        args.extend(["--want", want]);
        (
            self.lab
                .start("h2", &format!("consumer-{i}"), &self.dir.0, &args),
            out,
        )
    }
}

/// Checks a node's `public_address` verdict against the lab's truth.
pub fn assert_consensus(
    p: &mut Proc,
    who: &str,
    ip: &str,
    mapping: &str,
    port: Option<u16>,
    reachable: Option<bool>,
) {
    let v = p.wait_for("public_address", T, |v| event_is(v, "public_address"));
    assert_eq!(
        v["ip"], ip,
        "{who}: consensus IP is the NAT's outside address: {v}"
    );
    assert_eq!(
        v["mapping"], mapping,
        "{who}: mapping matches the NAT flavour: {v}"
    );
    assert_eq!(v["observers"], 4, "{who}: {v}");
    if let Some(port) = port {
        assert!(
            v["addr"]
                .as_str()
                .unwrap_or("")
                .ends_with(&format!("/{port}"))
                || v["addr"]
                    .as_str()
                    .unwrap_or("")
                    .contains(&format!("/{port}/")),
            "{who}: {v}"
        );
    }
    if let Some(r) = reachable {
        assert_eq!(v["reachable"], r, "{who}: dial-back reachability: {v}");
    }
    println!(
        "NATLAB consensus {who}: {} {} reachable={} ({}/{} agree)",
        v["ip"], v["mapping"], v["reachable"], v["agreeing"], v["observers"]
    );
}

/// The `connected` events to `peer`.
pub fn connections_to<'a>(events: &'a [Value], peer: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|v| event_is(v, "connected") && v["peer_id"] == peer)
        .collect()
}
