//! The node's faces to the protocol drivers: [`Net`] and each protocol's
//! own, carried out by [`NodeHandle`]'s commands.

use super::NodeHandle;
use crate::events::Emitter;
use crate::net::{CloseWatch, DialError, Net, NetSignals, NodeError, Snapshot};
use crate::ops::Ops;
use crate::tasks::Tasks;
use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId};
use std::sync::Arc;
use tokio::sync::watch;

impl Net for NodeHandle {
    fn peer_id(&self) -> PeerId {
        self.peer_id
    }
    fn keypair(&self) -> &Keypair {
        &self.keypair
    }
    fn emitter(&self) -> &Emitter {
        &self.emitter
    }
    fn ops(&self) -> &Arc<Ops> {
        &self.ops
    }
    fn tasks(&self) -> &Tasks {
        &self.tasks
    }
    fn stream_control(&self) -> libp2p_stream::Control {
        self.control.clone()
    }
    fn signals(&self) -> watch::Receiver<NetSignals> {
        self.signals.clone()
    }
    fn relays(&self) -> &[(PeerId, Multiaddr)] {
        &self.relays
    }
    async fn dial(&self, peer: PeerId, addrs: Vec<Multiaddr>) -> Result<(), DialError> {
        NodeHandle::dial(self, peer, addrs).await
    }
    async fn disconnect(&self, peer: PeerId) {
        NodeHandle::disconnect(self, peer).await
    }
    async fn watch_closes(&self, peer: PeerId) -> Result<CloseWatch, NodeError> {
        NodeHandle::watch_closes(self, peer).await
    }
    async fn snapshot(&self) -> Result<Snapshot, NodeError> {
        NodeHandle::snapshot(self).await
    }
}

impl crate::protocols::stream::StreamNet for NodeHandle {
    fn fair_in(&self) -> &Arc<crate::streams::fair::FairGate> {
        &self.fair_in
    }
    fn stream_meter(&self, peer: PeerId) -> Arc<std::sync::atomic::AtomicU64> {
        self.stream_meters.of(peer)
    }
    fn take_stream_inbox(&self) -> Option<crate::net::StreamInbox> {
        NodeHandle::take_stream_inbox(self)
    }
}

impl crate::protocols::pay::PayNet for NodeHandle {
    fn payer_state(
        &self,
        peer: PeerId,
    ) -> Arc<tokio::sync::Mutex<Option<crate::protocols::pay::payer::PayerState>>> {
        NodeHandle::payer_state(self, peer)
    }
}

impl crate::protocols::observe::ObserveNet for NodeHandle {
    async fn observe(
        &self,
        peer: PeerId,
        dial_back: bool,
    ) -> Result<ledgermesh_proto::v1::ObserveResponse, crate::protocols::observe::ObserveError>
    {
        NodeHandle::observe(self, peer, dial_back).await
    }
    async fn dial_also(
        &self,
        peer: PeerId,
        addr: Multiaddr,
    ) -> Result<libp2p::swarm::ConnectionId, DialError> {
        NodeHandle::dial_also(self, peer, addr).await
    }
    async fn close_connection(&self, id: libp2p::swarm::ConnectionId) {
        NodeHandle::close_connection(self, id).await
    }
    async fn set_public(&self, verdict: ledgermesh_protocol::consensus::Verdict, udp: bool) {
        NodeHandle::set_public(self, verdict, udp).await
    }
    async fn set_public_quic(&self, addr: Option<Multiaddr>) {
        NodeHandle::set_public_quic(self, addr).await
    }
}

impl crate::protocols::hardnat::HardNatNet for NodeHandle {
    fn spray(
        &self,
        addr: std::net::SocketAddr,
        plan: ledgermesh_protocol::path::hardnat::Plan,
    ) -> Option<tokio::sync::oneshot::Receiver<crate::protocols::hardnat::SprayReport>> {
        self.punch.spray(addr, plan)
    }
    fn probe(
        &self,
        targets: impl IntoIterator<Item = std::net::SocketAddr>,
        peer: PeerId,
    ) -> usize {
        self.punch.probe(targets, peer)
    }
    async fn dial_fresh(&self, peer: PeerId, addr: Multiaddr) -> Result<(), NodeError> {
        NodeHandle::dial_fresh(self, peer, addr).await
    }
    async fn wait_direct(&self, peer: PeerId) -> Option<tokio::sync::oneshot::Receiver<Multiaddr>> {
        NodeHandle::wait_direct(self, peer).await
    }
}
