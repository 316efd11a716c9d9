//! The consumer role: buys streams from many providers at once.
//!
//! For each provider it posts one sealed service request to the provider's
//! `stdin` topic, waits for the sealed response on its own, dials every
//! address the provider gave at once (direct and relay circuit; DCUtR then
//! upgrades a relayed connection), and receives all accepted streams in
//! parallel, each resumable from its offset.

use crate::events::Event;
use crate::net::NodeHandle;
use crate::provider::advertised_addrs;
use crate::signaling::{follow_own_inbox, post_sealed, DEFAULT_TTL};
use crate::source::valid_stream_name;
use crate::streams::{fetch, FetchPolicy, Fetched};
use ledgermesh_ledger::Ledger;
use ledgermesh_protocol::{ServiceRequest, ServiceResponse, Signal};
use libp2p::{Multiaddr, PeerId};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;

/// One wanted stream: `PEERID/STREAM`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Want {
    /// The provider.
    pub peer: PeerId,
    /// The stream name.
    pub stream: String,
}

impl FromStr for Want {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (peer, stream) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?}: expected PEERID/STREAM"))?;
        let peer = peer
            .parse()
            .map_err(|e| format!("{s:?}: bad peer id: {e}"))?;
        if !valid_stream_name(stream) {
            return Err(format!(
                "{s:?}: stream names are 1-128 characters of [A-Za-z0-9._-]"
            ));
        }
        Ok(Want {
            peer,
            stream: stream.into(),
        })
    }
}

/// How a consumer runs.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// What to buy.
    pub wants: Vec<Want>,
    /// Where to write: `OUT/<provider peer id>/<stream>`.
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
        }
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
    pub result: Result<Fetched, String>,
}

impl StreamOutcome {
    /// Complete and verified against the provider's digest.
    pub fn is_verified(&self) -> bool {
        self.result.as_ref().is_ok_and(|f| f.verified)
    }
}

/// Buys every wanted stream; returns one outcome per want (in the order given).
pub async fn run(
    handle: NodeHandle,
    ledger: Arc<dyn Ledger>,
    config: ConsumerConfig,
) -> anyhow::Result<Vec<StreamOutcome>> {
    handle.wait_relays().await?;
    crate::observe::start(&handle, &config.observers, config.quorum).await;
    let mut inbox = follow_own_inbox(&handle, &ledger, config.data_dir.as_deref()).await?;
    let mut by_provider: BTreeMap<PeerId, Vec<String>> = BTreeMap::new();
    for w in &config.wants {
        let streams = by_provider.entry(w.peer).or_default();
        if !streams.contains(&w.stream) {
            streams.push(w.stream.clone());
        }
    }
    let my_addrs = advertised_addrs(&handle.snapshot().await?, false);
    let mut outcomes: HashMap<(PeerId, String), Result<Fetched, String>> = HashMap::new();
    let mut pending: HashMap<[u8; 16], PeerId> = HashMap::new();
    // One request per provider, posted at once: on a chain they share blocks
    // instead of each waiting for the previous one's receipt.
    let posts = by_provider.iter().map(|(peer, streams)| {
        let request = Signal::Request(ServiceRequest {
            addrs: my_addrs.clone(),
            streams: streams.clone(),
        });
        let (handle, ledger) = (&handle, ledger.as_ref());
        async move {
            let r = post_sealed(handle, ledger, *peer, &request, config.request_ttl).await;
            (*peer, streams, r)
        }
    });
    for (peer, streams, posted) in futures::future::join_all(posts).await {
        match posted {
            Ok(nonce) => {
                pending.insert(nonce, peer);
            }
            Err(e) => {
                let why = format!("cannot post request: {e:#}");
                handle.emit(Event::Error {
                    what: "ledger".into(),
                    detail: why.clone(),
                    reason: None,
                    peer_id: Some(peer.to_string()),
                });
                for s in streams {
                    outcomes.insert((peer, s.clone()), Err(why.clone()));
                }
            }
        }
    }

    let mut tasks: JoinSet<Vec<StreamOutcome>> = JoinSet::new();
    let deadline = tokio::time::Instant::now() + config.response_timeout;
    while !pending.is_empty() {
        let next = tokio::time::timeout_at(deadline, inbox.recv()).await;
        let Ok(Some((opened, _))) = next else { break };
        let Signal::Response(resp) = opened.signal else {
            continue;
        };
        match pending.get(&resp.request_nonce) {
            Some(peer) if *peer == opened.sender => {}
            _ => {
                tracing::info!(from = %opened.sender, "response to no request of ours; ignored");
                continue;
            }
        }
        pending.remove(&resp.request_nonce);
        let wanted = by_provider.get(&opened.sender).cloned().unwrap_or_default();
        let handle = handle.clone();
        let config = config.clone();
        tasks.spawn(async move { buy_from(handle, opened.sender, resp, wanted, config).await });
    }
    for peer in pending.into_values() {
        let why = format!("no service response within {:?}", config.response_timeout);
        handle.emit(Event::Error {
            what: "service_response".into(),
            detail: why.clone(),
            reason: Some("timeout".into()),
            peer_id: Some(peer.to_string()),
        });
        for s in &by_provider[&peer] {
            outcomes.insert((peer, s.clone()), Err(why.clone()));
        }
    }
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
                .unwrap_or_else(|| Err("no outcome".into())),
        })
        .collect())
}

/// Head start of direct addresses over relay circuits when connecting.
const DIRECT_HEAD_START: Duration = Duration::from_millis(500);

/// Connects to `peer`: its direct addresses first, and if none answers within
/// [`DIRECT_HEAD_START`], every address at once (relay circuits included), so
/// a reachable provider is never reached through a relay by accident of timing
/// and an unreachable one costs only the head start.
async fn connect(handle: &NodeHandle, peer: PeerId, addrs: &[Multiaddr]) -> Result<(), String> {
    let direct: Vec<Multiaddr> = addrs
        .iter()
        .filter(|a| !crate::addr::is_circuit(a))
        .cloned()
        .collect();
    if !direct.is_empty() {
        if let Ok(Ok(())) = tokio::time::timeout(DIRECT_HEAD_START, handle.dial(peer, direct)).await
        {
            return Ok(());
        }
    }
    handle.dial(peer, addrs.to_vec()).await
}

/// Connects to one provider and receives every accepted stream in parallel.
async fn buy_from(
    handle: NodeHandle,
    peer: PeerId,
    resp: ServiceResponse,
    wanted: Vec<String>,
    config: ConsumerConfig,
) -> Vec<StreamOutcome> {
    let mut out = Vec::new();
    let fail = |stream: &str, why: String, reason: &str| {
        handle.emit(Event::Error {
            what: "stream_rejected".into(),
            detail: format!("{stream}: {why}"),
            reason: Some(reason.into()),
            peer_id: Some(peer.to_string()),
        });
        StreamOutcome {
            peer,
            stream: stream.into(),
            result: Err(why),
        }
    };
    let mut accepted = Vec::new();
    for name in &wanted {
        if resp.accepted.iter().any(|i| &i.name == name) {
            accepted.push(name.clone());
        } else if let Some(r) = resp.rejected.iter().find(|r| &r.name == name) {
            out.push(fail(name, r.detail.clone(), r.reason.as_str()));
        } else {
            out.push(fail(
                name,
                "the provider's response does not mention it".into(),
                "missing",
            ));
        }
    }
    if accepted.is_empty() {
        return out;
    }
    let addrs: Vec<Multiaddr> = resp.addrs.clone();
    if let Err(e) = connect(&handle, peer, &addrs).await {
        handle.emit(Event::Error {
            what: "dial".into(),
            detail: format!(
                "cannot reach provider at any of {} addresses: {e}",
                addrs.len()
            ),
            reason: None,
            peer_id: Some(peer.to_string()),
        });
        for name in accepted {
            out.push(StreamOutcome {
                peer,
                stream: name,
                result: Err(format!("cannot connect: {e}")),
            });
        }
        return out;
    }
    let mut fetches = JoinSet::new();
    for name in accepted {
        let handle = handle.clone();
        let addrs = addrs.clone();
        let config = config.clone();
        fetches.spawn(async move {
            let r = fetch(&handle, peer, &addrs, &name, &config.out_dir, &config.fetch).await;
            match &r {
                Ok(f) => handle.emit(Event::StreamDone {
                    peer_id: peer.to_string(),
                    stream: name.clone(),
                    bytes: f.bytes,
                    sha256: hex::encode(f.sha256),
                    verified: f.verified,
                    ms: f.elapsed.as_millis() as u64,
                    resumes: f.resumes,
                    path: Some(f.path.display().to_string()),
                    first_byte_ts_ms: f.first_byte_ts_ms,
                }),
                Err(e) => handle.emit(Event::Error {
                    what: "stream".into(),
                    detail: format!("{name}: {e}"),
                    reason: None,
                    peer_id: Some(peer.to_string()),
                }),
            }
            StreamOutcome {
                peer,
                stream: name,
                result: r.map_err(|e| e.to_string()),
            }
        });
    }
    while let Some(r) = fetches.join_next().await {
        match r {
            Ok(o) => out.push(o),
            Err(e) => tracing::error!(error = %e, "fetch task panicked"),
        }
    }
    out
}
