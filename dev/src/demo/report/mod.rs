//! The demo's summary: rows built from the nodes' events, printed as tables
//! or one JSON object.

mod summarize;
mod tables;

pub(crate) use summarize::summarize;
pub(crate) use tables::print_tables;

use ledgermesh_node::events::{PathKind, TransportKind};
use serde::Serialize;

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
    /// A live stream: where it was joined, chunks verified, lag.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live: Option<ledgermesh_node::events::LiveSummary>,
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
    /// Payment channels: who paid whom, for how many bytes, and what was claimed.
    pub payments: Vec<PaymentRow>,
}

/// One payment channel of the demo.
#[derive(Debug, Clone, Serialize)]
pub struct PaymentRow {
    /// The channel id (shortened).
    pub channel: String,
    /// The paying node.
    pub payer: String,
    /// The paid node.
    pub payee: String,
    /// Bytes the payee metered for the payer.
    pub bytes_metered: u64,
    /// Vouchers received.
    pub vouchers: usize,
    /// The latest voucher's amount, in wei.
    pub paid_wei: String,
    /// Claimed on the chain, in wei.
    pub claimed_wei: String,
    /// Everything the payee's meter says is owed, in wei.
    pub owed_wei: String,
    /// Held by the payee and not claimed, in wei.
    pub unclaimed_wei: String,
    /// The payer's own meter, in bytes (as of its last reading).
    pub payer_bytes: u64,
    /// The highest voucher the payer signed, in wei.
    pub payer_voucher_wei: String,
    /// Payer and payee hold the same highest voucher.
    pub agree: bool,
}

/// The payments reports, read from the nodes before they stop: each
/// payee's book and each payer's view, by node name.
#[derive(Debug, Default)]
pub struct MoneyReports {
    /// (payee node, its book's account).
    pub payees: Vec<(String, ledgermesh_protocol::payment::book::AccountReport)>,
    /// (payer node, its report on one payee: `payer_report`'s rows).
    pub payers: Vec<(String, serde_json::Value)>,
}
