//! The relay server's view of the swarm. A relay keeps its reserving
//! peers' connections open for as long as their reservations last (a
//! reservation is useless once its connection is gone), and a reservation
//! ends when its peer's last connection closes.

use super::report::Reporter;
use ledgermesh_protocol::relay::Book;
use libp2p::core::{transport::PortUse, upgrade::DeniedUpgrade, Endpoint, Multiaddr};
use libp2p::swarm::handler::{ConnectionEvent, FullyNegotiatedInbound, FullyNegotiatedOutbound};
use libp2p::swarm::{
    ConnectionDenied, ConnectionHandlerEvent, ConnectionId, FromSwarm, NetworkBehaviour,
    SubstreamProtocol, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use libp2p::PeerId;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

/// What the relay server knows of the swarm, shared with its tasks.
pub(crate) struct State {
    /// Reservations and circuits.
    pub(crate) book: Book,
    peers: HashMap<PeerId, Peer>,
    external: Vec<Multiaddr>,
}

/// A connected peer: its connections' IPs (`None`: relayed) and whether
/// its connections are kept open (it holds a reservation).
#[derive(Default)]
struct Peer {
    conns: HashMap<ConnectionId, Option<IpAddr>>,
    keep: Arc<AtomicBool>,
}

/// The server's state, locked briefly and never across an await.
pub(crate) type Shared = Arc<Mutex<State>>;

impl State {
    pub(crate) fn new(book: Book) -> Shared {
        Arc::new(Mutex::new(Self {
            book,
            peers: HashMap::new(),
            external: vec![],
        }))
    }

    /// The IP `peer` reaches us from: that of its first direct connection.
    pub(crate) fn ip_of(&self, peer: &PeerId) -> Option<IpAddr> {
        let p = self.peers.get(peer)?;
        p.conns.values().flatten().min().copied()
    }

    /// Keep `peer`'s connections open (while it holds a reservation) or not.
    pub(crate) fn keep(&self, peer: &PeerId, keep: bool) {
        if let Some(p) = self.peers.get(peer) {
            p.keep.store(keep, Ordering::Relaxed);
        }
    }

    /// The relay's public addresses, each ending in `/p2p/<local>`.
    pub(crate) fn external(&self, local: PeerId) -> Vec<Multiaddr> {
        (self.external.iter())
            .map(|a| a.clone().with_p2p(local).unwrap_or_else(|a| a))
            .collect()
    }

    fn keep_flag(&mut self, peer: PeerId) -> Arc<AtomicBool> {
        self.peers.entry(peer).or_default().keep.clone()
    }
}

/// The relay server's swarm side: keeps reserving peers' connections
/// open, learns each peer's IP and the relay's public addresses, and ends
/// a reservation when its peer's last connection closes.
pub struct Behaviour {
    shared: Shared,
    reporter: Reporter,
}

impl Behaviour {
    pub(crate) fn new(shared: Shared, reporter: Reporter) -> Self {
        Self { shared, reporter }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = Handler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(Handler(self.state().keep_flag(peer)))
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(Handler(self.state().keep_flag(peer)))
    }

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        e: THandlerOutEvent<Self>,
    ) {
        match e {}
    }

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        match event {
            FromSwarm::ConnectionEstablished(c) => {
                let addr = c.endpoint.get_remote_address();
                let ip = (!crate::addr::is_circuit(addr))
                    .then(|| ledgermesh_protocol::path::scope::ip_of(addr))
                    .flatten();
                let mut st = self.state();
                st.peers
                    .entry(c.peer_id)
                    .or_default()
                    .conns
                    .insert(c.connection_id, ip);
            }
            FromSwarm::ConnectionClosed(c) => {
                let ended = {
                    let mut st = self.state();
                    if let Some(p) = st.peers.get_mut(&c.peer_id) {
                        p.conns.remove(&c.connection_id);
                    }
                    if c.remaining_established > 0 {
                        return;
                    }
                    st.peers.remove(&c.peer_id);
                    st.book.unreserve(&c.peer_id)
                };
                if ended {
                    self.reporter
                        .reservation(c.peer_id, crate::events::ReservationOutcome::Closed);
                }
            }
            FromSwarm::ExternalAddrConfirmed(a) => {
                let mut st = self.state();
                if !st.external.contains(a.addr) {
                    st.external.push(a.addr.clone());
                }
            }
            FromSwarm::ExternalAddrExpired(a) => self.state().external.retain(|x| x != a.addr),
            _ => {}
        }
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Infallible, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

/// A handler with no protocol that only answers whether to keep alive.
pub struct Handler(Arc<AtomicBool>);

impl libp2p::swarm::ConnectionHandler for Handler {
    type FromBehaviour = Infallible;
    type ToBehaviour = Infallible;
    type InboundProtocol = DeniedUpgrade;
    type OutboundProtocol = DeniedUpgrade;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = ();

    fn listen_protocol(&self) -> SubstreamProtocol<DeniedUpgrade> {
        SubstreamProtocol::new(DeniedUpgrade, ())
    }

    fn connection_keep_alive(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    fn on_behaviour_event(&mut self, e: Infallible) {
        match e {}
    }

    fn poll(
        &mut self,
        _: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<DeniedUpgrade, (), Infallible>> {
        Poll::Pending
    }

    fn on_connection_event(&mut self, event: ConnectionEvent<'_, DeniedUpgrade, DeniedUpgrade>) {
        match event {
            ConnectionEvent::FullyNegotiatedInbound(FullyNegotiatedInbound {
                protocol, ..
            }) => match protocol {},
            ConnectionEvent::FullyNegotiatedOutbound(FullyNegotiatedOutbound {
                protocol, ..
            }) => match protocol {},
            _ => {}
        }
    }
}
