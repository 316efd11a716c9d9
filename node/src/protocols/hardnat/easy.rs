//! The easy side of an attempt: it answers an offer, tells the hard side
//! where to spray, and probes the ports the hard side's NAT may map to.

use super::*;

impl Service {
    /// The endpoint-independent side.
    pub(super) async fn easy(&self, handle: impl HardNatNet, peer: PeerId, stream: libp2p::Stream) {
        let start = Instant::now();
        let mut tally = Tally::default();
        let mut s = Wire(stream);
        let ip = match s.recv().await {
            Ok(Message::Offer { ip, .. }) => ip,
            Ok(other) => {
                tracing::debug!(%peer, ?other, "hardnat: expected an offer");
                return;
            }
            Err(e) => {
                tracing::debug!(%peer, error = %e, "hardnat: no offer");
                return;
            }
        };
        let public = handle.snapshot().await.ok().and_then(|s| s.public);
        let me = EasySelf {
            enabled: self.enabled,
            mapping: public.as_ref().map_or(Mapping::Unknown, |p| p.mapping),
            // The main verdict's address when it is QUIC, else the QUIC
            // verdict decided beside a TCP one.
            quic_addr: public.as_ref().and_then(|p| {
                (p.addr.as_ref())
                    .and_then(quic_socket)
                    .or_else(|| p.quic.as_ref().and_then(quic_socket))
            }),
            allow_private: self.allow_private,
        };
        let admitted = answer(&me, ip).and_then(|addr| Ok((addr, self.slot(&peer)?)));
        let (addr, _slot) = match admitted {
            Ok(a) => a,
            Err(d) => {
                let _ = s.send(Message::Decline(d)).await;
                let declined = Err((Ended::Declined(d.as_str().into()), tally));
                self.report(&handle, peer, Role::Easy, start, declined);
                return;
            }
        };
        let result = match self
            .easy_inner(&handle, peer, ip, addr, &mut s, &mut tally)
            .await
        {
            Ok(()) => Ok(tally),
            Err(e) => Err((e, tally)),
        };
        self.report(&handle, peer, Role::Easy, start, result);
    }

    async fn easy_inner(
        &self,
        handle: &impl HardNatNet,
        peer: PeerId,
        ip: IpAddr,
        addr: SocketAddr,
        s: &mut Wire,
        tally: &mut Tally,
    ) -> Result<(), Ended> {
        let failed = |what: &str| Ended::Failed(what.to_string());
        let accept = Message::Accept {
            addr,
            probes: self.plan.probes,
        };
        s.send(accept).await.map_err(|e| failed(&e))?;
        match s.recv().await.map_err(|e| failed(&e))? {
            Message::Go { sockets } => tally.sockets = sockets.min(hardnat::MAX_SOCKETS),
            other => return Err(failed(&format!("unexpected {other:?}"))),
        }
        let mut direct = handle
            .wait_direct(peer)
            .await
            .ok_or_else(|| failed("stopping"))?;
        let ports = probe_ports_at(&self.salt, ip, self.plan.probes);
        let waves = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(self.plan.wave_interval_ms));
        for wave in ports.chunks(self.plan.wave.max(1).into()) {
            tick.tick().await;
            if let Ok(remote) = direct.try_recv() {
                // Up already: the peer's socket met an earlier wave.
                tally.remote = Some(remote);
                tally.up_at = Some(Instant::now());
                break;
            }
            let targets = wave.iter().map(|&p| SocketAddr::new(ip, p));
            tally.probes += handle.probe(targets, peer) as u16;
        }
        let ms = waves.elapsed().as_millis() as u32;
        let probed = Message::Probed {
            probes: tally.probes,
            ms,
        };
        let _ = tokio::time::timeout(Duration::from_millis(500), s.send(probed)).await;
        if tally.remote.is_some() {
            return Ok(());
        }
        let deadline = Duration::from_millis(hardnat::ATTEMPT_MS);
        match tokio::time::timeout(deadline, direct).await {
            Ok(Ok(remote)) => {
                tally.remote = Some(remote);
                tally.up_at = Some(Instant::now());
                Ok(())
            }
            _ => Err(failed("no direct connection came in time")),
        }
    }
}
