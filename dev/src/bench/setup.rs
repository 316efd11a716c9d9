//! Connection set-up: milestones from "consumer wants a stream" to first byte.

use super::nodes::node;
use crate::DevNet;
use ledgermesh_ledger::Ledger;
use ledgermesh_node::clock::now_ms;
use ledgermesh_node::consumer::{self, ConsumerConfig, Want};
use ledgermesh_node::events::{Event, Record};
use ledgermesh_node::provider::ProviderConfig;
use ledgermesh_node::source::Source;
use ledgermesh_node::swarm::NodeHandle;
use libp2p::Multiaddr;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// Milestones of "consumer wants a stream" → first byte, in ms since the want.
/// `read_pending`: both sides also read the chain's pending block; `ws`:
/// their followers are woken by the endpoint's websocket (else they poll).
pub(super) async fn setup_phases(
    relay_addr: &Multiaddr,
    chain: Option<&crate::devchain::DevChain>,
    read_pending: bool,
    ws: bool,
) -> anyhow::Result<Value> {
    let net = DevNet::new(DevNet::plain());
    let ledger_for = |h: &NodeHandle,
                      key: usize|
     -> futures::future::BoxFuture<'static, anyhow::Result<Arc<dyn Ledger>>> {
        let account = h.peer_id().to_string();
        let memory = net.ledger_for(h);
        let spec_key = chain.map(|c| (c.spec(), c.keys[key].0.clone()));
        Box::pin(async move {
            Ok(match spec_key {
                None => memory,
                Some((spec, key)) => {
                    let key = std::fs::read_to_string(key)?;
                    let rpc = ledgermesh_ledger::evm::parse_spec(&spec)?.0;
                    let options = ledgermesh_ledger::evm::EvmOptions {
                        read_pending,
                        ws_url: ws
                            .then(|| ledgermesh_ledger::evm::ws_url_for(&rpc))
                            .flatten(),
                        ..Default::default()
                    };
                    ledgermesh_node::ledger_spec::open_ledger(&spec, Some(&key), &account, options)
                        .await?
                }
            })
        })
    };
    let (prov, mut prov_rec) = node(
        &net,
        "setup-provider",
        vec![relay_addr.clone()],
        true,
        false,
    )
    .await?;
    let mut pc = ProviderConfig::new(vec![("s".into(), Source::Zeros { len: 1 << 20 })]);
    pc.relay_only = true;
    let pl = ledger_for(&prov, 0).await?;
    let provider_task = net.provide(&prov, Some(pl), pc);
    prov.wait_relays().await?;
    let (cons, mut cons_rec) = node(
        &net,
        "setup-consumer",
        vec![relay_addr.clone()],
        true,
        false,
    )
    .await?;
    cons.wait_relays().await?;
    let cl = ledger_for(&cons, 1).await?;
    // Let the provider's follower start before the clock does.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let dir = std::env::temp_dir().join(format!("lm-bench-setup-{}", rand::random::<u32>()));
    let cc = ConsumerConfig::new(
        vec![Want {
            peer: prov.peer_id(),
            stream: "s".into(),
        }],
        dir.clone(),
    );
    let start = now_ms();
    let outcomes = consumer::run(cons.clone(), cl, cc).await?;
    let _ = std::fs::remove_dir_all(&dir);
    let fetched = outcomes[0]
        .result
        .as_ref()
        .map_err(|e| anyhow::anyhow!("setup stream failed: {e}"))?;
    let pid = prov.peer_id().to_string();
    let at = |recs: &[Record], f: &dyn Fn(&Event) -> bool| {
        recs.iter()
            .find(|r| f(&r.event))
            .map(|r| r.ts_ms.saturating_sub(start))
    };
    let c = cons_rec.drain().to_vec();
    let p = prov_rec.drain().to_vec();
    let mut phases = serde_json::Map::new();
    let mut put = |k: &str, v: Option<u64>| {
        phases.insert(k.into(), v.map(Value::from).unwrap_or(Value::Null));
    };
    put(
        "request_posted",
        at(&c, &|e| matches!(e, Event::LedgerPost { .. })),
    );
    put(
        "request_seen_by_provider",
        at(&p, &|e| matches!(e, Event::LedgerMessage { .. })),
    );
    put(
        "response_posted",
        at(&p, &|e| matches!(e, Event::LedgerPost { .. })),
    );
    put(
        "response_seen_by_consumer",
        at(&c, &|e| matches!(e, Event::LedgerMessage { .. })),
    );
    put(
        "relayed_connected",
        at(
            &c,
            &|e| matches!(e, Event::Connected { peer_id, path: ledgermesh_node::events::PathKind::Relayed, .. } if *peer_id == pid),
        ),
    );
    put(
        "dcutr_upgraded",
        at(
            &c,
            &|e| matches!(e, Event::Upgraded { peer_id, .. } if *peer_id == pid),
        ),
    );
    put(
        "first_byte",
        fetched.first_byte_ts_ms.map(|t| t.saturating_sub(start)),
    );
    provider_task.abort();
    prov.shutdown().await;
    cons.shutdown().await;
    Ok(Value::Object(phases))
}
