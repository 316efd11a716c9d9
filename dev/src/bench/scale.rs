//! M×N: one consumer and N providers, one provider and M consumers.

use super::baselines::rss_kib;
use super::nodes::{drain_all, node, only, sink_provider};
use super::round;
use crate::DevNet;
use serde_json::{json, Value};

pub(super) async fn one_consumer_n_providers(
    total: u64,
    ns: &[usize],
) -> anyhow::Result<(Value, Value)> {
    let net = DevNet::new(DevNet::plain());
    let mut rows = vec![];
    let mut rss_per_conn = Value::Null;
    for &n in ns {
        let per = (total / n as u64).max(256 << 10);
        let rss0 = rss_kib();
        let mut provs = vec![];
        for i in 0..n {
            provs.push(sink_provider(&net, &format!("p{i}"), vec![], false, per).await?);
        }
        let (cons, _) = node(&net, "consumer", vec![], false, false).await?;
        for p in &provs {
            let s = p.snapshot().await?;
            cons.dial(p.peer_id(), only(&s.direct_addrs, false))
                .await
                .map_err(anyhow::Error::msg)?;
        }
        let rss1 = rss_kib();
        let pairs = provs.iter().map(|p| (cons.clone(), p.peer_id())).collect();
        let (aggregate, fairness) = drain_all(pairs).await?;
        rows.push(json!({"n": n, "aggregate_mib_s": aggregate, "fairness": fairness, "bytes_per_stream": per}));
        if n == *ns.last().unwrap_or(&1) {
            rss_per_conn = json!(round((rss1.saturating_sub(rss0)) as f64 / n as f64, 1));
        }
        for p in provs.iter().chain(std::iter::once(&cons)) {
            p.shutdown().await;
        }
    }
    Ok((Value::Array(rows), rss_per_conn))
}

pub(super) async fn one_provider_m_consumers(total: u64, ms: &[usize]) -> anyhow::Result<Value> {
    let net = DevNet::new(DevNet::plain());
    let mut rows = vec![];
    for &m in ms {
        let per = (total / m as u64).max(256 << 10);
        let prov = sink_provider(&net, "provider", vec![], false, per).await?;
        let addrs = only(&prov.snapshot().await?.direct_addrs, false);
        let mut cons = vec![];
        for i in 0..m {
            let (c, _) = node(&net, &format!("c{i}"), vec![], false, false).await?;
            c.dial(prov.peer_id(), addrs.clone())
                .await
                .map_err(anyhow::Error::msg)?;
            cons.push(c);
        }
        let pairs = cons.iter().map(|c| (c.clone(), prov.peer_id())).collect();
        let (aggregate, fairness) = drain_all(pairs).await?;
        rows.push(json!({"m": m, "aggregate_mib_s": aggregate, "fairness": fairness, "bytes_per_stream": per}));
        for c in cons.iter().chain(std::iter::once(&prov)) {
            c.shutdown().await;
        }
    }
    Ok(Value::Array(rows))
}
