//! The ACL file with separate processes over loopback sockets: a consumer
//! that fetches directly (no ledger request) is refused until an entry for
//! it appears in the provider's ACL file, served while it is there (the
//! provider is not restarted), unaffected by a malformed file (the old ACL
//! stays in force), and refused again once its entry is removed. The audit
//! log holds each decision.

use ledgermesh_e2e::procs::{event_is, keygen, Proc};
use ledgermesh_e2e::{file_sha256, temp_dir, truth, TempDir};
use ledgermesh_node::source::Source;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

/// Replaces the file the way editors do (write aside, rename over), so the
/// provider sees a new version however quickly it follows the last one.
fn write_acl(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn allow(peer: &str) -> String {
    format!("[[allow]]\npeer = \"{peer}\"\nstreams = [\"feed\"]\n")
}

/// Runs a direct consumer to completion: its exit code and events.
fn consume(
    dir: &TempDir,
    key: &str,
    provider_addr: &str,
    pid: &str,
    run: usize,
) -> (i32, Vec<Value>) {
    let out = dir.0.join(format!("out-{run}"));
    let want = format!("{pid}/feed");
    let mut c = Proc::start(
        &format!("consumer-{run}"),
        &dir.0,
        &[
            "consume",
            "--json",
            "--key",
            key,
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--provider-addr",
            provider_addr,
            "--want",
            &want,
            "--out",
            out.to_str().unwrap(),
            "--response-timeout",
            "20",
        ],
    );
    let code = c.wait_exit(WAIT * 2);
    (code, c.seen.clone())
}

fn refused_not_allowed(events: &[Value]) -> bool {
    events
        .iter()
        .any(|e| event_is(e, "error") && e["what"] == "stream" && e["reason"] == "not_allowed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_acl_file_grants_and_revokes_without_a_restart_and_a_bad_file_changes_nothing() {
    let dir = temp_dir("acl-procs");
    let (pkey, pid) = keygen(&dir.0, "provider");
    let (ckey, cid) = keygen(&dir.0, "consumer");
    let acl = dir.0.join("acl.toml");
    let audit = dir.0.join("audit.jsonl");
    write_acl(&acl, "# nobody yet\n");
    let mut provider = Proc::start(
        "provider",
        &dir.0,
        &[
            "provide",
            "--json",
            "--key",
            &pkey,
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--stream",
            "feed=random:256K:31",
            "--acl",
            acl.to_str().unwrap(),
            "--audit-log",
            audit.to_str().unwrap(),
        ],
    );
    let listening = provider.wait_for("listening", WAIT, |v| event_is(v, "listening"));
    let addr = listening["addrs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str())
        .find(|a| a.contains("/tcp/"))
        .expect("a tcp listen address")
        .to_string();
    let provider_addr = format!("{addr}/p2p/{pid}");
    provider.wait_for("initial acl", WAIT, |v| event_is(v, "acl_reloaded"));

    // 1. Not in the ACL: refused, nothing written.
    let (code, events) = consume(&dir, &ckey, &provider_addr, &pid, 1);
    assert_ne!(code, 0);
    assert!(refused_not_allowed(&events), "{events:#?}");
    provider.wait_for("access_refused", WAIT, |v| {
        event_is(v, "access_refused") && v["peer_id"] == cid && v["reason"] == "not_allowed"
    });

    // 2. Allowed by editing the file: served, verified, same provider process.
    provider.matching(|_| false);
    write_acl(&acl, &allow(&cid));
    provider.wait_for_next("reload with the entry", WAIT, |v| {
        event_is(v, "acl_reloaded") && v["detail"].as_str().unwrap_or("").contains("1 entries")
    });
    let (code, events) = consume(&dir, &ckey, &provider_addr, &pid, 2);
    assert_eq!(code, 0, "{events:#?}");
    let got = dir.0.join("out-2").join(&pid).join("feed");
    let expected = truth(&Source::Random {
        len: 256 << 10,
        seed: 31,
    })
    .await;
    assert_eq!(file_sha256(&got), expected);

    // 3. A malformed file is reported and the ACL in force stays.
    provider.matching(|_| false);
    write_acl(&acl, "[[allow]]\npeer = \"not-a-peer\"\nstreams = \"*\"\n");
    let err = provider.wait_for_next("acl error", WAIT, |v| {
        event_is(v, "error") && v["what"] == "acl" && v["reason"] == "invalid_acl"
    });
    assert!(
        err["detail"].as_str().unwrap().contains("not-a-peer"),
        "{err}"
    );
    let (code, events) = consume(&dir, &ckey, &provider_addr, &pid, 3);
    assert_eq!(
        code, 0,
        "the old ACL still allows the consumer: {events:#?}"
    );

    // 4. Revoked by removing the entry.
    provider.matching(|_| false);
    write_acl(&acl, "# revoked\n");
    provider.wait_for_next("reload without the entry", WAIT, |v| {
        event_is(v, "acl_reloaded") && v["detail"].as_str().unwrap_or("").contains("0 entries")
    });
    let (code, events) = consume(&dir, &ckey, &provider_addr, &pid, 4);
    assert_ne!(code, 0);
    assert!(refused_not_allowed(&events), "{events:#?}");
    provider.stop();

    // The audit log holds every decision, in order.
    let lines: Vec<Value> = std::fs::read_to_string(&audit)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = lines.iter().filter_map(|l| l["event"].as_str()).collect();
    for k in [
        "acl_reload",
        "refuse",
        "serve_start",
        "serve_end",
        "acl_error",
    ] {
        assert!(kinds.contains(&k), "audit has {k}: {kinds:?}");
    }
    let first_refuse = kinds.iter().position(|k| *k == "refuse").unwrap();
    let first_serve = kinds.iter().position(|k| *k == "serve_start").unwrap();
    let acl_error = kinds.iter().position(|k| *k == "acl_error").unwrap();
    let last_refuse = kinds.iter().rposition(|k| *k == "refuse").unwrap();
    assert!(first_refuse < first_serve && first_serve < acl_error && acl_error < last_refuse);
    let served: Vec<&Value> = lines
        .iter()
        .filter(|l| l["event"] == "serve_end" && l["peer_id"] == cid)
        .collect();
    assert_eq!(served.len(), 2, "served twice (runs 2 and 3)");
    assert!(served
        .iter()
        .all(|l| l["bytes"] == 256 << 10 && l["reason"] == "completed"));
}
