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
use std::time::{Duration, Instant};

mod advertise;
pub mod connect;
pub mod hardnat;
pub mod health;
pub mod offers;
pub mod probing;
pub mod relays;
pub mod scope;
#[cfg(test)]
mod tests;

pub use advertise::{advertise, PublicView};
pub use health::{Health, Rating};

/// Red ratings in a row after which the relayed path carrying a peer's
/// traffic is degraded and another one is sought.
pub const DEGRADE_STREAK: u32 = 3;
/// Time between two re-routes away from a peer's paths (no flapping).
pub const REROUTE_COOLDOWN: Duration = Duration::from_secs(30);

/// Whether a connection is direct or goes through a relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PathKind {
    /// A direct transport connection.
    Direct,
    /// Through a circuit-relay-v2 relay.
    Relayed,
}

impl PathKind {
    /// `direct` or `relayed`, as events and the status spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            PathKind::Direct => "direct",
            PathKind::Relayed => "relayed",
        }
    }
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

impl TransportKind {
    /// `tcp`, `quic` or `other`, as events and the status spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            TransportKind::Tcp => "tcp",
            TransportKind::Quic => "quic",
            TransportKind::Other => "other",
        }
    }
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

/// Where the traffic to a peer goes: the path of its best connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Route {
    /// Direct or relayed.
    pub path: PathKind,
    /// Transport (to the relay, when relayed).
    pub transport: TransportKind,
    /// The relay, when relayed.
    #[serde(serialize_with = "via_text")]
    pub via: Option<PeerId>,
}

fn via_text<S: serde::Serializer>(via: &Option<PeerId>, s: S) -> Result<S::Ok, S::Error> {
    match via {
        Some(p) => s.serialize_str(&p.to_string()),
        None => s.serialize_none(),
    }
}

/// Why the route to a peer changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeReason {
    /// A direct connection replaced a relayed one.
    Upgraded,
    /// The relayed connection carrying it closed (the relay died, or cut it).
    RelayLost,
    /// The direct connection carrying it closed.
    DirectLost,
    /// A new connection after the peer was unreachable for a while.
    Reconnected,
    /// The relayed path carrying it turned red (slow or lossy) and a
    /// healthier one took over.
    Degraded,
}

/// Most peers whose route is remembered while they have no connection.
const MAX_ROUTES: usize = 4096;

/// One live connection.
#[derive(Debug, Clone, PartialEq)]
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
    /// When it was established.
    pub since: Instant,
    /// A relayed connection already reported as replaced by a direct one.
    pub upgraded: bool,
    /// Its pings: round trip, loss, rating.
    pub health: Health,
    /// Found degraded: traffic moves off it as soon as another path is up.
    pub degraded: bool,
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
    /// The relayed path carrying `peer`'s traffic is degraded: find another
    /// (dial the peer's other addresses, avoiding this relay); it is closed
    /// once one is up.
    Reroute {
        /// The peer.
        peer: PeerId,
        /// The degraded connection.
        away_from: C,
        /// Its relay.
        via: Option<PeerId>,
        /// Its round trip, ms.
        rtt_ms: Option<u64>,
        /// Its lost pings, percent.
        loss_pct: u32,
    },
    /// The route to `peer` changed (`None`: no connection is left, or there
    /// was none).
    PathChanged {
        /// The peer.
        peer: PeerId,
        /// The route before.
        from: Option<Route>,
        /// The route now.
        to: Option<Route>,
        /// Why.
        reason: ChangeReason,
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

/// How soon after a relayed connection closed a direct one still counts as
/// its upgrade: the remote, upgrading first, closes the relayed connection,
/// and that close can reach us a moment before the direct connection does.
pub const UPGRADE_RACE: Duration = Duration::from_secs(2);

/// Most peers remembered for [`UPGRADE_RACE`] after a relayed close.
const MAX_RECENT_RELAYED: usize = 4096;

/// Per-peer connection sets (see the module docs).
#[derive(Debug)]
pub struct PathSet<C> {
    peers: HashMap<PeerId, Vec<Conn<C>>>,
    /// No re-route away from a peer's paths before this time.
    reroute_after: HashMap<PeerId, Instant>,
    /// Peers whose last relayed connection closed un-upgraded: (since, closed at).
    recent_relayed: HashMap<PeerId, (Instant, Instant)>,
    /// The route each peer's traffic took last (`None` once it had none).
    routes: HashMap<PeerId, Option<Route>>,
    close_relayed_after_upgrade: bool,
    actions: VecDeque<Action<C>>,
}

impl<C: Copy + Eq> PathSet<C> {
    /// An empty set; with `close_relayed_after_upgrade` an upgrade closes the
    /// relayed connections it replaced.
    pub fn new(close_relayed_after_upgrade: bool) -> Self {
        Self {
            peers: HashMap::new(),
            recent_relayed: HashMap::new(),
            reroute_after: HashMap::new(),
            routes: HashMap::new(),
            close_relayed_after_upgrade,
            actions: VecDeque::new(),
        }
    }

    /// A connection to `peer` is up.
    pub fn on_established(
        &mut self,
        now: Instant,
        peer: PeerId,
        id: C,
        addrs: (PathKind, TransportKind, Option<PeerId>),
        remote: Multiaddr,
    ) {
        let (path, transport, via) = addrs;
        self.on_established_inner(now, peer, id, (path, transport, via), remote);
        // A path up beside a degraded one takes the traffic: the degraded
        // ones close (their streams resume on the new path).
        let degraded: Vec<C> = (self.peers.get(&peer).into_iter().flatten())
            .filter(|c| c.degraded && c.id != id)
            .map(|c| c.id)
            .collect();
        for d in &degraded {
            self.actions.push_back(Action::Close { peer, id: *d });
        }
        let hint = (!degraded.is_empty()).then_some(ChangeReason::Degraded);
        self.track_route(peer, hint);
    }

    /// A ping on connection `id` to `peer` came back after `rtt_ms`, or
    /// (`None`) failed. A relayed path carrying the peer's traffic that is
    /// red [`DEGRADE_STREAK`] times in a row is degraded (at most one
    /// re-route per peer per [`REROUTE_COOLDOWN`]).
    pub fn on_ping(&mut self, now: Instant, peer: PeerId, id: C, rtt_ms: Option<f64>) {
        let best = self.best(&peer).map(|c| c.id);
        let Some(conn) = (self.peers.get_mut(&peer).into_iter().flatten()).find(|c| c.id == id)
        else {
            return;
        };
        conn.health.on_ping(rtt_ms);
        if conn.degraded && conn.health.rating() == Some(Rating::Green) {
            // It recovered before another path came up: keep it.
            conn.degraded = false;
        }
        let due = self.reroute_after.get(&peer).is_none_or(|t| now >= *t);
        if conn.path == PathKind::Relayed
            && !conn.degraded
            && best == Some(id)
            && conn.health.red_streak() >= DEGRADE_STREAK
            && due
        {
            conn.degraded = true;
            let action = Action::Reroute {
                peer,
                away_from: id,
                via: conn.via,
                rtt_ms: conn.health.rtt_ms().map(|r| r.round() as u64),
                loss_pct: (conn.health.loss() * 100.0).round() as u32,
            };
            if self.reroute_after.len() >= MAX_ROUTES {
                let peers = &self.peers;
                self.reroute_after.retain(|p, _| peers.contains_key(p));
            }
            self.reroute_after.insert(peer, now + REROUTE_COOLDOWN);
            self.actions.push_back(action);
        }
    }

    fn on_established_inner(
        &mut self,
        now: Instant,
        peer: PeerId,
        id: C,
        (path, transport, via): (PathKind, TransportKind, Option<PeerId>),
        remote: Multiaddr,
    ) {
        let conns = self.peers.entry(peer).or_default();
        conns.push(Conn {
            id,
            path,
            transport,
            via,
            remote,
            since: now,
            upgraded: false,
            health: Health::default(),
            degraded: false,
        });
        if path != PathKind::Direct {
            return;
        }
        let recent = self
            .recent_relayed
            .remove(&peer)
            .filter(|(_, closed)| now.saturating_duration_since(*closed) <= UPGRADE_RACE)
            .map(|(since, _)| since);
        let oldest = conns
            .iter()
            .filter(|c| c.path == PathKind::Relayed && !c.upgraded)
            .map(|c| c.since)
            .min()
            .or(recent);
        let Some(oldest) = oldest else { return };
        self.actions.push_back(Action::Upgraded {
            peer,
            transport,
            ms_after_relayed: millis(now.saturating_duration_since(oldest)),
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
    pub fn on_closed(&mut self, now: Instant, peer: PeerId, id: C) -> Option<Conn<C>> {
        let conns = self.peers.get_mut(&peer)?;
        let pos = conns.iter().position(|c| c.id == id)?;
        let conn = conns.remove(pos);
        let remaining = conns.len();
        if conn.path == PathKind::Relayed && !conn.upgraded {
            // The remote may have closed it because it upgraded first.
            if self.recent_relayed.len() >= MAX_RECENT_RELAYED {
                self.recent_relayed.retain(|_, (_, closed)| {
                    now.saturating_duration_since(*closed) <= UPGRADE_RACE
                });
            }
            if self.recent_relayed.len() < MAX_RECENT_RELAYED {
                self.recent_relayed.insert(peer, (conn.since, now));
            }
        }
        if remaining == 0 {
            self.peers.remove(&peer);
        }
        self.actions.push_back(Action::PathClosed {
            peer,
            path: conn.path,
            remaining,
        });
        let lost = match conn.path {
            PathKind::Relayed => ChangeReason::RelayLost,
            PathKind::Direct => ChangeReason::DirectLost,
        };
        self.track_route(peer, Some(lost));
        Some(conn)
    }

    /// Reports a change of `peer`'s route (`closed`: why, when a
    /// connection just closed).
    fn track_route(&mut self, peer: PeerId, closed: Option<ChangeReason>) {
        let now = self.best(&peer).map(|c| Route {
            path: c.path,
            transport: c.transport,
            via: c.via,
        });
        let before = match self.routes.get(&peer) {
            Some(r) => *r,
            // First seen: a first connection is no change.
            None => {
                if self.routes.len() >= MAX_ROUTES {
                    // Forget the peers that have no connection now.
                    let peers = &self.peers;
                    self.routes.retain(|p, _| peers.contains_key(p));
                }
                if self.routes.len() < MAX_ROUTES {
                    self.routes.insert(peer, now);
                }
                return;
            }
        };
        if before == now {
            return;
        }
        self.routes.insert(peer, now);
        let reason = match (before, now) {
            (None, _) => ChangeReason::Reconnected,
            (Some(b), Some(n)) if b.path == PathKind::Relayed && n.path == PathKind::Direct => {
                ChangeReason::Upgraded
            }
            (Some(b), _) => closed.unwrap_or(match b.path {
                PathKind::Relayed => ChangeReason::RelayLost,
                PathKind::Direct => ChangeReason::DirectLost,
            }),
        };
        self.actions.push_back(Action::PathChanged {
            peer,
            from: before,
            to: now,
            reason,
        });
    }

    /// The next action to carry out.
    pub fn poll_action(&mut self) -> Option<Action<C>> {
        self.actions.pop_front()
    }

    /// Whether any connection to `peer` is open.
    pub fn is_connected(&self, peer: &PeerId) -> bool {
        self.peers.contains_key(peer)
    }

    /// Whether a direct connection to `peer` is open: its address, if so.
    pub fn direct(&self, peer: &PeerId) -> Option<&Multiaddr> {
        (self.peers.get(peer)?.iter())
            .find(|c| c.path == PathKind::Direct)
            .map(|c| &c.remote)
    }

    /// Peers connected only through relays.
    pub fn relayed_only_peers(&self) -> Vec<PeerId> {
        (self.peers.iter())
            .filter(|(_, cs)| cs.iter().all(|c| c.path == PathKind::Relayed))
            .map(|(p, _)| *p)
            .collect()
    }

    /// One connection.
    pub fn get(&self, peer: &PeerId, id: C) -> Option<&Conn<C>> {
        self.peers.get(peer)?.iter().find(|c| c.id == id)
    }

    /// The path to use for `peer`: the oldest direct connection, else the
    /// oldest relayed one not degraded, else the oldest.
    pub fn best(&self, peer: &PeerId) -> Option<&Conn<C>> {
        let conns = self.peers.get(peer)?;
        let oldest =
            |f: &dyn Fn(&Conn<C>) -> bool| conns.iter().filter(|c| f(c)).min_by_key(|c| c.since);
        oldest(&|c| c.path == PathKind::Direct)
            .or_else(|| oldest(&|c| !c.degraded))
            .or_else(|| oldest(&|_| true))
    }

    /// Every open connection, peer by peer.
    pub fn iter(&self) -> impl Iterator<Item = (&PeerId, &Conn<C>)> {
        self.peers
            .iter()
            .flat_map(|(p, cs)| cs.iter().map(move |c| (p, c)))
    }
}

/// A duration in whole milliseconds (what events report), saturating.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
