//! The consumer role: buys streams from many providers at once.
//!
//! For each provider it posts one sealed service request to the provider's
//! `stdin` topic, waits for the sealed response on its own, dials every
//! address the provider gave at once (direct and relay circuit; DCUtR then
//! upgrades a relayed connection), and receives all accepted streams in
//! parallel, each resumable from its offset.

mod buyer;
mod want;

use buyer::Buyer;

pub use want::{Want, WantError};

use crate::access::audit_log::AuditLog;
use crate::provider::advertised_addrs;
use crate::signaling::requests::Requester;
use crate::signaling::DEFAULT_TTL;
use crate::streams::{FetchPolicy, Fetched};
use crate::swarm::NodeHandle;
use ledgermesh_ledger::Ledger;
use libp2p::{Multiaddr, PeerId};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;

/// How a consumer runs.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// What to buy.
    pub wants: Vec<Want>,
    /// Where to write: `OUT/<provider peer id>/<stream>`; `-`: standard
    /// output (one stream).
    pub out_dir: PathBuf,
    /// Lifetime of requests.
    pub request_ttl: Duration,
    /// How long to wait for each provider's response.
    pub response_timeout: Duration,
    /// Retry policy of each stream.
    pub fetch: FetchPolicy,
    /// Where to keep the ledger cursor across restarts.
    pub data_dir: Option<PathBuf>,
    /// Address-consensus observers (`.../p2p/<id>`); none: no consensus round.
    pub observers: Vec<Multiaddr>,
    /// Agreeing observers needed; `None` means ⌈2K/3⌉.
    pub quorum: Option<usize>,
    /// Seconds of access each request hires (the provider caps it).
    pub hire_secs: u64,
    /// When a grant runs out mid-stream, post a new request and resume.
    pub renew: bool,
    /// Providers fetched from directly at these addresses (`.../p2p/<id>`),
    /// without a service request: access must come from their ACL.
    pub direct: Vec<Multiaddr>,
    /// Where grants received and expiries are written.
    pub audit: Option<AuditLog>,
    /// Pay priced relays from this account (`--relay-deposit`).
    pub relay_payer: Option<crate::protocols::pay::PayerConfig>,
    /// Pay priced streams from this account (`--deposit`).
    pub stream_payer: Option<crate::protocols::pay::PayerConfig>,
    /// The most we pay per MiB of a stream (`--max-price-per-mib`; 0: free
    /// streams only).
    pub max_price_per_mib: u128,
    /// How live streams are followed (`--from`, `--until`, `--skip-ahead`;
    /// its stop token ends every live subscription).
    pub live: crate::streams::live::fetch::LivePolicy,
    /// Serve the (one) stream to local TCP clients instead of writing it
    /// (`--listen-local`).
    pub listen_local: Option<crate::streams::local::Fanout>,
    /// Send standard input to the (one) stream, an inbound one such as an
    /// echo, and write what comes back (`--send`).
    pub send: bool,
}

impl ConsumerConfig {
    /// A consumer of `wants` writing to `out_dir`, with defaults.
    pub fn new(wants: Vec<Want>, out_dir: PathBuf) -> Self {
        Self {
            wants,
            out_dir,
            request_ttl: DEFAULT_TTL,
            response_timeout: Duration::from_secs(60),
            fetch: FetchPolicy::default(),
            data_dir: None,
            observers: Vec::new(),
            quorum: None,
            hire_secs: 3600,
            renew: false,
            direct: Vec::new(),
            audit: None,
            relay_payer: None,
            stream_payer: None,
            max_price_per_mib: 0,
            live: Default::default(),
            listen_local: None,
            send: false,
        }
    }
}

/// Why a wanted stream was not received.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum BuyError {
    /// The service request failed: not posted, or no answer in time.
    #[error(transparent)]
    Request(Arc<crate::signaling::requests::RequestError>),
    /// The provider's response refused the stream.
    #[error("{}", .0.detail)]
    Refused(ledgermesh_protocol::StreamRejection),
    /// The provider's response did not mention the stream.
    #[error("the provider's response does not mention it")]
    NotMentioned,
    /// No address of the provider could be reached.
    #[error("cannot connect: {0}")]
    Connect(Arc<crate::swarm::DialError>),
    /// Receiving the stream failed.
    #[error(transparent)]
    Stream(Arc<crate::streams::StreamError>),
    /// The consumer stopped before this stream was dealt with.
    #[error("no outcome")]
    Missing,
    /// The provider asks more than we pay (`--max-price-per-mib`).
    #[error("priced at {price} wei per MiB, above our limit of {max} (--max-price-per-mib)")]
    PriceTooHigh {
        /// Its price.
        price: u128,
        /// Our limit.
        max: u128,
    },
    /// A priced stream, and nothing to pay from (no `--deposit`).
    #[error("cannot pay for it: a priced stream and no --deposit to pay from")]
    NoDeposit,
    /// A priced stream, and the payment protocol failed.
    #[error("cannot pay for it: {0}")]
    Payment(Arc<crate::protocols::pay::payer::PayFailure>),
}

impl From<ledgermesh_protocol::stream::priced::BuyerRefusal> for BuyError {
    fn from(r: ledgermesh_protocol::stream::priced::BuyerRefusal) -> Self {
        use ledgermesh_protocol::stream::priced::BuyerRefusal;
        match r {
            BuyerRefusal::PriceTooHigh { price, max } => BuyError::PriceTooHigh { price, max },
            BuyerRefusal::NoDeposit => BuyError::NoDeposit,
        }
    }
}

impl BuyError {
    /// The `reason` field of the event that reports it, where it has one.
    pub fn reason(&self) -> Option<&'static str> {
        match self {
            BuyError::Request(e) => Some(e.reason()),
            BuyError::Refused(r) => Some(r.reason.as_str()),
            BuyError::NotMentioned => Some("missing"),
            BuyError::Stream(e) => match &**e {
                crate::streams::StreamError::Rejected(r) => Some(r.reason.as_str()),
                _ => None,
            },
            BuyError::PriceTooHigh { .. } => Some("price_too_high"),
            BuyError::NoDeposit => Some("no_deposit"),
            BuyError::Payment(_) => Some("payment"),
            BuyError::Connect(_) | BuyError::Missing => None,
        }
    }

    /// Our output went away (a closed pipe): the end the user chose, not a
    /// failure.
    pub fn output_closed(&self) -> bool {
        matches!(self, BuyError::Stream(e) if matches!(**e, crate::streams::StreamError::OutputClosed))
    }
}

/// What became of one wanted stream.
#[derive(Debug, Clone)]
pub struct StreamOutcome {
    /// The provider.
    pub peer: PeerId,
    /// The stream.
    pub stream: String,
    /// Received, or why not.
    pub result: Result<Fetched, BuyError>,
}

impl StreamOutcome {
    /// Complete and verified against the provider's digest.
    pub fn is_verified(&self) -> bool {
        self.result.as_ref().is_ok_and(|f| f.verified)
    }
}

/// Why a consumer could not start buying.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConsumerError {
    /// The node stopped.
    #[error(transparent)]
    Node(#[from] crate::net::NodeError),
    /// Following our ledger inbox failed.
    #[error(transparent)]
    Signaling(#[from] crate::signaling::SignalingError),
    /// A buyer's task ended by a panic.
    #[error("a buyer's task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Buys every wanted stream; returns one outcome per want (in the order given).
pub async fn run(
    handle: NodeHandle,
    ledger: Arc<dyn Ledger>,
    config: ConsumerConfig,
) -> Result<Vec<StreamOutcome>, ConsumerError> {
    // Where we stand (relays, then our public address) and the ledger, side
    // by side: neither waits for the other.
    let payer = config.relay_payer.clone().map(|mut payer| {
        // Billed as a circuit's destination: for the providers we buy from.
        let consent = payer.consent.get_or_insert_with(Default::default);
        consent.set(false, config.wants.iter().map(|w| w.peer));
        payer
    });
    let settle =
        crate::roles::paying::settle(&handle, payer.as_ref(), &config.observers, config.quorum);
    let follow = Requester::start(
        &handle,
        &ledger,
        config.data_dir.as_deref(),
        config.request_ttl,
    );
    let (settled, requester) = tokio::join!(settle, follow);
    settled?;
    let requester = requester?;
    let mut by_provider: BTreeMap<PeerId, Vec<String>> = BTreeMap::new();
    for w in &config.wants {
        let streams = by_provider.entry(w.peer).or_default();
        if !streams.contains(&w.stream) {
            streams.push(w.stream.clone());
        }
    }
    let my_addrs = advertised_addrs(
        &handle.snapshot().await?,
        false,
        handle.allow_private_addrs(),
    );
    let buyer = Arc::new(Buyer {
        handle: handle.clone(),
        requester,
        my_addrs,
        config: config.clone(),
    });
    // One task per provider: requests are posted at once (on a chain they
    // share blocks instead of each waiting for the previous one's receipt).
    let mut tasks: JoinSet<Vec<StreamOutcome>> = JoinSet::new();
    for (peer, streams) in by_provider {
        let buyer = buyer.clone();
        tasks.spawn(async move { buyer.buy(peer, streams).await });
    }
    let mut outcomes: HashMap<(PeerId, String), Result<Fetched, BuyError>> = HashMap::new();
    while let Some(done) = tasks.join_next().await {
        for o in done? {
            outcomes.insert((o.peer, o.stream), o.result);
        }
    }
    Ok(config
        .wants
        .iter()
        .map(|w| StreamOutcome {
            peer: w.peer,
            stream: w.stream.clone(),
            result: outcomes
                .get(&(w.peer, w.stream.clone()))
                .cloned()
                .unwrap_or(Err(BuyError::Missing)),
        })
        .collect())
}
