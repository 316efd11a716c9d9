//! The set of connections to each peer, and what to do when it changes.
//!
//! The swarm feeds every established and closed connection into a
//! [`PathSet`]; the set decides what follows: a direct connection that joins
//! a relayed one is an upgrade (reported once, and the relayed connection is
//! closed so the data moves and the relay is freed), and a connection that
//! closes wakes whoever streams from that peer so it resumes on what is left.
//!
//! ```text
//!   established(direct) ──► relayed ones not yet upgraded? ──► Upgraded, Close(relayed…)
//!   closed(any)         ──► PathClosed { remaining }       ──► stream clients resume
//! ```

use libp2p_identity::PeerId;
use multiaddr::{Multiaddr, Protocol};
use serde::Serialize;
use std::collections::{HashMap, VecDeque};

mod advertise;
pub mod scope;
#[cfg(test)]
mod tests;

pub use advertise::{advertise, PublicView};

/// Whether a connection is direct or goes through a relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PathKind {
    /// A direct transport connection.
    Direct,
    /// Through a circuit-relay-v2 relay.
    Relayed,
}

/// The transport under a connection (for relayed ones: to the relay).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TransportKind {
    /// TCP with noise and yamux.
    Tcp,
    /// QUIC v1.
    Quic,
    /// Anything else (memory transport in unit tests).
    Other,
}

/// The path, transport and relay of a connection, read from its addresses
/// (the dialed address, or an inbound connection's local and remote ones).
pub fn classify<'a>(
    addrs: impl IntoIterator<Item = &'a Multiaddr>,
) -> (PathKind, TransportKind, Option<PeerId>) {
    let mut relayed = false;
    let mut transport = TransportKind::Other;
    let mut via = None;
    for a in addrs {
        let mut last_peer = None;
        for p in a.iter() {
            match p {
                Protocol::Tcp(_) if transport == TransportKind::Other => {
                    transport = TransportKind::Tcp
                }
                Protocol::QuicV1 => transport = TransportKind::Quic,
                Protocol::P2p(id) => last_peer = Some(id),
                Protocol::P2pCircuit => {
                    relayed = true;
                    if via.is_none() {
                        via = last_peer;
                    }
                }
                _ => {}
            }
        }
    }
    let path = if relayed {
        PathKind::Relayed
    } else {
        PathKind::Direct
    };
    (path, transport, via)
}

/// One live connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conn<C> {
    /// The swarm's id of the connection.
    pub id: C,
    /// Direct or relayed.
    pub path: PathKind,
    /// Transport (to the relay, when relayed).
    pub transport: TransportKind,
    /// The relay, when relayed.
    pub via: Option<PeerId>,
    /// The remote address (for an inbound connection: where it came from).
    pub remote: Multiaddr,
    /// When it was established (ms on the caller's clock).
    pub since_ms: u64,
    /// A relayed connection already reported as replaced by a direct one.
    pub upgraded: bool,
}

/// What the set asks its owner to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action<C> {
    /// A direct connection replaced the relayed one(s) to `peer`.
    Upgraded {
        /// The peer.
        peer: PeerId,
        /// Transport of the direct connection.
        transport: TransportKind,
        /// Time since the oldest relayed connection was established.
        ms_after_relayed: u64,
    },
    /// Close this (relayed, upgraded) connection.
    Close {
        /// The peer.
        peer: PeerId,
        /// The connection.
        id: C,
    },
    /// A connection to `peer` closed: whoever streams from it should resume
    /// on what is left (`remaining` connections; 0 means re-dial).
    PathClosed {
        /// The peer.
        peer: PeerId,
        /// The closed connection's path.
        path: PathKind,
        /// Connections to the peer still open.
        remaining: usize,
    },
}

/// Per-peer connection sets (see the module docs).
#[derive(Debug)]
pub struct PathSet<C> {
    peers: HashMap<PeerId, Vec<Conn<C>>>,
    close_relayed_after_upgrade: bool,
    actions: VecDeque<Action<C>>,
}

impl<C: Copy + Eq> PathSet<C> {
    /// An empty set; with `close_relayed_after_upgrade` an upgrade closes the
    /// relayed connections it replaced.
    pub fn new(close_relayed_after_upgrade: bool) -> Self {
        Self {
            peers: HashMap::new(),
            close_relayed_after_upgrade,
            actions: VecDeque::new(),
        }
    }

    /// A connection to `peer` is up.
    pub fn on_established(
        &mut self,
        now_ms: u64,
        peer: PeerId,
        id: C,
        addrs: (PathKind, TransportKind, Option<PeerId>),
        remote: Multiaddr,
    ) {
        let (path, transport, via) = addrs;
        let conns = self.peers.entry(peer).or_default();
        conns.push(Conn {
            id,
            path,
            transport,
            via,
            remote,
            since_ms: now_ms,
            upgraded: false,
        });
        if path != PathKind::Direct {
            return;
        }
        let oldest = conns
            .iter()
            .filter(|c| c.path == PathKind::Relayed && !c.upgraded)
            .map(|c| c.since_ms)
            .min();
        let Some(oldest) = oldest else { return };
        self.actions.push_back(Action::Upgraded {
            peer,
            transport,
            ms_after_relayed: now_ms.saturating_sub(oldest),
        });
        for c in conns
            .iter_mut()
            .filter(|c| c.path == PathKind::Relayed && !c.upgraded)
        {
            c.upgraded = true;
            if self.close_relayed_after_upgrade {
                self.actions.push_back(Action::Close { peer, id: c.id });
            }
        }
    }

    /// A connection closed; returns what was known of it (`None` for one the
    /// set never saw, such as a dial-back probe).
    pub fn on_closed(&mut self, peer: PeerId, id: C) -> Option<Conn<C>> {
        let conns = self.peers.get_mut(&peer)?;
        let pos = conns.iter().position(|c| c.id == id)?;
        let conn = conns.remove(pos);
        let remaining = conns.len();
        if remaining == 0 {
            self.peers.remove(&peer);
        }
        self.actions.push_back(Action::PathClosed {
            peer,
            path: conn.path,
            remaining,
        });
        Some(conn)
    }

    /// The next action to carry out.
    pub fn poll_action(&mut self) -> Option<Action<C>> {
        self.actions.pop_front()
    }

    /// Whether any connection to `peer` is open.
    pub fn is_connected(&self, peer: &PeerId) -> bool {
        self.peers.contains_key(peer)
    }

    /// One connection.
    pub fn get(&self, peer: &PeerId, id: C) -> Option<&Conn<C>> {
        self.peers.get(peer)?.iter().find(|c| c.id == id)
    }

    /// The path to use for `peer`: the oldest direct connection, else the
    /// oldest relayed one.
    pub fn best(&self, peer: &PeerId) -> Option<&Conn<C>> {
        let conns = self.peers.get(peer)?;
        conns
            .iter()
            .filter(|c| c.path == PathKind::Direct)
            .min_by_key(|c| c.since_ms)
            .or_else(|| conns.iter().min_by_key(|c| c.since_ms))
    }

    /// Every open connection, peer by peer.
    pub fn iter(&self) -> impl Iterator<Item = (&PeerId, &Conn<C>)> {
        self.peers
            .iter()
            .flat_map(|(p, cs)| cs.iter().map(move |c| (p, c)))
    }
}
