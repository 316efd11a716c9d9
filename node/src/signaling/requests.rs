//! Service requests and their responses: each request is sealed (so its
//! nonce is known), registered in the `Outbox` machine, then posted; a router
//! task reads the node's `stdin` inbox and hands each response to the request
//! it answers. Renewals go through the same path as first requests.

use super::{follow_own_inbox, post_prepared, seal_to};
use crate::clock::now_ms;
use crate::events::Event;
use crate::swarm::NodeHandle;
use ledgermesh_ledger::Ledger;
use ledgermesh_protocol::signaling::{Outbox, OutboxError};
use ledgermesh_protocol::{ServiceRequest, ServiceResponse, Signal};
use libp2p::PeerId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

/// Why a request got no response.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// Sealing failed.
    #[error("cannot seal the request: {0}")]
    Seal(#[from] ledgermesh_protocol::SealError),
    /// Posting failed.
    #[error("cannot post the request: {0}")]
    Post(#[from] ledgermesh_ledger::LedgerError),
    /// No answer in time.
    #[error("no service response within {0:?}")]
    Timeout(Duration),
    /// Too many requests in flight.
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    /// The inbox follower stopped.
    #[error("the ledger inbox closed")]
    Closed,
}

impl RequestError {
    /// Machine-readable reason for events.
    pub fn reason(&self) -> &'static str {
        match self {
            RequestError::Seal(_) => "seal",
            RequestError::Post(_) => "unavailable",
            RequestError::Timeout(_) => "timeout",
            RequestError::Outbox(_) => "busy",
            RequestError::Closed => "closed",
        }
    }
}

type Waiters = HashMap<[u8; 16], oneshot::Sender<ServiceResponse>>;

struct Inner {
    handle: NodeHandle,
    ledger: Arc<dyn Ledger>,
    ttl: Duration,
    state: Mutex<(Outbox, Waiters)>,
}

/// Posts requests and awaits their responses; clones share the inbox.
#[derive(Clone)]
pub struct Requester {
    inner: Arc<Inner>,
}

impl Requester {
    /// Follows this node's inbox (cursor under `data_dir`) and routes responses.
    pub async fn start(
        handle: &NodeHandle,
        ledger: &Arc<dyn Ledger>,
        data_dir: Option<&std::path::Path>,
        ttl: Duration,
    ) -> anyhow::Result<Self> {
        let mut inbox = follow_own_inbox(handle, ledger, data_dir).await?;
        let inner = Arc::new(Inner {
            handle: handle.clone(),
            ledger: ledger.clone(),
            ttl,
            state: Mutex::new((Outbox::new(), HashMap::new())),
        });
        let weak = Arc::downgrade(&inner);
        handle.spawn(async move {
            while let Some((opened, _, handled)) = inbox.recv().await {
                handled.done();
                let Some(inner) = weak.upgrade() else { return };
                let Signal::Response(resp) = opened.signal else {
                    continue;
                };
                let waiter = {
                    let mut st = inner.state.lock().unwrap_or_else(|p| p.into_inner());
                    let (outbox, waiters) = &mut *st;
                    outbox.handle_timeout(now_ms());
                    if outbox.handle_response(now_ms(), &opened.sender, &resp.request_nonce) {
                        waiters.remove(&resp.request_nonce)
                    } else {
                        None
                    }
                };
                match waiter {
                    Some(w) => {
                        let _ = w.send(resp);
                    }
                    None => {
                        tracing::info!(from = %opened.sender, "response to no request of ours; ignored")
                    }
                }
            }
        });
        Ok(Self { inner })
    }

    /// Posts `request` to `peer` and waits up to `timeout` for its response.
    pub async fn request(
        &self,
        peer: PeerId,
        request: ServiceRequest,
        timeout: Duration,
    ) -> Result<ServiceResponse, RequestError> {
        let inner = &self.inner;
        let signal = Signal::Request(request);
        let sealed = seal_to(&inner.handle, peer, &signal, inner.ttl)?;
        let nonce = sealed.nonce;
        let (tx, rx) = oneshot::channel();
        {
            let mut st = inner.state.lock().unwrap_or_else(|p| p.into_inner());
            // Posting may take a while on a chain; the waiter's own timeout
            // starts after it, so the outbox allows for both.
            let deadline = now_ms() + 2 * timeout.as_millis() as u64 + 60_000;
            st.0.register(nonce, peer, deadline)?;
            st.1.insert(nonce, tx);
        }
        let settle = |inner: &Inner| {
            let mut st = inner.state.lock().unwrap_or_else(|p| p.into_inner());
            st.0.cancel(&nonce);
            st.1.remove(&nonce);
        };
        // The response can come before the request's own receipt (the
        // provider read it from the pending pool): whichever is first. The
        // post goes on to its receipt either way, and reports it.
        let (handle, ledger) = (inner.handle.clone(), inner.ledger.clone());
        let mut posting = inner.handle.spawn(async move {
            post_prepared(&handle, ledger.as_ref(), peer, signal.kind(), sealed).await
        });
        let mut rx = rx;
        let posted = tokio::select! {
            biased;
            early = &mut rx => Some(early),
            posted = &mut posting => {
                let failed = match posted {
                    Ok(Some(Ok(()))) => None,
                    Ok(Some(Err(e))) => Some(RequestError::Post(e)),
                    Ok(None) | Err(_) => Some(RequestError::Closed),
                };
                if let Some(e) = failed {
                    settle(inner);
                    inner.handle.emit(Event::Error {
                        what: "ledger".into(),
                        detail: e.to_string(),
                        reason: None,
                        peer_id: Some(peer.to_string()),
                    });
                    return Err(e);
                }
                None
            }
        };
        let r = match posted {
            Some(early) => Ok(early),
            None => tokio::time::timeout(timeout, rx).await,
        };
        settle(inner);
        match r {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(_)) => Err(RequestError::Closed),
            Err(_) => Err(RequestError::Timeout(timeout)),
        }
    }
}
