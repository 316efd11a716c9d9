//! The composed behaviour of every ledgermesh node, and the transport stack
//! under it (TCP + our noise + our yamux, QUIC, the relay client).

use super::config::{NodeConfig, IDENTIFY_PROTOCOL};
use super::handle::NodeError;
use super::slim::Slim;
use crate::protocols::observe;
use libp2p::connection_limits::ConnectionLimits;
use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::{global_only, Boxed};
use libp2p::core::upgrade::Version;
use libp2p::core::Transport as _;
use libp2p::memory_connection_limits;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{dcutr, identify, identity::Keypair, ping, relay, tcp, PeerId, Swarm};

pub use composed::{Behaviour, BehaviourEvent};

/// The derive below generates an undocumented event enum; keep it contained.
#[allow(missing_docs)]
mod composed {
    use libp2p::swarm::{behaviour::toggle::Toggle, NetworkBehaviour};
    use libp2p::{dcutr, identify, ping, relay};

    /// The composed behaviour of every ledgermesh node. The limits come
    /// first: a connection they deny never reaches the others.
    #[derive(NetworkBehaviour)]
    pub struct Behaviour {
        pub(crate) limits: libp2p::connection_limits::Behaviour,
        pub(crate) memory: libp2p::memory_connection_limits::Behaviour,
        pub(crate) relay_client: relay::client::Behaviour,
        pub(crate) relay_server: Toggle<crate::protocols::relay::behaviour::Behaviour>,
        /// A relay's inbound hop streams, through a bounded queue.
        pub(crate) hop_inbox: Toggle<crate::swarm::inbound::Inbound>,
        /// Inbound data streams, through a bounded queue to the stream server.
        pub(crate) stream_inbox: crate::swarm::inbound::Inbound,
        pub(crate) dcutr: Toggle<dcutr::Behaviour>,
        pub(crate) identify: identify::Behaviour,
        pub(crate) ping: ping::Behaviour,
        pub(crate) stream: libp2p_stream::Behaviour,
        pub(crate) observe: crate::protocols::observe::Behaviour,
    }
}

/// How the transports are set up (from the node's config).
struct Wire {
    /// Announce AESGCM for Noise.
    aesgcm: bool,
    /// QUIC's MTU ceiling.
    quic_mtu_ceiling: u16,
    /// Dial non-global addresses too.
    allow_private: bool,
}

/// TCP (noise, our yamux) and QUIC. Unless `allow_private`, wrapped so that
/// only globally routable addresses are ever dialed: an address a stranger
/// hands us (in a response, through DCUtR) cannot make us probe a LAN.
fn transport(
    key: &Keypair,
    wire: &Wire,
    handshakes: super::noise::Handshakes,
    relay: relay::client::Transport,
    meters: crate::ops::metered::RelayMeters,
    punch: super::punch::PunchHandle,
) -> Result<Boxed<(PeerId, StreamMuxerBox)>, Box<dyn std::error::Error + Send + Sync>> {
    let tcp = tcp::tokio::Transport::new(tcp::Config::default().nodelay(true))
        .upgrade(Version::V1Lazy)
        .authenticate(
            super::noise::Config::with_aesgcm(key, wire.aesgcm)?
                .with_handshakes(handshakes.clone()),
        )
        .multiplex(super::mux::Config::new())
        .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)));
    // QUIC with the sprays and probes of hard-NAT traversal (punch.rs).
    let quic = super::quic::Transport::new(
        key,
        super::quic::Config {
            mtu_ceiling: wire.quic_mtu_ceiling,
            ..Default::default()
        },
    )?;
    let quic = super::punch::Punch::new(quic, punch)
        .map(|(peer, conn), _| (peer, StreamMuxerBox::new(conn)));
    let both = tcp.or_transport(quic).map(|either, _| either.into_inner());
    let direct = if wire.allow_private {
        both.boxed()
    } else {
        global_only::Transport::new(both).boxed()
    };
    // Circuits through relays, counted per relay (what a relay bills).
    let circuits = relay
        .map(move |conn, endpoint| {
            let addr = match &endpoint {
                libp2p::core::ConnectedPoint::Dialer { address, .. } => address,
                libp2p::core::ConnectedPoint::Listener { local_addr, .. } => local_addr,
            };
            crate::ops::metered::Metered::new(conn, meters.for_addr(addr))
        })
        .upgrade(Version::V1Lazy)
        .authenticate(
            super::noise::Config::with_aesgcm(key, wire.aesgcm)?.with_handshakes(handshakes),
        )
        .multiplex(super::mux::Config::new())
        .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)));
    Ok(direct
        .or_transport(circuits)
        .map(|either, _| either.into_inner())
        .boxed())
}

/// What the transports report to the rest of the node.
pub(super) struct TransportHooks {
    /// Bytes through each relay's circuits.
    pub(super) meters: crate::ops::metered::RelayMeters,
    /// The hard-NAT sprays and probes.
    pub(super) punch: super::punch::PunchHandle,
    /// Each Noise handshake's cipher.
    pub(super) handshakes: super::noise::Handshakes,
}

/// Builds the swarm `config` describes (listeners are opened by the caller).
pub(super) fn build(
    config: &NodeConfig,
    keypair: Keypair,
    relay_server: Option<crate::protocols::relay::behaviour::Behaviour>,
    hop_inbox: Option<super::inbound::Inbound>,
    stream_inbox: super::inbound::Inbound,
    hooks: TransportHooks,
) -> Result<Swarm<Slim<Behaviour>>, NodeError> {
    let TransportHooks {
        meters,
        punch,
        handshakes,
    } = hooks;
    let build = |e: &dyn std::fmt::Display| NodeError::Build(e.to_string());
    // The relay client's transport and behaviour are made together.
    let relay_slot = std::sync::Mutex::new(None);
    let hole_punching = config.hole_punching;
    let allow_private = config.allow_private_addrs;
    let limits = config.limits;
    let swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_other_transport(|key| {
            let (relay_transport, relay_client) = relay::client::new(key.public().to_peer_id());
            *relay_slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(relay_client);
            transport(
                key,
                &Wire {
                    aesgcm: config.noise_aesgcm,
                    quic_mtu_ceiling: config.quic_mtu_ceiling,
                    allow_private,
                },
                handshakes.clone(),
                relay_transport,
                meters,
                punch,
            )
        })
        .map_err(|e| build(&e))?
        .with_behaviour(|key| {
            let relay_client = (relay_slot.lock().unwrap_or_else(|p| p.into_inner()))
                .take()
                .expect("the transport was built first");
            let local = key.public().to_peer_id();
            let caps = limits;
            let connection_limits = ConnectionLimits::default()
                .with_max_established(Some(caps.max_connections))
                .with_max_established_per_peer(Some(caps.max_connections_per_peer))
                .with_max_pending_incoming(Some(caps.max_pending_incoming));
            Slim(Behaviour {
                limits: libp2p::connection_limits::Behaviour::new(connection_limits),
                memory: match caps.max_memory_bytes {
                    Some(bytes) => memory_connection_limits::Behaviour::with_max_bytes(bytes),
                    None => memory_connection_limits::Behaviour::with_max_percentage(0.9),
                },
                relay_client,
                relay_server: Toggle::from(relay_server),
                hop_inbox: Toggle::from(hop_inbox),
                stream_inbox,
                dcutr: Toggle::from(hole_punching.then(|| dcutr::Behaviour::new(local))),
                identify: identify::Behaviour::new(identify::Config::new(
                    IDENTIFY_PROTOCOL.into(),
                    key.public(),
                )),
                ping: ping::Behaviour::new(ping::Config::new().with_interval(config.ping_interval)),
                stream: libp2p_stream::Behaviour::new(),
                observe: observe::Behaviour::new(allow_private),
            })
        })
        .map_err(|e| build(&e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(config.idle_timeout))
        .build();
    Ok(swarm)
}
