//! The consumer role: buys streams from many providers at once.
//!
//! For each provider it posts one sealed service request to the provider's
//! `stdin` topic, waits for the sealed response on its own, dials every
//! address the provider gave at once (direct and relay circuit; DCUtR then
//! upgrades a relayed connection), and receives all accepted streams in
//! parallel, each resumable from its offset.

use crate::access::audit_log::{AuditLine, AuditLog};
use crate::events::{now_ms, Event};
use crate::provider::advertised_addrs;
use crate::signaling::requests::Requester;
use crate::signaling::DEFAULT_TTL;
use crate::source::valid_stream_name;
use crate::streams::{fetch_with, FetchPolicy, Fetched, Renew};
use crate::swarm::NodeHandle;
use ledgermesh_ledger::Ledger;
use ledgermesh_protocol::access::{AuditKind, AuditRecord};
use ledgermesh_protocol::{ServiceRequest, ServiceResponse};
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
    /// Seconds of access each request hires (the provider caps it).
    pub hire_secs: u64,
    /// When a grant runs out mid-stream, post a new request and resume.
    pub renew: bool,
    /// Providers fetched from directly at these addresses (`.../p2p/<id>`),
    /// without a service request: access must come from their ACL.
    pub direct: Vec<Multiaddr>,
    /// Where grants received and expiries are written.
    pub audit: Option<AuditLog>,
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
    let requester = Requester::start(
        &handle,
        &ledger,
        config.data_dir.as_deref(),
        config.request_ttl,
    )
    .await?;
    let mut by_provider: BTreeMap<PeerId, Vec<String>> = BTreeMap::new();
    for w in &config.wants {
        let streams = by_provider.entry(w.peer).or_default();
        if !streams.contains(&w.stream) {
            streams.push(w.stream.clone());
        }
    }
    let my_addrs = advertised_addrs(&handle.snapshot().await?, false);
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
    let mut outcomes: HashMap<(PeerId, String), Result<Fetched, String>> = HashMap::new();
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

/// What every per-provider task shares.
struct Buyer {
    handle: NodeHandle,
    requester: Requester,
    my_addrs: Vec<Multiaddr>,
    config: ConsumerConfig,
}

impl Buyer {
    fn audit(&self, rec: AuditRecord) {
        if let Some(log) = &self.config.audit {
            if let Err(e) = log.append(&AuditLine::of(&rec, self.handle.emitter().node())) {
                self.handle.emit(Event::error("audit", e));
            }
        }
    }

    /// Asks `peer` for `streams` (or, for a direct provider, skips the
    /// ledger), then receives what it accepted.
    async fn buy(self: Arc<Self>, peer: PeerId, streams: Vec<String>) -> Vec<StreamOutcome> {
        let direct: Vec<Multiaddr> = self
            .config
            .direct
            .iter()
            .filter(|a| crate::addr::peer_of(a) == Some(peer))
            .cloned()
            .collect();
        let resp = if !direct.is_empty() {
            // Off the ledger: the provider's ACL decides when we ask.
            ServiceResponse {
                addrs: direct,
                accepted: streams
                    .iter()
                    .map(|s| ledgermesh_protocol::StreamInfo {
                        name: s.clone(),
                        length: None,
                        sha256: None,
                    })
                    .collect(),
                ..Default::default()
            }
        } else {
            match self.request(peer, streams.clone(), false).await {
                Ok(r) => r,
                Err((why, reason)) => {
                    self.handle.emit(Event::Error {
                        what: "service_response".into(),
                        detail: why.clone(),
                        reason: Some(reason.into()),
                        peer_id: Some(peer.to_string()),
                    });
                    return streams
                        .into_iter()
                        .map(|s| StreamOutcome {
                            peer,
                            stream: s,
                            result: Err(why.clone()),
                        })
                        .collect();
                }
            }
        };
        buy_from(self, peer, resp, streams).await
    }

    /// Posts a request for `streams` and waits for the response; reports
    /// the grants it carries.
    async fn request(
        &self,
        peer: PeerId,
        streams: Vec<String>,
        renewal: bool,
    ) -> Result<ServiceResponse, (String, &'static str)> {
        let request = ServiceRequest {
            addrs: self.my_addrs.clone(),
            streams,
            hire_secs: self.config.hire_secs,
        };
        let resp = self
            .requester
            .request(peer, request, self.config.response_timeout)
            .await
            .map_err(|e| (e.to_string(), e.reason()))?;
        if let Some(expires_ms) = resp.grant_expires_ms {
            for info in &resp.accepted {
                self.handle.emit(Event::Grant {
                    peer_id: peer.to_string(),
                    stream: info.name.clone(),
                    expires_ms,
                    renewed: renewal,
                });
                let kind = if renewal {
                    AuditKind::Renew
                } else {
                    AuditKind::Grant
                };
                let mut rec = AuditRecord::new(now_ms(), kind).about(peer, &info.name);
                rec.expires_ms = Some(expires_ms);
                self.audit(rec);
            }
        }
        Ok(resp)
    }

    /// A renewal hook for `stream` of `peer`.
    fn renewal(self: &Arc<Self>, peer: PeerId, stream: &str) -> Box<Renew> {
        let buyer = self.clone();
        let stream = stream.to_string();
        Box::new(move || {
            let buyer = buyer.clone();
            let stream = stream.clone();
            Box::pin(async move {
                let mut rec = AuditRecord::new(now_ms(), AuditKind::Expire)
                    .about(peer, &stream)
                    .reason("grant_expired");
                rec.detail = Some("renewing".into());
                buyer.audit(rec);
                let resp = buyer
                    .request(peer, vec![stream.clone()], true)
                    .await
                    .map_err(|(why, _)| why)?;
                if resp.accepted.iter().any(|i| i.name == stream) {
                    Ok(())
                } else {
                    Err(resp
                        .rejected
                        .iter()
                        .find(|r| r.name == stream)
                        .map_or("the provider did not grant it".into(), |r| r.detail.clone()))
                }
            })
        })
    }
}

/// Head start of direct addresses over relay circuits when connecting.
const DIRECT_HEAD_START: Duration = Duration::from_millis(500);

/// Connects to `peer`: its direct addresses first, and if none answers within
/// [`DIRECT_HEAD_START`], every address at once (relay circuits included), so
/// a reachable provider is never reached through a relay by accident of timing
/// and an unreachable one costs only the head start.
async fn connect(
    handle: &NodeHandle,
    peer: PeerId,
    addrs: &[Multiaddr],
) -> Result<(), crate::swarm::DialError> {
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
    buyer: Arc<Buyer>,
    peer: PeerId,
    resp: ServiceResponse,
    wanted: Vec<String>,
) -> Vec<StreamOutcome> {
    let handle = buyer.handle.clone();
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
        let buyer = buyer.clone();
        fetches.spawn(async move {
            let config = &buyer.config;
            let renew = config.renew.then(|| buyer.renewal(peer, &name));
            let r = fetch_with(
                &handle,
                peer,
                &addrs,
                &name,
                &config.out_dir,
                &config.fetch,
                renew.as_deref(),
            )
            .await;
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
                    reason: match &e {
                        crate::streams::StreamError::Rejected(r) => Some(r.reason.as_str().into()),
                        _ => None,
                    },
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
