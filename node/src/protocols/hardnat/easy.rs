//! The easy side of an attempt: it answers an offer, tells the hard side
//! where to spray, and probes the ports the hard side's NAT may map to.

use super::*;
use ledgermesh_protocol::path::probing::{ProbeAction, Probing};

/// How long the report to the hard side may take to send.
const REPORT_WITHIN: Duration = Duration::from_millis(500);

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
        let mut probing = Probing::new(Instant::now(), ports, &self.plan);
        loop {
            while let Some(action) = probing.poll_action() {
                match action {
                    ProbeAction::Probe(ports) => {
                        let targets = ports.into_iter().map(|p| SocketAddr::new(ip, p));
                        tally.probes += handle.probe(targets, peer) as u16;
                    }
                    ProbeAction::Report { ms } => {
                        let probes = tally.probes;
                        let probed = s.send(Message::Probed { probes, ms });
                        let _ = tokio::time::timeout(REPORT_WITHIN, probed).await;
                    }
                    ProbeAction::Done { direct: true } => return Ok(()),
                    ProbeAction::Done { direct: false } => {
                        return Err(failed("no direct connection came in time"))
                    }
                }
            }
            let at = probing.poll_timeout().unwrap_or_else(Instant::now);
            tokio::select! {
                up = &mut direct => {
                    let remote = up.map_err(|_| failed("stopping"))?;
                    tally.remote = Some(remote);
                    tally.up_at = Some(Instant::now());
                    probing.handle_direct(Instant::now());
                }
                () = tokio::time::sleep_until(at.into()) => probing.handle_timeout(Instant::now()),
            }
        }
    }
}
