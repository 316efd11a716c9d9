//! From the recorded events and outcomes to the demo's summary.

use super::{
    short, ConnectionRow, DemoSummary, GrantRow, LedgerRow, MoneyReports, NodeRow, PaymentRow,
    PublicRow, RefusalRow, StreamRow,
};
use ledgermesh_node::consumer::StreamOutcome;
use ledgermesh_node::events::{Event, Record};
use ledgermesh_node::swarm::NodeHandle;
use std::collections::HashMap;
use std::time::Duration;

pub(crate) fn summarize(
    nodes: &[(String, String, NodeHandle)],
    records: &[Record],
    outcomes: &[(String, StreamOutcome)],
    truth: &HashMap<(String, String), [u8; 32]>,
    elapsed: Duration,
    stranger_refused: bool,
    money: &MoneyReports,
) -> DemoSummary {
    let label: HashMap<String, String> = nodes
        .iter()
        .map(|(n, _, h)| (h.peer_id().to_string(), n.clone()))
        .collect();
    let topic_owner: HashMap<String, String> = nodes
        .iter()
        .map(|(n, _, h)| {
            (
                ledgermesh_protocol::Topic::stdin(&h.peer_id()).to_hex(),
                n.clone(),
            )
        })
        .collect();
    let name_of = |id: &str| label.get(id).cloned().unwrap_or_else(|| short(id));
    let is_provider = |id: &str| label.get(id).is_some_and(|n| n.starts_with("provider"));

    let mut ledger_messages = Vec::new();
    let mut connections: Vec<ConnectionRow> = Vec::new();
    let mut public_addresses = Vec::new();
    let mut grants = Vec::new();
    let mut refusals = Vec::new();
    for r in records {
        match &r.event {
            Event::Grant {
                peer_id,
                stream,
                expires_ms,
                ..
            } if r.node.starts_with("provider") => grants.push(GrantRow {
                provider: r.node.clone(),
                consumer: name_of(peer_id),
                stream: stream.clone(),
                expires_ms: *expires_ms,
                until: jiff::Timestamp::from_millisecond(*expires_ms as i64)
                    .map(|t| t.round(jiff::Unit::Second).unwrap_or(t).to_string())
                    .unwrap_or_default(),
            }),
            Event::AccessRefused {
                peer_id,
                stream,
                reason,
            } if r.node.starts_with("provider") => refusals.push(RefusalRow {
                provider: r.node.clone(),
                peer: name_of(peer_id),
                stream: stream.clone(),
                reason: reason.clone(),
            }),
            Event::PublicAddress {
                addr,
                mapping,
                reachable,
                observers,
                agreeing,
                ..
            } => public_addresses.push(PublicRow {
                node: r.node.clone(),
                addr: addr.clone(),
                mapping: mapping.clone(),
                reachable: *reachable,
                observers: *observers,
                agreeing: *agreeing,
            }),
            Event::LedgerPost {
                topic, kind, bytes, ..
            } => ledger_messages.push(LedgerRow {
                from: r.node.clone(),
                to: topic_owner
                    .get(topic)
                    .cloned()
                    .unwrap_or_else(|| short(topic)),
                kind: kind.clone(),
                bytes: *bytes,
            }),
            Event::Connected {
                peer_id,
                path,
                transport,
                via,
                ..
            } if r.node.starts_with("consumer") && is_provider(peer_id) => {
                let provider = name_of(peer_id);
                if !connections
                    .iter()
                    .any(|c| c.consumer == r.node && c.provider == provider)
                {
                    connections.push(ConnectionRow {
                        consumer: r.node.clone(),
                        provider,
                        path: *path,
                        transport: *transport,
                        via: via.as_deref().map(name_of),
                        upgraded: false,
                        ms_after_relayed: None,
                        upgraded_transport: None,
                    });
                }
            }
            Event::Upgraded {
                peer_id,
                transport,
                ms_after_relayed,
            } => {
                // Either side may see the upgrade first; report it on the pair.
                let (consumer, provider) = if r.node.starts_with("consumer") {
                    (r.node.clone(), name_of(peer_id))
                } else {
                    (name_of(peer_id), r.node.clone())
                };
                if let Some(c) = connections
                    .iter_mut()
                    .find(|c| c.consumer == consumer && c.provider == provider && !c.upgraded)
                {
                    c.upgraded = true;
                    c.ms_after_relayed = Some(*ms_after_relayed);
                    c.upgraded_transport = Some(*transport);
                }
            }
            _ => {}
        }
    }
    connections.sort_by(|a, b| (&a.consumer, &a.provider).cmp(&(&b.consumer, &b.provider)));

    let mut streams = Vec::new();
    for (consumer, o) in outcomes {
        let expected = truth.get(&(o.peer.to_string(), o.stream.clone()));
        let row = match &o.result {
            Ok(f) => StreamRow {
                consumer: consumer.clone(),
                provider: name_of(&o.peer.to_string()),
                stream: o.stream.clone(),
                bytes: f.bytes,
                mib_s: f.bytes as f64 / (1 << 20) as f64 / f.elapsed.as_secs_f64().max(1e-6),
                sha256: hex::encode(f.sha256),
                // A live stream has no whole digest: every chunk's
                // signature was checked instead.
                verified: f.verified
                    && (expected == Some(&f.sha256) || (f.live.is_some() && f.bytes > 0)),
                resumes: f.resumes,
                error: None,
                live: f.live.clone(),
            },
            Err(e) => StreamRow {
                consumer: consumer.clone(),
                provider: name_of(&o.peer.to_string()),
                stream: o.stream.clone(),
                bytes: 0,
                mib_s: 0.0,
                sha256: String::new(),
                verified: false,
                resumes: 0,
                error: Some(e.to_string()),
                live: None,
            },
        };
        streams.push(row);
    }
    streams.sort_by(|a, b| {
        (&a.consumer, &a.provider, &a.stream).cmp(&(&b.consumer, &b.provider, &b.stream))
    });
    grants.sort_by(|a, b| {
        (&a.provider, &a.consumer, &a.stream).cmp(&(&b.provider, &b.consumer, &b.stream))
    });
    let payments = payment_rows(records, money, &name_of);
    // Nothing is left unclaimed: the payees claimed what they held.
    let settled = payments.iter().all(|p| p.unclaimed_wei == "0");
    let ok =
        !streams.is_empty() && streams.iter().all(|s| s.verified) && stranger_refused && settled;
    DemoSummary {
        event: "demo_summary",
        ok,
        elapsed_ms: elapsed.as_millis() as u64,
        nodes: nodes
            .iter()
            .map(|(n, role, h)| NodeRow {
                name: n.clone(),
                role: role.clone(),
                peer_id: h.peer_id().to_string(),
            })
            .collect(),
        ledger_messages,
        connections,
        streams,
        public_addresses,
        grants,
        refusals,
        stranger_refused,
        payments,
    }
}

/// One row per channel from the payees' books (the reconciliation report),
/// with the payer's own view beside it and the vouchers counted from events.
fn payment_rows(
    records: &[Record],
    money: &MoneyReports,
    name_of: &dyn Fn(&str) -> String,
) -> Vec<PaymentRow> {
    let mut vouchers: HashMap<String, usize> = HashMap::new();
    for r in records {
        if let Event::VoucherReceived { channel, .. } = &r.event {
            *vouchers.entry(channel.clone()).or_default() += 1;
        }
    }
    let mut rows: Vec<PaymentRow> = (money.payees.iter())
        .map(|(payee, a)| {
            let channel = format!("0x{}", hex::encode(a.channel));
            let payer_side = (money.payers.iter())
                .find(|(_, v)| v["channel"].as_str() == Some(channel.as_str()));
            let payer = match (payer_side, a.peers.first()) {
                (Some((name, _)), _) => name.clone(),
                (None, Some(p)) => name_of(&p.to_string()),
                (None, None) => format!("0x{}", hex::encode(a.payer)),
            };
            let theirs = |k: &str| payer_side.and_then(|(_, v)| v[k].as_str().map(str::to_string));
            let payer_voucher = theirs("highest_voucher_wei").unwrap_or_else(|| "-".into());
            PaymentRow {
                channel: short(&channel),
                payer,
                payee: payee.clone(),
                bytes_metered: a.bytes,
                vouchers: vouchers.get(&channel).copied().unwrap_or(0),
                paid_wei: a.paid.to_string(),
                claimed_wei: a.claimed.to_string(),
                owed_wei: a.owed.to_string(),
                unclaimed_wei: a.paid.saturating_sub(a.claimed).to_string(),
                payer_bytes: payer_side
                    .and_then(|(_, v)| v["bytes"].as_u64())
                    .unwrap_or(0),
                agree: payer_voucher == a.paid.to_string(),
                payer_voucher_wei: payer_voucher,
            }
        })
        .filter(|r| r.owed_wei != "0" || r.paid_wei != "0")
        .collect();
    rows.sort_by(|a, b| (&a.payee, &a.payer).cmp(&(&b.payee, &b.payer)));
    rows
}
