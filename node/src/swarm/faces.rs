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
