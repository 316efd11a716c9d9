//! The payment soak: a priced provider (the payee) and a consumer (the
//! payer), separate processes on anvil, exchange vouchers while the payee is
//! SIGKILLed three times and the payer twice. Afterwards the payee's meter
//! (what it paid from before each restart plus what it served since) times
//! the price equals what is claimed on chain within one voucher, and nothing
//! is left unclaimed.
//!
//! The default run is a bounded smoke run (`LEDGERMESH_SOAK_VOUCHERS`,
//! default 300); the full soak is 10,000:
//!
//! ```text
//! LEDGERMESH_SOAK_VOUCHERS=10000 LEDGERMESH_BIN=$PWD/target/release/ledgermesh \
//!   cargo nextest run -p ledgermesh-e2e --test soak --no-capture
//! ```

use ledgermesh_e2e::chain::*;
use ledgermesh_e2e::procs::*;
use ledgermesh_e2e::{file_sha256, temp_dir, truth};
use ledgermesh_ledger::payments::{EvmPayments, PaymentChannels};
use ledgermesh_node::source::Source;
use serde_json::Value;
use std::time::{Duration, Instant};

const PRICE: u128 = 1_000_000_000_000; // wei per MiB
const MIB: u128 = 1 << 20;
/// The credit window (`--credit-mib 1 --max-credit-mib 1`): an invoice, and
/// so a voucher, every half window served.
const WINDOW: u128 = PRICE;
const VOUCHER: u128 = WINDOW / 2;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Victim {
    Payee,
    Payer,
}

fn vouchers_wanted() -> usize {
    std::env::var("LEDGERMESH_SOAK_VOUCHERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300)
}

fn received(p: &mut Proc) -> usize {
    p.matching(|v| event_is(v, "voucher_received")).len()
}

fn wei(v: &Value) -> u128 {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("wei: {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vouchers_survive_kill_9_of_payee_and_payer_and_are_claimed_to_the_meter() {
    if !anvil_available("payment soak") {
        return;
    }
    let wanted = vouchers_wanted();
    let started = Instant::now();
    let dir = temp_dir("soak");
    let chain = devchain(&dir, 0, &[]);
    let (_relay, relay_addr) = relay(&dir);

    // Each phase of the six (five kills and a clean end) carries a sixth of
    // the vouchers; a consumer run fetches one stream about that long.
    let phases = [
        Some(Victim::Payee),
        Some(Victim::Payer),
        Some(Victim::Payee),
        Some(Victim::Payer),
        Some(Victim::Payee),
        None,
    ];
    let per_phase = wanted.div_ceil(phases.len());
    let stream_mib = ((per_phase as u64).div_ceil(2)).next_power_of_two().max(16);
    let stream = format!("feed=random:{stream_mib}M:7");
    let (price, deposit) = (
        PRICE.to_string(),
        (4 * wanted as u128 * VOUCHER).max(100 * PRICE),
    );
    let deposit = deposit.to_string();
    // Claims as it goes, every 64 vouchers' worth, so kills land between
    // claims and vouchers alike.
    let claim_at = (64 * VOUCHER).to_string();
    let (args, pid) = provider_argv(
        &dir,
        "provider",
        &chain,
        1,
        &relay_addr,
        &[&stream],
        &[
            "--price-per-mib",
            &price,
            "--credit-mib",
            "1",
            "--max-credit-mib",
            "1",
            "--claim-at",
            &claim_at,
            "--api",
            "127.0.0.1:0",
        ],
    );
    let start_provider = |run: usize| {
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut p = Proc::start(&format!("provider-{run}"), &dir.0, &argv);
        p.wait_for("reservation", T, |v| event_is(v, "reservation_accepted"));
        p
    };
    let mut consumer_runs = 1;
    let start_consumer = |run: usize| {
        consumer_with(
            &dir,
            &format!("consumer-{run}"),
            &chain,
            2,
            &relay_addr,
            &[format!("{pid}/feed")],
            &[
                "--max-price-per-mib",
                &price,
                "--deposit",
                &deposit,
                "--max-spend",
                &deposit,
            ],
        )
    };

    let mut provider_runs = vec![start_provider(0)];
    let (mut consumer, mut out) = start_consumer(consumer_runs);
    let mut dead_payers: Vec<Proc> = vec![];
    let mut kills = (0, 0);
    let mut total = 0;
    let deadline = started + Duration::from_secs(60 + wanted as u64);
    for (i, victim) in phases.iter().enumerate() {
        let target = (i + 1) * per_phase;
        loop {
            let p = provider_runs.last_mut().unwrap();
            let here = received(p);
            if total + here >= target {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "phase {i}: {} of {target} vouchers by the deadline",
                total + here
            );
            p.next_event(Duration::from_millis(250));
            if let Some(code) = consumer.try_exit() {
                // A stream done (or failed when its payee died): buy again.
                println!("SOAK consumer run {consumer_runs} exited {code}");
                dead_payers.push(consumer);
                consumer_runs += 1;
                (consumer, out) = start_consumer(consumer_runs);
            }
        }
        match victim {
            Some(Victim::Payee) => {
                let p = provider_runs.last_mut().unwrap();
                p.kill();
                total += received(p);
                kills.0 += 1;
                println!("SOAK kill -9 payee at {total} vouchers");
                provider_runs.push(start_provider(provider_runs.len()));
            }
            Some(Victim::Payer) => {
                consumer.kill();
                kills.1 += 1;
                println!(
                    "SOAK kill -9 payer at {} vouchers",
                    total + received(provider_runs.last_mut().unwrap())
                );
                dead_payers.push(consumer);
                consumer_runs += 1;
                (consumer, out) = start_consumer(consumer_runs);
            }
            None => {}
        }
    }
    // The clean end: the last consumer run finishes its stream, intact.
    let code = consumer.wait_exit(Duration::from_secs(60 + stream_mib));
    assert_eq!(code, 0, "the last stream is delivered");
    let src = Source::Random {
        len: stream_mib << 20,
        seed: 7,
    };
    assert_eq!(file_sha256(&out.join(&pid).join("feed")), truth(&src).await);

    // The payee's own account of the channel, before it shuts down.
    let p = provider_runs.last_mut().unwrap();
    let api = p.wait_for("api", T, |v| event_is(v, "api_listening"))["addr"]
        .as_str()
        .unwrap()
        .to_string();
    let paid_last = p
        .matching(|v| event_is(v, "voucher_received"))
        .last()
        .map(|v| wei(&v["cumulative"]))
        .unwrap_or(0);
    let report = std::process::Command::new(bin_path())
        .args(["channels", "report", "--api", &api, "--json"])
        .output()
        .expect("channels report");
    assert!(report.status.success(), "{report:?}");
    let report: Value = serde_json::from_slice(&report.stdout).expect("report json");
    let rows = report["as_payee"].as_array().expect("payee rows");
    assert_eq!(rows.len(), 1, "one channel: {report}");
    let row = &rows[0];
    let (owed, paid) = (wei(&row["owed_wei"]), wei(&row["highest_voucher_wei"]));
    assert_eq!(paid, paid_last.max(paid), "the report's highest voucher");

    // Shut down cleanly: everything held is claimed.
    p.stop();
    total += received(p);
    let channel = row["channel"].as_str().unwrap().to_string();
    let payments = EvmPayments::connect(&chain.spec, None)
        .await
        .expect("chain");
    let id: [u8; 32] = alloy::hex::decode(&channel)
        .expect("hex")
        .try_into()
        .expect("32 bytes");
    let state = payments.channel(id).await.expect("read").expect("exists");

    // Every voucher any payee run received, in order: never a step back
    // across a restart (a restarted payee knows what it was paid).
    let seq: Vec<u128> = provider_runs
        .iter_mut()
        .flat_map(|p| p.matching(|v| event_is(v, "voucher_received")))
        .map(|v| wei(&v["cumulative"]))
        .collect();
    assert!(
        seq.windows(2).all(|w| w[0] < w[1]),
        "vouchers only rise across restarts"
    );
    let refused: Vec<Value> = dead_payers
        .iter_mut()
        .chain(std::iter::once(&mut consumer))
        .flat_map(|c| c.matching(|v| event_is(v, "payment_refused")))
        .collect();
    let claims: usize = provider_runs
        .iter_mut()
        .map(|p| p.matching(|v| event_is(v, "claimed")).len())
        .sum();
    // What reached the buyers: every consumer run's file, whole or cut
    // short by a kill.
    let got: u128 = (1..=consumer_runs)
        .map(|n| {
            let f = dir
                .0
                .join(format!("consumer-{n}-out"))
                .join(&pid)
                .join("feed");
            std::fs::metadata(f).map_or(0, |m| u128::from(m.len()))
        })
        .sum();
    let worth = got * PRICE / MIB;
    let gap = owed.abs_diff(state.claimed);
    println!(
        "SOAK {total} vouchers in {:.0} s; payee killed {}x, payer {}x; {} consumer runs; \
         {claims} claims; meter {owed} wei ({} MiB), claimed {} wei, gap {gap} wei ({:.3} vouchers); \
         refusals {}; delivered {} MiB worth {worth} wei: claimed {:+} wei",
        started.elapsed().as_secs_f64(),
        kills.0,
        kills.1,
        consumer_runs,
        owed / PRICE,
        state.claimed,
        gap as f64 / VOUCHER as f64,
        refused.len(),
        got >> 20,
        state.claimed as i128 - worth as i128,
    );
    assert!(total >= wanted, "{total} of {wanted} vouchers");
    assert_eq!((kills.0, kills.1), (3, 2));
    assert_eq!(state.claimed, paid, "nothing left unclaimed");
    assert!(
        gap <= VOUCHER,
        "claimed {} is the meter {owed} within one voucher ({VOUCHER})",
        state.claimed
    );
    assert!(
        refused.is_empty(),
        "an honest payer is never refused: {refused:?}"
    );
    // A kill costs at most one credit window: the payee's, bytes served
    // after the last voucher it kept; the payer's, bytes in flight that its
    // next run pays as debt without having received them.
    assert!(
        state.claimed + 3 * WINDOW >= worth,
        "the payee lost more than a window per kill: claimed {} for {worth} delivered",
        state.claimed
    );
    assert!(
        state.claimed <= worth + 2 * WINDOW,
        "the payer paid more than a window per kill: claimed {} for {worth} delivered",
        state.claimed
    );
}
