//! `bench --only payments`: what paying costs. Vouchers signed and checked
//! per second; gas per channel call on anvil (when installed) and what
//! claims cost against what they bring in at the default claim threshold;
//! a priced stream's time against the same stream free, direct and
//! relayed, in the same run; and the README's priced 64 MiB stream many
//! times over, its slowest run against the free one.

use super::nodes::node;
use super::{median, round};
use crate::DevNet;
use alloy::signers::local::PrivateKeySigner;
use ledgermesh_ledger::payments::{MemoryChain, PaymentChannels};
use ledgermesh_node::protocols::pay::{pay, PayeeConfig, Payees, PayerConfig};
use ledgermesh_node::source::Source;
use ledgermesh_node::streams::{serve, Catalog, FetchPolicy, Shop};
use ledgermesh_node::swarm::NodeHandle;
use ledgermesh_protocol::payment::{CreditPolicy, Terms, Wei};
use libp2p::{Multiaddr, PeerId};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The README's prices: 0.000001 ETH per MiB, channels of at least 0.001
/// ETH, buyers locking 0.01 ETH.
const PRICE: Wei = 1_000_000_000_000;
const MIN_DEPOSIT: Wei = 1_000_000_000_000_000;
const DEPOSIT: Wei = 10_000_000_000_000_000;
/// The gas price the settlement overhead is figured at (1 gwei).
const GAS_PRICE: Wei = 1_000_000_000;

fn terms() -> Terms {
    Terms {
        price_per_mib: PRICE,
        price_per_hour: 0,
        free_bytes: 0,
        min_deposit: MIN_DEPOSIT,
    }
}

/// Vouchers signed, and checked, per second on one core.
fn voucher_rates(time: Duration) -> (f64, f64) {
    let chain = MemoryChain::new();
    let key = PrivateKeySigner::random();
    let payer = key.address();
    let acct = chain.account(key);
    let channel = [7u8; 32];
    let (mut n, t0) = (0u64, Instant::now());
    let mut last = None;
    while t0.elapsed() < time {
        n += 1;
        last = acct.sign(channel, u128::from(n)).ok();
    }
    let signed = n as f64 / t0.elapsed().as_secs_f64();
    let v = last.expect("signed");
    let (mut m, t1) = (0u64, Instant::now());
    while t1.elapsed() < time {
        m += 1;
        let _ = acct.verify(&v, payer);
    }
    (signed, m as f64 / t1.elapsed().as_secs_f64())
}

/// Gas of each channel call on anvil, when it is installed.
async fn gas_per_call() -> anyhow::Result<Option<Value>> {
    if crate::devchain::find_anvil().is_err() {
        return Ok(None);
    }
    let dir = std::env::temp_dir().join(format!("lm-bench-pay-{}", std::process::id()));
    let chain = super::anvil(&dir, None).await?;
    let spec = chain.spec();
    let open = |i: usize| {
        let (path, _) = chain.keys[i].clone();
        let spec = spec.clone();
        async move {
            let key = ledgermesh_node::ledger_spec::ledger_key(Some(&path))?
                .ok_or_else(|| anyhow::anyhow!("no key in {}", path.display()))?;
            anyhow::Ok(ledgermesh_node::ledger_spec::open_payments(&spec, Some(&key)).await?)
        }
    };
    let (payer, payee) = (open(0).await?, open(1).await?);
    let to = chain.keys[1].1;
    let (id, opened) = payer.open(to, DEPOSIT).await?;
    let topped = payer.top_up(id, DEPOSIT).await?;
    let v = payer.sign(id, DEPOSIT / 2)?;
    let (_, claimed) = payee.claim(v).await?;
    let closing = payer.start_close(id).await?;
    chain.stop().await?;
    let _ = std::fs::remove_dir_all(dir);
    Ok(Some(json!({
        "open": opened.gas_used,
        "top_up": topped.gas_used,
        "claim": claimed.gas_used,
        "start_close": closing.gas_used,
    })))
}

/// A provider of `zeros` (`bytes` long), priced at the README's terms when
/// `chain` is given; reserving on `relays`.
async fn provider(
    net: &DevNet,
    name: &str,
    bytes: u64,
    chain: Option<&MemoryChain>,
    relays: Vec<Multiaddr>,
) -> anyhow::Result<NodeHandle> {
    let (h, _) = node(net, name, relays, false, false).await?;
    let mut catalog = Catalog::default();
    catalog
        .insert_undigested("zeros", Source::Zeros { len: bytes })
        .await?;
    let payees = match chain {
        None => None,
        Some(chain) => {
            let p = Payees::new(
                PayeeConfig {
                    channels: Arc::new(chain.account(PrivateKeySigner::random())),
                    terms: terms(),
                    // The CLI's defaults: 4 MiB of credit, growing to 256.
                    policy: CreditPolicy::in_mib(PRICE, 4, 256),
                    claim_threshold: ledgermesh_node::protocols::pay::default_claim_threshold(
                        PRICE,
                    ),
                },
                h.emitter().clone(),
            )?;
            h.spawn(p.clone().serve(h.stream_control()));
            Some(p)
        }
    };
    let shop = Shop {
        catalog: Arc::new(catalog),
        access: ledgermesh_node::access::Access::open(h.emitter().clone()),
        payees,
    };
    h.spawn(serve(h.clone(), shop, super::nodes::lifted_serve_limits()));
    h.wait_listening().await?;
    h.wait_relays().await?;
    Ok(h)
}

/// One purchase by a fresh buyer (a new process, as `consume` is): pays
/// when `chain` is given, then fetches the stream; its time.
async fn buy(
    net: &DevNet,
    chain: Option<&MemoryChain>,
    key: &PrivateKeySigner,
    seller: PeerId,
    addrs: &[Multiaddr],
    dir: &std::path::Path,
) -> anyhow::Result<Duration> {
    let (h, _) = node(net, "buyer", vec![], false, false).await?;
    let t0 = Instant::now();
    h.dial(seller, addrs.to_vec()).await?;
    if let Some(chain) = chain {
        let cfg = PayerConfig {
            channels: Arc::new(chain.account(key.clone())),
            deposit: DEPOSIT,
            leeway: Default::default(),
            caps: Default::default(),
            consent: None,
        };
        pay(&h, seller, cfg, h.stream_meter(seller)).await?;
    }
    let got =
        ledgermesh_node::streams::fetch(&h, seller, addrs, "zeros", dir, &FetchPolicy::default())
            .await?;
    let took = t0.elapsed();
    let _ = std::fs::remove_file(&got.path);
    h.shutdown().await;
    Ok(took)
}

/// Free and priced purchases of `bytes`, alternating, `rounds` each, by
/// fresh buyers on one account; direct, or through a relay. Returns the
/// runs' seconds (free, priced).
async fn alternate(
    bytes: u64,
    rounds: usize,
    relayed: bool,
) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let net = DevNet::new(DevNet::plain());
    let chain = MemoryChain::new();
    let key = PrivateKeySigner::random();
    chain.fund(key.address(), 1_000 * DEPOSIT);
    let relays = if relayed {
        let (relay, _) = node(&net, "relay", vec![], false, true).await?;
        vec![ledgermesh_node::relay::dial_addr(&relay).await?]
    } else {
        vec![]
    };
    let free = provider(&net, "free", bytes, None, relays.clone()).await?;
    let priced = provider(&net, "priced", bytes, Some(&chain), relays).await?;
    let (free_at, priced_at) = (reach(&free, relayed).await?, reach(&priced, relayed).await?);
    let dir = std::env::temp_dir().join(format!("lm-bench-paid-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (mut f, mut p) = (vec![], vec![]);
    for _ in 0..rounds {
        let t = buy(&net, None, &key, free.peer_id(), &free_at, &dir).await?;
        f.push(t.as_secs_f64());
        let t = buy(&net, Some(&chain), &key, priced.peer_id(), &priced_at, &dir).await?;
        p.push(t.as_secs_f64());
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok((f, p))
}

/// Where a buyer reaches `h`: its circuits, or its direct addresses.
async fn reach(h: &NodeHandle, relayed: bool) -> anyhow::Result<Vec<Multiaddr>> {
    let snap = h.snapshot().await?;
    Ok(if relayed {
        snap.circuit_addrs
    } else {
        snap.direct_addrs
    })
}

fn ratios(free: &[f64], priced: &[f64]) -> Vec<f64> {
    (free.iter().zip(priced))
        .map(|(f, p)| round(f / p.max(1e-9), 3))
        .collect()
}

/// The section's figures.
pub(super) async fn payments(quick: bool) -> anyhow::Result<Value> {
    let time = Duration::from_millis(if quick { 300 } else { 1_000 });
    let (signed, verified) = tokio::task::spawn_blocking(move || voucher_rates(time)).await?;
    let gas = gas_per_call().await?;
    // At the default claim threshold, what a claim's gas costs against what
    // it brings in.
    let threshold = ledgermesh_node::protocols::pay::default_claim_threshold(PRICE);
    let claim_gas = gas.as_ref().and_then(|g| g["claim"].as_u64());
    let overhead = claim_gas.map(|g| {
        round(
            u128::from(g) as f64 * GAS_PRICE as f64 / threshold as f64,
            5,
        )
    });
    let bytes: u64 = if quick { 16 << 20 } else { 64 << 20 };
    let rounds = if quick { 3 } else { 5 };
    let (df, dp) = alternate(bytes, rounds, false).await?;
    let (rf, rp) = alternate(bytes, rounds, true).await?;
    let (direct, relayed) = (ratios(&df, &dp), ratios(&rf, &rp));
    // The README's priced 64 MiB stream, many times: its slowest run.
    let (runs, loop_bytes) = if quick { (5, bytes) } else { (50, 64 << 20) };
    let (lf, lp) = alternate(loop_bytes, runs, false).await?;
    let worst = (lf.iter().zip(&lp))
        .map(|(f, p)| p / f.max(1e-9))
        .fold(0.0, f64::max);
    let secs = |v: &[f64]| v.iter().map(|x| round(*x, 3)).collect::<Vec<_>>();
    Ok(json!({
        "vouchers_signed_per_s": round(signed, 0),
        "vouchers_verified_per_s": round(verified, 0),
        "gas_per_call": gas,
        "claim_threshold_wei": threshold.to_string(),
        "gas_price_wei": GAS_PRICE.to_string(),
        "settlement_overhead": overhead,
        "bytes_per_run": bytes,
        "paid_ratio_to_free": round(median(direct.clone()), 3),
        "paid_ratio_to_free_runs": direct,
        "relayed_paid_ratio_to_free": round(median(relayed.clone()), 3),
        "relayed_paid_ratio_to_free_runs": relayed,
        "loop_runs": runs,
        "loop_bytes_per_run": loop_bytes,
        "loop_free_s": secs(&lf),
        "loop_priced_s": secs(&lp),
        "loop_worst_time_ratio_to_free": round(worst, 3),
    }))
}
