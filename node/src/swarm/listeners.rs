//! Our listen addresses, and who waits for every listener to report one.

use super::handle::Snapshot;
use libp2p::core::transport::ListenerId;
use libp2p::Multiaddr;
use std::collections::HashSet;
use tokio::sync::oneshot;

#[derive(Debug, Default)]
pub(super) struct Listeners {
    /// Every address we listen on (circuit ones included).
    pub(super) addrs: Vec<Multiaddr>,
    /// Configured listeners that have not reported an address yet.
    silent: HashSet<ListenerId>,
    waiters: Vec<oneshot::Sender<Snapshot>>,
}

impl Listeners {
    pub(super) fn opened(&mut self, id: ListenerId) {
        self.silent.insert(id);
    }

    /// A new address; whether it was new.
    pub(super) fn new_addr(&mut self, id: ListenerId, addr: Multiaddr) -> bool {
        self.silent.remove(&id);
        if self.addrs.contains(&addr) {
            return false;
        }
        self.addrs.push(addr);
        true
    }

    pub(super) fn expired(&mut self, addr: &Multiaddr) {
        self.addrs.retain(|a| a != addr);
    }

    /// A listener closed; whether it closed before reporting any address.
    pub(super) fn closed(&mut self, id: ListenerId, addrs: &[Multiaddr]) -> bool {
        self.addrs.retain(|a| !addrs.contains(a));
        self.silent.remove(&id)
    }

    /// The direct (non-circuit) addresses.
    pub(super) fn direct(&self) -> Vec<Multiaddr> {
        self.addrs
            .iter()
            .filter(|a| !crate::addr::is_circuit(a))
            .cloned()
            .collect()
    }

    pub(super) fn wait(&mut self, reply: oneshot::Sender<Snapshot>) {
        self.waiters.push(reply);
    }

    /// Answers the waiters with `snapshot()` once every listener reported.
    pub(super) fn wake(&mut self, snapshot: impl FnOnce() -> Snapshot) {
        if self.silent.is_empty() && !self.waiters.is_empty() {
            let snap = snapshot();
            for w in self.waiters.drain(..) {
                let _ = w.send(snap.clone());
            }
        }
    }
}
