//! The cloneable handle every other part of the node holds: commands go to
//! the event loop over a bounded channel with oneshot replies.

use crate::events::{Emitter, Event};
pub use crate::net::{
    CloseWatch, ConnInfo, DialError, NetSignals, NodeError, PublicView, Snapshot, StreamInbox,
};
use crate::protocols::observe::ObserveError;
use ledgermesh_proto::v1::ObserveResponse;
use ledgermesh_protocol::consensus::Verdict;
use libp2p::swarm::ConnectionId;
use libp2p::{identity::Keypair, Multiaddr, PeerId};
use std::future::Future;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

/// Addresses of one peer dialed at once, at most.
pub const MAX_DIAL_CANDIDATES: usize = 16;

pub(super) enum Command {
    Dial {
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        reply: oneshot::Sender<Result<(), DialError>>,
    },
    /// A connection over `addr` beside any already open to `peer`; the
    /// reply names it.
    DialAlso {
        peer: PeerId,
        addr: Multiaddr,
        reply: oneshot::Sender<Result<ConnectionId, DialError>>,
    },
    /// Closes one connection (one we opened for a purpose now served).
    CloseConnection(ConnectionId),
    /// Our public QUIC address, decided apart from the main verdict.
    SetPublicQuic(Option<Multiaddr>),

    Snapshot(oneshot::Sender<Snapshot>),
    WaitRelays(oneshot::Sender<()>),
    /// `relay` (deferred) may be asked for a reservation now.
    Reserve(PeerId),
    WaitListening(oneshot::Sender<Snapshot>),
    Observe {
        peer: PeerId,
        dial_back: bool,
        reply: oneshot::Sender<Result<ObserveResponse, ObserveError>>,
    },
    WatchCloses(PeerId, mpsc::Sender<()>),
    SetPublic(PublicView),
    /// Close every connection, then stop (the loop task ends).
    Shutdown,
    /// Close every connection to a peer (and so any reservation on it).
    Disconnect(PeerId),
    /// Dial `peer` at `addr` from a fresh port (a registered spray, see
    /// [`super::punch`]); the outcome comes through the spray's report.
    DialFresh {
        peer: PeerId,
        addr: Multiaddr,
    },
    /// The reply fires with the remote address once a direct connection to
    /// the peer is up (at once when one already is).
    WaitDirect(PeerId, oneshot::Sender<Multiaddr>),
}

/// Our accounts with payees, by payee.
pub(super) type PayerStates = std::sync::Arc<
    std::sync::Mutex<
        std::collections::HashMap<
            PeerId,
            std::sync::Arc<tokio::sync::Mutex<Option<crate::protocols::pay::payer::PayerState>>>,
        >,
    >,
>;

/// A cloneable handle on a running node.
#[derive(Clone)]
pub struct NodeHandle {
    pub(super) peer_id: PeerId,
    pub(super) keypair: Keypair,
    pub(super) commands: mpsc::Sender<Command>,
    pub(super) control: libp2p_stream::Control,
    pub(super) meters: crate::ops::metered::RelayMeters,
    pub(super) stream_meters: crate::ops::metered::RelayMeters,
    pub(super) payers: PayerStates,
    pub(super) relays: Vec<(PeerId, Multiaddr)>,
    /// Reservations wait for [`NodeHandle::reserve`] (terms first).
    pub(super) defers_reservations: bool,
    pub(super) emitter: Emitter,
    pub(super) ops: std::sync::Arc<crate::ops::Ops>,
    pub(super) signals: watch::Receiver<NetSignals>,
    pub(super) tasks: crate::tasks::Tasks,
    /// The event loop alone: it outlives the node's tasks at shutdown.
    pub(super) event_loop: crate::tasks::Tasks,
    pub(super) allow_private: bool,
    pub(super) punch: super::punch::PunchHandle,
    pub(super) stream_inbox: std::sync::Arc<std::sync::Mutex<Option<StreamInbox>>>,
    pub(super) fair_in: std::sync::Arc<crate::streams::fair::FairGate>,
}

impl std::fmt::Debug for NodeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeHandle")
            .field("peer_id", &self.peer_id)
            .field("name", &self.emitter.node())
            .finish_non_exhaustive()
    }
}

impl NodeHandle {
    /// This node's PeerId.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// This node's identity key.
    pub fn keypair(&self) -> &Keypair {
        &self.keypair
    }

    /// The node's event emitter (telemetry only: nothing should steer by it).
    pub fn emitter(&self) -> &Emitter {
        &self.emitter
    }

    /// Publishes an event under this node's label.
    pub fn emit(&self, event: Event) {
        self.emitter.emit(event);
    }

    /// Asks `relay` (one of the node's relays) for a reservation now; for
    /// nodes whose reservations are deferred. Its outcome is reported like
    /// any reservation's, and [`NodeHandle::wait_relays`] waits for it.
    pub async fn reserve(&self, relay: PeerId) -> Result<(), NodeError> {
        if !self.relays.iter().any(|(p, _)| *p == relay) {
            return Err(NodeError::Stopped);
        }
        self.commands
            .send(Command::Reserve(relay))
            .await
            .map_err(|_| NodeError::Stopped)
    }

    /// Our account with payee `peer` (kept across its pay sessions, so a
    /// payer that reconnects goes on from what it measured and signed).
    pub fn payer_state(
        &self,
        peer: PeerId,
    ) -> std::sync::Arc<tokio::sync::Mutex<Option<crate::protocols::pay::payer::PayerState>>> {
        let mut m = self.payers.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(peer).or_default().clone()
    }

    /// Where we stand with each payee (the payments report).
    pub async fn payer_report(&self) -> Vec<serde_json::Value> {
        let states: Vec<_> = {
            let m = self.payers.lock().unwrap_or_else(|p| p.into_inner());
            m.iter().map(|(p, s)| (*p, s.clone())).collect()
        };
        let mut out = vec![];
        for (peer, st) in states {
            if let Some(s) = st.lock().await.as_ref() {
                out.push(s.report(&peer));
            }
        }
        out.sort_by(|a, b| a["channel"].as_str().cmp(&b["channel"].as_str()));
        out
    }

    /// The share of this node's receiving between the streams it fetches
    /// (by bytes; see `ledgermesh_protocol::stream::fair`).
    pub fn fair_in(&self) -> &std::sync::Arc<crate::streams::fair::FairGate> {
        &self.fair_in
    }

    /// Stream bytes received from `peer` (what a priced provider bills).
    pub fn stream_meter(&self, peer: PeerId) -> std::sync::Arc<std::sync::atomic::AtomicU64> {
        self.stream_meters.of(peer)
    }

    /// Closes every connection to `peer` (a relay we stop using: its
    /// reservation ends with them).
    pub async fn disconnect(&self, peer: PeerId) {
        let _ = self.commands.send(Command::Disconnect(peer)).await;
    }

    /// The relays this node holds (or asked for) reservations on.
    pub fn relays(&self) -> &[(PeerId, Multiaddr)] {
        &self.relays
    }

    /// Whether each relay waits for [`NodeHandle::reserve`] before it is
    /// asked for a reservation.
    pub fn defers_reservations(&self) -> bool {
        self.defers_reservations
    }

    /// The operator's view: streams counted, metrics, a relay's tables.
    pub fn ops(&self) -> &std::sync::Arc<crate::ops::Ops> {
        &self.ops
    }

    /// Bytes through circuits of `relay`, by our count (what it bills).
    pub fn relay_meter(&self, relay: PeerId) -> std::sync::Arc<std::sync::atomic::AtomicU64> {
        self.meters.of(relay)
    }

    /// A control for opening and accepting data streams.
    pub fn stream_control(&self) -> libp2p_stream::Control {
        self.control.clone()
    }

    /// Whether this node dials and announces non-global addresses too
    /// ([`NodeConfig::allow_private_addrs`](super::NodeConfig)).
    pub fn allow_private_addrs(&self) -> bool {
        self.allow_private
    }

    /// Of `addrs` (from a stranger: a response, a command line), the ones
    /// this node may dial: global ones unless private ones are allowed,
    /// deduplicated, at most [`MAX_DIAL_CANDIDATES`].
    pub fn dial_candidates(&self, addrs: &[Multiaddr]) -> Vec<Multiaddr> {
        ledgermesh_protocol::path::scope::dial_candidates(
            addrs,
            self.allow_private,
            MAX_DIAL_CANDIDATES,
        )
    }

    /// The node's inbound data streams, for its stream server; from now on
    /// peers may open them. `None` when already taken (one server a node).
    pub fn take_stream_inbox(&self) -> Option<StreamInbox> {
        let inbox = self
            .stream_inbox
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()?;
        inbox
            .accepting
            .store(true, std::sync::atomic::Ordering::Relaxed);
        Some(inbox)
    }

    /// The QUIC transport's spray and probe controls (hard-NAT traversal).
    pub fn punch(&self) -> &super::punch::PunchHandle {
        &self.punch
    }

    /// Dials `peer` at `addr` from a fresh port: with a spray registered
    /// for `addr` ([`super::punch::PunchHandle::spray`]), from many.
    pub async fn dial_fresh(&self, peer: PeerId, addr: Multiaddr) -> Result<(), NodeError> {
        (self.commands.send(Command::DialFresh { peer, addr }).await)
            .map_err(|_| NodeError::Stopped)
    }

    /// Registers a wait for a direct connection to `peer`: the receiver
    /// gets its remote address once one is up (at once if one is already).
    /// `None` when the node has stopped.
    pub async fn wait_direct(&self, peer: PeerId) -> Option<oneshot::Receiver<Multiaddr>> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::WaitDirect(peer, reply))
            .await
            .ok()?;
        Some(rx)
    }

    /// The node's network changes.
    pub fn signals(&self) -> watch::Receiver<NetSignals> {
        self.signals.clone()
    }

    async fn ask<T>(&self, cmd: impl FnOnce(oneshot::Sender<T>) -> Command) -> Option<T> {
        let (reply, rx) = oneshot::channel();
        self.commands.send(cmd(reply)).await.ok()?;
        rx.await.ok()
    }

    /// Dials `peer` at all `addrs` at once; resolves when any connection to it is up.
    pub async fn dial(&self, peer: PeerId, addrs: Vec<Multiaddr>) -> Result<(), DialError> {
        self.ask(|reply| Command::Dial { peer, addrs, reply })
            .await
            .unwrap_or(Err(DialError::Stopped))
    }

    /// Opens a connection to `peer` over `addr` even when one is open
    /// already (a QUIC connection beside a TCP one, to be observed on);
    /// returns its id, for [`NodeHandle::close_connection`].
    pub async fn dial_also(
        &self,
        peer: PeerId,
        addr: Multiaddr,
    ) -> Result<ConnectionId, DialError> {
        self.ask(|reply| Command::DialAlso { peer, addr, reply })
            .await
            .unwrap_or(Err(DialError::Stopped))
    }

    /// Closes the connection `id` (and nothing else).
    pub async fn close_connection(&self, id: ConnectionId) {
        let _ = self.commands.send(Command::CloseConnection(id)).await;
    }

    /// Records the public QUIC address decided by a QUIC round.
    pub async fn set_public_quic(&self, addr: Option<Multiaddr>) {
        let _ = self.commands.send(Command::SetPublicQuic(addr)).await;
    }

    /// The node's addresses and connections.
    pub async fn snapshot(&self) -> Result<Snapshot, NodeError> {
        self.ask(Command::Snapshot).await.ok_or(NodeError::Stopped)
    }

    /// Resolves once every configured relay accepted or refused our reservation.
    pub async fn wait_relays(&self) -> Result<(), NodeError> {
        self.ask(Command::WaitRelays)
            .await
            .ok_or(NodeError::Stopped)
    }

    /// Resolves once every configured listener reported an address.
    pub async fn wait_listening(&self) -> Result<Snapshot, NodeError> {
        self.ask(Command::WaitListening)
            .await
            .ok_or(NodeError::Stopped)
    }

    /// Asks a connected `peer` which address it sees us at (and to dial it back).
    pub async fn observe(
        &self,
        peer: PeerId,
        dial_back: bool,
    ) -> Result<ObserveResponse, ObserveError> {
        let once = || async {
            self.ask(|reply| Command::Observe {
                peer,
                dial_back,
                reply,
            })
            .await
            .unwrap_or(Err(ObserveError::Stopped))
        };
        match once().await {
            // The request went out on a connection that was closing (the
            // observer's own dial-back probe, typically): ask again once,
            // on whichever connection remains.
            Err(ObserveError::Failed(
                libp2p::request_response::OutboundFailure::ConnectionClosed,
            )) => once().await,
            other => other,
        }
    }

    /// A watch that wakes whenever a connection to `peer` closes.
    pub async fn watch_closes(&self, peer: PeerId) -> Result<CloseWatch, NodeError> {
        let (tx, rx) = mpsc::channel(1);
        self.commands
            .send(Command::WatchCloses(peer, tx))
            .await
            .map_err(|_| NodeError::Stopped)?;
        Ok(CloseWatch::new(rx))
    }

    /// Records an address-consensus verdict.
    pub async fn set_public(&self, verdict: Verdict, udp: bool) {
        let view = PublicView {
            addr: verdict
                .addr
                .map(|a| crate::addr::socket_to_multiaddr(a, udp)),
            ip: verdict.ip,
            mapping: verdict.mapping,
            quic: None,
        };
        let _ = self.commands.send(Command::SetPublic(view)).await;
    }

    /// Runs `task` as one of the node's own: it is cancelled (dropped at
    /// its next await) when the node shuts down, and shutdown waits for it.
    /// Resolves to `None` when cancelled.
    pub fn spawn<F>(&self, task: F) -> JoinHandle<Option<F::Output>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tasks.spawn(task)
    }

    /// Runs `task` as one of the node's own without cancelling it at
    /// shutdown: shutdown waits (up to 5 s) for it, and it must end by itself
    /// once [`NodeHandle::stopping`] resolves (to finish cleanly).
    pub fn spawn_tracked<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tasks.spawn_tracked(task)
    }

    /// The node's own tasks, for a part that spawns its own.
    pub fn tasks(&self) -> &crate::tasks::Tasks {
        &self.tasks
    }

    /// Resolves when the node starts shutting down.
    pub async fn stopping(&self) {
        self.tasks.stopping().await
    }

    /// Stops the node ([`NodeHandle::shutdown_because`] "requested").
    pub async fn shutdown(&self) {
        self.shutdown_because("requested").await
    }

    /// Stops the node: cancels its tasks (no new streams, requests or
    /// rounds) and waits up to 5 s for them to end, then closes every
    /// connection (reservations are released with them) and stops the event
    /// loop, waiting up to 3 s more; then emits `shutdown` with `reason`.
    /// Call it from outside the node's own tasks.
    pub async fn shutdown_because(&self, reason: &str) {
        let started = std::time::Instant::now();
        let left = self.tasks.stop(Duration::from_secs(5)).await;
        if left > 0 {
            tracing::warn!(left, "node tasks still running after 5 s");
        }
        // The loop closes every connection and ends; give it 3 s.
        let _ = self.commands.send(Command::Shutdown).await;
        self.event_loop.stop(Duration::from_secs(3)).await;
        self.emit(Event::Shutdown {
            reason: reason.into(),
            ms: started.elapsed().as_millis() as u64,
            tasks_left: left,
        });
    }
}
