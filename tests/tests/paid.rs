//! A priced relay on a real chain, separate processes: `devchain` deploys
//! the board and its payment contract; the relay charges per MiB; a
//! provider without a deposit is refused with the reason, one with
//! `--relay-deposit` opens a channel, reserves, and pays for the stream a
//! consumer fetches through the relay (kept relayed: the provider takes no
//! part in hole punching); the relay claims on chain what the vouchers say.

use ledgermesh_e2e::chain::*;
use ledgermesh_e2e::procs::*;
use ledgermesh_e2e::{file_sha256, temp_dir, truth};
use ledgermesh_ledger::payments::{EvmPayments, PaymentChannels};
use ledgermesh_node::source::Source;

const PRICE: u128 = 1_000_000_000_000; // wei per MiB

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_priced_relay_is_paid_on_chain_for_a_relayed_stream() {
    if !anvil_available("a_priced_relay_is_paid_on_chain") {
        return;
    }
    let dir = temp_dir("paid-relay");
    let chain = devchain(&dir, 0, &[]);
    let price = PRICE.to_string();
    let relay_data = dir.0.join("relay-data");
    let min_deposit = (10 * PRICE).to_string();
    let mut relay_p = Proc::start(
        "relay",
        &dir.0,
        &[
            "relay",
            "--json",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--ledger",
            &chain.spec,
            "--ledger-key",
            &chain.keys[0],
            "--price-per-mib",
            &price,
            "--min-deposit",
            &min_deposit,
            "--credit-mib",
            "1",
            "--claim-at",
            "1",
            "--data-dir",
            relay_data.to_str().unwrap(),
        ],
    );
    let ev = relay_p.wait_for("listening", T, |v| event_is(v, "listening"));
    let relay_id = ev["peer_id"].as_str().unwrap().to_string();
    let relay_addr = format!("{}/p2p/{relay_id}", ev["addrs"][0].as_str().unwrap());

    // No deposit: the relay refuses the reservation and says why.
    let (args, unpaid_id) = provider_argv(
        &dir,
        "unpaid",
        &chain,
        1,
        &relay_addr,
        &["feed=random:1M:1"],
        &["--relay-only"],
    );
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut unpaid = Proc::start("unpaid", &dir.0, &argv);
    // It asks the relay's terms first and, with nothing to pay, never asks
    // for a reservation it would be refused: told at once, naming the flag.
    let told = unpaid.wait_for("the unpaid provider told", T, |v| {
        event_is(v, "reservation_refused")
    });
    let why = told["reason"].as_str().unwrap();
    assert!(
        why.contains(&format!("charges {PRICE} wei per MiB")) && why.contains("--relay-deposit"),
        "{told}"
    );
    assert!(
        relay_p
            .matching(|v| event_is(v, "relay_reservation") && v["peer_id"] == unpaid_id.as_str())
            .is_empty(),
        "the relay was never asked"
    );
    unpaid.stop();

    // With a deposit: a channel, a reservation, a paid stream.
    const LEN: u64 = 6 << 20;
    let deposit = (1_000 * PRICE).to_string();
    let (mut provider_p, pid) = provider(
        &dir,
        "provider",
        &chain,
        2,
        &relay_addr,
        &["feed=random:6M:33"],
        &[
            "--relay-only",
            "--no-hole-punch",
            "--relay-deposit",
            &deposit,
        ],
    );
    let opened = provider_p.wait_for("channel opened", T, |v| event_is(v, "channel_opened"));
    let (mut consumer_p, out) = consumer(
        &dir,
        "consumer",
        &chain,
        3,
        &relay_addr,
        &[format!("{pid}/feed")],
    );
    assert_eq!(consumer_p.wait_exit(T), 0, "the stream is delivered");
    let src = Source::Random { len: LEN, seed: 33 };
    assert_eq!(file_sha256(&out.join(&pid).join("feed")), truth(&src).await);
    let relayed = consumer_p.matching(|v| event_is(v, "connected") && v["peer_id"] == pid.as_str());
    assert!(
        relayed.iter().all(|v| v["path"] == "relayed"),
        "the stream stayed on the relay: {relayed:?}"
    );
    // When the circuit closes the relay invoices the rest, and the
    // provider pays it: the last voucher covers every byte billed.
    let closed = relay_p.wait_for("the circuit closed", T, |v| {
        event_is(v, "relay_circuit") && v["dst"] == pid.as_str() && v["outcome"] == "closed"
    });
    let carried =
        closed["bytes_to_dst"].as_u64().unwrap() + closed["bytes_to_src"].as_u64().unwrap();
    relay_p.wait_for("the final voucher", T, |v| {
        event_is(v, "voucher_received") && v["bytes"].as_u64().unwrap() >= carried
    });
    // The relay's view of its channels: the provider's, with the latest
    // voucher it kept on disk and what that still owes beyond the claims.
    let listed = std::process::Command::new(bin_path())
        .args([
            "channels",
            "--json",
            "--ledger",
            &chain.spec,
            "--ledger-key",
            &chain.keys[0],
        ])
        .arg("--data-dir")
        .arg(&relay_data)
        .output()
        .unwrap();
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let theirs = &v["channels"][0];
    assert_eq!(theirs["role"], "payee");
    let kept: u128 = theirs["latest_voucher"].as_str().unwrap().parse().unwrap();
    let claimed_so_far: u128 = theirs["claimed"].as_str().unwrap().parse().unwrap();
    assert_eq!(theirs["owed"], (kept - claimed_so_far).to_string());
    // The provider paid as invoiced; the relay claimed as it went and
    // claims the rest on shutdown.
    let sent = provider_p.matching(|v| event_is(v, "voucher_sent"));
    let last_voucher: u128 = sent.last().expect("vouchers were sent")["cumulative"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        kept, last_voucher,
        "the relay kept the latest voucher on disk"
    );
    relay_p.terminate();
    assert_eq!(relay_p.wait_exit(T), 0);
    let claimed: Vec<(u128, u64)> = relay_p
        .matching(|v| event_is(v, "claimed"))
        .iter()
        .map(|v| {
            (
                v["amount"].as_str().unwrap().parse().unwrap(),
                v["gas_used"].as_u64().unwrap(),
            )
        })
        .collect();
    let total: u128 = claimed.iter().map(|(a, _)| a).sum();
    assert_eq!(total, last_voucher, "every voucher claimed, to the wei");
    // At least the stream's worth was billed, and not much more (framing).
    let owed_for_stream = u128::from(LEN) * PRICE / (1 << 20);
    assert!(
        total >= owed_for_stream - 2 * PRICE && total <= owed_for_stream + owed_for_stream / 10,
        "paid {total} for a stream worth {owed_for_stream}"
    );
    // On chain, the channel says the same.
    let chans = EvmPayments::connect(&chain.spec, None).await.unwrap();
    let id: [u8; 32] = alloy::hex::decode(opened["channel"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let state = chans
        .channel(id)
        .await
        .unwrap()
        .expect("the channel is open");
    assert_eq!(state.claimed, total);
    // The payer's view: `ledgermesh channels` lists it; closing starts the
    // delay; withdrawing before it ends is refused with the reason.
    let channels = |extra: &[&str]| {
        let mut args = vec![
            "channels",
            "--json",
            "--ledger",
            &chain.spec,
            "--ledger-key",
            &chain.keys[2],
        ];
        args.extend_from_slice(extra);
        std::process::Command::new(bin_path())
            .args(&args)
            .output()
            .unwrap()
    };
    let listed = channels(&[]);
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let mine = &v["channels"][0];
    assert_eq!(mine["role"], "payer");
    assert_eq!(mine["claimed"], total.to_string());
    let id_hex = opened["channel"].as_str().unwrap();
    assert!(channels(&["close", id_hex]).status.success());
    let early = channels(&["withdraw", id_hex]);
    assert!(
        !early.status.success(),
        "withdrawing inside the close delay fails"
    );
    let why = String::from_utf8_lossy(&early.stderr);
    assert!(why.contains("close takes effect"), "{why}");
    println!(
        "GAS channel open: {}; claims: {:?}",
        opened["gas_used"],
        claimed.iter().map(|(_, g)| g).collect::<Vec<_>>()
    );
    provider_p.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_priced_stream_whose_relay_dies_moves_to_the_other_relay_and_stays_paid() {
    if !anvil_available("a_priced_stream_whose_relay_dies") {
        return;
    }
    let dir = temp_dir("paid-migrate");
    let chain = devchain(&dir, 0, &[]);
    let (mut r1, a1) = relay_named(&dir, "relay-1");
    let (mut r2, a2) = relay_named(&dir, "relay-2");
    // A priced provider behind both relays, never direct; 2 MiB at 512 KiB/s,
    // so the stream still flows when its relay dies.
    let (price, min_deposit) = (PRICE.to_string(), (10 * PRICE).to_string());
    let (mut p, pid) = provider(
        &dir,
        "provider",
        &chain,
        1,
        &a1,
        &["feed=paced:2M:512K:9"],
        &[
            "--relay",
            &a2,
            "--relay-only",
            "--no-hole-punch",
            "--price-per-mib",
            &price,
            "--min-deposit",
            &min_deposit,
            "--credit-mib",
            "1",
        ],
    );
    p.wait_for_next("the second reservation", T, |v| {
        event_is(v, "reservation_accepted")
    });
    let deposit = (1_000 * PRICE).to_string();
    let (mut c, out) = consumer_with(
        &dir,
        "consumer",
        &chain,
        2,
        &a1,
        &[format!("{pid}/feed")],
        &[
            "--no-hole-punch",
            "--max-price-per-mib",
            &price,
            "--deposit",
            &deposit,
        ],
    );
    c.wait_for("a voucher", T, |v| event_is(v, "voucher_sent"));
    // The relay carrying the stream dies.
    let first = c.wait_for("connected", T, |v| {
        event_is(v, "connected") && v["peer_id"] == pid.as_str()
    });
    let carrier = first["via"].as_str().expect("relayed").to_string();
    if a1.ends_with(&carrier) {
        r1.stop();
    } else {
        r2.stop();
    }
    assert_eq!(c.wait_exit(T), 0, "the stream is delivered");
    let src = Source::Paced {
        len: 2 << 20,
        rate: 512 << 10,
        seed: 9,
    };
    assert_eq!(file_sha256(&out.join(&pid).join("feed")), truth(&src).await);
    let moved = c.matching(|v| event_is(v, "path_changed") && v["from"]["via"] == carrier.as_str());
    assert!(!moved.is_empty(), "the stream moved off the dead relay");
    let refused = c.matching(|v| event_is(v, "payment_refused"));
    assert!(refused.is_empty(), "{refused:?}");
    // Paid to the wei for the whole stream.
    let owed = (2 * PRICE).to_string();
    p.wait_for("the last voucher", T, |v| {
        event_is(v, "voucher_received") && v["cumulative"] == owed.as_str()
    });
    println!("RELAY died under a priced stream: moved {moved:?}; paid {owed} wei");
}
