//! Service requests and their responses: each request is sealed (so its
//! nonce is known), registered in the `Outbox` machine, then posted; a router
//! task reads the node's `stdin` inbox and hands each response to the request
//! it answers. Renewals go through the same path as first requests.

use super::{follow_own_inbox, post_prepared, seal_to};
use crate::events::Event;
use crate::swarm::NodeHandle;
use ledgermesh_ledger::Ledger;
use ledgermesh_protocol::signaling::{Done, Outbox, OutboxError, Settled};
use ledgermesh_protocol::Machine;
use ledgermesh_protocol::{ServiceRequest, ServiceResponse, Signal};
use libp2p::PeerId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
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

/// Each waiting request's answer: its response, or how it settled without one.
type Waiters = HashMap<[u8; 16], oneshot::Sender<Result<ServiceResponse, Settled>>>;

/// How long posting a request may take beyond its wait (a chain's receipt).
const POST_ALLOWANCE: Duration = Duration::from_secs(60);

struct Inner {
    handle: NodeHandle,
    ledger: Arc<dyn Ledger>,
    ttl: Duration,
    /// The outbox (every deadline) and the waiters it settles.
    state: Mutex<(Outbox, Waiters)>,
    /// Wakes the router when a deadline may have moved earlier.
    wake: Arc<tokio::sync::Notify>,
    /// The router stopped (the inbox follower ended, the node stopped):
    /// nothing can be answered any more.
    closed: std::sync::atomic::AtomicBool,
}

/// Held by the router: when it ends, however it ends, every waiting
/// request is told `Closed` and later ones are refused at once (the
/// outbox's deadlines would never fire).
struct RouterGone(std::sync::Weak<Inner>);

impl Drop for RouterGone {
    fn drop(&mut self) {
        if let Some(inner) = self.0.upgrade() {
            inner
                .closed
                .store(true, std::sync::atomic::Ordering::Relaxed);
            inner.with(|_, waiters| waiters.clear());
        }
    }
}

impl Inner {
    fn with<T>(&self, f: impl FnOnce(&mut Outbox, &mut Waiters) -> T) -> T {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (outbox, waiters) = &mut *st;
        let out = f(outbox, waiters);
        // Whatever the outbox settled without a response goes to its waiter.
        while let Some(Done { nonce, how, .. }) = outbox.poll_action() {
            if let Some(w) = waiters.remove(&nonce) {
                let _ = w.send(Err(how));
            }
        }
        out
    }
}

/// Forgets a request whose caller stopped waiting (dropped or done).
struct Forget<'a>(&'a Inner, [u8; 16]);

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        let nonce = self.1;
        self.0.with(|outbox, waiters| {
            outbox.cancel(&nonce);
            waiters.remove(&nonce);
        });
    }
}

/// Hands a request in our inbox to the answerer (`requests`, if any: done
/// at once when it is busy or gone, the sender asks again); anything else
/// is done here and returned, for the router.
fn pass_on(
    (opened, at, handled): super::Inbound,
    requests: Option<&tokio::sync::mpsc::Sender<super::Inbound>>,
) -> Option<ledgermesh_protocol::Opened> {
    match (requests, &opened.signal) {
        (Some(to), Signal::Request(_)) => {
            if let Err(e) = to.try_send((opened, at, handled)) {
                tracing::debug!("a request passed over (the answerer is busy or gone)");
                e.into_inner().2.done();
            }
            None
        }
        _ => {
            handled.done();
            Some(opened)
        }
    }
}

/// Posts requests and awaits their responses; clones share the inbox.
#[derive(Clone)]
pub struct Requester {
    inner: Arc<Inner>,
}

impl Requester {
    /// Follows this node's inbox (cursor under `data_dir`) and routes
    /// responses; the outbox's deadlines fire on the same task.
    pub async fn start(
        handle: &NodeHandle,
        ledger: &Arc<dyn Ledger>,
        data_dir: Option<&std::path::Path>,
        ttl: Duration,
    ) -> Result<Self, super::SignalingError> {
        Self::start_answering(handle, ledger, data_dir, ttl, None).await
    }

    /// [`Requester::start`] for a node that also answers: the requests in
    /// the inbox go to `requests` (with their [`Ack`](super::Ack), done
    /// once answered); past its bound, a request is passed over (and its
    /// sender asks again).
    pub async fn start_answering(
        handle: &NodeHandle,
        ledger: &Arc<dyn Ledger>,
        data_dir: Option<&std::path::Path>,
        ttl: Duration,
        requests: Option<tokio::sync::mpsc::Sender<super::Inbound>>,
    ) -> Result<Self, super::SignalingError> {
        let mut inbox = follow_own_inbox(handle, ledger, data_dir).await?;
        let inner = Arc::new(Inner {
            handle: handle.clone(),
            ledger: ledger.clone(),
            ttl,
            state: Mutex::new((Outbox::new(), HashMap::new())),
            wake: Default::default(),
            closed: Default::default(),
        });
        let weak = Arc::downgrade(&inner);
        let wake = inner.wake.clone();
        // The router holds the requester only while it handles something:
        // once every clone is dropped, it ends at its next wake-up.
        let gone = RouterGone(weak.clone());
        handle.spawn(async move {
            let _gone = gone;
            loop {
                let Some(next) = weak.upgrade().map(|i| i.with(|o, _| o.poll_timeout())) else {
                    return;
                };
                let sleep = async {
                    match next {
                        Some(at) => tokio::time::sleep_until(at.into()).await,
                        None => std::future::pending().await,
                    }
                };
                let opened = tokio::select! {
                    got = inbox.recv() => match got {
                        Some(inbound) => match pass_on(inbound, requests.as_ref()) {
                            Some(opened) => opened,
                            None => continue,
                        },
                        None => return,
                    },
                    _ = sleep => {
                        let Some(inner) = weak.upgrade() else { return };
                        inner.with(|o, _| o.handle_timeout(Instant::now()));
                        continue;
                    }
                    _ = wake.notified() => continue,
                };
                let Some(inner) = weak.upgrade() else { return };
                let Signal::Response(resp) = opened.signal else {
                    continue;
                };
                let nonce = resp.request_nonce;
                let waiter = inner.with(|outbox, waiters| {
                    outbox
                        .handle_response(Instant::now(), &opened.sender, &nonce)
                        .then(|| waiters.remove(&nonce))
                        .flatten()
                });
                match waiter {
                    Some(w) => {
                        let _ = w.send(Ok(resp));
                    }
                    None => {
                        tracing::info!(from = %opened.sender, "response to no request of ours; ignored")
                    }
                }
            }
        });
        Ok(Self { inner })
    }

    /// Posts `request` to `peer` and waits up to `timeout` after it is
    /// posted for its response (posting itself may take up to a minute more
    /// on a chain). The outbox holds both deadlines.
    pub async fn request(
        &self,
        peer: PeerId,
        request: ServiceRequest,
        timeout: Duration,
    ) -> Result<ServiceResponse, RequestError> {
        let inner = &*self.inner;
        if inner.closed.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(RequestError::Closed);
        }
        let signal = Signal::Request(request);
        let sealed = seal_to(&inner.handle, peer, &signal, inner.ttl)?;
        let nonce = sealed.nonce;
        let (tx, mut rx) = oneshot::channel();
        inner.with(|outbox, waiters| {
            // Checked under the lock the router's end clears the waiters in.
            if inner.closed.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(RequestError::Closed);
            }
            let post_within = timeout + POST_ALLOWANCE;
            outbox.register(nonce, peer, Instant::now(), post_within, timeout)?;
            waiters.insert(nonce, tx);
            Ok(())
        })?;
        let _forget = Forget(inner, nonce);
        inner.wake.notify_one();
        // The response can come before the request's own receipt (the
        // provider read it from the pending pool): whichever is first. The
        // post goes on to its receipt either way, and reports it.
        let (handle, ledger) = (inner.handle.clone(), inner.ledger.clone());
        let mut posting = inner.handle.spawn(async move {
            post_prepared(&handle, ledger.as_ref(), peer, signal.kind(), sealed).await
        });
        let answer = tokio::select! {
            biased;
            early = &mut rx => early,
            posted = &mut posting => {
                let failed = match posted {
                    Ok(Some(Ok(()))) => None,
                    Ok(Some(Err(e))) => Some(RequestError::Post(e)),
                    Ok(None) | Err(_) => Some(RequestError::Closed),
                };
                if let Some(e) = failed {
                    inner.with(|outbox, _| outbox.handle_post_failed(&nonce));
                    inner.handle.emit(Event::Error {
                        what: crate::events::ErrorPart::Ledger,
                        detail: e.to_string(),
                        reason: None,
                        peer_id: Some(peer.to_string()),
                    });
                    return Err(e);
                }
                inner.with(|outbox, _| outbox.handle_posted(&nonce, Instant::now()));
                inner.wake.notify_one();
                rx.await
            }
        };
        match answer {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(Settled::TimedOut { .. })) => Err(RequestError::Timeout(timeout)),
            Ok(Err(_)) | Err(_) => Err(RequestError::Closed),
        }
    }
}
