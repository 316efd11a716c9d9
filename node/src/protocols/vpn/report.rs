//! What the tunnel tells its operator: each allowed peer, its addresses,
//! its streams and what was carried each way (`vpn status`, the API's
//! `/api/v1/vpn`).

use super::{lock, Vpn};
use ledgermesh_protocol::vpn::{address_of, router::MAX_PEERS};
use libp2p::PeerId;
use serde_json::{json, Value};

/// What was carried with one peer.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct PeerStats {
    packets_in: u64,
    bytes_in: u64,
    packets_out: u64,
    bytes_out: u64,
}

impl Vpn {
    /// A packet of `size` bytes was carried with `peer` (`out`: to it).
    /// Only allowed peers are carried for, and at most as many are kept.
    pub(super) fn count(&self, peer: PeerId, size: usize, out: bool) {
        let mut stats = lock(&self.inner.stats);
        if stats.len() >= MAX_PEERS && !stats.contains_key(&peer) {
            return;
        }
        let s = stats.entry(peer).or_default();
        let size = size as u64;
        if out {
            s.packets_out += 1;
            s.bytes_out += size;
        } else {
            s.packets_in += 1;
            s.bytes_in += size;
        }
    }

    /// Every allowed peer: its mesh address, the networks it owns besides,
    /// its streams read now, and what was carried with it.
    pub fn report(&self) -> Value {
        let stats = lock(&self.inner.stats).clone();
        let reading = lock(&self.inner.reading).clone();
        let sending: std::collections::HashSet<PeerId> = (lock(&self.inner.links).iter())
            .filter(|(_, q)| !q.is_closed())
            .map(|(p, _)| *p)
            .collect();
        let (own, mut peers) = {
            let router = self.router();
            let own: Vec<String> = router.own().iter().map(ToString::to_string).collect();
            (own, router.peers())
        };
        peers.sort_by_key(|p| p.id.to_bytes());
        let peers: Vec<Value> = (peers.into_iter())
            .map(|p| {
                let s = stats.get(&p.id).copied().unwrap_or_default();
                json!({
                    "peer_id": p.id.to_string(),
                    "address": address_of(&p.id).to_string(),
                    "allowed_ips": p.allowed_ips.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "stream_out": sending.contains(&p.id),
                    "streams_in": reading.get(&p.id).copied().unwrap_or(0),
                    "packets_in": s.packets_in,
                    "bytes_in": s.bytes_in,
                    "packets_out": s.packets_out,
                    "bytes_out": s.bytes_out,
                })
            })
            .collect();
        json!({ "addresses": own, "peers": peers })
    }
}
