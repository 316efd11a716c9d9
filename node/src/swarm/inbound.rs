//! Inbound streams of one protocol, handed to a task through a bounded
//! queue. libp2p-stream hands inbound streams over through a one-slot
//! channel and drops any that arrive while it is full, so a burst of
//! requests from many peers (reservations on a relay) loses some with no
//! answer. Here each connection's handler passes its negotiated streams up
//! and the queue holds up to its capacity; past it a stream is dropped and
//! counted, and the protocol's own task bounds the work it takes on.
//!
//! The protocol is offered only while someone takes the streams
//! ([`Inbound::accepting`]): before a node's stream server starts, a peer
//! hears "not supported" (and asks again) instead of a stream that nobody
//! would read.

use either::Either;
use libp2p::core::upgrade::{DeniedUpgrade, ReadyUpgrade};
use libp2p::core::{transport::PortUse, Endpoint};
use libp2p::swarm::handler::{ConnectionEvent, FullyNegotiatedInbound};
use libp2p::swarm::{
    ConnectionDenied, ConnectionHandler, ConnectionHandlerEvent, ConnectionId, FromSwarm,
    NetworkBehaviour, SubstreamProtocol, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId, Stream, StreamProtocol};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::mpsc;

/// Streams one handler holds before the behaviour takes them.
const PER_CONNECTION: usize = 32;

pub use crate::net::Incoming;

/// Accepts `protocol` on every connection into a queue of `capacity`.
pub struct Inbound {
    protocol: StreamProtocol,
    queue: mpsc::Sender<(PeerId, Stream)>,
    dropped: Arc<AtomicU64>,
    accepting: Arc<AtomicBool>,
}

impl Inbound {
    /// The behaviour and the queue's receiving end.
    pub fn new(protocol: StreamProtocol, capacity: usize) -> (Self, Incoming) {
        let (queue, rx) = mpsc::channel(capacity.max(1));
        (
            Self {
                protocol,
                queue,
                dropped: Default::default(),
                accepting: Arc::new(AtomicBool::new(true)),
            },
            rx,
        )
    }

    /// Streams dropped because the queue was full.
    pub fn dropped(&self) -> Arc<AtomicU64> {
        self.dropped.clone()
    }

    /// Whether the protocol is offered (on at first); while off, peers'
    /// streams are refused in negotiation.
    pub fn accepting(&self) -> Arc<AtomicBool> {
        self.accepting.clone()
    }

    fn handler(&self) -> Handler {
        Handler {
            protocol: self.protocol.clone(),
            accepting: self.accepting.clone(),
            ready: VecDeque::new(),
        }
    }
}

impl NetworkBehaviour for Inbound {
    type ConnectionHandler = Handler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.handler())
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.handler())
    }

    fn on_swarm_event(&mut self, _: FromSwarm<'_>) {}

    fn on_connection_handler_event(
        &mut self,
        peer: PeerId,
        _: ConnectionId,
        stream: THandlerOutEvent<Self>,
    ) {
        if self.queue.try_send((peer, stream)).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, protocol = %self.protocol, "inbound queue full; stream dropped");
        }
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

/// One connection's side: negotiates the protocol on inbound streams and
/// passes them up.
pub struct Handler {
    protocol: StreamProtocol,
    accepting: Arc<AtomicBool>,
    ready: VecDeque<Stream>,
}

impl ConnectionHandler for Handler {
    type FromBehaviour = Infallible;
    type ToBehaviour = Stream;
    type InboundProtocol = Either<ReadyUpgrade<StreamProtocol>, DeniedUpgrade>;
    type OutboundProtocol = DeniedUpgrade;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = Infallible;

    fn listen_protocol(&self) -> SubstreamProtocol<Self::InboundProtocol, ()> {
        let upgrade = match self.accepting.load(Ordering::Relaxed) {
            true => Either::Left(ReadyUpgrade::new(self.protocol.clone())),
            false => Either::Right(DeniedUpgrade),
        };
        SubstreamProtocol::new(upgrade, ())
    }

    fn poll(
        &mut self,
        _: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<Self::OutboundProtocol, Infallible, Stream>> {
        match self.ready.pop_front() {
            Some(s) => Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(s)),
            None => Poll::Pending,
        }
    }

    fn on_behaviour_event(&mut self, event: Infallible) {
        match event {}
    }

    fn on_connection_event(
        &mut self,
        event: ConnectionEvent<'_, Self::InboundProtocol, Self::OutboundProtocol, (), Infallible>,
    ) {
        if let ConnectionEvent::FullyNegotiatedInbound(FullyNegotiatedInbound {
            protocol: futures::future::Either::Left(stream),
            ..
        }) = event
        {
            // A peer opening streams faster than the node takes them loses
            // the newest, on its own connection only.
            if self.ready.len() < PER_CONNECTION {
                self.ready.push_back(stream);
            }
        }
    }
}
