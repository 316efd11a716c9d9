//! The relay server's streams: one task per hop request (bounded), which
//! answers a reservation, or opens the stop stream to a circuit's
//! destination and then carries the circuit's bytes both ways.

mod circuit;

use super::behaviour::Shared;
use super::report::Reporter;
use super::RelayLimits;
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use ledgermesh_protocol::payment::wire::RefusalCode;
use ledgermesh_protocol::relay::wire::{self, HopRequest, ReservationGrant, WireError};
use ledgermesh_protocol::relay::{Refusal, Status};
use libp2p::{PeerId, Stream};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Longest wait for a request, or for the destination to answer.
const HANDSHAKE: Duration = Duration::from_secs(10);

/// Hop requests being read or answered at once; more are dropped.
const MAX_HANDSHAKES: usize = 128;

/// How long a reservation waits for its peer's payment channel.
const PAY_WAIT: Duration = Duration::from_secs(5);

/// How often expired reservations are swept.
const SWEEP: Duration = Duration::from_secs(10);

/// The relay server: its state, policy, and how it reaches the swarm.
pub(crate) struct Server {
    /// The hop streams, from the swarm's bounded inbound queue.
    pub(crate) incoming: Option<crate::net::Incoming>,
    pub(crate) shared: Shared,
    pub(crate) limits: RelayLimits,
    pub(crate) reporter: Reporter,
    pub(crate) control: libp2p_stream::Control,
    pub(crate) local: PeerId,
    pub(crate) tasks: crate::tasks::Tasks,
    pub(crate) handshakes: Arc<Semaphore>,
}

/// The permits for hop requests in progress.
pub(crate) fn handshake_permits() -> Arc<Semaphore> {
    Arc::new(Semaphore::new(MAX_HANDSHAKES))
}

impl Server {
    /// Starts serving hop requests as one of the node's tasks.
    pub(crate) fn start(mut self) -> Result<(), &'static str> {
        let incoming = (self.incoming.take()).ok_or("the relay has no hop queue")?;
        let me = Arc::new(self);
        me.tasks.clone().spawn(me.run(incoming));
        Ok(())
    }

    fn state(&self) -> std::sync::MutexGuard<'_, super::behaviour::State> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn run(self: Arc<Self>, mut incoming: crate::net::Incoming) {
        let mut sweep = tokio::time::interval(SWEEP);
        loop {
            tokio::select! {
                next = incoming.recv() => {
                    let Some((peer, stream)) = next else { break };
                    let Ok(permit) = self.handshakes.clone().try_acquire_owned() else {
                        tracing::debug!(%peer, "relay busy with handshakes; hop stream dropped");
                        continue;
                    };
                    let me = self.clone();
                    self.tasks.spawn(async move { me.hop(peer, stream, permit).await });
                }
                _ = sweep.tick() => self.sweep(),
            }
        }
    }

    fn sweep(&self) {
        if let Some(pay) = &self.limits.pay {
            // Reservation time is billed by the sweep.
            let held: Vec<PeerId> = self.state().book.reserved_peers().copied().collect();
            for p in held {
                pay.payees.held_for(&p, SWEEP);
            }
        }
        let gone = {
            let mut st = self.state();
            let gone = st.book.expire(Instant::now());
            for p in &gone {
                st.keep(p, false);
            }
            gone
        };
        for p in gone {
            self.reporter
                .reservation(p, crate::events::ReservationOutcome::TimedOut);
        }
    }

    async fn hop(&self, peer: PeerId, mut stream: Stream, permit: OwnedSemaphorePermit) {
        let request = match tokio::time::timeout(HANDSHAKE, read_msg(&mut stream)).await {
            Ok(Ok(Ok(body))) => wire::decode_hop_request(&body),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "hop stream ended before its request");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "no hop request in time");
                return;
            }
        };
        match request {
            Ok(HopRequest::Reserve) => self.reserve(peer, stream).await,
            Ok(HopRequest::Connect(dst)) => self.connect(peer, dst, stream, permit).await,
            Err(e) => {
                let status = match e {
                    WireError::Unexpected(_) => Status::UnexpectedMessage,
                    _ => Status::MalformedMessage,
                };
                tracing::debug!(%peer, error = %e, "bad hop request");
                let _ = send(&mut stream, &wire::connect_answer(Err(status))).await;
            }
        }
    }

    async fn reserve(&self, peer: PeerId, mut stream: Stream) {
        if let Some(pay) = &self.limits.pay {
            // The payer attaches its channel over the payment protocol; its
            // reservation may arrive first.
            if !pay.payees.wait_paying(&peer, PAY_WAIT).await {
                let t = pay.payees.terms();
                let reason = format!(
                    "no payment channel attached: this relay charges {} wei per MiB and {} per hour, \
                     minimum deposit {} wei (/ledgermesh/pay/1)",
                    t.price_per_mib, t.price_per_hour, t.min_deposit
                );
                pay.payees.refuse(&peer, RefusalCode::NoChannel, &reason);
                self.reporter.refused_for_payment(peer, &reason);
                let status = Status::ReservationRefused;
                self.reporter.reservation_refused(peer, status, reason);
                let _ = send(&mut stream, &wire::reserve_answer(Err(status))).await;
                return;
            }
        }
        let outcome = {
            let mut st = self.state();
            let addrs = st.external(self.local);
            let ip = st.ip_of(&peer);
            if addrs.is_empty() {
                Err(Refusal::Policy(
                    "the relay has no public address to offer".into(),
                ))
            } else {
                let r = st.book.reserve(peer, ip, Instant::now());
                if r.is_ok() {
                    st.keep(&peer, true);
                }
                r.map(|r| (r, addrs))
            }
        };
        match outcome {
            Ok((r, addrs)) => {
                let limit = self.limits.circuit_limit(&peer, &peer);
                let grant = ReservationGrant {
                    expire_unix_s: crate::clock::now_ms() / 1000
                        + self.limits.reservation_ttl.as_secs(),
                    addrs: addrs.iter().map(|a| a.to_vec()).collect(),
                    limit,
                };
                self.reporter.reservation(
                    peer,
                    match r.renewed {
                        true => crate::events::ReservationOutcome::Renewed,
                        false => crate::events::ReservationOutcome::Accepted,
                    },
                );
                if let Err(e) = send(&mut stream, &wire::reserve_answer(Ok(&grant))).await {
                    tracing::debug!(%peer, error = %e, "reservation answer not delivered");
                }
            }
            Err(refusal) => {
                let status = refusal.reservation_status();
                self.reporter
                    .reservation_refused(peer, status, refusal.to_string());
                let _ = send(&mut stream, &wire::reserve_answer(Err(status))).await;
            }
        }
    }
}

/// Writes `bytes` and flushes.
async fn send<S: AsyncWrite + Unpin>(s: &mut S, bytes: &[u8]) -> std::io::Result<()> {
    s.write_all(bytes).await?;
    s.flush().await
}

/// Reads one length-prefixed message without reading past it (what
/// follows a circuit's handshake is the circuit's data).
async fn read_msg<S: AsyncRead + Unpin>(s: &mut S) -> std::io::Result<Result<Vec<u8>, WireError>> {
    let mut prefix = Vec::with_capacity(2);
    let len = loop {
        let mut b = [0u8];
        s.read_exact(&mut b).await?;
        prefix.push(b[0]);
        match wire::frame_len(&prefix) {
            Ok(Some((len, _))) => break len,
            Ok(None) => {}
            Err(e) => return Ok(Err(e)),
        }
    };
    let mut body = vec![0; len];
    s.read_exact(&mut body).await?;
    Ok(Ok(body))
}
