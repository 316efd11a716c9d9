//! The tunnel over the ledger: a peer named by its PeerId alone is asked
//! for its addresses through the ledger (a service request for the stream
//! `vpn`, sealed to it, as a buyer asks a seller), and such a request from
//! an allowed peer is answered with ours (sealed back). A stranger's request
//! goes unanswered and is written to the audit log. The nodes then dial each
//! other: directly, or through a relay and DCUtR, as streams do.

use crate::protocols::vpn::Vpn;
use crate::signaling::requests::Requester;
use crate::signaling::{post_prepared, seal_to, Inbound, DEFAULT_TTL};
use crate::swarm::NodeHandle;
use ledgermesh_ledger::Ledger;
use ledgermesh_protocol::signaling::{RateLimits, SenderLimiter};
use ledgermesh_protocol::{ServiceRequest, ServiceResponse, Signal};
use libp2p::PeerId;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// The stream a tunnel is asked for by.
pub const STREAM: &str = "vpn";
/// How long an asked peer has to answer once the request is posted.
const ANSWER_WITHIN: Duration = Duration::from_secs(60);
/// The wait before asking a peer again, doubling up to the second.
const ASK_AGAIN: (Duration, Duration) = (Duration::from_secs(15), Duration::from_secs(600));
/// Requests waiting for the answerer.
const REQUESTS: usize = 64;
/// Answers to one peer (each a post at our cost): a few at once, then one
/// a minute; an honest peer asks once per lost connection, backing off.
const ANSWER_LIMITS: RateLimits = RateLimits {
    burst: 3,
    per_minute: 1,
    max_tracked: ledgermesh_protocol::vpn::router::MAX_PEERS,
};

/// The ledger's part of the tunnel: follows our inbox, answers allowed
/// peers' requests (in a task of the node's), and asks peers.
#[derive(Clone)]
pub(super) struct Signaling {
    handle: NodeHandle,
    requester: Requester,
}

impl Signaling {
    /// Follows our inbox on `ledger` (its cursor under `data_dir`) and
    /// answers the requests of the peers `vpn`'s router allows.
    pub(super) async fn start(
        handle: &NodeHandle,
        ledger: Arc<dyn Ledger>,
        data_dir: Option<&std::path::Path>,
        vpn: Vpn,
    ) -> Result<Self, crate::signaling::SignalingError> {
        let (tx, rx) = mpsc::channel(REQUESTS);
        let requester =
            Requester::start_answering(handle, &ledger, data_dir, DEFAULT_TTL, Some(tx)).await?;
        handle.spawn(answer_all(handle.clone(), ledger, rx, vpn));
        Ok(Self {
            handle: handle.clone(),
            requester,
        })
    }

    /// Keeps `peer` reached: while it is not connected, asks it for its
    /// addresses through the ledger and dials them, again after a back-off
    /// (each ask is a post on the ledger), until the node stops.
    pub(super) async fn keep_reached(self, peer: PeerId) {
        let handle = &self.handle;
        let mut wait = ASK_AGAIN.0;
        loop {
            // Watched before looking, so that no close goes unseen.
            let Ok(mut closes) = handle.watch_closes(peer).await else {
                return;
            };
            let Ok(snapshot) = handle.snapshot().await else {
                return;
            };
            if snapshot.connections.iter().any(|c| c.peer == peer) {
                tokio::select! {
                    () = handle.stopping() => return,
                    () = closes.closed() => continue,
                }
            }
            let private = handle.allow_private_addrs();
            let request = ServiceRequest {
                addrs: crate::roles::provider::advertised_addrs(&snapshot, false, private),
                streams: vec![STREAM.to_string()],
                hire_secs: 0,
            };
            let reached = match self.requester.request(peer, request, ANSWER_WITHIN).await {
                // Where it says, as a buyer dials a seller: public ones
                // only (unless --local), a bounded number.
                Ok(answer) => match handle.dial_candidates(&answer.addrs) {
                    addrs if addrs.is_empty() => Err("it answered with no address to dial".into()),
                    addrs => handle.dial(peer, addrs).await.map_err(|e| e.to_string()),
                },
                Err(e) => Err(e.to_string()),
            };
            match reached {
                Ok(()) => wait = ASK_AGAIN.0,
                Err(e) => {
                    tracing::info!(%peer, error = %e, "vpn peer not reached through the ledger yet");
                    tokio::select! {
                        () = handle.stopping() => return,
                        () = tokio::time::sleep(wait) => {}
                    }
                    wait = (wait * 2).min(ASK_AGAIN.1);
                }
            }
        }
    }
}

/// Answers each request in `requests`, one at a time (each is a post at
/// our cost, so per sender a burst and then a rate): an allowed peer's for
/// the stream `vpn` with our addresses (and we dial its own); anyone else's
/// not at all, audited.
async fn answer_all(
    handle: NodeHandle,
    ledger: Arc<dyn Ledger>,
    mut requests: mpsc::Receiver<Inbound>,
    vpn: Vpn,
) {
    let mut limiter = SenderLimiter::new(ANSWER_LIMITS);
    while let Some((opened, _, handled)) = requests.recv().await {
        let peer = opened.sender;
        let Signal::Request(request) = opened.signal else {
            handled.done();
            continue;
        };
        let wanted = request.streams.iter().any(|s| s == STREAM);
        if !wanted || !vpn.router().is_allowed(&peer) {
            tracing::debug!(%peer, "a vpn request from a peer not allowed; unanswered");
            vpn.audit_refusal(&handle, peer);
            handled.done();
            continue;
        }
        if !limiter.allow(Instant::now(), peer) {
            tracing::info!(%peer, "vpn requests from this peer too often; unanswered");
            handled.done();
            continue;
        }
        if let Err(e) = answer(&handle, ledger.as_ref(), peer, opened.nonce).await {
            // It asks again; the cursor goes on.
            tracing::warn!(%peer, error = %e, "cannot answer a vpn request");
        }
        handled.done();
        // It may be reachable where it says (a public host): meet it there
        // too, whoever is first (public addresses only, a bounded number).
        let addrs = handle.dial_candidates(&request.addrs);
        if !addrs.is_empty() {
            let h = handle.clone();
            handle.spawn(async move { h.dial(peer, addrs).await });
        }
    }
}

/// Why a request went unanswered.
#[derive(Debug, thiserror::Error)]
enum AnswerError {
    /// The node stopped.
    #[error("the node stopped")]
    Stopped,
    /// The answer could not be sealed.
    #[error("sealing the answer: {0}")]
    Seal(#[from] ledgermesh_protocol::SealError),
    /// Or posted.
    #[error(transparent)]
    Ledger(#[from] ledgermesh_ledger::LedgerError),
}

/// Posts our addresses to `peer`, sealed, as the answer to its request.
async fn answer(
    handle: &NodeHandle,
    ledger: &dyn Ledger,
    peer: PeerId,
    request_nonce: [u8; 16],
) -> Result<(), AnswerError> {
    let snapshot = (handle.snapshot().await).map_err(|_| AnswerError::Stopped)?;
    let private = handle.allow_private_addrs();
    let response = ServiceResponse {
        request_nonce,
        addrs: crate::roles::provider::advertised_addrs(&snapshot, false, private),
        ..Default::default()
    };
    let sealed = seal_to(handle, peer, &Signal::Response(response), DEFAULT_TTL)?;
    Ok(post_prepared(handle, ledger, peer, "service_response", sealed).await?)
}
