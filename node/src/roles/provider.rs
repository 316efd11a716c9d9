//! The provider role: sells named streams to many consumers at once.
//!
//! It holds a reservation on each relay, follows its `stdin` topic, answers
//! every valid service request with a sealed service response (its addresses,
//! the streams it accepts, the ones it refuses and why), and serves the
//! streams over `/ledgermesh/stream/1`.

use crate::access::audit_log::AuditLog;
use crate::access::Access;
use crate::events::Event;
use crate::signaling::journal::{failpoint, AnswerJournal, Answered};
use crate::signaling::{follow_own_inbox, post_prepared, seal_to, DEFAULT_TTL};
use crate::source::Source;
use crate::streams::{serve, Catalog};
use crate::swarm::NodeHandle;
use anyhow::Context as _;
use ledgermesh_ledger::Ledger;
use ledgermesh_protocol::access::DEFAULT_MAX_GRANT_SECS;
use ledgermesh_protocol::envelope::Opened;
use ledgermesh_protocol::envelope::Sealed;
use ledgermesh_protocol::signaling::{self, RateLimits, SenderLimiter};
use ledgermesh_protocol::{ServiceResponse, Signal};
use libp2p::Multiaddr;
use std::sync::Arc;
use std::time::Duration;

/// How a provider runs.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    /// The streams it sells.
    pub streams: Vec<(String, Source)>,
    /// Advertise only relay circuits, never a direct address (a node behind a
    /// NAT; peers reach it through the relay and DCUtR finds the direct path).
    pub relay_only: bool,
    /// Lifetime of responses.
    pub response_ttl: Duration,
    /// Answers per sender: a burst, then a rate per minute.
    pub answer_limits: RateLimits,
    /// Streams served at once (in total and per peer) and the write stall.
    pub serve_limits: crate::streams::ServeLimits,
    /// Where to keep the ledger cursor across restarts (none: start fresh each time).
    pub data_dir: Option<std::path::PathBuf>,
    /// Address-consensus observers (`.../p2p/<id>`); none: no consensus round.
    pub observers: Vec<Multiaddr>,
    /// Agreeing observers needed; `None` means ⌈2K/3⌉.
    pub quorum: Option<usize>,
    /// Longest grant a service request can hire, in seconds.
    pub max_grant_secs: u64,
    /// ACL file (TOML), re-read when it changes.
    pub acl: Option<std::path::PathBuf>,
    /// Where access decisions are written.
    pub audit: Option<AuditLog>,
}

impl ProviderConfig {
    /// A provider of `streams` with defaults.
    pub fn new(streams: Vec<(String, Source)>) -> Self {
        Self {
            streams,
            relay_only: false,
            response_ttl: DEFAULT_TTL,
            serve_limits: Default::default(),
            answer_limits: RateLimits::default(),
            data_dir: None,
            observers: Vec::new(),
            quorum: None,
            max_grant_secs: DEFAULT_MAX_GRANT_SECS,
            acl: None,
            audit: None,
        }
    }
}

/// The addresses a node puts in its signaling messages (the decision is
/// `ledgermesh_protocol::path::advertise`).
pub fn advertised_addrs(
    snapshot: &crate::swarm::Snapshot,
    relay_only: bool,
    allow_private: bool,
) -> Vec<Multiaddr> {
    ledgermesh_protocol::path::advertise(
        &snapshot.direct_addrs,
        &snapshot.circuit_addrs,
        snapshot.public.as_ref(),
        relay_only,
        allow_private,
    )
}

/// Runs the provider until the node stops. Returns early only on a setup
/// error (an unreadable source, a bad ACL file).
pub async fn run(
    handle: NodeHandle,
    ledger: Arc<dyn Ledger>,
    config: ProviderConfig,
) -> anyhow::Result<()> {
    let catalog = Arc::new(Catalog::build(config.streams.clone()).await?);
    let access = Access::new(
        config.max_grant_secs,
        config.audit.clone(),
        handle.emitter().clone(),
    );
    if let Some(path) = &config.acl {
        access.load_acl_file(path)?;
        access.watch_acl_file(path.clone());
    }
    handle.wait_relays().await?;
    crate::observe::start(&handle, &config.observers, config.quorum).await;
    handle.spawn(serve(
        handle.clone(),
        catalog.clone(),
        access.clone(),
        config.serve_limits,
    ));
    let journal = match &config.data_dir {
        Some(dir) => Some(AnswerJournal::open(dir).context("opening the answer journal")?),
        None => None,
    };
    if let Some(j) = journal.clone() {
        // Old entries go hourly (each answer leaves one file).
        handle.spawn(async move {
            let mut hourly = tokio::time::interval(std::time::Duration::from_secs(3600));
            hourly.tick().await; // the journal pruned itself on opening
            loop {
                hourly.tick().await;
                let j = j.clone();
                let _ = tokio::task::spawn_blocking(move || j.prune()).await;
            }
        });
    }
    let mut inbox = follow_own_inbox(&handle, &ledger, config.data_dir.as_deref()).await?;
    // Answers in flight are bounded: past the bound the inbox waits, which
    // slows the follower, not memory.
    let answering = Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_ANSWERS));
    // Each answer is a ledger post at our cost: per sender, a burst and then
    // a rate; the rest go unanswered (and are said so).
    let mut limiter = SenderLimiter::new(config.answer_limits);
    while let Some((opened, _, handled)) = inbox.recv().await {
        let is_request = matches!(opened.signal, Signal::Request(_));
        if is_request && !limiter.allow(crate::events::now_ms(), opened.sender) {
            handle.emit(Event::Error {
                what: "service_request".into(),
                detail: "answer rate for this sender exceeded; not answered".into(),
                reason: Some("rate_limited".into()),
                peer_id: Some(opened.sender.to_string()),
            });
            handled.done(); // deliberately unanswered
            continue;
        }
        let Ok(permit) = answering.clone().acquire_owned().await else {
            break;
        };
        let handle = handle.clone();
        let ledger = ledger.clone();
        let catalog = catalog.clone();
        let access = access.clone();
        let config = config.clone();
        let journal = journal.clone();
        handle.clone().spawn(async move {
            let _permit = permit;
            let peer = opened.sender;
            let journal = journal.as_ref();
            let answered = answer(
                &handle,
                ledger.as_ref(),
                &catalog,
                &access,
                &config,
                journal,
                opened,
            );
            // The cursor passes this request only once it is answered; a
            // failed (or cancelled) answer is read again after a restart.
            if let Err(e) = answered.await.map(|()| handled.done()) {
                handle.emit(Event::Error {
                    what: "ledger".into(),
                    detail: format!("cannot answer request: {e:#}"),
                    reason: None,
                    peer_id: Some(peer.to_string()),
                });
            }
        });
    }
    Ok(())
}

/// Service requests answered at once (each seals and posts one response).
const MAX_CONCURRENT_ANSWERS: usize = 32;

/// The response to a verified request: the access machine grants (or
/// renews) what exists, and the response describes only those streams
/// (`ledgermesh_protocol::signaling::inbox` decides).
pub fn respond(
    access: &Access,
    catalog: &Catalog,
    peer: libp2p::PeerId,
    request_nonce: [u8; 16],
    req: &ledgermesh_protocol::ServiceRequest,
) -> ServiceResponse {
    let names = signaling::requested_names(req);
    let verdicts = access.update(|m, now| {
        m.handle_request(now, peer, &names, req.hire_secs, |n| catalog.contains(n))
    });
    signaling::response(request_nonce, verdicts, |n| catalog.info(n).cloned())
}

async fn answer(
    handle: &NodeHandle,
    ledger: &dyn Ledger,
    catalog: &Catalog,
    access: &Access,
    config: &ProviderConfig,
    journal: Option<&AnswerJournal>,
    opened: Opened,
) -> anyhow::Result<()> {
    let Signal::Request(req) = opened.signal else {
        tracing::debug!(from = %opened.sender, "ignoring non-request message on stdin");
        return Ok(());
    };
    // Grants are (re)issued whatever the journal says: after a restart they
    // must exist again for the requester to fetch.
    let mut response = respond(access, catalog, opened.sender, opened.nonce, &req);
    let (to, nonce) = (opened.sender, opened.nonce);
    let kind = "service_response";
    let sealed = match journal.map(|j| j.lookup(&to, &nonce)) {
        Some(Answered::Posted) => {
            tracing::info!(%to, "request already answered before a restart; not again");
            return Ok(());
        }
        // Sealed before a crash, perhaps posted: the same bytes again (the
        // requester's replay cache drops a second copy).
        Some(Answered::Pending(bytes)) => Sealed {
            bytes,
            nonce: [0; 16],
        },
        Some(Answered::No) | None => {
            let snapshot = handle.snapshot().await?;
            let private = handle.allow_private_addrs();
            response.addrs = advertised_addrs(&snapshot, config.relay_only, private);
            let signal = Signal::Response(response);
            let sealed = seal_to(handle, to, &signal, config.response_ttl)?;
            if let Some(j) = journal {
                j.intend(&to, &nonce, &sealed.bytes)?;
            }
            sealed
        }
    };
    failpoint("answer:before_post");
    post_prepared(handle, ledger, to, kind, sealed).await?;
    failpoint("answer:after_post");
    if let Some(j) = journal {
        j.posted(&to, &nonce)?;
    }
    Ok(())
}
