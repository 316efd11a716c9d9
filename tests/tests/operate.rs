//! Operating a node: the committed config files start real processes over
//! loopback sockets; flags given beside a file override it.

use ledgermesh_e2e::procs::{event_is, keygen, project_root, Proc};
use ledgermesh_e2e::{file_sha256, temp_dir, truth};
use ledgermesh_node::source::Source;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

fn config(name: &str) -> String {
    project_root()
        .join("config")
        .join(name)
        .to_str()
        .unwrap()
        .to_string()
}

/// The first TCP address a `listening` event names.
fn tcp_addr(listening: &serde_json::Value) -> String {
    listening["addrs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str())
        .find(|a| a.contains("/tcp/") && !a.contains("p2p-circuit"))
        .expect("a tcp listen address")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_a_provider_and_a_consumer_run_from_the_committed_config_files() {
    let dir = temp_dir("operate-config");
    // The relay: config/relay.toml, listening on loopback instead of its
    // public port (a flag beside the file wins).
    let mut relay = Proc::start(
        "relay",
        &dir.0,
        &[
            "relay",
            "--config",
            &config("relay.toml"),
            "--json",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
        ],
    );
    let l = relay.wait_for("relay listening", WAIT, |v| event_is(v, "listening"));
    let relay_addr = format!("{}/p2p/{}", tcp_addr(&l), l["peer_id"].as_str().unwrap());

    // The provider: config/provider.toml's streams, reserving on the relay,
    // letting the consumer in by its ACL.
    let (pkey, pid) = keygen(&dir.0, "provider");
    let (ckey, cid) = keygen(&dir.0, "consumer");
    let acl = dir.0.join("acl.toml");
    std::fs::write(
        &acl,
        format!("[[allow]]\npeer = \"{cid}\"\nstreams = [\"sample\"]\n"),
    )
    .unwrap();
    let mut provider = Proc::start(
        "provider",
        &dir.0,
        &[
            "provide",
            "--config",
            &config("provider.toml"),
            "--json",
            "--key",
            &pkey,
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--relay",
            &relay_addr,
            "--acl",
            acl.to_str().unwrap(),
        ],
    );
    let l = provider.wait_for("provider listening", WAIT, |v| event_is(v, "listening"));
    let provider_addr = format!("{}/p2p/{pid}", tcp_addr(&l));
    provider.wait_for("the reservation", WAIT, |v| {
        event_is(v, "reservation_accepted")
            && relay_addr.ends_with(v["relay"].as_str().unwrap_or("-"))
    });
    provider.wait_for("provider following", WAIT, |v| {
        event_is(v, "ledger_following")
    });

    // The consumer: config/consumer.toml, wanting the provider's `sample`
    // (the file's `want` names a placeholder peer; the flag replaces it).
    let out = dir.0.join("received");
    let want = format!("{pid}/sample");
    let mut consumer = Proc::start(
        "consumer",
        &dir.0,
        &[
            "consume",
            "--config",
            &config("consumer.toml"),
            "--json",
            "--key",
            &ckey,
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--want",
            &want,
            "--provider-addr",
            &provider_addr,
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let code = consumer.wait_exit(WAIT * 2);
    assert_eq!(code, 0, "consumer: {:#?}", consumer.seen);
    // provider.toml sells `sample=random:8M:7`.
    let expected = truth(&Source::Random {
        len: 8 << 20,
        seed: 7,
    })
    .await;
    assert_eq!(file_sha256(&out.join(&pid).join("sample")), expected);
    let relayed = relay.matching(|v| {
        event_is(v, "relay_reservation") && v["peer_id"] == pid && v["outcome"] == "accepted"
    });
    assert_eq!(
        relayed.len(),
        1,
        "the relay holds the provider's reservation"
    );
    provider.stop();
    relay.stop();
}
