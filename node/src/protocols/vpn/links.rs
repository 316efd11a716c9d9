//! The streams of the tunnel: one writer per peer we send to, one reader
//! per stream a peer opened.

use super::{lock, Vpn, Way, BATCH, MAX_INBOUND_PER_PEER, PROTOCOL, RETRY_AFTER};
use crate::net::Net;
use futures::{AsyncReadExt, AsyncWriteExt};
use ledgermesh_protocol::vpn::frame::{self, Decoder, FrameError};
use ledgermesh_protocol::vpn::Drop;
use libp2p::{PeerId, Stream, StreamProtocol};
use std::time::Instant;
use tokio::sync::mpsc;

/// A write to a peer that does not read for this long breaks its stream.
const WRITE_STALL: std::time::Duration = std::time::Duration::from_secs(10);

/// Whether `batch` went onto `stream` in time.
async fn written(stream: &mut Stream, batch: &[u8]) -> bool {
    matches!(
        tokio::time::timeout(WRITE_STALL, stream.write_all(batch)).await,
        Ok(Ok(()))
    )
}

impl Vpn {
    /// One peer's writer: opens the stream, then writes what is queued,
    /// a batch at a time, until the stream fails twice in a row or the node
    /// stops. A stream that breaks (its path went: a relayed connection
    /// closed after the upgrade to direct, a relay died) is opened again at
    /// once on whatever connection is there now, and the batch goes again.
    pub(super) async fn write_to(
        self,
        net: impl Net,
        peer: PeerId,
        mut queue: mpsc::Receiver<Vec<u8>>,
    ) {
        let Some(mut stream) = self.open(&net, peer).await else {
            return;
        };
        Self::told_peer(&net, peer, "up", "out");
        let mut batch = Vec::with_capacity(BATCH);
        while let Some(first) = queue.recv().await {
            batch.clear();
            let mut next = Some(first);
            while let Some(packet) = next.take() {
                // The router checked the size: this cannot be refused.
                let _ = frame::encode(&packet, self.inner.mtu, &mut batch);
                if batch.len() < BATCH {
                    next = queue.try_recv().ok();
                }
            }
            if written(&mut stream, &batch).await {
                continue;
            }
            tracing::debug!(%peer, "vpn stream to the peer broke; opening another");
            match self.open(&net, peer).await {
                Some(s) => stream = s,
                None => break,
            }
            if !written(&mut stream, &batch).await {
                tracing::debug!(%peer, "vpn stream to the peer ended");
                break;
            }
        }
        Self::told_peer(&net, peer, "down", "out");
    }

    /// A new stream to `peer`; `None` (and its packets dropped for a while)
    /// where none can be opened.
    async fn open(&self, net: &impl Net, peer: PeerId) -> Option<Stream> {
        let opened = net
            .stream_control()
            .open_stream(peer, StreamProtocol::new(PROTOCOL))
            .await;
        match opened {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::debug!(%peer, error = %e, "no vpn stream to the peer");
                let now = Instant::now();
                let mut unreachable = lock(&self.inner.unreachable);
                if unreachable.len() >= ledgermesh_protocol::vpn::router::MAX_PEERS {
                    unreachable.retain(|_, until| *until > now);
                }
                if unreachable.len() < ledgermesh_protocol::vpn::router::MAX_PEERS {
                    unreachable.insert(peer, now + RETRY_AFTER);
                }
                None
            }
        }
    }

    /// A stream from `peer`: read if the router allows the peer.
    pub(super) fn accepted(
        &self,
        net: &impl Net,
        peer: PeerId,
        stream: Stream,
        to: mpsc::Sender<Vec<u8>>,
    ) {
        let admitted = self.router().admit(&peer);
        if let Err(why) = admitted {
            self.audit_refusal(net, peer);
            return self.dropped(net, Some(peer), why);
        }
        let Ok(permit) = self.inner.inbound.clone().try_acquire_owned() else {
            return self.dropped(net, Some(peer), Drop::Congested);
        };
        {
            let mut reading = lock(&self.inner.reading);
            let n = reading.entry(peer).or_default();
            if *n >= MAX_INBOUND_PER_PEER {
                drop(reading);
                return self.dropped(net, Some(peer), Drop::Congested);
            }
            *n += 1;
        }
        let (me, n) = (self.clone(), net.clone());
        net.spawn(async move {
            let _permit = permit;
            Self::told_peer(&n, peer, "up", "in");
            let end = me.read_from(&n, peer, stream, to).await;
            tracing::debug!(%peer, ?end, "vpn stream from the peer ended");
            let mut reading = lock(&me.inner.reading);
            if let Some(k) = reading.get_mut(&peer) {
                *k -= 1;
                if *k == 0 {
                    reading.remove(&peer);
                }
            }
            drop(reading);
            Self::told_peer(&n, peer, "down", "in");
        });
    }

    /// Reads `peer`'s frames and hands the packets the router allows to the
    /// device, until the stream ends or breaks its framing.
    async fn read_from(
        &self,
        net: &impl Net,
        peer: PeerId,
        mut stream: Stream,
        to: mpsc::Sender<Vec<u8>>,
    ) -> Result<(), FrameError> {
        let mut decoder = Decoder::new(self.inner.mtu);
        let mut buf = vec![0u8; BATCH];
        loop {
            let n = match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return Ok(()),
                Ok(n) => n,
            };
            decoder.push(&buf[..n]);
            while let Some(packet) = decoder.next_packet() {
                let packet = match packet {
                    Ok(p) => p,
                    Err(e) => {
                        let why = match e {
                            FrameError::TooBig { .. } => Drop::TooBig,
                            FrameError::Empty => Drop::Malformed,
                        };
                        self.dropped(net, Some(peer), why);
                        return Err(e);
                    }
                };
                let verdict = self.router().inbound(&peer, packet);
                let charge = verdict.and_then(|()| self.charge(&peer, packet, Way::In));
                match charge {
                    Err(why) => self.dropped(net, Some(peer), why),
                    // Room first, then counted, then handed on: what the
                    // device gets is never ahead of the count.
                    Ok(charge) => match to.try_reserve() {
                        Ok(room) => {
                            charge.done();
                            net.ops().metrics.vpn.carried(false, packet.len());
                            self.count(peer, packet.len(), false);
                            room.send(packet.to_vec());
                        }
                        Err(_) => self.dropped(net, Some(peer), Drop::Congested),
                    },
                }
            }
        }
    }
}
