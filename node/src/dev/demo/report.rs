//! The demo's summary: rows built from the nodes' events, printed as tables
//! or one JSON object.

use crate::consumer::StreamOutcome;
use crate::events::{Event, PathKind, Record, TransportKind};
use crate::swarm::NodeHandle;
use serde::Serialize;
use std::collections::HashMap;
use std::time::Duration;

fn short(id: &str) -> String {
    let n = id.len();
    if n > 8 {
        format!("…{}", &id[n - 6..])
    } else {
        id.into()
    }
}

/// A node of the demo.
#[derive(Debug, Clone, Serialize)]
pub struct NodeRow {
    /// Label.
    pub name: String,
    /// Role.
    pub role: String,
    /// PeerId.
    pub peer_id: String,
}

/// One ledger post.
#[derive(Debug, Clone, Serialize)]
pub struct LedgerRow {
    /// Who posted.
    pub from: String,
    /// To whom (the node whose stdin topic it is).
    pub to: String,
    /// Kind.
    pub kind: String,
    /// Size on the ledger.
    pub bytes: usize,
}

/// One consumer→provider connection.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectionRow {
    /// Consumer label.
    pub consumer: String,
    /// Provider label.
    pub provider: String,
    /// Path of the first connection.
    pub path: PathKind,
    /// Its transport.
    pub transport: TransportKind,
    /// Relay label when relayed.
    pub via: Option<String>,
    /// Whether DCUtR upgraded it to direct.
    pub upgraded: bool,
    /// Time from relayed to direct.
    pub ms_after_relayed: Option<u64>,
    /// Transport of the direct connection after the upgrade.
    pub upgraded_transport: Option<TransportKind>,
}

/// One received stream.
#[derive(Debug, Clone, Serialize)]
pub struct StreamRow {
    /// Consumer label.
    pub consumer: String,
    /// Provider label.
    pub provider: String,
    /// Stream name.
    pub stream: String,
    /// Bytes received.
    pub bytes: u64,
    /// Throughput.
    pub mib_s: f64,
    /// SHA-256 received, hex.
    pub sha256: String,
    /// Equal to the SHA-256 of the provider's source, computed independently.
    pub verified: bool,
    /// Resumptions on a new path.
    pub resumes: u32,
    /// Error when it failed.
    pub error: Option<String>,
}

/// One node's address-consensus verdict.
#[derive(Debug, Clone, Serialize)]
pub struct PublicRow {
    /// Node label.
    pub node: String,
    /// Accepted public address.
    pub addr: Option<String>,
    /// NAT mapping.
    pub mapping: String,
    /// Dial-back verdict.
    pub reachable: Option<bool>,
    /// Observers that answered.
    pub observers: usize,
    /// Observers agreeing.
    pub agreeing: usize,
}

/// A grant a provider issued.
#[derive(Debug, Clone, Serialize)]
pub struct GrantRow {
    /// Provider label.
    pub provider: String,
    /// Who may fetch.
    pub consumer: String,
    /// What.
    pub stream: String,
    /// Until when, unix ms.
    pub expires_ms: u64,
    /// The same, RFC 3339.
    pub until: String,
}

/// A fetch a provider refused.
#[derive(Debug, Clone, Serialize)]
pub struct RefusalRow {
    /// Provider label.
    pub provider: String,
    /// Who asked.
    pub peer: String,
    /// For what.
    pub stream: String,
    /// Why (`not_allowed`, ...).
    pub reason: String,
}

/// The demo's result.
#[derive(Debug, Clone, Serialize)]
pub struct DemoSummary {
    /// Always `demo_summary`.
    pub event: &'static str,
    /// Every stream complete and verified.
    pub ok: bool,
    /// Wall time.
    pub elapsed_ms: u64,
    /// Nodes.
    pub nodes: Vec<NodeRow>,
    /// Ledger posts.
    pub ledger_messages: Vec<LedgerRow>,
    /// Consumer→provider connections.
    pub connections: Vec<ConnectionRow>,
    /// Streams.
    pub streams: Vec<StreamRow>,
    /// Address-consensus verdicts.
    pub public_addresses: Vec<PublicRow>,
    /// Grants the providers issued.
    pub grants: Vec<GrantRow>,
    /// Fetches the providers refused.
    pub refusals: Vec<RefusalRow>,
    /// The stranger (no request posted) was refused `not_allowed` and got no byte.
    pub stranger_refused: bool,
}

pub(crate) fn summarize(
    nodes: &[(String, String, NodeHandle)],
    records: &[Record],
    outcomes: &[(String, StreamOutcome)],
    truth: &HashMap<(String, String), [u8; 32]>,
    elapsed: Duration,
    stranger_refused: bool,
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
                verified: f.verified && expected == Some(&f.sha256),
                resumes: f.resumes,
                error: None,
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
                error: Some(e.clone()),
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
    let ok = !streams.is_empty() && streams.iter().all(|s| s.verified) && stranger_refused;
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
    }
}

fn transport_str(t: TransportKind) -> &'static str {
    match t {
        TransportKind::Tcp => "tcp",
        TransportKind::Quic => "quic",
        TransportKind::Other => "other",
    }
}

pub(crate) fn print_tables(s: &DemoSummary) {
    println!("\nNODES");
    println!("  {:<12} {:<22} peer id", "name", "role");
    for n in &s.nodes {
        println!("  {:<12} {:<22} {}", n.name, n.role, n.peer_id);
    }
    println!("\nLEDGER MESSAGES (sealed with HPKE to the recipient; no address in the clear)");
    println!("  {:<12} {:<12} {:<18} bytes", "from", "to (stdin)", "kind");
    for m in &s.ledger_messages {
        println!("  {:<12} {:<12} {:<18} {}", m.from, m.to, m.kind, m.bytes);
    }
    println!("\nCONNECTIONS (consumer → provider)");
    println!(
        "  {:<12} {:<12} {:<9} {:<6} {:<8} upgrade",
        "consumer", "provider", "path", "tcp/quic", "via"
    );
    for c in &s.connections {
        let path = match c.path {
            PathKind::Direct => "direct",
            PathKind::Relayed => "relayed",
        };
        let upgrade = match (c.upgraded, c.ms_after_relayed, c.upgraded_transport) {
            (true, Some(ms), Some(t)) => {
                format!("→ direct ({}) after {ms} ms (DCUtR)", transport_str(t))
            }
            _ if c.path == PathKind::Relayed => "stayed relayed".into(),
            _ => "-".into(),
        };
        println!(
            "  {:<12} {:<12} {:<9} {:<8} {:<8} {}",
            c.consumer,
            c.provider,
            path,
            transport_str(c.transport),
            c.via.clone().unwrap_or_else(|| "-".into()),
            upgrade
        );
    }
    println!("\nPUBLIC ADDRESS (peer consensus: a quorum of observers must agree)");
    for p in &s.public_addresses {
        println!(
            "  {:<12} {:<26} {:<22} reachable={:<5} {}/{} observers agree",
            p.node,
            p.addr.clone().unwrap_or_else(|| "-".into()),
            p.mapping,
            p.reachable
                .map(|r| r.to_string())
                .unwrap_or_else(|| "?".into()),
            p.agreeing,
            p.observers
        );
    }
    println!("\nGRANTS (issued for verified service requests; nobody else is served)");
    println!(
        "  {:<12} {:<12} {:<6} until",
        "provider", "consumer", "stream"
    );
    for g in &s.grants {
        println!(
            "  {:<12} {:<12} {:<6} {}",
            g.provider, g.consumer, g.stream, g.until
        );
    }
    println!("\nREFUSED (a peer that posted no request asks the stream protocol directly)");
    for r in &s.refusals {
        println!(
            "  {:<12} {:<12} {:<6} {}",
            r.provider, r.peer, r.stream, r.reason
        );
    }
    if !s.stranger_refused {
        println!("  the stranger was NOT refused as it should have been");
    }
    println!("\nSTREAMS");
    println!(
        "  {:<12} {:<12} {:<6} {:>10} {:>9} {:<17} {:<8} resumes",
        "consumer", "provider", "stream", "bytes", "MiB/s", "sha256", "verified"
    );
    for st in &s.streams {
        println!(
            "  {:<12} {:<12} {:<6} {:>10} {:>9.1} {:<17} {:<8} {}",
            st.consumer,
            st.provider,
            st.stream,
            st.bytes,
            st.mib_s,
            st.sha256.get(..16).unwrap_or("-"),
            if st.verified { "yes" } else { "NO" },
            st.resumes
        );
        if let Some(e) = &st.error {
            println!("      error: {e}");
        }
    }
    println!(
        "\n{} in {:.1} s: {} of {} streams complete and verified; {} refused without a grant.",
        if s.ok { "OK" } else { "FAILED" },
        s.elapsed_ms as f64 / 1000.0,
        s.streams.iter().filter(|x| x.verified).count(),
        s.streams.len(),
        if s.stranger_refused {
            "the stranger was"
        } else {
            "the stranger was NOT"
        },
    );
}
