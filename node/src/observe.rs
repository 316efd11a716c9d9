//! The address-consensus wire protocol `/ledgermesh/observe/1` and the
//! round that asks every observer and decides (the decision itself lives in
//! `ledgermesh_protocol::consensus`, without I/O).

use crate::addr::{peer_of, socket_of, socket_to_multiaddr};
use crate::events::Event;
use crate::net::NodeHandle;
use futures::{AsyncReadExt, AsyncWriteExt};
use ledgermesh_proto::v1 as pb;
use ledgermesh_protocol::consensus::{decide, ConsensusPolicy, Observation, Verdict};
use ledgermesh_protocol::framing::{split_frame, MAX_FRAME};
use libp2p::{Multiaddr, StreamProtocol};
use prost::Message;
use std::io;
use std::time::Duration;

/// The protocol name.
pub const OBSERVE_PROTOCOL: StreamProtocol = StreamProtocol::new("/ledgermesh/observe/1");

/// Length-prefixed protobuf codec for the observe protocol.
#[derive(Debug, Clone, Default)]
pub struct ObserveCodec;

async fn read_msg<T: futures::AsyncRead + Unpin + Send, M: Message + Default>(
    io: &mut T,
) -> io::Result<M> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 512];
    loop {
        if let Some((body, _)) = split_frame(&buf).map_err(io::Error::other)? {
            return M::decode(body).map_err(io::Error::other);
        }
        let n = io.read(&mut tmp).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&tmp[..n]);
        if buf.len() > MAX_FRAME + 4 {
            return Err(io::Error::other("observe message too large"));
        }
    }
}

async fn write_msg<T: futures::AsyncWrite + Unpin + Send, M: Message>(
    io: &mut T,
    m: &M,
) -> io::Result<()> {
    let body = m.encode_to_vec();
    io.write_all(&(body.len() as u32).to_be_bytes()).await?;
    io.write_all(&body).await?;
    io.close().await
}

impl libp2p::request_response::Codec for ObserveCodec {
    type Protocol = StreamProtocol;
    type Request = pb::ObserveRequest;
    type Response = pb::ObserveResponse;

    async fn read_request<T: futures::AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Self::Request> {
        read_msg(io).await
    }

    async fn read_response<T: futures::AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Self::Response> {
        read_msg(io).await
    }

    async fn write_request<T: futures::AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Self::Request,
    ) -> io::Result<()> {
        write_msg(io, &req).await
    }

    async fn write_response<T: futures::AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Self::Response,
    ) -> io::Result<()> {
        write_msg(io, &res).await
    }
}

/// Asks every observer (dialing it first) what address it sees us at, with a
/// dial-back, decides by quorum, publishes a `public_address` event and
/// stores the verdict in the node (which then advertises accordingly).
pub async fn check(
    handle: &NodeHandle,
    observers: &[Multiaddr],
    policy: ConsensusPolicy,
) -> Verdict {
    if observers.len() < policy.min_observers {
        // Too few to outvote a liar: say so without asking anyone.
        let verdict = decide(&[], &policy);
        handle.emit(Event::PublicAddress {
            addr: None,
            ip: None,
            mapping: verdict.mapping.as_str().into(),
            reachable: None,
            observers: observers.len(),
            agreeing: 0,
            answers: vec![format!(
                "{} observer(s) configured; consensus needs at least {} (add --observer)",
                observers.len(),
                policy.min_observers
            )],
        });
        return verdict;
    }
    let mut asks = tokio::task::JoinSet::new();
    for addr in observers.iter().cloned() {
        let handle = handle.clone();
        asks.spawn(async move {
            let peer = peer_of(&addr)?;
            if peer == handle.peer_id() {
                return None;
            }
            tokio::time::timeout(Duration::from_secs(10), handle.dial(peer, vec![addr]))
                .await
                .ok()?
                .ok()?;
            let resp = tokio::time::timeout(Duration::from_secs(20), handle.observe(peer, true))
                .await
                .ok()?
                .ok()?;
            let observed = Multiaddr::try_from(resp.observed).ok()?;
            let (sock, udp) = socket_of(&observed)?;
            let reachable = match pb::DialBack::try_from(resp.dial_back) {
                Ok(pb::DialBack::Reachable) => Some(true),
                Ok(pb::DialBack::Unreachable) => Some(false),
                _ => None,
            };
            Some((
                udp,
                Observation {
                    observer: peer.to_string(),
                    addr: sock,
                    reachable,
                },
            ))
        });
    }
    let mut tcp = vec![];
    let mut udp = vec![];
    while let Some(r) = asks.join_next().await {
        if let Ok(Some((is_udp, o))) = r {
            if is_udp {
                udp.push(o);
            } else {
                tcp.push(o);
            }
        }
    }
    // Mappings differ per transport: decide on the one most observers saw.
    let (obs, transport) = if udp.len() > tcp.len() {
        (udp, "udp")
    } else {
        (tcp, "tcp")
    };
    let verdict = decide(&obs, &policy);
    handle.emit(Event::PublicAddress {
        addr: verdict
            .addr
            .map(|a| socket_to_multiaddr(a, transport == "udp").to_string()),
        ip: verdict.ip.map(|ip| ip.to_string()),
        mapping: verdict.mapping.as_str().into(),
        reachable: verdict.reachable,
        observers: verdict.observers,
        agreeing: verdict.agreeing,
        answers: obs
            .iter()
            .map(|o| format!("{} saw {}", o.observer, o.addr))
            .collect(),
    });
    handle.set_public(verdict.clone(), transport == "udp").await;
    verdict
}

/// Runs [`check`] again every `every`, whenever a hole punch fails and
/// whenever the direct listen addresses change, until the node stops (the
/// first check is the caller's).
pub fn spawn_rechecks(
    handle: NodeHandle,
    observers: Vec<Multiaddr>,
    policy: ConsensusPolicy,
    every: Duration,
) {
    if observers.is_empty() {
        return;
    }
    tokio::spawn(async move {
        let mut events = handle.emitter().subscribe();
        let direct_set = |addrs: &[String]| -> Vec<String> {
            let mut v: Vec<String> = addrs
                .iter()
                .filter(|a| !a.contains("p2p-circuit"))
                .cloned()
                .collect();
            v.sort();
            v
        };
        let mut known: Option<Vec<String>> = handle.snapshot().await.ok().map(|s| {
            direct_set(
                &s.direct_addrs
                    .iter()
                    .map(|a| a.to_string())
                    .collect::<Vec<_>>(),
            )
        });
        loop {
            let timer = tokio::time::sleep(every);
            tokio::pin!(timer);
            loop {
                tokio::select! {
                    _ = &mut timer => break,
                    ev = events.recv() => match ev {
                        Ok(r) if matches!(r.event, Event::HolePunchFailed { .. }) => break,
                        Ok(r) => {
                            // A new (or lost) listen address: the network changed.
                            if let Event::Listening { addrs, .. } = &r.event {
                                let now = direct_set(addrs);
                                if known.as_ref() != Some(&now) {
                                    known = Some(now);
                                    break;
                                }
                            }
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    },
                }
            }
            check(&handle, &observers, policy).await;
        }
    });
}

/// How often address consensus is re-checked without a reason.
pub const RECHECK_EVERY: Duration = Duration::from_secs(300);

/// The first consensus round, then the re-checks; no-op without observers.
pub async fn start(handle: &NodeHandle, observers: &[Multiaddr], quorum: Option<usize>) {
    if observers.is_empty() {
        return;
    }
    let policy = ConsensusPolicy {
        quorum,
        ..ConsensusPolicy::default()
    };
    check(handle, observers, policy).await;
    spawn_rechecks(handle.clone(), observers.to_vec(), policy, RECHECK_EVERY);
}
