//! The QUIC round of address consensus: observers reached over TCP told
//! us their QUIC addresses; asked there too, they give the UDP mapping the
//! easy side of a hard-NAT attempt offers.

use super::client::{play, report, ROUND_TIMEOUT};
use super::ObserveNet;
use crate::addr::{peer_of, socket_of, socket_to_multiaddr};
use ledgermesh_protocol::consensus::{ConsensusPolicy, Group, Mapping, Round, RoundAction};
use ledgermesh_protocol::Machine;
use libp2p::{Multiaddr, PeerId};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

/// Opens a QUIC connection to `observer` beside the one we have and asks
/// where it sees us over UDP: the answer's own address when the request
/// went over QUIC, else the QUIC connection's, told beside it.
async fn ask_quic(
    handle: &impl ObserveNet,
    observer: PeerId,
    addr: Multiaddr,
) -> Option<SocketAddr> {
    let id = handle.dial_also(observer, addr).await.ok()?;
    let resp = handle.observe(observer, false).await;
    // Done with it: the node goes on with the connection it had.
    handle.close_connection(id).await;
    let resp = resp.ok()?;
    std::iter::once(resp.observed)
        .chain(resp.also_observed)
        .filter_map(|b| Multiaddr::try_from(b).ok())
        .filter_map(|a| socket_of(&a))
        .find_map(|(sock, udp)| udp.then_some(sock))
}

/// The QUIC round: each observer at a QUIC address it told on the IP it
/// was configured at (an observer cannot point us anywhere else), decided
/// with the quorum of the main round over every configured observer, and
/// kept only on the main verdict's IP. `None`: no QUIC verdict.
pub(super) async fn check_quic(
    handle: &impl ObserveNet,
    observers: &[Multiaddr],
    told: HashMap<PeerId, Vec<Multiaddr>>,
    policy: ConsensusPolicy,
    ip: Option<std::net::IpAddr>,
) -> Option<Multiaddr> {
    use ledgermesh_protocol::path::scope::ip_of;
    let targets: HashMap<PeerId, Multiaddr> = (observers.iter())
        .filter_map(|a| {
            let peer = peer_of(a)?;
            let same_ip = told.get(&peer)?.iter().find(|q| ip_of(q) == ip_of(a))?;
            Some((peer, same_ip.clone()))
        })
        .collect();
    // As many must agree as in the main round: fewer observers telling a
    // QUIC address cannot lower the bar.
    let policy = ConsensusPolicy {
        quorum: Some(policy.quorum_for(observers.len())),
        ..policy
    };
    if targets.len() < policy.min_observers {
        return None;
    }
    let mut round = Round::new(
        Instant::now(),
        handle.peer_id(),
        targets.len(),
        targets.iter().map(|(p, a)| (*p, Group::of(a))),
        policy,
        ROUND_TIMEOUT,
    );
    let mut asks = tokio::task::JoinSet::new();
    while let Some(RoundAction::Ask { observer }) = round.poll_action() {
        let (handle, addr) = (handle.clone(), targets[&observer].clone());
        asks.spawn(async move {
            let seen = ask_quic(&handle, observer, addr).await;
            (observer, seen.map(|sock| (sock, true, None)))
        });
    }
    play(&mut round, asks).await;
    let outcome = round.outcome();
    report(handle, &outcome, targets.len());
    let v = &outcome.verdict;
    let agreed = outcome.note.is_none() && outcome.udp && v.ip.is_some() && v.ip == ip;
    (agreed && v.mapping == Mapping::EndpointIndependent)
        .then(|| v.addr.map(|a| socket_to_multiaddr(a, true)))
        .flatten()
}
