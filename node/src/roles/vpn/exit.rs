//! The `vpn` role's exit: as a gateway, its accounts and the host's
//! forwarding (`host::Gateway`); as a client, the exit's routes, which
//! follow the exit's connection (`host::Client`), and paying it.

use super::{host, VpnError};
use crate::events::Event;
use crate::swarm::NodeHandle;
use ledgermesh_protocol::vpn::{address_v4_of, ExitPolicy, IpNet, Peer, Router};
use libp2p::PeerId;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

/// How often a client looks whether its exit is connected, while it is not.
const EXIT_LOOK: Duration = Duration::from_millis(250);

/// An exit's part in the tunnel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// This node forwards its peers' traffic to its own network, behind
    /// its own address (`--exit`).
    Gateway {
        /// Whether its peers may reach private networks (`--exit-lan`).
        lan: bool,
    },
    /// This node sends `routes` through `peer` (`--exit PEER_ID`).
    Via {
        /// The exit.
        peer: PeerId,
        /// What goes through it (`--exit-routes`; by default everything:
        /// `0.0.0.0/0` and `::/0`).
        routes: Vec<IpNet>,
        /// Nothing leaves outside the tunnel, exit or not (`--kill-switch`).
        kill_switch: bool,
    },
}

/// What `--exit` names: this node as an exit (`gateway`, or the flag
/// alone), or the exit to use (its PeerId).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitFlag {
    /// `--exit` alone: be one.
    Gateway,
    /// `--exit PEER_ID`: use that one.
    Via(PeerId),
}

impl ExitFlag {
    /// The word for [`ExitFlag::Gateway`].
    pub const GATEWAY: &'static str = "gateway";
}

impl std::str::FromStr for ExitFlag {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            Self::GATEWAY => Ok(ExitFlag::Gateway),
            id => id
                .parse()
                .map(ExitFlag::Via)
                .map_err(|_| format!("{id:?} is neither a PeerId nor `{}`", Self::GATEWAY)),
        }
    }
}

impl std::fmt::Display for ExitFlag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitFlag::Gateway => f.write_str(Self::GATEWAY),
            ExitFlag::Via(peer) => write!(f, "{peer}"),
        }
    }
}

/// An exit's packets have no end of their own: what a peer owes below
/// half its window is asked for once its traffic pauses for a second.
pub(super) async fn invoice_when_quiet(handle: NodeHandle, payees: crate::protocols::pay::Payees) {
    let mut seen = std::collections::HashMap::new();
    loop {
        tokio::select! {
            () = handle.stopping() => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        payees.invoice_quiet(&mut seen);
    }
}

/// Allows the exit's networks: to an exit, each peer's IPv4 address from
/// its key (where it has none of its own); through an exit, its routes.
pub(super) fn exit_routes(
    router: &mut Router,
    exit: Option<&Exit>,
    tun: &str,
) -> Result<(), VpnError> {
    match exit {
        None => {}
        Some(Exit::Gateway { lan }) => {
            // The host's IPv6 LAN has global addresses; an IPv4 LAN is
            // private space (or, on a server, the provider's subnet of
            // other customers, not the host's LAN).
            let local = (host::connected_networks(tun).into_iter())
                .filter(|n| matches!(n, IpNet::V6(_)))
                .collect();
            router.serve_exit(ExitPolicy { lan: *lan, local });
            give_v4(router);
        }
        Some(Exit::Via { peer, routes, .. }) => {
            let mut nets = router
                .networks(peer)
                .map(|n| n[1..].to_vec())
                .unwrap_or_default();
            nets.extend(routes.iter().copied());
            router.allow(Peer {
                id: *peer,
                allowed_ips: nets,
            })?;
        }
    }
    Ok(())
}

/// Gives each allowed peer without an IPv4 address its key's. Two keys
/// with one address (22 bits: a key can be ground to match another's) get
/// it neither: each keeps its IPv6 address only, and the warning names
/// them (give them addresses with `--peer ID=ADDR/32`). Nobody takes
/// another's IPv4 address, whatever the order peers are read in.
fn give_v4(router: &mut Router) {
    let mut wanting: std::collections::HashMap<std::net::Ipv4Addr, Vec<Peer>> = Default::default();
    for peer in router.peers() {
        if !peer.allowed_ips.iter().any(|n| matches!(n, IpNet::V4(_))) {
            wanting
                .entry(address_v4_of(&peer.id))
                .or_default()
                .push(peer);
        }
    }
    for (v4, mut peers) in wanting {
        if peers.len() > 1 {
            let ids: Vec<String> = peers.iter().map(|p| p.id.to_string()).collect();
            tracing::warn!(address = %v4, peers = ?ids, "keys with one IPv4 address: neither gets it");
            continue;
        }
        let Some(mut peer) = peers.pop() else {
            continue;
        };
        peer.allowed_ips.push(IpNet::from(std::net::IpAddr::V4(v4)));
        if let Err(e) = router.allow(peer) {
            // Another peer's own address (`--peer ID=ADDR/32`).
            tracing::warn!(error = %e, "a peer's IPv4 address is taken");
        }
    }
}

/// The exit as `vpn status` shows it.
pub(super) fn view(exit: Option<&Exit>) -> serde_json::Value {
    match exit {
        None => serde_json::Value::Null,
        Some(Exit::Gateway { lan }) => serde_json::json!({ "gateway": true, "lan": lan }),
        Some(Exit::Via {
            peer,
            routes,
            kill_switch,
        }) => serde_json::json!({
            "peer_id": peer.to_string(),
            "routes": routes.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "kill_switch": kill_switch,
        }),
    }
}

/// A client's exit, and what it needs to follow it.
pub(super) struct ExitClient {
    pub(super) exit: PeerId,
    pub(super) routes: Vec<IpNet>,
    pub(super) kill_switch: bool,
    pub(super) payer: Option<crate::protocols::pay::PayerConfig>,
    /// What crossed the exit (the tunnel counts it).
    pub(super) meter: Arc<AtomicU64>,
    pub(super) own_hosts: Vec<std::net::IpAddr>,
}

/// The host's side of the exit while the role runs: a gateway's is set up
/// already (and told); a client's routes follow the exit (see
/// [`follow_exit`]). Returns when the node stops, or with an error.
pub(super) async fn exit_host(
    handle: &NodeHandle,
    client: Option<ExitClient>,
    tun: &str,
    gateway: bool,
) -> Result<(), VpnError> {
    if gateway {
        handle.emit(Event::VpnExit {
            peer_id: handle.peer_id().to_string(),
            state: "gateway",
            routes: vec![],
            kill_switch: false,
        });
    }
    let Some(client) = client else {
        return std::future::pending().await;
    };
    let Ok(listening) = handle.wait_listening().await else {
        return Ok(()); // stopped before it listened
    };
    let mut own = own_ports(&listening);
    own.hosts = client.own_hosts.clone();
    let host = host::Client::open(tun, client.routes.clone(), &own, client.kill_switch)?;
    follow_exit(handle, client, host).await
}

/// The node's own listening ports (TCP and UDP), from `snapshot`.
fn own_ports(snapshot: &crate::net::Snapshot) -> host::OwnPorts {
    let mut own = host::OwnPorts::default();
    for (socket, udp) in snapshot
        .direct_addrs
        .iter()
        .filter_map(crate::addr::socket_of)
    {
        let ports = if udp { &mut own.udp } else { &mut own.tcp };
        if !ports.contains(&socket.port()) {
            ports.push(socket.port());
        }
    }
    own
}

/// Sends the routes into the tunnel while the exit is connected, and back
/// to the host's routes while it is not (the kill switch holds them),
/// telling each change (`vpn_exit`), and pays the exit each time it is
/// reached, until the node stops.
async fn follow_exit(
    handle: &NodeHandle,
    client: ExitClient,
    mut host: host::Client,
) -> Result<(), VpnError> {
    let exit = client.exit;
    let tell = |state: &'static str| {
        handle.emit(Event::VpnExit {
            peer_id: exit.to_string(),
            state,
            routes: client.routes.iter().map(IpNet::to_string).collect(),
            kill_switch: client.kill_switch,
        })
    };
    let connected = || async {
        (handle.snapshot().await).is_ok_and(|s| s.connections.iter().any(|c| c.peer == exit))
    };
    loop {
        // Watched before looking, so that no close goes unseen.
        let Ok(mut closes) = handle.watch_closes(exit).await else {
            return Ok(()); // stopped
        };
        while !connected().await {
            tokio::select! {
                () = handle.stopping() => return Ok(()),
                () = tokio::time::sleep(EXIT_LOOK) => {}
            }
        }
        host.route(true)?;
        tell("up");
        let (h, payer, meter) = (handle.clone(), client.payer.clone(), client.meter.clone());
        handle.spawn(async move { crate::roles::paying::pay_exit(&h, exit, payer, meter).await });
        loop {
            tokio::select! {
                () = handle.stopping() => return Ok(()),
                () = closes.closed() => {}
            }
            if !connected().await {
                break;
            }
        }
        host.route(false)?;
        tell("down");
    }
}
