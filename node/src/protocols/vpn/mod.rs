//! The mesh VPN's packets between peers: `/ledgermesh/vpn/1`, a stream
//! each way per peer, carrying frames (`ledgermesh_protocol::vpn::frame`)
//! over whatever connection the node has to the peer, direct or relayed.
//!
//! The decisions are the router's (`ledgermesh_protocol::vpn::Router`);
//! here they are carried out. A packet from the device goes to its peer's
//! stream, opened on first use, and packets waiting are batched into one
//! write. A packet from a peer's stream goes to the device once the router
//! lets it. Every drop is counted and told (`vpn_dropped`, at the 1st,
//! 2nd, 4th, … of each reason and peer), and the tunnel runs on.
//!
//! ```text
//!   device ──► Router::outbound ──► queue (256) ──► writer: frames ──► peer
//!   device ◄── Router::inbound  ◄── reader: Decoder ◄──────────────── peer
//! ```

use crate::events::Event;

mod billing;
mod links;
mod report;
use crate::access::audit_log::{AuditLine, AuditLog};
use crate::net::Net;
use crate::protocols::pay::Payees;
pub(crate) use billing::Way;
use futures::StreamExt;
use ledgermesh_protocol::access::{AuditKind, AuditRecord};
use ledgermesh_protocol::vpn::{address_of, Drop, Router};
use libp2p::{PeerId, StreamProtocol};
use libp2p_stream::IncomingStreams;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Semaphore};

/// The protocol's name.
pub const PROTOCOL: &str = "/ledgermesh/vpn/1";
/// Packets queued for one peer (or for the device) before more are
/// dropped as `congested`.
pub const QUEUE: usize = 256;
/// Streams from peers read at once, all peers together.
pub const MAX_INBOUND: usize = 1024;
/// Streams from one peer read at once.
pub const MAX_INBOUND_PER_PEER: usize = 2;
/// After a stream to a peer could not be opened, its packets are dropped
/// (`no_route`) this long before the next try.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);
/// Bytes of frames put in one write.
const BATCH: usize = 64 << 10;

/// The device's side of the tunnel: packets read from it, and where the
/// packets for it go. A TUN device in the `vpn` role; channels in tests.
pub struct Device {
    /// Packets the device sent (to be routed to peers).
    pub from: mpsc::Receiver<Vec<u8>>,
    /// Packets for the device.
    pub to: mpsc::Sender<Vec<u8>>,
}

/// What a tunnel does besides carrying packets.
#[derive(Default)]
pub struct Options {
    /// Where peers refused a stream are written (once per peer, `refuse`
    /// of stream `vpn`, reason `not_allowed`).
    pub audit: Option<AuditLog>,
    /// As a priced exit: the accounts that pay for what crosses it. A
    /// packet a peer sends out through the exit, and each answer to it,
    /// needs room on the peer's account (else it is dropped as `unpaid`)
    /// and is billed by its size.
    pub payees: Option<Payees>,
    /// Through a priced exit (the peer): the meter of what crosses it, by
    /// the same count, against which its invoices are paid.
    pub meter: Option<(PeerId, Arc<AtomicU64>)>,
}

/// The node serves the protocol already (one tunnel per node).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the node carries a tunnel already ({PROTOCOL} is served)")]
pub struct AlreadyServed;

/// The tunnel's packet carrier (see the module docs).
#[derive(Clone)]
pub struct Vpn {
    inner: Arc<Inner>,
}

struct Inner {
    router: Mutex<Router>,
    /// An exit's accounts: what crosses it is charged to its peers.
    payees: Option<Payees>,
    /// A client's meter of what crosses its exit (the peer): what it pays.
    meter: Option<(PeerId, Arc<AtomicU64>)>,
    /// What was carried with each peer.
    stats: Mutex<HashMap<PeerId, report::PeerStats>>,
    /// The flows a client opened through its exit (whose answers count).
    flows: Mutex<ledgermesh_protocol::vpn::flows::Flows>,
    mtu: usize,
    /// The queue to each peer's writer.
    links: Mutex<HashMap<PeerId, mpsc::Sender<Vec<u8>>>>,
    /// Peers no stream could be opened to, until when.
    unreachable: Mutex<HashMap<PeerId, Instant>>,
    /// Drops by peer and reason, for telling at powers of two.
    told: Mutex<HashMap<(Option<PeerId>, Drop), u64>>,
    inbound: Arc<Semaphore>,
    /// Streams being read, by peer.
    reading: Mutex<HashMap<PeerId, usize>>,
    /// Where refusals are written, and the strangers written already.
    audit: Option<(AuditLog, Mutex<HashSet<PeerId>>)>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Vpn {
    /// Carries packets of at most `mtu` bytes as `router` decides.
    pub fn new(router: Router, mtu: usize) -> Self {
        Self::with(router, mtu, Options::default())
    }

    /// [`Vpn::new`], doing what `options` say besides.
    pub fn with(router: Router, mtu: usize, options: Options) -> Self {
        let Options {
            audit,
            payees,
            meter,
        } = options;
        Self {
            inner: Arc::new(Inner {
                router: Mutex::new(router),
                payees,
                meter,
                flows: Mutex::default(),
                stats: Mutex::default(),
                mtu,
                links: Mutex::new(HashMap::new()),
                unreachable: Mutex::new(HashMap::new()),
                told: Mutex::new(HashMap::new()),
                inbound: Arc::new(Semaphore::new(MAX_INBOUND)),
                reading: Mutex::new(HashMap::new()),
                audit: audit.map(|log| (log, Mutex::new(HashSet::new()))),
            }),
        }
    }

    /// The router, to allow or forbid peers while the tunnel runs.
    pub fn router(&self) -> MutexGuard<'_, Router> {
        lock(&self.inner.router)
    }

    /// Serves the protocol (from now on: a peer's stream is accepted once
    /// this returns) and carries the device's packets, in a task of the
    /// node's, until the device closes or the node stops.
    pub fn start(self, net: impl Net, device: Device) -> Result<(), AlreadyServed> {
        let incoming = net
            .stream_control()
            .accept(StreamProtocol::new(PROTOCOL))
            .map_err(|_| AlreadyServed)?;
        net.spawn(self.run(net.clone(), incoming, device));
        Ok(())
    }

    async fn run(self, net: impl Net, mut incoming: IncomingStreams, device: Device) {
        let Device { mut from, to } = device;
        loop {
            tokio::select! {
                next = incoming.next() => {
                    let Some((peer, stream)) = next else { break };
                    self.accepted(&net, peer, stream, to.clone());
                }
                packet = from.recv() => {
                    let Some(packet) = packet else { break };
                    self.outbound(&net, packet);
                }
                () = net.stopping() => break,
            }
        }
    }

    /// Counts a drop and tells the 1st, 2nd, 4th, … of each reason and peer.
    fn dropped(&self, net: &impl Net, peer: Option<PeerId>, why: Drop) {
        net.ops().metrics.vpn.dropped(why.as_str());
        let count = {
            let mut told = lock(&self.inner.told);
            if told.len() >= 4 * ledgermesh_protocol::vpn::router::MAX_PEERS {
                told.clear();
            }
            // Strangers are counted together: a new key each time would
            // otherwise be a new line each time.
            let key = if why == Drop::NotAllowed { None } else { peer };
            let n = told.entry((key, why)).or_default();
            *n += 1;
            *n
        };
        if count.is_power_of_two() && why != Drop::Local {
            tracing::debug!(peer = ?peer, reason = why.as_str(), count, "vpn packets dropped");
            net.emit(Event::VpnDropped {
                peer_id: peer.map(|p| p.to_string()),
                reason: why.as_str(),
                count,
            });
        }
    }

    /// Writes `peer`'s refusal to the audit log, the first time (until the
    /// memory of 4,096 strangers is full and starts over).
    pub fn audit_refusal(&self, net: &impl Net, peer: PeerId) {
        let Some((log, written)) = &self.inner.audit else {
            return;
        };
        {
            let mut written = lock(written);
            if written.len() >= 4096 {
                written.clear();
            }
            if !written.insert(peer) {
                return;
            }
        }
        let rec = AuditRecord::new(crate::clock::now_ms(), AuditKind::Refuse)
            .about(peer, "vpn")
            .reason(Drop::NotAllowed.as_str());
        if let Err(e) = log.append(&AuditLine::of(&rec, net.emitter().node())) {
            tracing::warn!(error = %e, "audit log write failed");
            net.emit(Event::error(crate::events::ErrorPart::Audit, e));
        }
    }

    fn told_peer(net: &impl Net, peer: PeerId, state: &'static str, direction: &'static str) {
        net.emit(Event::VpnPeer {
            peer_id: peer.to_string(),
            address: address_of(&peer).to_string(),
            state,
            direction,
        });
    }

    /// A packet from the device: onto its peer's queue.
    fn outbound(&self, net: &impl Net, packet: Vec<u8>) {
        let verdict = self.router().outbound(&packet);
        let peer = match verdict {
            Ok(peer) => peer,
            Err(why) => return self.dropped(net, None, why),
        };
        let now = Instant::now();
        {
            let mut unreachable = lock(&self.inner.unreachable);
            match unreachable.get(&peer) {
                Some(until) if *until > now => {
                    drop(unreachable);
                    return self.dropped(net, Some(peer), Drop::NoRoute);
                }
                Some(_) => {
                    unreachable.remove(&peer);
                }
                None => {}
            }
        }
        let queue = {
            let mut links = lock(&self.inner.links);
            if links.get(&peer).is_some_and(|q| q.is_closed()) {
                links.remove(&peer);
            }
            links
                .entry(peer)
                .or_insert_with(|| {
                    let (tx, rx) = mpsc::channel(QUEUE);
                    net.spawn(self.clone().write_to(net.clone(), peer, rx));
                    tx
                })
                .clone()
        };
        let charge = match self.charge(&peer, &packet, Way::Out) {
            Ok(c) => c,
            Err(why) => return self.dropped(net, Some(peer), why),
        };
        match queue.try_reserve() {
            Ok(room) => {
                charge.done();
                net.ops().metrics.vpn.carried(true, packet.len());
                self.count(peer, packet.len(), true);
                room.send(packet);
            }
            Err(_) => self.dropped(net, Some(peer), Drop::Congested),
        };
    }
}
