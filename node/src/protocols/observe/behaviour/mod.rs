//! The observe protocol as a `NetworkBehaviour`: request-response underneath,
//! plus the connections' remote addresses and the dial-backs in flight.

use super::codec::{ObserveCodec, OBSERVE_PROTOCOL};
use ledgermesh_proto::v1 as pb;
use ledgermesh_protocol::consensus::{DialBackAnswer, DialBackLimits, DialBacks};
use ledgermesh_protocol::path::scope::{ip_of, is_global};
use ledgermesh_protocol::path::{classify, PathKind};
use ledgermesh_protocol::Machine;
use libp2p::core::transport::PortUse;
use libp2p::core::Endpoint;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self as rr, OutboundRequestId, ResponseChannel};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{
    CloseConnection, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler,
    THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId};
use std::collections::{HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Why an observe request got no answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ObserveError {
    /// The request failed on the wire (not connected, timeout, refused).
    #[error("observe request failed: {0}")]
    Failed(#[from] rr::OutboundFailure),
    /// The node stopped before the answer came.
    #[error("node has shut down")]
    Stopped,
}

/// Most addresses of each kind told in one answer.
const MAX_TOLD: usize = 4;

type Reply = oneshot::Sender<Result<pb::ObserveResponse, ObserveError>>;
/// What we tell an asker beside its address: our QUIC listen addresses, and
/// its other connections' remote addresses.
type Extra = (Vec<Vec<u8>>, Vec<Vec<u8>>);
type Probe = (ResponseChannel<pb::ObserveResponse>, Vec<u8>, Extra);

/// Both sides of the observe protocol.
pub struct Behaviour {
    inner: rr::Behaviour<ObserveCodec>,
    /// Each connection's peer and remote address (`None`: relayed).
    remotes: HashMap<ConnectionId, (PeerId, Option<Multiaddr>)>,
    /// Our own QUIC listen addresses, told to askers (at most
    /// [`MAX_TOLD`]).
    quic_listen: Vec<Multiaddr>,
    probes: DialBacks<ConnectionId, Probe>,
    /// Probe connections answered or given up on, closed when they come up.
    closing: HashSet<ConnectionId>,
    asks: HashMap<OutboundRequestId, Reply>,
    allow_private: bool,
    actions: VecDeque<ToSwarm<Infallible, THandlerInEvent<Self>>>,
    timer: Option<(Instant, Pin<Box<tokio::time::Sleep>>)>,
}

mod network;

impl Behaviour {
    /// A behaviour that asks and answers; it dials back only global
    /// addresses unless `allow_private`.
    pub fn new(allow_private: bool) -> Self {
        Self {
            inner: rr::Behaviour::with_codec(
                ObserveCodec,
                [(OBSERVE_PROTOCOL, rr::ProtocolSupport::Full)],
                rr::Config::default().with_request_timeout(Duration::from_secs(20)),
            ),
            remotes: HashMap::new(),
            quic_listen: Vec::new(),
            probes: DialBacks::new(DialBackLimits::default()),
            closing: HashSet::new(),
            asks: HashMap::new(),
            allow_private,
            actions: VecDeque::new(),
            timer: None,
        }
    }

    /// Asks connected `peer` where it sees us; the answer goes to `reply`.
    pub fn ask(&mut self, peer: PeerId, dial_back: bool, reply: Reply) {
        let id = self
            .inner
            .send_request(&peer, pb::ObserveRequest { dial_back });
        self.asks.insert(id, reply);
    }

    /// Whether `id` is a dial-back probe (not a connection anyone asked for).
    pub fn is_probe(&self, id: ConnectionId) -> bool {
        self.closing.contains(&id) || self.probes.is_probe(id)
    }

    fn respond_with(
        &mut self,
        channel: ResponseChannel<pb::ObserveResponse>,
        observed: Vec<u8>,
        dial_back: pb::DialBack,
        (quic_listen, also_observed): Extra,
    ) {
        let response = pb::ObserveResponse {
            observed,
            dial_back: dial_back as i32,
            quic_listen,
            also_observed,
        };
        let _ = self.inner.send_response(channel, response);
    }

    /// Our QUIC listen addresses, and the remote addresses of `peer`'s
    /// direct connections to us other than `connection`.
    fn extra_for(&self, peer: PeerId, connection: ConnectionId) -> Extra {
        let quic = self.quic_listen.iter().map(|a| a.to_vec()).collect();
        let also = (self.remotes.iter())
            .filter(|(id, (p, _))| **id != connection && *p == peer)
            .filter_map(|(_, (_, remote))| remote.as_ref().map(|a| a.to_vec()))
            .take(MAX_TOLD)
            .collect();
        (quic, also)
    }

    fn finish_probe(&mut self, id: ConnectionId, reachable: bool) {
        if let Some(((channel, observed, extra), answer)) = self.probes.finish(id, reachable) {
            let answer = match answer {
                DialBackAnswer::Reachable => pb::DialBack::Reachable,
                DialBackAnswer::Unreachable => pb::DialBack::Unreachable,
            };
            self.respond_with(channel, observed, answer, extra);
        }
    }

    /// Answers from the connection's real remote address, never from
    /// anything the asker says.
    fn on_request(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        request: pb::ObserveRequest,
        channel: ResponseChannel<pb::ObserveResponse>,
    ) {
        // Told to every asker, whatever else: where else to ask us, and
        // what its other connections to us come from.
        let extra = self.extra_for(peer, connection);
        let Some((_, Some(observed))) = self.remotes.get(&connection).cloned() else {
            return self.respond_with(channel, vec![], pb::DialBack::NotTried, extra);
        };
        let ip = ip_of(&observed).filter(|ip| self.allow_private || is_global(*ip));
        let Some(ip) = ip.filter(|_| request.dial_back) else {
            // Not asked, or not an address we would dial for anyone.
            return self.respond_with(channel, observed.to_vec(), pb::DialBack::NotTried, extra);
        };
        let opts = DialOpts::peer_id(peer)
            .addresses(vec![observed.clone()])
            .condition(PeerCondition::Always)
            .allocate_new_port()
            .build();
        let id = opts.connection_id();
        let probe = (channel, observed.to_vec(), extra);
        match (self.probes).start(Instant::now(), id, peer, ip, probe) {
            Ok(()) => self.actions.push_back(ToSwarm::Dial { opts }),
            // Over a cap: too many probes, or this asker or IP too recently.
            Err(((channel, observed, extra), why)) => {
                tracing::debug!(%peer, ?why, "no dial-back");
                self.respond_with(channel, observed, pb::DialBack::NotTried, extra)
            }
        }
    }

    fn on_inner(&mut self, event: rr::Event<pb::ObserveRequest, pb::ObserveResponse>) {
        match event {
            rr::Event::Message {
                peer,
                connection_id,
                message:
                    rr::Message::Request {
                        request, channel, ..
                    },
            } => self.on_request(peer, connection_id, request, channel),
            rr::Event::Message {
                message:
                    rr::Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                if let Some(reply) = self.asks.remove(&request_id) {
                    let _ = reply.send(Ok(response));
                }
            }
            rr::Event::OutboundFailure {
                request_id, error, ..
            } => {
                if let Some(reply) = self.asks.remove(&request_id) {
                    let _ = reply.send(Err(error.into()));
                }
            }
            rr::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "observe request not answered");
            }
            rr::Event::ResponseSent { .. } => {}
        }
    }

    fn track(&mut self, id: ConnectionId, peer: PeerId, addrs: &[&Multiaddr], remote: &Multiaddr) {
        let direct = classify(addrs.iter().copied()).0 == PathKind::Direct;
        let observed = direct.then(|| {
            remote
                .iter()
                .filter(|p| !matches!(p, Protocol::P2p(_)))
                .collect()
        });
        self.remotes.insert(id, (peer, observed));
    }

    fn poll_timer(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(deadline) = self.probes.poll_timeout() else {
            self.timer = None;
            return false;
        };
        if self.timer.as_ref().is_none_or(|(d, _)| *d != deadline) {
            let sleep = tokio::time::sleep_until(deadline.into());
            self.timer = Some((deadline, Box::pin(sleep)));
        }
        let (_, sleep) = self.timer.as_mut().expect("set above");
        if sleep.as_mut().poll(cx).is_pending() {
            return false;
        }
        self.timer = None;
        self.probes.handle_timeout(Instant::now());
        while let Some((id, (channel, observed, extra))) = self.probes.poll_action() {
            self.closing.insert(id);
            self.respond_with(channel, observed, pb::DialBack::Unreachable, extra);
        }
        true
    }
}
