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
/// How many times each case runs.
pub const RUNS: usize = 5;

/// The transport a case runs over.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Transport {
    Tcp,
    Quic,
}

impl Transport {
    pub fn listen(self, port: u16) -> String {
        match self {
            Transport::Tcp => format!("/ip4/0.0.0.0/tcp/{port}"),
            Transport::Quic => format!("/ip4/0.0.0.0/udp/{port}/quic-v1"),
        }
    }
    pub fn at(self, ip: &str, port: u16) -> String {
        match self {
            Transport::Tcp => format!("/ip4/{ip}/tcp/{port}"),
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
    pub _observer_procs: Vec<Proc>,
    pub observers: Vec<String>,
}

/// [`world_with`] without delay or loss.
pub fn world(test: &str, nat1: Nat, nat2: Nat, transport: Transport) -> Option<World> {
    world_with(test, nat1, nat2, transport, 0, 0.0)
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
    let lab = Lab::up_with(test, nat1, nat2, delay_ms, loss)?;
    let dir = temp_dir(test);
    let keydir = dir.0.join("keys");
    let mut chain = lab.start(
        "chain",
        "devchain",
        &dir.0,
        &[
            "devchain",
            "--json",
            "--host",
            "203.0.113.20",
            "--port",
            "8545",
            "--dir",
            keydir.to_str().unwrap(),
        ],
    );
    let ready = DevchainReady::wait(&mut chain, T);
    let relay_listen = transport.at(RELAY_IP, 4001);
    let mut relay = lab.start(
        "relay",
        "relay",
        &dir.0,
        // Streams cross this relay for minutes: an open relay.
        &["relay", "--json", "--open", "--listen", &relay_listen],
    );
    let listening = relay.wait_for("relay listening", T, |v| event_is(v, "listening"));
    let relay_addr = format!(
        "{relay_listen}/p2p/{}",
        listening["peer_id"].as_str().unwrap()
    );
    // Three more public observers for address consensus (K = 4 with the relay).
    let mut observer_procs = vec![];
    let mut observers = vec![];
    for (host, ip) in [
        ("obs1", "203.0.113.11"),
        ("obs2", "203.0.113.12"),
        ("obs3", "203.0.113.13"),
    ] {
        let listen = transport.at(ip, 4001);
        let mut p = lab.start(
            host,
            host,
            &dir.0,
            &["relay", "--json", "--listen", &listen],
        );
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
        _observer_procs: observer_procs,
        observers,
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
            "--listen",
            &listen,
            "--stream",
            stream,
        ];
        if relay_only {
            args.push("--relay-only");
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
            "--listen",
            &listen,
            "--out",
            out.to_str().unwrap(),
        ];
        if i == 0 {
            // The first consumer also finds its public address (the others skip the round).
            args.push("--observer");
            args.extend(self.observers.iter().map(String::as_str));
        }
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
