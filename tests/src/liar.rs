//! A lying address-consensus observer: a separate libp2p swarm that speaks
//! `/ledgermesh/observe/1` and answers every asker with the same forged
//! address and a forged dial-back result.

use futures::StreamExt;
use ledgermesh_node::observe::{ObserveCodec, OBSERVE_PROTOCOL};
use ledgermesh_proto::v1 as pb;
use libp2p::request_response::{self as rr, ProtocolSupport};
use libp2p::swarm::SwarmEvent;
use libp2p::{identity::Keypair, noise, tcp, yamux, Multiaddr};

/// Starts a liar on loopback TCP answering `lie`; returns its dialable
/// address (`…/p2p/<id>`). It runs until the test's runtime ends.
pub async fn lying_observer(lie: Multiaddr) -> Multiaddr {
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(Keypair::generate_ed25519())
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .expect("tcp transport")
        .with_behaviour(|_| {
            rr::Behaviour::<ObserveCodec>::new(
                [(OBSERVE_PROTOCOL, ProtocolSupport::Full)],
                rr::Config::default(),
            )
        })
        .expect("behaviour")
        .build();
    let peer = *swarm.local_peer_id();
    swarm
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().expect("valid"))
        .expect("listen");
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            break address;
        }
    };
    tokio::spawn(async move {
        loop {
            if let SwarmEvent::Behaviour(rr::Event::Message {
                message: rr::Message::Request { channel, .. },
                ..
            }) = swarm.select_next_some().await
            {
                let forged = pb::ObserveResponse {
                    observed: lie.to_vec(),
                    dial_back: pb::DialBack::Reachable as i32,
                    ..Default::default()
                };
                let _ = swarm.behaviour_mut().send_response(channel, forged);
            }
        }
    });
    addr.with(libp2p::multiaddr::Protocol::P2p(peer))
}
