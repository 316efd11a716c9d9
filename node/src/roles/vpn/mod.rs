//! The `vpn` role: a TUN device with the node's mesh address, whose
//! packets travel to allowed peers over the node's own connections (direct
//! after hole punching, relayed otherwise) as `protocols::vpn` carries them
//! and the router decides.

mod exit;
pub mod host;
mod signal;
mod tun;

use exit::{exit_host, exit_routes, invoice_when_quiet, ExitClient};
pub use exit::{Exit, ExitFlag};

use crate::events::Event;
use crate::protocols::vpn::{AlreadyServed, Device, Options, Vpn, QUEUE};
use crate::swarm::NodeHandle;
use ledgermesh_protocol::vpn::{
    address_of, address_v4_of, Ipv4Net, Peer, Router, RouterError, V4_NET_LEN,
};
use libp2p::{Multiaddr, PeerId};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// The default MTU: an IPv6 packet of this size fits one QUIC datagram on
/// a 1,500-byte path (1,452 bytes of UDP payload over IPv6, less a short
/// header with an 8-byte connection id, the AEAD tag and the frame's own
/// header), with room to spare.
pub const DEFAULT_MTU: u16 = 1400;
/// The default device name.
pub const DEFAULT_TUN: &str = "ledgermesh0";
/// How often a peer given by address is dialed again while not connected.
const REDIAL: Duration = Duration::from_secs(5);

/// What the role needs.
#[derive(Clone)]
pub struct VpnConfig {
    /// The TUN device's name.
    pub tun_name: String,
    /// Its MTU.
    pub mtu: u16,
    /// The peers allowed (their own addresses, and their `allowed_ips`).
    pub peers: Vec<Peer>,
    /// Our IPv4 address inside the tunnel, and its network.
    pub address_v4: Option<ledgermesh_protocol::vpn::Ipv4Net>,
    /// Peers to reach at these addresses (`…/p2p/<id>`), kept connected.
    pub dial: Vec<Multiaddr>,
    /// Whom to ask for our public address (the relays, and `--observer`s).
    pub observers: Vec<Multiaddr>,
    /// Agreeing observers needed (default: a majority).
    pub quorum: Option<usize>,
    /// Where peers refused are written (`--audit-log`).
    pub audit: Option<crate::access::audit_log::AuditLog>,
    /// Whether this node is an exit, or sends traffic through one.
    pub exit: Option<Exit>,
    /// As an exit: the accounts of the peers that pay for what crosses it
    /// (`--price-per-mib`); none: it is free.
    pub payees: Option<crate::protocols::pay::Payees>,
    /// Through an exit: how to pay it, if it charges (`--deposit`).
    pub payer: Option<crate::protocols::pay::PayerConfig>,
    /// Through an exit: addresses the node itself talks to besides its
    /// peers (its ledger's RPC endpoint), kept on the host's routes.
    pub own_hosts: Vec<std::net::IpAddr>,
    /// The ledger on which peers named by PeerId alone are asked for their
    /// addresses, and allowed peers' requests answered (see `signal`).
    pub ledger: Option<Arc<dyn ledgermesh_ledger::Ledger>>,
    /// Where the ledger cursor is kept across restarts.
    pub data_dir: Option<std::path::PathBuf>,
}

/// Why the role could not start.
#[derive(Debug, thiserror::Error)]
pub enum VpnError {
    /// The device could not be made for want of the right.
    #[error(
        "cannot create the TUN device {name}: it needs CAP_NET_ADMIN (run as root, or give \
         the binary the capability: setcap cap_net_admin+ep BINARY)"
    )]
    NoPermission {
        /// The device's name.
        name: String,
        /// What the kernel said.
        source: std::io::Error,
    },
    /// The device could not be made or set up.
    #[error("the TUN device {name} could not be set up, or failed")]
    Device {
        /// The device's name.
        name: String,
        /// What failed.
        source: std::io::Error,
    },
    /// A peer could not be allowed.
    #[error(transparent)]
    Router(#[from] RouterError),
    /// The node carries a tunnel already.
    #[error(transparent)]
    AlreadyServed(#[from] AlreadyServed),
    /// A `--peer-addr` without `/p2p/<id>`.
    #[error("{0}: a peer's address must end in /p2p/<peer id>")]
    NoPeerId(Multiaddr),
    /// A device name Linux or this role would not take.
    #[error("{0:?} cannot be a device's name: 1 to 15 letters, digits, `_`, `-` or `.`")]
    DeviceName(String),
    /// The host's routes or firewall for an exit could not be set up.
    #[error(transparent)]
    Host(#[from] host::HostError),
}

/// The peers to keep dialed (from `--peer-addr`).
type Dials = Vec<(PeerId, Multiaddr)>;

/// The router of `me` as `config` allows peers, the peers to dial, and our
/// IPv4 address inside the tunnel (with an exit, a node has one: its own
/// or the one its key gives it).
fn router_of(
    me: &PeerId,
    config: &VpnConfig,
) -> Result<(Router, Dials, Option<Ipv4Net>), VpnError> {
    let v4 = (config.address_v4).or_else(|| {
        let derived = Ipv4Net::new(address_v4_of(me), V4_NET_LEN).expect("a valid length");
        config.exit.is_some().then_some(derived)
    });
    let also: Vec<std::net::IpAddr> = v4.iter().map(|n| n.addr().into()).collect();
    let mut router = Router::new(me, &also, usize::from(config.mtu));
    let mut dial = vec![];
    for addr in &config.dial {
        let peer = crate::addr::peer_of(addr).ok_or_else(|| VpnError::NoPeerId(addr.clone()))?;
        if !router.is_allowed(&peer) {
            router.allow(Peer::new(peer))?;
        }
        dial.push((peer, addr.clone()));
    }
    for peer in &config.peers {
        router.allow(peer.clone())?;
    }
    exit_routes(&mut router, config.exit.as_ref(), &config.tun_name)?;
    Ok((router, dial, v4))
}

/// Opens the TUN device, naming a missing right as such.
fn open_device(
    config: &VpnConfig,
    address: std::net::Ipv6Addr,
    v4: Option<Ipv4Net>,
) -> Result<tun_rs::AsyncDevice, VpnError> {
    tun::open(&config.tun_name, config.mtu, address, v4).map_err(|source| {
        let name = config.tun_name.clone();
        match source.kind() {
            std::io::ErrorKind::PermissionDenied => VpnError::NoPermission { name, source },
            _ => VpnError::Device { name, source },
        }
    })
}

/// Runs the role until the node stops.
pub async fn run(handle: NodeHandle, config: VpnConfig) -> Result<(), VpnError> {
    let me = handle.peer_id();
    let address = address_of(&me);
    let mtu = config.mtu;
    if !host::is_device_name(&config.tun_name) {
        return Err(VpnError::DeviceName(config.tun_name));
    }
    let (router, dial, v4) = router_of(&me, &config)?;
    let dev = open_device(&config, address, v4)?;
    let tun_name = dev.name().unwrap_or(config.tun_name.clone());
    let gateway = match config.exit {
        Some(Exit::Gateway { lan }) => Some(host::Gateway::open(&tun_name, lan)?),
        _ => None,
    };
    let dev = Arc::new(dev);
    let (to_tunnel, from) = mpsc::channel(QUEUE);
    let (to, from_tunnel) = mpsc::channel(QUEUE);
    let settle = Settle {
        observers: config.observers.clone(),
        quorum: config.quorum,
        ledger: config.ledger.clone(),
        data_dir: config.data_dir.clone(),
        // An exit's clients come to it; others ask each peer named by its
        // PeerId alone.
        ask: match gateway {
            Some(_) => vec![],
            None => (router.peers().into_iter())
                .map(|p| p.id)
                .filter(|p| !dial.iter().any(|(d, _)| d == p))
                .collect(),
        },
    };
    let exit_view = exit::view(config.exit.as_ref());
    let (options, client) = carrying(&handle, config, gateway.is_some());
    let vpn = Vpn::with(router, usize::from(mtu), options);
    vpn.clone().start(handle.clone(), Device { from, to })?;
    show(&handle, vpn.clone(), tun_name.clone(), mtu, exit_view);
    handle.spawn(settle.run(handle.clone(), vpn));
    let reader = handle.spawn(tun::read(dev.clone(), mtu, to_tunnel));
    let writer = handle.spawn(tun::write(dev, from_tunnel));
    tracing::debug!(%address, tun = %tun_name, "vpn up");
    handle.emit(Event::VpnUp {
        address: address.to_string(),
        tun: tun_name.clone(),
        mtu,
    });
    // The role runs while its device does: a device that is gone (deleted
    // under it) ends the role with the reason.
    let name = tun_name.clone();
    let gone = |r: Result<Option<std::io::Result<()>>, tokio::task::JoinError>| match r {
        Ok(Some(Err(source))) => Err(VpnError::Device { name, source }),
        _ => Ok(()),
    };
    let exit = exit_host(&handle, client, &tun_name, gateway.is_some());
    tokio::select! {
        r = exit => r,
        () = keep_connected(&handle, &dial) => Ok(()),
        r = reader => gone(r),
        r = writer => gone(r),
    }
}

/// The tunnel as the operator sees it (`vpn status`): `vpn`'s peers,
/// with the device, its MTU and the exit.
fn show(handle: &NodeHandle, vpn: Vpn, tun: String, mtu: u16, exit: serde_json::Value) {
    handle.ops().report_vpn(Arc::new(move || {
        let mut report = vpn.report();
        report["tun"] = tun.as_str().into();
        report["mtu"] = mtu.into();
        report["exit"] = exit.clone();
        report
    }));
}

/// What the tunnel does besides carrying packets (audit, an exit's
/// accounts, a client's meter), and a client's exit; starts a priced
/// exit's payment service.
fn carrying(
    handle: &NodeHandle,
    config: VpnConfig,
    gateway: bool,
) -> (Options, Option<ExitClient>) {
    let payees = config.payees.filter(|_| gateway);
    if let Some(p) = &payees {
        handle.ops().report_payees(p.book_reader());
        handle.spawn(p.clone().serve(handle.stream_control()));
        handle.spawn(invoice_when_quiet(handle.clone(), p.clone()));
    }
    let client = match config.exit {
        Some(Exit::Via {
            peer,
            routes,
            kill_switch,
        }) => Some(ExitClient {
            exit: peer,
            routes,
            kill_switch,
            payer: config.payer,
            meter: Arc::new(AtomicU64::new(0)),
            own_hosts: config.own_hosts,
        }),
        _ => None,
    };
    let options = Options {
        audit: config.audit,
        payees,
        meter: client.as_ref().map(|c| (c.exit, c.meter.clone())),
    };
    (options, client)
}

/// Where the node stands before it signals, and whom it asks.
struct Settle {
    observers: Vec<Multiaddr>,
    quorum: Option<usize>,
    ledger: Option<Arc<dyn ledgermesh_ledger::Ledger>>,
    data_dir: Option<std::path::PathBuf>,
    /// Peers to reach through the ledger.
    ask: Vec<PeerId>,
}

impl Settle {
    /// Reservations on free relays (this role pays none), then our public
    /// address, so that peers behind NATs meet through a relay and punch
    /// through to a direct path; then, with a ledger, answers allowed peers'
    /// requests and asks each peer named by its PeerId alone.
    async fn run(self, handle: NodeHandle, vpn: Vpn) {
        let settled =
            crate::roles::paying::settle(&handle, None, &self.observers, self.quorum).await;
        if let Err(e) = settled {
            tracing::debug!(error = %e, "vpn node stopping before it settled");
            return;
        }
        let Some(ledger) = self.ledger else {
            return;
        };
        let dir = self.data_dir.as_deref();
        let signaling = match signal::Signaling::start(&handle, ledger, dir, vpn).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "vpn: the ledger cannot be followed");
                handle.emit(Event::error(crate::events::ErrorPart::Ledger, e));
                return;
            }
        };
        for peer in self.ask {
            handle.spawn(signaling.clone().keep_reached(peer));
        }
    }
}

/// Dials each `(peer, address)` that is not connected, every few seconds,
/// until the node stops.
async fn keep_connected(handle: &NodeHandle, dial: &[(PeerId, Multiaddr)]) {
    loop {
        // One look at the connections per round, not one per peer.
        let connected: std::collections::HashSet<PeerId> = match dial.is_empty() {
            true => Default::default(),
            false => (handle.snapshot().await)
                .map(|s| s.connections.iter().map(|c| c.peer).collect())
                .unwrap_or_default(),
        };
        for (peer, addr) in dial {
            if !connected.contains(peer) {
                if let Err(e) = handle.dial(*peer, vec![addr.clone()]).await {
                    tracing::debug!(%peer, error = %e, "vpn peer not reached yet");
                }
            }
        }
        tokio::select! {
            () = handle.stopping() => return,
            () = tokio::time::sleep(REDIAL) => {}
        }
    }
}
