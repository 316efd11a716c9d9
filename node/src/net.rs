//! The network face: what the protocol drivers may ask of the node, and
//! the plain types they see. `protocols/` holds no `NodeHandle`; its drivers
//! take any [`Net`] (and their own protocol's face beside it, defined with
//! the protocol), which `swarm::NodeHandle` implements. So the swarm may
//! compose the protocols' behaviours while no protocol knows the swarm.

use crate::events::{Emitter, Event};
use crate::ops::Ops;
use crate::tasks::Tasks;
use ledgermesh_protocol::path::Conn;
pub use ledgermesh_protocol::path::PublicView;
use libp2p::identity::Keypair;
use libp2p::swarm::ConnectionId;
use libp2p::{Multiaddr, PeerId, Stream};
use std::future::Future;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// What every protocol driver may ask of the node: who it is, where to
/// report, its tasks, data streams, dials and the watch on its network.
pub trait Net: Clone + Send + Sync + 'static {
    /// This node's PeerId.
    fn peer_id(&self) -> PeerId;
    /// This node's identity key.
    fn keypair(&self) -> &Keypair;
    /// The node's event emitter (telemetry only: nothing steers by it).
    fn emitter(&self) -> &Emitter;
    /// The operator's view: streams counted, metrics, a relay's tables.
    fn ops(&self) -> &Arc<Ops>;
    /// The node's own tasks: stopped at shutdown.
    fn tasks(&self) -> &Tasks;
    /// A control for opening data streams.
    fn stream_control(&self) -> libp2p_stream::Control;
    /// The node's network changes.
    fn signals(&self) -> watch::Receiver<NetSignals>;
    /// The relays this node holds (or asked for) reservations on.
    fn relays(&self) -> &[(PeerId, Multiaddr)];
    /// Dials `peer` at all `addrs` at once; resolves when any connection to
    /// it is up.
    fn dial(
        &self,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
    ) -> impl Future<Output = Result<(), DialError>> + Send;
    /// Closes every connection to `peer`.
    fn disconnect(&self, peer: PeerId) -> impl Future<Output = ()> + Send;
    /// A watch that wakes whenever a connection to `peer` closes.
    fn watch_closes(
        &self,
        peer: PeerId,
    ) -> impl Future<Output = Result<CloseWatch, NodeError>> + Send;
    /// The node's addresses and connections.
    fn snapshot(&self) -> impl Future<Output = Result<Snapshot, NodeError>> + Send;

    /// Publishes an event under this node's label.
    fn emit(&self, event: Event) {
        self.emitter().emit(event);
    }
    /// Runs `task` as one of the node's own, cancelled at shutdown.
    fn spawn<F>(&self, task: F) -> JoinHandle<Option<F::Output>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tasks().spawn(task)
    }
    /// Runs `task` as one of the node's own, to its end (shutdown waits).
    fn spawn_tracked<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tasks().spawn_tracked(task)
    }
    /// Resolves when the node starts shutting down.
    fn stopping(&self) -> impl Future<Output = ()> + Send {
        self.tasks().stopping()
    }
}

/// The receiving end of one protocol's inbound streams: `(peer, stream)`
/// for every one taken (see `swarm::inbound`).
pub type Incoming = mpsc::Receiver<(PeerId, Stream)>;

/// Errors starting or talking to a node.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The transport could not be built.
    #[error("building the swarm failed: {0}")]
    Build(String),
    /// No listen address could be opened.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// Why.
        source: libp2p::TransportError<std::io::Error>,
    },
    /// A relay address without `/p2p/<id>`.
    #[error("relay address {0} must end in /p2p/<relay peer id>")]
    RelayAddrWithoutPeer(Multiaddr),
    /// Every address given is loopback, private or otherwise not globally
    /// routable, and this node dials only global ones.
    #[error(
        "{0} is not a public address, and this node dials only public ones: \
         on one machine or a LAN, start every node with --local"
    )]
    PrivateOnly(Multiaddr),
    /// The event loop has stopped.
    #[error("node has shut down")]
    Stopped,
}

/// Why a dial failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DialError {
    /// Every address failed (or the swarm refused the dial).
    #[error(transparent)]
    Swarm(#[from] libp2p::swarm::DialError),
    /// Every address given is loopback, private or otherwise not globally
    /// routable, and this node dials only global ones.
    #[error(
        "{0} is not a public address, and this node dials only public ones: \
         on one machine or a LAN, start every node with --local"
    )]
    PrivateOnly(Multiaddr),
    /// The event loop has stopped.
    #[error("node has shut down")]
    Stopped,
}

/// One live connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// Remote peer.
    pub peer: PeerId,
    /// Path, transport, relay, remote address and age.
    pub conn: Conn<ConnectionId>,
    /// What seals it, for a Noise connection (TCP, or any relayed one: the
    /// session inside the circuit); `None` for direct QUIC (TLS 1.3).
    pub noise_cipher: Option<ledgermesh_protocol::noise::TransportCipher>,
}

/// What a node knows about itself right now.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Direct listen addresses (loopback and interfaces).
    pub direct_addrs: Vec<Multiaddr>,
    /// Relay circuit addresses with an accepted reservation, ending in `/p2p/<self>`.
    pub circuit_addrs: Vec<Multiaddr>,
    /// Live connections.
    pub connections: Vec<ConnInfo>,
    /// The address-consensus verdict, once one was reached: the accepted
    /// public address (only with endpoint-independent mapping) and the mapping.
    pub public: Option<PublicView>,
}

/// Changes of the node's network that other tasks act on (a `watch`: a slow
/// reader sees the latest value, it never misses a change or lags).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetSignals {
    /// The direct listen addresses.
    pub direct_addrs: Vec<Multiaddr>,
    /// Hole punches that failed so far.
    pub hole_punch_failures: u64,
}

/// Wakes when a connection to one peer closes (see [`Net::watch_closes`]).
#[derive(Debug)]
pub struct CloseWatch(mpsc::Receiver<()>);

impl CloseWatch {
    /// A watch woken by each `()` on `rx`.
    pub(crate) fn new(rx: mpsc::Receiver<()>) -> Self {
        Self(rx)
    }

    /// A watch fed by hand (tests): each `()` sent is one close.
    #[cfg(test)]
    pub(crate) fn by_hand() -> (mpsc::Sender<()>, CloseWatch) {
        let (tx, rx) = mpsc::channel(4);
        (tx, CloseWatch(rx))
    }

    /// Resolves at the next close (closes since the last call count once);
    /// never, once the node stopped.
    pub async fn closed(&mut self) {
        if self.0.recv().await.is_none() {
            std::future::pending::<()>().await;
        }
    }
}

/// The node's inbound data streams, for its one stream server: while held,
/// `/ledgermesh/stream/1` is offered to peers and their streams queue here
/// (bounded); once dropped, the protocol is refused again.
pub struct StreamInbox {
    pub(crate) incoming: Incoming,
    pub(crate) accepting: std::sync::Arc<std::sync::atomic::AtomicBool>,
    pub(crate) dropped: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl StreamInbox {
    /// The next inbound stream; `None` once the node has stopped.
    pub async fn next(&mut self) -> Option<(PeerId, libp2p::Stream)> {
        self.incoming.recv().await
    }

    /// Streams dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for StreamInbox {
    fn drop(&mut self) {
        self.accepting
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }
}
