//! Processes for the end-to-end tests on a real chain: `ledgermesh devchain`
//! (anvil + SignalBoard), a relay, providers and consumers as child
//! processes, and what the tests read back from the chain and the events.

use crate::procs::*;
use crate::TempDir;
use serde_json::Value;
use std::time::Duration;

/// How long any one wait on a process may take.
pub const T: Duration = Duration::from_secs(90);

/// A running `ledgermesh devchain` and what it reported when ready.
pub struct Chain {
    /// The devchain process.
    pub proc: Proc,
    /// Its RPC URL, contract and keys.
    pub ready: DevchainReady,
}

impl std::ops::Deref for Chain {
    type Target = DevchainReady;
    fn deref(&self) -> &DevchainReady {
        &self.ready
    }
}

/// Starts a devchain on `port` with keys under `dir`.
pub fn devchain(dir: &TempDir, port: u16, extra: &[&str]) -> Chain {
    let keydir = dir.0.join("keys");
    let port_s = port.to_string();
    let mut args = vec![
        "devchain",
        "--json",
        "--port",
        &port_s,
        "--dir",
        keydir.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let mut proc = Proc::start("devchain", &dir.0, &args);
    let ready = DevchainReady::wait(&mut proc, T);
    Chain { proc, ready }
}

/// Starts a relay process on loopback; returns it and its dialable address.
pub fn relay(dir: &TempDir) -> (Proc, String) {
    relay_named(dir, "relay")
}

/// [`relay`] under the process name `name` (several relays in one test).
pub fn relay_named(dir: &TempDir, name: &str) -> (Proc, String) {
    let mut p = Proc::start(
        name,
        &dir.0,
        &[
            "relay",
            "--json",
            "--open",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
        ],
    );
    let ev = p.wait_for("listening", T, |v| event_is(v, "listening"));
    let addr = format!(
        "{}/p2p/{}",
        ev["addrs"][0].as_str().unwrap(),
        ev["peer_id"].as_str().unwrap()
    );
    (p, addr)
}

/// The command line of a provider named `name` signaling through `chain`
/// with ledger key `key_index`, reserving on `relay`, its data under
/// `DIR/<name>-data`; and its PeerId (a fresh identity key).
pub fn provider_argv(
    dir: &TempDir,
    name: &str,
    chain: &Chain,
    key_index: usize,
    relay: &str,
    streams: &[&str],
    extra: &[&str],
) -> (Vec<String>, String) {
    let (key, peer) = keygen(&dir.0, name);
    let data = dir.0.join(format!("{name}-data"));
    let mut args = vec![
        "provide",
        "--json",
        "--key",
        &key,
        "--ledger",
        &chain.spec,
        "--ledger-key",
        &chain.keys[key_index],
        "--data-dir",
        data.to_str().unwrap(),
        "--relay",
        relay,
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        "--stream",
    ];
    args.extend_from_slice(streams);
    args.extend_from_slice(extra);
    (args.into_iter().map(String::from).collect(), peer)
}

/// Starts a provider process signaling through `chain` and waits for its
/// reservation; returns it and its PeerId.
pub fn provider(
    dir: &TempDir,
    name: &str,
    chain: &Chain,
    key_index: usize,
    relay: &str,
    streams: &[&str],
    extra: &[&str],
) -> (Proc, String) {
    let (args, peer) = provider_argv(dir, name, chain, key_index, relay, streams, extra);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut p = Proc::start(name, &dir.0, &argv);
    p.wait_for("reservation", T, |v| event_is(v, "reservation_accepted"));
    (p, peer)
}

/// A devchain and a relay under a fresh `tag` directory, or `None` (with a
/// SKIP line; a failure under `CI=true`) when anvil is not installed.
pub fn chain_and_relay(tag: &str) -> Option<(TempDir, Chain, Proc, String)> {
    if !anvil_available(tag) {
        return None;
    }
    let dir = crate::temp_dir(tag);
    let chain = devchain(&dir, 0, &[]);
    let (relay, addr) = relay(&dir);
    Some((dir, chain, relay, addr))
}

/// Starts a consumer process signaling through `chain`; returns it and its output dir.
pub fn consumer(
    dir: &TempDir,
    name: &str,
    chain: &Chain,
    key_index: usize,
    relay: &str,
    wants: &[String],
) -> (Proc, std::path::PathBuf) {
    consumer_with(dir, name, chain, key_index, relay, wants, &[])
}

/// [`consumer`] with extra arguments.
pub fn consumer_with(
    dir: &TempDir,
    name: &str,
    chain: &Chain,
    key_index: usize,
    relay: &str,
    wants: &[String],
    extra: &[&str],
) -> (Proc, std::path::PathBuf) {
    let (key, _) = keygen(&dir.0, name);
    let out = dir.0.join(format!("{name}-out"));
    let mut args: Vec<String> = [
        "consume",
        "--json",
        "--key",
        &key,
        "--ledger",
        &chain.spec,
        "--ledger-key",
        &chain.keys[key_index],
        "--relay",
        relay,
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        "--out",
        out.to_str().unwrap(),
        "--want",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    args.extend(wants.iter().cloned());
    args.extend(extra.iter().map(|s| s.to_string()));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    (Proc::start(name, &dir.0, &argv), out)
}

/// Gas used by each of `p`'s ledger posts of `kind`.
pub fn gas_of(p: &mut Proc, kind: &str) -> Vec<u64> {
    p.matching(|v| event_is(v, "ledger_post") && v["kind"] == kind)
        .iter()
        .map(|v| v["gas_used"].as_u64().expect("EVM posts report gas_used"))
        .collect()
}

/// Every `Posted` payload ever emitted by the contract.
pub async fn all_payloads(rpc: &str, contract: &str) -> Vec<Vec<u8>> {
    use alloy::providers::{Provider, ProviderBuilder};
    use alloy::rpc::types::Filter;
    let provider = ProviderBuilder::new().connect_http(rpc.parse().unwrap());
    let filter = Filter::new()
        .address(contract.parse::<alloy::primitives::Address>().unwrap())
        .from_block(0u64);
    let logs = provider.get_logs(&filter).await.unwrap();
    logs.iter()
        .map(|l| {
            l.log_decode::<ledgermesh_ledger::evm::SignalBoard::Posted>()
                .unwrap()
                .inner
                .data
                .payload
                .to_vec()
        })
        .collect()
}

/// Every IP address in the `addrs` and `remote_addr` fields of `events`.
pub fn ips_of(events: &[Value]) -> Vec<std::net::IpAddr> {
    let addrs = events.iter().flat_map(|v| {
        let listed = v["addrs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str);
        listed.chain(v["remote_addr"].as_str())
    });
    let mut ips: Vec<std::net::IpAddr> = addrs
        .flat_map(|a| a.split('/'))
        .filter_map(|part| part.parse().ok())
        .collect();
    ips.sort();
    ips.dedup();
    ips
}

/// Whether `needle` occurs in `hay`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}
