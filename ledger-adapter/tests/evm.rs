//! The EVM ledger against a real local chain (anvil, installed by
//! `scripts/setup.sh`): the conformance suite, clear errors for every way a
//! connection can be wrong, and the committed contract artifact.

use alloy::primitives::Address;
use alloy::providers::{Provider, ProviderBuilder};
use alloy::signers::local::PrivateKeySigner;
use ledgermesh_ledger::conformance;
use ledgermesh_ledger::evm::{EvmError, EvmLedger, EvmOptions, SignalBoard, SIGNAL_BOARD_ARTIFACT};
use std::time::Duration;

mod common;
use common::{anvil, funded, root, tool, Anvil};

async fn ledger(test: &str) -> Option<(Anvil, EvmLedger)> {
    let chain = anvil(test).await?;
    let key = funded(&chain.url).await;
    let contract = EvmLedger::deploy(&chain.url, key.clone())
        .await
        .expect("deploy");
    let options = EvmOptions {
        poll_interval: Duration::from_millis(50),
        ..Default::default()
    };
    let ledger = EvmLedger::connect(&chain.url, contract, Some(key), options)
        .await
        .expect("connect");
    Some((chain, ledger))
}

#[tokio::test]
async fn evm_posts_are_followed_in_order() {
    let Some((_chain, l)) = ledger("evm_posts_are_followed_in_order").await else {
        return;
    };
    conformance::posts_are_followed_in_order(&l, [1; 32], [2; 32]).await;
}

#[tokio::test]
async fn evm_resubscription_loses_and_repeats_nothing() {
    let Some((_chain, l)) = ledger("evm_resubscription").await else {
        return;
    };
    conformance::resubscription_loses_and_repeats_nothing(&l, [3; 32]).await;
}

#[tokio::test]
async fn evm_oversized_payload_is_refused() {
    let Some((_chain, l)) = ledger("evm_oversized_payload").await else {
        return;
    };
    conformance::oversized_payload_is_refused(&l, [4; 32]).await;
}

#[tokio::test]
async fn evm_post_reports_transaction_and_gas() {
    use ledgermesh_ledger::Ledger;
    let Some((_chain, l)) = ledger("evm_post_reports_gas").await else {
        return;
    };
    let r = l.post([5; 32], vec![7; 500]).await.unwrap();
    assert!(
        r.tx.as_deref()
            .is_some_and(|t| t.starts_with("0x") && t.len() == 66),
        "{r:?}"
    );
    let gas = r.gas_used.unwrap();
    assert!(
        gas > 21_000 && gas < 100_000,
        "a 500-byte post costs {gas} gas"
    );
    assert!(r.cursor.is_some());
}

/// The first `n` payloads on `topic` after `from`, each within 10 s.
async fn first_payloads(
    l: &EvmLedger,
    topic: [u8; 32],
    from: ledgermesh_ledger::Cursor,
    n: usize,
) -> Vec<Vec<u8>> {
    use futures::StreamExt;
    use ledgermesh_ledger::Ledger;
    let mut follow = l.follow(topic, from);
    let mut got = vec![];
    while got.len() < n {
        let m = tokio::time::timeout(Duration::from_secs(10), follow.next())
            .await
            .expect("every post is followed")
            .unwrap()
            .unwrap();
        got.push(m.payload);
    }
    got
}

/// Posts made at once from one account all land (no two draw the same
/// nonce) and are followed, each exactly once.
#[tokio::test]
async fn concurrent_posts_from_one_account_all_land() {
    use ledgermesh_ledger::Ledger;
    let Some((_chain, l)) = ledger("concurrent_posts").await else {
        return;
    };
    let topic = [4u8; 32];
    let from = l.initial_cursor().await.unwrap();
    let posts = (0..8u8).map(|i| l.post(topic, vec![i; 40]));
    for r in futures::future::join_all(posts).await {
        assert!(r.is_ok(), "{r:?}");
    }
    let mut got: Vec<u8> = first_payloads(&l, topic, from, 8)
        .await
        .iter()
        .map(|p| p[0])
        .collect();
    got.sort();
    assert_eq!(got, (0..8).collect::<Vec<u8>>());
}

/// An HTTP proxy in front of anvil that answers the first `fail` raw
/// transaction submissions with 503 instead of passing them on: an RPC
/// endpoint that drops requests now and then.
async fn flaky_proxy(upstream: &str, fail: usize) -> String {
    proxy(upstream, fail, None).await
}

/// The block span of an `eth_getLogs` request body, if it is one.
fn logs_span(body: &str) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    if v["method"] != "eth_getLogs" {
        return None;
    }
    let block = |k: &str| {
        u64::from_str_radix(v["params"][0][k].as_str()?.trim_start_matches("0x"), 16).ok()
    };
    Some(block("toBlock")? - block("fromBlock")? + 1)
}

/// [`flaky_proxy`], also refusing `eth_getLogs` over more than
/// `max_logs_span` blocks the way hosted endpoints do (a JSON-RPC error).
async fn proxy(upstream: &str, fail: usize, max_logs_span: Option<u64>) -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upstream = upstream.trim_start_matches("http://").to_string();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let left = Arc::new(AtomicUsize::new(fail));
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let (upstream, left) = (upstream.clone(), left.clone());
            tokio::spawn(async move {
                // One request per connection: the answer says `connection: close`.
                let mut req = Vec::new();
                let mut buf = [0u8; 16 * 1024];
                let body_at = loop {
                    let n = client.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    req.extend_from_slice(&buf[..n]);
                    if let Some(i) = req.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                };
                let head = String::from_utf8_lossy(&req[..body_at]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                while req.len() < body_at + len {
                    let n = client.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    req.extend_from_slice(&buf[..n]);
                }
                let body = String::from_utf8_lossy(&req[body_at..]);
                if let (Some(max), Some(span)) = (max_logs_span, logs_span(&body)) {
                    if span > max {
                        let id = serde_json::from_str::<serde_json::Value>(&body)
                            .map(|v| v["id"].clone())
                            .unwrap_or_default();
                        let answer = serde_json::json!({
                            "jsonrpc": "2.0", "id": id,
                            "error": {"code": -32005, "message": format!("query exceeds max block range {max}")},
                        })
                        .to_string();
                        let head = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                            answer.len()
                        );
                        let _ = client.write_all(head.as_bytes()).await;
                        let _ = client.write_all(answer.as_bytes()).await;
                        return;
                    }
                }
                if body.contains("eth_sendRawTransaction")
                    && left
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok()
                {
                    let _ = client
                        .write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                        .await;
                    return;
                }
                let head = String::from_utf8_lossy(&req[..body_at])
                    .lines()
                    .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
                    .filter(|l| !l.is_empty())
                    .collect::<Vec<_>>()
                    .join("\r\n");
                let mut up = tokio::net::TcpStream::connect(&upstream).await.unwrap();
                up.write_all(format!("{head}\r\nconnection: close\r\n\r\n").as_bytes())
                    .await
                    .unwrap();
                up.write_all(&req[body_at..]).await.unwrap();
                let mut answer = Vec::new();
                let _ = up.read_to_end(&mut answer).await;
                let _ = client.write_all(&answer).await;
            });
        }
    });
    url
}

/// A post whose transaction the endpoint dropped fails with a clear error;
/// the next posts go through and are followed (no nonce left behind).
#[tokio::test]
async fn a_dropped_submission_does_not_wedge_later_posts() {
    use ledgermesh_ledger::{Ledger, LedgerError};
    let Some(chain) = anvil("a_dropped_submission").await else {
        return;
    };
    let key = funded(&chain.url).await;
    let contract = EvmLedger::deploy(&chain.url, key.clone()).await.unwrap();
    let proxy = flaky_proxy(&chain.url, 1).await;
    let options = EvmOptions {
        poll_interval: Duration::from_millis(50),
        rpc_timeout: Duration::from_secs(2),
        ..Default::default()
    };
    let l = EvmLedger::connect(&proxy, contract, Some(key), options)
        .await
        .unwrap();
    let topic = [9u8; 32];
    let first = l.post(topic, b"dropped".to_vec()).await;
    assert!(
        matches!(first, Err(LedgerError::Unavailable(_))),
        "the dropped submission is reported: {first:?}"
    );
    for msg in [&b"second"[..], b"third"] {
        let r = l.post(topic, msg.to_vec()).await;
        assert!(r.is_ok(), "post after a dropped one: {r:?}");
    }
    let got = first_payloads(&l, topic, l.initial_cursor().await.unwrap(), 2).await;
    assert_eq!(got, [b"second".to_vec(), b"third".to_vec()]);
}

#[tokio::test]
async fn every_wrong_connection_gets_a_clear_error() {
    let Some(chain) = anvil("every_wrong_connection").await else {
        return;
    };
    let key = funded(&chain.url).await;
    let contract = EvmLedger::deploy(&chain.url, key.clone()).await.unwrap();
    let opts = || EvmOptions {
        rpc_timeout: Duration::from_secs(3),
        ..Default::default()
    };

    let e = EvmLedger::connect("not a url", contract, None, opts())
        .await
        .unwrap_err();
    assert!(matches!(e, EvmError::BadUrl { .. }), "{e}");
    let e = EvmLedger::connect("ftp://127.0.0.1:1", contract, None, opts())
        .await
        .unwrap_err();
    assert!(matches!(e, EvmError::BadUrl { .. }), "{e}");

    let e = EvmLedger::connect("http://127.0.0.1:1", contract, None, opts())
        .await
        .unwrap_err();
    assert!(matches!(e, EvmError::Unreachable { .. }), "{e}");
    assert!(
        e.to_string().contains("devchain"),
        "the message says how to get a chain: {e}"
    );

    let nowhere = Address::repeat_byte(0x42);
    let e = EvmLedger::connect(&chain.url, nowhere, None, opts())
        .await
        .unwrap_err();
    assert!(matches!(e, EvmError::NoContract { .. }), "{e}");
    assert!(e.to_string().contains("ledger deploy"), "{e}");

    let broke = PrivateKeySigner::random();
    let e = EvmLedger::connect(&chain.url, contract, Some(broke), opts())
        .await
        .unwrap_err();
    assert!(matches!(e, EvmError::Unfunded { .. }), "{e}");

    let e = ledgermesh_ledger::evm::parse_spec("evm:http://127.0.0.1:8545").unwrap_err();
    assert!(matches!(e, EvmError::BadSpec(_)), "{e}");
    let e = ledgermesh_ledger::evm::parse_key("0x1234").unwrap_err();
    assert!(matches!(e, EvmError::BadKey(_)), "{e}");
}

#[test]
fn the_rust_binding_matches_the_committed_abi() {
    use alloy::json_abi::JsonAbi;
    use alloy::sol_types::{SolCall, SolEvent};
    let v: serde_json::Value = serde_json::from_str(SIGNAL_BOARD_ARTIFACT).unwrap();
    let abi: JsonAbi = serde_json::from_value(v["abi"].clone()).unwrap();
    assert_eq!(
        abi.event("Posted").unwrap()[0].selector(),
        SignalBoard::Posted::SIGNATURE_HASH
    );
    assert_eq!(
        abi.function("post").unwrap()[0].selector(),
        SignalBoard::postCall::SELECTOR
    );
    assert!(v["bytecode"].as_str().unwrap().len() > 100);
}

#[test]
fn the_committed_artifact_is_what_the_source_compiles_to() {
    if tool("solcjs", "the_committed_artifact_is_fresh").is_none() {
        return;
    }
    let out = std::env::temp_dir().join(format!("lm-artifact-{}", std::process::id()));
    std::fs::create_dir_all(&out).unwrap();
    let status = std::process::Command::new("bash")
        .arg(root().join("scripts/compile-contracts.sh"))
        .arg("--out")
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success(), "compile-contracts.sh failed");
    let committed = [
        ("SignalBoard.json", SIGNAL_BOARD_ARTIFACT),
        (
            "PaymentChannels.json",
            ledgermesh_ledger::payments::evm::PAYMENT_CHANNELS_ARTIFACT,
        ),
    ];
    for (file, artifact) in committed {
        let fresh = std::fs::read_to_string(out.join(file)).unwrap();
        assert!(
            fresh == artifact,
            "ledger-adapter/contracts/{file} is stale: run scripts/compile-contracts.sh and commit the result"
        );
    }
    std::fs::remove_dir_all(&out).unwrap();
}

/// An endpoint that refuses wide `eth_getLogs` ranges (as hosted ones do)
/// does not wedge the follower: it narrows its range and reads on.
#[tokio::test]
async fn a_follower_narrows_its_range_for_an_endpoint_that_limits_it() {
    use ledgermesh_ledger::{Cursor, Ledger};
    let Some(chain) = anvil("a_follower_narrows_its_range").await else {
        return;
    };
    let key = funded(&chain.url).await;
    let contract = EvmLedger::deploy(&chain.url, key.clone()).await.unwrap();
    let writer = EvmLedger::connect(&chain.url, contract, Some(key), EvmOptions::default())
        .await
        .unwrap();
    let topic = [4u8; 32];
    for i in 0..6u8 {
        writer.post(topic, vec![i]).await.unwrap();
    }
    let limited = proxy(&chain.url, 0, Some(2)).await;
    let options = EvmOptions {
        poll_interval: Duration::from_millis(50),
        max_backoff: Duration::from_millis(200),
        rpc_timeout: Duration::from_secs(2),
        ..Default::default()
    };
    let reader = EvmLedger::connect(&limited, contract, None, options)
        .await
        .unwrap();
    let mut follow = reader.follow(topic, Cursor::default());
    let (mut got, mut refusals) = (vec![], 0);
    let read = async {
        use futures::StreamExt;
        while got.len() < 6 {
            match follow.next().await.expect("the follower keeps going") {
                Ok(m) => got.push(m.payload),
                // The endpoint's refusals are reported, then the range narrows.
                Err(_) => refusals += 1,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("the follower reads on through a range-limited endpoint");
    assert_eq!(got, (0..6u8).map(|i| vec![i]).collect::<Vec<_>>());
    assert!(refusals > 0, "the endpoint did refuse the wide ranges");
}

/// A reorg that replaces a block already read (here: the message in it
/// with another) is noticed: the follower reads the new block and yields
/// the message that took the old one's place.
#[tokio::test]
async fn a_reorg_of_blocks_already_read_is_read_again() {
    use alloy::eips::eip2718::Encodable2718;
    use alloy::network::{EthereumWallet, NetworkTransactionBuilder, TransactionBuilder};
    use alloy::primitives::{Bytes, B256};
    use alloy::rpc::types::TransactionRequest;
    use alloy::sol_types::SolCall;
    use futures::StreamExt;
    use ledgermesh_ledger::Ledger;
    let Some(chain) = anvil("a_reorg_of_blocks_already_read").await else {
        return;
    };
    let key = funded(&chain.url).await;
    let contract = EvmLedger::deploy(&chain.url, key.clone()).await.unwrap();
    let options = EvmOptions {
        poll_interval: Duration::from_millis(50),
        ..Default::default()
    };
    let l = EvmLedger::connect(&chain.url, contract, Some(key.clone()), options)
        .await
        .unwrap();
    let rpc = ProviderBuilder::new().connect_http(chain.url.parse().unwrap());
    let topic = [5u8; 32];
    let from = l.initial_cursor().await.unwrap();
    l.post(topic, b"kept".to_vec()).await.unwrap();
    let nonce = rpc.get_transaction_count(key.address()).await.unwrap();
    l.post(topic, b"replaced".to_vec()).await.unwrap();
    let mut follow = l.follow(topic, from);
    async fn next(
        follow: &mut futures::stream::BoxStream<
            'static,
            Result<ledgermesh_ledger::LedgerMessage, ledgermesh_ledger::LedgerError>,
        >,
    ) -> Vec<u8> {
        tokio::time::timeout(Duration::from_secs(10), follow.next())
            .await
            .expect("a message in time")
            .expect("the follower goes on")
            .expect("no error")
            .payload
    }
    assert_eq!(next(&mut follow).await, b"kept");
    assert_eq!(next(&mut follow).await, b"replaced");
    // Replace the last block with one holding another post (same nonce).
    let call = SignalBoard::postCall {
        topic: B256::from(topic),
        payload: Bytes::from_static(b"instead"),
    };
    let tx = TransactionRequest::default()
        .with_to(contract)
        .with_input(call.abi_encode())
        .with_nonce(nonce)
        .with_chain_id(rpc.get_chain_id().await.unwrap())
        .with_gas_limit(300_000)
        .with_max_fee_per_gas(100_000_000_000)
        .with_max_priority_fee_per_gas(1_000_000_000);
    let wallet = EthereumWallet::from(key);
    let signed =
        <TransactionRequest as NetworkTransactionBuilder<alloy::network::Ethereum>>::build(
            tx, &wallet,
        )
        .await
        .unwrap();
    let raw = signed.encoded_2718();
    let raw = format!("0x{}", alloy::hex::encode(raw));
    let _: serde_json::Value = rpc
        .raw_request("anvil_reorg".into(), (1u64, vec![(raw, 0u64)]))
        .await
        .unwrap();
    assert_eq!(
        next(&mut follow).await,
        b"instead",
        "the replacing block is read"
    );
}

/// `follow_pending` shows a post as soon as it is submitted: with mining
/// stopped it yields the post to its topic once (not again on later polls),
/// with its sender and payload, and nothing for another topic or a call that
/// is not a `post`; once a block holds it, `follow` reads it with a cursor.
#[tokio::test]
async fn pending_posts_are_read_before_any_block_holds_them() {
    use alloy::primitives::Bytes;
    use alloy::rpc::types::TransactionRequest;
    use futures::StreamExt;
    use ledgermesh_ledger::Ledger;
    let Some(chain) = anvil("pending_posts_are_read_early").await else {
        return;
    };
    let key = funded(&chain.url).await;
    let sender = format!("{}", key.address());
    let contract = EvmLedger::deploy(&chain.url, key.clone())
        .await
        .expect("deploy");
    let options = |read_pending| EvmOptions {
        poll_interval: Duration::from_millis(50),
        read_pending,
        ..Default::default()
    };
    let l = EvmLedger::connect(&chain.url, contract, Some(key.clone()), options(true))
        .await
        .expect("connect");
    let off = EvmLedger::connect(&chain.url, contract, Some(key), options(false))
        .await
        .expect("connect");
    assert!(
        off.follow_pending([9; 32]).is_none(),
        "off unless asked for"
    );

    let rpc = ProviderBuilder::new().connect_http(chain.url.parse().unwrap());
    let _: serde_json::Value = rpc
        .raw_request("evm_setAutomine".into(), (false,))
        .await
        .unwrap();
    let head = rpc.get_block_number().await.unwrap();
    let mut early = l.follow_pending([9; 32]).expect("on");
    // Noise first: another topic, and a call to the board that is no post.
    let other = tokio::spawn({
        let l = l.clone();
        async move { l.post([8; 32], b"elsewhere".to_vec()).await }
    });
    let dev = rpc.get_accounts().await.unwrap()[0];
    let junk = TransactionRequest::default()
        .from(dev)
        .to(contract)
        .gas_limit(100_000)
        .input(Bytes::from_static(&[0xde, 0xad, 0xbe, 0xef]).into());
    let _pending_junk = rpc.send_transaction(junk).await.expect("junk submitted");
    let posted = tokio::spawn({
        let l = l.clone();
        async move { l.post([9; 32], b"hello early".to_vec()).await }
    });
    let got = tokio::time::timeout(Duration::from_secs(30), early.next())
        .await
        .expect("seen while pending")
        .expect("stream goes on");
    assert_eq!(got.payload, b"hello early");
    assert_eq!(got.topic, [9; 32]);
    assert_eq!(got.sender, sender);
    assert_eq!(rpc.get_block_number().await.unwrap(), head, "no block yet");
    // Later polls still show it pending; it is not yielded again.
    let again = tokio::time::timeout(Duration::from_millis(500), early.next()).await;
    assert!(again.is_err(), "yielded once: {again:?}");

    let _: serde_json::Value = rpc.raw_request("evm_mine".into(), ()).await.unwrap();
    let receipt = posted.await.unwrap().expect("lands");
    other.await.unwrap().expect("lands");
    let from = ledgermesh_ledger::Cursor {
        block: head,
        index: 0,
    };
    let mined = tokio::time::timeout(Duration::from_secs(30), l.follow([9; 32], from).next())
        .await
        .expect("mined")
        .unwrap()
        .unwrap();
    assert_eq!(mined.payload, b"hello early");
    assert_eq!(Some(mined.cursor), receipt.cursor);
}

#[tokio::test]
async fn with_a_websocket_followers_wake_on_news_not_on_their_poll() {
    use futures::StreamExt;
    use ledgermesh_ledger::evm::ws_url_for;
    use ledgermesh_ledger::Ledger;
    let Some(chain) = anvil("ws_wakeups").await else {
        return;
    };
    let key = funded(&chain.url).await;
    let contract = EvmLedger::deploy(&chain.url, key.clone())
        .await
        .expect("deploy");
    // Polls a minute apart: within this test's 20 s waits, only a wake-up
    // from the websocket can have made a follower read.
    let options = EvmOptions {
        poll_interval: Duration::from_secs(60),
        read_pending: true,
        ws_url: ws_url_for(&chain.url),
        ..Default::default()
    };
    let l = EvmLedger::connect(&chain.url, contract, Some(key), options)
        .await
        .expect("connect");
    let topic = [5; 32];
    let from = l.head_cursor().await.unwrap();
    let (mined_tx, mut mined) = tokio::sync::mpsc::channel(16);
    let mut follow = l.follow(topic, from);
    let mined_task = tokio::spawn(async move {
        while let Some(m) = follow.next().await {
            if mined_tx.send(m.unwrap().payload).await.is_err() {
                break;
            }
        }
    });
    let (pending_tx, mut pending) = tokio::sync::mpsc::channel(16);
    let mut early = l.follow_pending(topic).expect("read_pending is on");
    let pending_task = tokio::spawn(async move {
        while let Some(m) = early.next().await {
            if pending_tx.send(m.payload).await.is_err() {
                break;
            }
        }
    });
    let within = |d| Duration::from_secs(d);
    // Mined blocks (one per transaction): each message is read on its new head.
    for payload in [&b"one"[..], b"two"] {
        l.post(topic, payload.to_vec()).await.expect("posted");
        let got = tokio::time::timeout(within(20), mined.recv())
            .await
            .expect("woken by the new head, not by a poll a minute later")
            .unwrap();
        assert_eq!(got, payload);
    }
    // The pending pool: with automine off, a post is read while no block holds it.
    let rpc = ProviderBuilder::new().connect_http(chain.url.parse().unwrap());
    let _: serde_json::Value = rpc
        .raw_request("evm_setAutomine".into(), (false,))
        .await
        .unwrap();
    let posted = tokio::spawn({
        let l = l.clone();
        async move { l.post(topic, b"three".to_vec()).await }
    });
    // "one" and "two" may come first: they were pending for a moment too,
    // and their notifications can arrive after the blocks that hold them.
    let next_new = async {
        loop {
            let p = pending.recv().await.unwrap();
            if p != b"one" && p != b"two" {
                break p;
            }
        }
    };
    let got = tokio::time::timeout(within(20), next_new)
        .await
        .expect("woken by the pending transaction, not by a poll a minute later");
    assert_eq!(got, b"three");
    let _: serde_json::Value = rpc.raw_request("evm_mine".into(), ()).await.unwrap();
    posted.await.unwrap().expect("lands");
    let got = tokio::time::timeout(within(20), mined.recv())
        .await
        .expect("mined copy")
        .unwrap();
    assert_eq!(got, b"three");
    mined_task.abort();
    pending_task.abort();
}
