//! The provider role: sells named streams to many consumers at once.
//!
//! It holds a reservation on each relay, follows its `stdin` topic, answers
//! every valid service request with a sealed service response (its addresses,
//! the streams it accepts, the ones it refuses and why), and serves the
//! streams over `/ledgermesh/stream/1`.

use crate::access::audit_log::AuditLog;
use crate::access::grant_log::{Grant, GrantLog};
use crate::access::Access;
use crate::events::Event;
use crate::signaling::journal::{failpoint, AnswerJournal, Answered};
use crate::signaling::{follow_own_inbox, post_prepared, seal_to, DEFAULT_TTL};
use crate::source::Source;
use crate::streams::{serve, Catalog};
use crate::swarm::NodeHandle;
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
    /// Pay priced relays from this account (`--relay-deposit`).
    pub relay_payer: Option<crate::protocols::pay::PayerConfig>,
    /// Sell the streams at a price (`--price-per-mib`): the buyers'
    /// accounts; free when `None`. The caller claims on shutdown.
    pub price: Option<crate::protocols::pay::Payees>,
    /// Ring size of each live stream, in bytes (`--live-buffer`).
    pub live_buffer: u64,
    /// An `exec:` command that exits ends its stream (`--exec-once`).
    pub exec_once: bool,
    /// Tests only: flip the byte at this offset of a live stream once,
    /// after signing (`--fault-flip-live-byte`).
    pub fault_flip_live_byte: Option<u64>,
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
            relay_payer: None,
            price: None,
            live_buffer: crate::streams::live::DEFAULT_BUFFER,
            exec_once: false,
            fault_flip_live_byte: None,
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

/// Why a provider could not start, or could not answer one request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProviderError {
    /// A stream's source could not be opened.
    #[error(transparent)]
    Catalog(std::io::Error),
    /// The ACL file could not be read.
    #[error(transparent)]
    Acl(#[from] crate::access::acl_file::AclFileError),
    /// The data directory could not be used.
    #[error("{what}: {error}")]
    Disk {
        /// What was being done.
        what: &'static str,
        /// What went wrong.
        error: std::io::Error,
    },
    /// The node stopped.
    #[error(transparent)]
    Node(#[from] crate::net::NodeError),
    /// Sealing, posting or following on the ledger failed.
    #[error(transparent)]
    Signaling(#[from] crate::signaling::SignalingError),
}

impl ProviderError {
    fn disk(what: &'static str) -> impl FnOnce(std::io::Error) -> Self {
        move |error| ProviderError::Disk { what, error }
    }
}

impl From<ledgermesh_protocol::SealError> for ProviderError {
    fn from(e: ledgermesh_protocol::SealError) -> Self {
        ProviderError::Signaling(e.into())
    }
}

impl From<ledgermesh_ledger::LedgerError> for ProviderError {
    fn from(e: ledgermesh_ledger::LedgerError) -> Self {
        ProviderError::Signaling(e.into())
    }
}

/// Runs the provider until the node stops. Returns early only on a setup
/// error (an unreadable source, a bad ACL file).
pub async fn run(
    handle: NodeHandle,
    ledger: Arc<dyn Ledger>,
    config: ProviderConfig,
) -> Result<(), ProviderError> {
    let (catalog, access) = open_shop(&handle, &config).await?;
    // Priced streams: the buyers' accounts, paid over /ledgermesh/pay/1.
    let payees = config.price.clone();
    if let Some(p) = &payees {
        if let Some(dir) = &config.data_dir {
            // Vouchers left unclaimed by a previous run are claimed now.
            (p.keep_vouchers_in(dir).await).map_err(ProviderError::disk("keeping vouchers"))?;
        }
        handle.ops().report_payees(p.book_reader());
        handle.spawn(p.clone().serve(handle.stream_control()));
    }
    let disk = open_disk(&handle, &config, &access)?;
    // Streams are served from here on: before the relays and the address
    // round, so a buyer reaching us early is never told we lack the protocol.
    let shop = crate::streams::Shop {
        catalog: catalog.clone(),
        access: access.clone(),
        payees: payees.clone(),
    };
    handle.spawn(serve(handle.clone(), shop, config.serve_limits));
    // Where we stand (relays, then our public address) and the ledger, side
    // by side; requests wait in the inbox until we know what to answer.
    let payer = config.relay_payer.clone().map(|mut payer| {
        // Billed as our buyers' circuits' destination: for them only.
        let consent = payer.consent.get_or_insert_with(Default::default).clone();
        crate::roles::paying::consent_from_access(&handle, &access, consent);
        payer
    });
    // A priced relay holds our reservation until our channel is attached.
    let settle =
        crate::roles::paying::settle(&handle, payer.as_ref(), &config.observers, config.quorum);
    let follow = follow_own_inbox(&handle, &ledger, config.data_dir.as_deref());
    let (settled, inbox) = tokio::join!(settle, follow);
    settled?;
    let desk = Desk {
        handle,
        ledger,
        catalog,
        access,
        config,
        disk,
    };
    desk.answer_all(inbox?).await;
    Ok(())
}

/// The streams (live sources started, as the node's tasks) and who may
/// fetch them (grants, and the ACL file, watched).
async fn open_shop(
    handle: &NodeHandle,
    config: &ProviderConfig,
) -> Result<(Arc<Catalog>, Access), ProviderError> {
    let live = crate::streams::live::LiveOptions {
        key: handle.keypair().clone(),
        buffer: config.live_buffer,
        exec_once: config.exec_once,
        emitter: handle.emitter().clone(),
        // Live sources stop with the node.
        tasks: handle.tasks().clone(),
        fault_flip: config.fault_flip_live_byte,
    };
    let catalog = Catalog::build(config.streams.clone(), Some(&live)).await;
    let catalog = Arc::new(catalog.map_err(ProviderError::Catalog)?);
    let access = Access::new(
        config.max_grant_secs,
        config.audit.clone(),
        handle.emitter().clone(),
    );
    if let Some(path) = &config.acl {
        access.load_acl_file(path)?;
        access.watch_acl_file(path.clone());
    }
    Ok((catalog, access))
}

/// The answer journal and the grant log (with a data directory): grants
/// sold before a restart are honoured after it; both are tidied hourly.
fn open_disk(
    handle: &NodeHandle,
    config: &ProviderConfig,
    access: &Access,
) -> Result<Durable, ProviderError> {
    let Some(dir) = &config.data_dir else {
        return Ok(Durable::default());
    };
    let journal =
        AnswerJournal::open(dir).map_err(ProviderError::disk("opening the answer journal"))?;
    let (grants, live) = GrantLog::open(dir, crate::clock::now_ms())
        .map_err(ProviderError::disk("opening the grant log"))?;
    let restored = access.update(|m, now| m.restore(now, &live));
    if restored > 0 {
        tracing::info!(restored, "grants from before the restart restored");
    }
    let disk = Durable {
        journal: Some(journal),
        grants: Some(grants),
    };
    handle.spawn(tidy_hourly(disk.clone(), access.clone()));
    Ok(disk)
}

/// Hourly: old journal entries go (each answer leaves one file), and the
/// grant log is compacted to the live grants.
async fn tidy_hourly(disk: Durable, access: Access) {
    let mut hourly = tokio::time::interval(std::time::Duration::from_secs(3600));
    hourly.tick().await; // both were tidied on opening
    loop {
        hourly.tick().await;
        let live = access.record(|m, now| m.live_grants(now));
        let disk = disk.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(j) = disk.journal {
                j.prune();
            }
            if let Some(g) = disk.grants {
                if let Err(e) = g.compact(&live) {
                    tracing::warn!(error = %e, "grant log compaction failed");
                }
            }
        })
        .await;
    }
}

/// What a provider keeps on disk (with a data directory).
#[derive(Clone, Default)]
struct Durable {
    journal: Option<AnswerJournal>,
    grants: Option<GrantLog>,
}

/// Where service requests are answered.
struct Desk {
    handle: NodeHandle,
    ledger: Arc<dyn Ledger>,
    catalog: Arc<Catalog>,
    access: Access,
    config: ProviderConfig,
    disk: Durable,
}

impl Desk {
    /// Answers every request in `inbox`, each in a task of its own, until
    /// the inbox ends. Answers in flight are bounded: past the bound the
    /// inbox waits, which slows the follower, not memory. Each answer is a
    /// ledger post at our cost: per sender, a burst and then a rate; the
    /// rest go unanswered (and are said so).
    async fn answer_all(self, mut inbox: tokio::sync::mpsc::Receiver<crate::signaling::Inbound>) {
        let me = Arc::new(self);
        let answering = Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_ANSWERS));
        let mut limiter = SenderLimiter::new(me.config.answer_limits);
        while let Some((opened, _, handled)) = inbox.recv().await {
            let is_request = matches!(opened.signal, Signal::Request(_));
            if is_request && !limiter.allow(std::time::Instant::now(), opened.sender) {
                me.handle.emit(Event::Error {
                    what: crate::events::ErrorPart::ServiceRequest,
                    detail: "answer rate for this sender exceeded; not answered".into(),
                    reason: Some("rate_limited"),
                    peer_id: Some(opened.sender.to_string()),
                });
                handled.done(); // deliberately unanswered
                continue;
            }
            let Ok(permit) = answering.clone().acquire_owned().await else {
                break;
            };
            let desk = me.clone();
            me.handle.spawn(async move {
                let _permit = permit;
                desk.answer_one(opened, handled).await
            });
        }
    }

    /// Answers one message; the cursor passes it only once it is answered
    /// (a failed or cancelled answer is read again after a restart).
    async fn answer_one(&self, opened: Opened, handled: crate::signaling::Ack) {
        let peer = opened.sender;
        let answered = answer(
            &self.handle,
            self.ledger.as_ref(),
            &self.catalog,
            &self.access,
            &self.config,
            &self.disk,
            opened,
        );
        if let Err(e) = answered.await.map(|()| handled.done()) {
            self.handle.emit(Event::Error {
                what: crate::events::ErrorPart::Ledger,
                detail: format!("cannot answer request: {e}"),
                reason: None,
                peer_id: Some(peer.to_string()),
            });
        }
    }
}

/// Service requests answered at once (each seals and posts one response).
const MAX_CONCURRENT_ANSWERS: usize = 32;

/// The response to a verified request: the access machine grants (or
/// renews) what exists, and the response describes only those streams
/// (`ledgermesh_protocol::signaling::inbox` decides).
/// Also returns the grants made or renewed (to keep on disk).
pub fn respond(
    access: &Access,
    catalog: &Catalog,
    peer: libp2p::PeerId,
    request_nonce: [u8; 16],
    req: &ledgermesh_protocol::ServiceRequest,
) -> (ServiceResponse, Vec<Grant>) {
    use ledgermesh_protocol::access::RequestVerdict;
    let names = signaling::requested_names(req);
    let verdicts = access.update(|m, now| {
        m.handle_request(now, peer, &names, req.hire_secs, |n| catalog.contains(n))
    });
    let grants = (verdicts.iter())
        .filter_map(|v| match v {
            RequestVerdict::Granted {
                stream, expires_ms, ..
            } => Some((peer, stream.clone(), *expires_ms)),
            _ => None,
        })
        .collect();
    let response = signaling::response(request_nonce, verdicts, |n| catalog.info(n).cloned());
    (response, grants)
}

async fn answer(
    handle: &NodeHandle,
    ledger: &dyn Ledger,
    catalog: &Catalog,
    access: &Access,
    config: &ProviderConfig,
    disk: &Durable,
    opened: Opened,
) -> Result<(), ProviderError> {
    let (journal, grant_log) = (disk.journal.as_ref(), disk.grants.as_ref());
    let Signal::Request(req) = opened.signal else {
        tracing::debug!(from = %opened.sender, "ignoring non-request message on stdin");
        return Ok(());
    };
    // Grants are (re)issued whatever the journal says: after a restart they
    // must exist again for the requester to fetch. They reach the disk
    // before the answer that announces them is posted.
    let (mut response, grants) = respond(access, catalog, opened.sender, opened.nonce, &req);
    if !response.accepted.is_empty() {
        response.price_per_mib = config.price.as_ref().map_or(0, |p| p.terms().price_per_mib);
    }
    if let Some(log) = grant_log.cloned() {
        let written = tokio::task::spawn_blocking(move || log.append(&grants)).await;
        (written.unwrap_or_else(|e| Err(std::io::Error::other(e))))
            .map_err(ProviderError::disk("writing the grant log"))?;
    }
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
                (j.intend(&to, &nonce, &sealed.bytes))
                    .map_err(ProviderError::disk("writing the answer journal"))?;
            }
            sealed
        }
    };
    failpoint("answer:before_post");
    post_prepared(handle, ledger, to, kind, sealed).await?;
    failpoint("answer:after_post");
    if let Some(j) = journal {
        (j.posted(&to, &nonce)).map_err(ProviderError::disk("writing the answer journal"))?;
    }
    Ok(())
}
