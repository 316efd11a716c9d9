//! End-to-end across separate processes and a real chain: `ledgermesh
//! devchain` (anvil + SignalBoard), a relay, providers and consumers, that
//! signal only through the chain.

use ledgermesh_e2e::chain::*;
use ledgermesh_e2e::procs::*;
use ledgermesh_e2e::{file_sha256, temp_dir, truth};
use ledgermesh_node::source::Source;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_signal_only_through_the_chain_and_no_ip_reaches_it() {
    if !anvil_available("processes_signal_only_through_the_chain") {
        return;
    }
    let dir = temp_dir("chain-e2e");
    let chain = devchain(&dir, 0, &[]);
    let (mut relay_p, relay_addr) = relay(&dir);
    let (mut p1, id1) = provider(
        &dir,
        "provider-1",
        &chain,
        0,
        &relay_addr,
        &["feed=random:3M:101"],
        &[],
    );
    let (mut p2, id2) = provider(
        &dir,
        "provider-2",
        &chain,
        1,
        &relay_addr,
        &["feed=random:2M:202", "extra=random:300K:7"],
        &["--relay-only"],
    );
    let wants = vec![
        format!("{id1}/feed"),
        format!("{id2}/feed"),
        format!("{id2}/extra"),
    ];
    let (mut c, out) = consumer(&dir, "consumer", &chain, 2, &relay_addr, &wants);
    assert_eq!(
        c.wait_exit(T),
        0,
        "consumer exits 0 when every stream is verified"
    );

    for (peer, stream, src) in [
        (
            &id1,
            "feed",
            Source::Random {
                len: 3 << 20,
                seed: 101,
            },
        ),
        (
            &id2,
            "feed",
            Source::Random {
                len: 2 << 20,
                seed: 202,
            },
        ),
        (
            &id2,
            "extra",
            Source::Random {
                len: 300 << 10,
                seed: 7,
            },
        ),
    ] {
        let path = out.join(peer).join(stream);
        assert_eq!(
            file_sha256(&path),
            truth(&src).await,
            "{peer}/{stream} byte for byte"
        );
    }
    let done = c.matching(|v| event_is(v, "stream_done") && v["verified"] == true);
    assert_eq!(done.len(), 3);

    // Gas, as the README states it.
    let req_gas = gas_of(&mut c, "service_request");
    let resp_gas: Vec<u64> = [
        gas_of(&mut p1, "service_response"),
        gas_of(&mut p2, "service_response"),
    ]
    .concat();
    assert_eq!(req_gas.len(), 2);
    assert_eq!(resp_gas.len(), 2);
    let req_bytes: Vec<u64> = c
        .matching(|v| event_is(v, "ledger_post"))
        .iter()
        .map(|v| v["bytes"].as_u64().unwrap())
        .collect();
    println!("GAS service_request: {req_gas:?} (payload bytes {req_bytes:?}); service_response: {resp_gas:?}");

    // No IP address of any node in any payload on the chain, as text or bytes.
    let mut events: Vec<Value> = vec![];
    for p in [&mut relay_p, &mut p1, &mut p2, &mut c] {
        events.extend(p.matching(|v| event_is(v, "listening") || event_is(v, "connected")));
    }
    let ips = ips_of(&events);
    assert!(!ips.is_empty(), "nodes report their addresses");
    let payloads = all_payloads(&chain.rpc, &chain.contract).await;
    assert_eq!(payloads.len(), 4, "2 requests + 2 responses on the chain");
    for ip in &ips {
        let text = ip.to_string();
        let bytes = match ip {
            std::net::IpAddr::V4(v4) => v4.octets().to_vec(),
            std::net::IpAddr::V6(v6) => v6.octets().to_vec(),
        };
        for p in &payloads {
            assert!(
                !contains(p, text.as_bytes()),
                "{text} appears as text in a payload"
            );
            assert!(!contains(p, &bytes), "{text} appears as bytes in a payload");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_rides_out_an_rpc_outage_and_a_restart_without_loss_or_repeats() {
    if !anvil_available("provider_rides_out_an_rpc_outage") {
        return;
    }
    let dir = temp_dir("outage");
    let port = free_port();
    let state = dir.0.join("anvil-state.json");
    let port_s = port.to_string();
    let chain = devchain(&dir, port, &["--state", state.to_str().unwrap()]);
    let (_relay, relay_addr) = relay(&dir);
    let big_len: u64 = 256 << 20;
    let (mut prov, pid) = provider(
        &dir,
        "provider",
        &chain,
        0,
        &relay_addr,
        &["big=random:256M:31", "small=random:64K:32"],
        &[],
    );
    let provider_key = dir.0.join("provider.key");
    let provider_data = dir.0.join("provider-data");

    // Consumer 1 starts a long stream; the chain goes away while it flows.
    let (mut c1, out1) = consumer(
        &dir,
        "consumer-1",
        &chain,
        1,
        &relay_addr,
        &[format!("{pid}/big")],
    );
    c1.wait_for("stream_opened", T, |v| event_is(v, "stream_opened"));
    let contract = chain.contract.clone();
    let mut chain_proc = chain.proc;
    chain_proc.stop();
    let outage = prov.wait_for("ledger outage reported", T, |v| {
        event_is(v, "error") && v["what"] == "ledger" && v["reason"] == "unavailable"
    });
    assert_eq!(
        c1.wait_exit(T * 2),
        0,
        "the open stream completes while the chain is down"
    );
    assert_eq!(
        file_sha256(&out1.join(&pid).join("big")),
        truth(&Source::Random {
            len: big_len,
            seed: 31
        })
        .await
    );
    let served = prov.wait_for("big served", T, |v| {
        event_is(v, "stream_served") && v["stream"] == "big"
    });
    println!(
        "outage began at {}, stream finished at {} ({} ms into the outage)",
        outage["ts_ms"],
        served["ts_ms"],
        served["ts_ms"].as_i64().unwrap() - outage["ts_ms"].as_i64().unwrap()
    );

    // The chain comes back with its state; a new request is processed exactly once.
    let chain = devchain(
        &dir,
        port,
        &["--state", state.to_str().unwrap(), "--contract", &contract],
    );
    assert_eq!(chain.rpc, format!("http://127.0.0.1:{port_s}"));
    let (mut c2, out2) = consumer(
        &dir,
        "consumer-2",
        &chain,
        0,
        &relay_addr,
        &[format!("{pid}/small")],
    );
    assert_eq!(c2.wait_exit(T), 0);
    assert_eq!(
        file_sha256(&out2.join(&pid).join("small")),
        truth(&Source::Random {
            len: 64 << 10,
            seed: 32
        })
        .await
    );
    let requests =
        prov.matching(|v| event_is(v, "ledger_message") && v["kind"] == "service_request");
    assert_eq!(
        requests.len(),
        2,
        "each request processed exactly once: {requests:#?}"
    );
    // The provider reports its post once the receipt is in: that can come
    // after the consumer already read the answer in the block.
    if prov.matching(|v| event_is(v, "ledger_post")).len() < 2 {
        prov.wait_for_next("the second answer's post", T, |v| {
            event_is(v, "ledger_post")
        });
    }
    assert_eq!(
        prov.matching(|v| event_is(v, "ledger_post")).len(),
        2,
        "one response per request"
    );
    assert_eq!(c2.matching(|v| event_is(v, "ledger_message")).len(), 1);

    // A provider restart resumes from its saved cursor: old requests are not re-answered.
    prov.stop();
    let argv = [
        "provide",
        "--json",
        "--key",
        provider_key.to_str().unwrap(),
        "--ledger",
        &chain.spec,
        "--ledger-key",
        &chain.keys[1],
        "--data-dir",
        provider_data.to_str().unwrap(),
        "--relay",
        &relay_addr,
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        "--stream",
        "small=random:64K:32",
    ];
    let mut prov2 = Proc::start("provider-restarted", &dir.0, &argv);
    let following = prov2.wait_for("following", T, |v| event_is(v, "ledger_following"));
    assert!(
        following["from_block"].as_u64().unwrap() > 0,
        "resumes from the saved cursor: {following}"
    );
    let (mut c3, _) = consumer(
        &dir,
        "consumer-3",
        &chain,
        2,
        &relay_addr,
        &[format!("{pid}/small")],
    );
    assert_eq!(c3.wait_exit(T), 0);
    let requests = prov2.matching(|v| event_is(v, "ledger_message"));
    assert_eq!(
        requests.len(),
        1,
        "only the new request after a restart: {requests:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_oversized_posts_and_a_flood_do_not_stop_a_genuine_request() {
    use alloy::primitives::{Bytes, B256};
    use alloy::providers::ProviderBuilder;
    use ledgermesh_ledger::evm::{parse_key, EvmLedger, EvmOptions, SignalBoard};
    use ledgermesh_ledger::{Ledger, LedgerError};
    if !anvil_available("garbage_and_flood") {
        return;
    }
    let dir = temp_dir("flood");
    let chain = devchain(&dir, 0, &[]);
    let (_relay, relay_addr) = relay(&dir);
    let (mut prov, pid) = provider(
        &dir,
        "provider",
        &chain,
        0,
        &relay_addr,
        &["feed=random:1M:5"],
        &[],
    );
    prov.wait_for("following", T, |v| event_is(v, "ledger_following"));
    let topic = ledgermesh_protocol::Topic::stdin(&pid.parse().unwrap()).0;
    let key = std::fs::read_to_string(&chain.keys[3]).unwrap();
    let (url, contract) = ledgermesh_ledger::evm::parse_spec(&chain.spec).unwrap();
    let stranger = EvmLedger::connect(
        &url,
        contract,
        Some(parse_key(&key).unwrap()),
        EvmOptions::default(),
    )
    .await
    .unwrap();

    // Over the cap: refused by the client, and by the contract itself when forced.
    let err = stranger.post(topic, vec![1; 8193]).await.unwrap_err();
    assert!(matches!(err, LedgerError::PayloadTooLarge { .. }));
    let signer = parse_key(&key).unwrap();
    let raw = ProviderBuilder::new()
        .wallet(signer)
        .connect_http(url.parse().unwrap());
    let board = SignalBoard::new(contract, &raw);
    let reverted = board
        .post(B256::from(topic), Bytes::from(vec![1u8; 8193]))
        .send()
        .await;
    assert!(
        reverted.is_err(),
        "the contract reverts an oversized payload"
    );

    // A flood of malformed posts.
    const FLOOD: usize = 60;
    let started = std::time::Instant::now();
    for i in 0..FLOOD {
        stranger.post(topic, vec![i as u8; 200 + i]).await.unwrap();
    }
    let flood_secs = started.elapsed().as_secs_f64();

    // The genuine request behind the flood is still served.
    let (mut c, out) = consumer(
        &dir,
        "consumer",
        &chain,
        1,
        &relay_addr,
        &[format!("{pid}/feed")],
    );
    assert_eq!(c.wait_exit(T), 0);
    assert_eq!(
        file_sha256(&out.join(&pid).join("feed")),
        truth(&Source::Random {
            len: 1 << 20,
            seed: 5
        })
        .await
    );
    let rejected = prov.matching(|v| event_is(v, "error") && v["what"] == "envelope");
    assert_eq!(
        rejected.len(),
        FLOOD,
        "every flood message rejected and reported"
    );
    let first = rejected.first().unwrap()["ts_ms"].as_u64().unwrap();
    let last = rejected.last().unwrap()["ts_ms"].as_u64().unwrap();
    println!(
        "FLOOD {FLOOD} posts took the attacker {flood_secs:.2} s; the provider rejected them within {} ms of each other",
        last - first
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_deploy_puts_a_working_signal_board_on_a_chain() {
    use futures::StreamExt;
    use ledgermesh_ledger::evm::{parse_key, parse_spec, EvmLedger, EvmOptions};
    use ledgermesh_ledger::{Cursor, Ledger};
    if !anvil_available("ledger_deploy") {
        return;
    }
    let dir = temp_dir("deploy");
    let chain = devchain(&dir, 0, &[]);
    let out = std::process::Command::new(bin_path())
        .args([
            "ledger",
            "deploy",
            "--json",
            "--rpc",
            &chain.rpc,
            "--ledger-key",
            &chain.keys[4],
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let spec = v["spec"].as_str().unwrap();
    assert_ne!(
        v["contract"].as_str().unwrap(),
        chain.contract,
        "a new contract"
    );
    // Its payment contract is found from the spec alone.
    let payments = ledgermesh_ledger::payments::EvmPayments::connect(spec, None)
        .await
        .expect("the board names its payment contract");
    assert_eq!(
        payments.contract().to_string(),
        v["payments"].as_str().unwrap()
    );
    // The new board works end to end.
    let (url, contract) = parse_spec(spec).unwrap();
    let key = std::fs::read_to_string(&chain.keys[4]).unwrap();
    let board = EvmLedger::connect(
        &url,
        contract,
        Some(parse_key(&key).unwrap()),
        EvmOptions::default(),
    )
    .await
    .unwrap();
    board.post([9; 32], b"hello".to_vec()).await.unwrap();
    let first = board
        .follow([9; 32], Cursor::START)
        .next()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.payload, b"hello");

    // An account without funds gets a clear refusal.
    let broke = dir.0.join("broke.key");
    std::fs::write(&broke, format!("0x{}", "11".repeat(32))).unwrap();
    let deploy = || {
        std::process::Command::new(bin_path())
            .args([
                "ledger",
                "deploy",
                "--rpc",
                &chain.rpc,
                "--ledger-key",
                broke.to_str().unwrap(),
            ])
            .output()
            .unwrap()
    };
    // Written with the default umask, others may read it: refused, with the fix.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&broke, std::fs::Permissions::from_mode(0o644)).unwrap();
        let out = deploy();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("chmod 600"), "{err}");
        std::fs::set_permissions(&broke, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let out = deploy();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no funds"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_crashes_around_an_answer_answers_exactly_once() {
    let Some((dir, chain, _relay, relay_addr)) = chain_and_relay("exactly-once") else {
        return;
    };
    let (args, pid) = provider_argv(
        &dir,
        "provider",
        &chain,
        0,
        &relay_addr,
        &["feed=random:64K:9"],
        &[],
    );
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let start = |name: &str, failpoint: Option<&str>| {
        let env: Vec<(&str, &str)> = failpoint
            .map(|f| ("LEDGERMESH_FAILPOINT", f))
            .into_iter()
            .collect();
        let mut p = Proc::start_env(name, &dir.0, &argv, &env);
        p.wait_for("following", T, |v| event_is(v, "ledger_following"));
        p
    };
    for (i, point) in ["answer:before_post", "answer:after_post"]
        .into_iter()
        .enumerate()
    {
        // The provider dies at `point` while answering the consumer.
        let mut doomed = start(&format!("provider-{i}-crashing"), Some(point));
        let (mut c, _) = consumer(
            &dir,
            &format!("consumer-{i}"),
            &chain,
            1 + i,
            &relay_addr,
            &[format!("{pid}/feed")],
        );
        assert_eq!(
            doomed.wait_exit(T),
            86,
            "{point}: the failpoint was reached"
        );
        // Restarted, it reads the request again and answers it; the consumer
        // sees exactly one response either way.
        let mut again = start(&format!("provider-{i}-restarted"), None);
        assert_eq!(c.wait_exit(T), 0, "{point}: the consumer got its stream");
        let responses =
            c.matching(|v| event_is(v, "ledger_message") && v["kind"] == "service_response");
        assert_eq!(
            responses.len(),
            1,
            "{point}: exactly one response: {responses:#?}"
        );
        again.stop();
    }
}

/// The chain reorganises while the provider is down: the block its saved
/// cursor points into is replaced by one holding another request at the
/// same place. Restarted, the provider sees the block's hash changed
/// (`ledger_reorg`), reads again from before it, and answers the new request
/// (with only the old cursor, it would skip it as already handled).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reorg_while_the_provider_is_down_is_read_again_on_restart() {
    use alloy::providers::{Provider, ProviderBuilder};
    let Some((dir, chain, _relay, relay_addr)) = chain_and_relay("reorg-down") else {
        return;
    };
    let (args, pid) = provider_argv(
        &dir,
        "provider",
        &chain,
        0,
        &relay_addr,
        &["feed=random:64K:9"],
        &[],
    );
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let rpc = ProviderBuilder::new().connect_http(chain.rpc.parse().unwrap());
    let mut first = Proc::start("provider-first", &dir.0, &argv);
    first.wait_for("following", T, |v| event_is(v, "ledger_following"));
    let snapshot: serde_json::Value = rpc.raw_request("evm_snapshot".into(), ()).await.unwrap();
    let want = vec![format!("{pid}/feed")];
    let (mut c1, _) = consumer(&dir, "consumer-1", &chain, 1, &relay_addr, &want);
    assert_eq!(c1.wait_exit(T), 0, "the first consumer is served");
    let answered = first.wait_for("the first request", T, |v| {
        event_is(v, "ledger_message") && v["kind"] == "service_request"
    });
    // The cursor is saved once the request is handled, just after its
    // answer: waited for (no event says it), then the provider stops.
    let saved_with_hash = || {
        walk(&dir.0.join("provider-data")).into_iter().any(|f| {
            let text = std::fs::read_to_string(&f).unwrap_or_default();
            f.extension().is_some_and(|e| e == "cursor") && text.split(':').count() == 3
        })
    };
    let deadline = std::time::Instant::now() + T;
    while !saved_with_hash() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        saved_with_hash(),
        "the cursor is saved with its block's hash: {:?}",
        walk(&dir.0.join("provider-data"))
    );
    first.stop();
    // Away: the chain drops the first request's block and mines another
    // request in its place.
    let reverted: serde_json::Value = rpc
        .raw_request("evm_revert".into(), (snapshot,))
        .await
        .unwrap();
    assert_eq!(reverted, serde_json::Value::Bool(true));
    let (mut c2, _) = consumer(&dir, "consumer-2", &chain, 2, &relay_addr, &want);
    c2.wait_for("the second request posted", T, |v| {
        event_is(v, "ledger_post") && v["kind"] == "service_request"
    });
    let mut again = Proc::start("provider-again", &dir.0, &argv);
    let reorg = again.wait_for("the reorg noticed", T, |v| event_is(v, "ledger_reorg"));
    assert!(reorg["from_block"].as_u64().unwrap() < reorg["block"].as_u64().unwrap());
    assert_eq!(
        c2.wait_exit(T),
        0,
        "the request that replaced the old one is answered"
    );
    let read = again.matching(|v| event_is(v, "ledger_message") && v["kind"] == "service_request");
    assert_eq!(read.len(), 1, "only the replacing request: {read:#?}");
    assert_ne!(read[0]["from"], answered["from"]);
    again.stop();
}

/// With `--read-pending` on both sides, a request and its response are read
/// from the chain's pending block: with mining stopped, the consumer gets its
/// stream, byte for byte, before any block holds either message. Once a
/// block does, the provider passes over the mined copy of the request
/// quietly (no replay error) and its cursor moves past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_read_pending_a_stream_starts_before_any_block_holds_the_signals() {
    use alloy::providers::{Provider, ProviderBuilder};
    let Some((dir, chain, _relay, relay_addr)) = chain_and_relay("chain-pending") else {
        return;
    };
    let (mut p, pid) = provider(
        &dir,
        "provider",
        &chain,
        0,
        &relay_addr,
        &["feed=random:1M:41"],
        &["--read-pending", "--poll-ms", "50"],
    );
    p.wait_for("following", T, |v| event_is(v, "ledger_following"));
    let rpc = ProviderBuilder::new().connect_http(chain.rpc.parse().unwrap());
    let _: serde_json::Value = rpc
        .raw_request("evm_setAutomine".into(), (false,))
        .await
        .unwrap();
    let head = rpc.get_block_number().await.unwrap();
    let want = vec![format!("{pid}/feed")];
    let (mut c, out) = consumer_with(
        &dir,
        "consumer",
        &chain,
        1,
        &relay_addr,
        &want,
        &["--read-pending", "--poll-ms", "50"],
    );
    c.wait_for("the stream verified", T, |v| {
        event_is(v, "stream_done") && v["verified"] == true
    });
    assert_eq!(
        rpc.get_block_number().await.unwrap(),
        head,
        "no block was mined: both signals came from the pending block"
    );
    assert_eq!(
        file_sha256(&out.join(&pid).join("feed")),
        truth(&Source::Random {
            len: 1 << 20,
            seed: 41
        })
        .await
    );
    let early = |p: &mut Proc, kind: &str| {
        p.matching(|v| event_is(v, "ledger_message") && v["kind"] == kind && v["pending"] == true)
            .len()
    };
    assert_eq!(early(&mut p, "service_request"), 1);
    assert_eq!(early(&mut c, "service_response"), 1);

    // A block takes both: the provider's cursor passes the mined request,
    // which is not opened again (the replay cache would refuse it).
    let _: serde_json::Value = rpc.raw_request("evm_mine".into(), ()).await.unwrap();
    let mined = rpc.get_block_number().await.unwrap();
    assert_eq!(mined, head + 1);
    assert_eq!(c.wait_exit(T), 0);
    p.wait_for("the response's receipt", T, |v| {
        event_is(v, "ledger_post") && v["kind"] == "service_response"
    });
    let cursor_block = || {
        walk(&dir.0.join("provider-data"))
            .iter()
            .filter(|f| f.extension().is_some_and(|e| e == "cursor"))
            .filter_map(|f| std::fs::read_to_string(f).ok())
            .filter_map(|t| t.split(':').next()?.parse::<u64>().ok())
            .max()
    };
    let deadline = std::time::Instant::now() + T;
    while cursor_block() != Some(mined) {
        assert!(
            std::time::Instant::now() < deadline,
            "the provider's cursor never passed block {mined}: {:?}",
            cursor_block()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let replays = p.matching(|v| event_is(v, "error") && v["what"] == "envelope");
    assert!(
        replays.is_empty(),
        "the mined copy is passed over: {replays:#?}"
    );
    let read = p.matching(|v| event_is(v, "ledger_message") && v["kind"] == "service_request");
    assert_eq!(read.len(), 1, "the request is handled once: {read:#?}");
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
