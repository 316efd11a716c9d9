//! The hard side of an attempt (behind the endpoint-dependent NAT): it
//! offers, waits for a slot and for the peer's answer, and sprays fresh
//! ports toward the easy side's address.

use super::*;

impl Service {
    /// The endpoint-dependent side: carries out its [`Offers`] sequence.
    pub(super) async fn hard(&self, handle: impl HardNatNet, Offer { peer, ip }: Offer) {
        let start = Instant::now();
        let mut seq = Offers::new(start);
        let mut _slot = None;
        let mut last = Err((Ended::Failed("no offer made".into()), Tally::default()));
        loop {
            let Some(step) = seq.poll_action() else {
                let Some(at) = seq.poll_timeout() else {
                    return; // every sequence ends in `Done`
                };
                tokio::time::sleep_until(at.into()).await;
                seq.handle_timeout(Instant::now());
                continue;
            };
            match step {
                Step::TakeSlot => {
                    let taken = self.slot(&peer).map(|s| _slot = Some(s));
                    seq.handle_slot(taken, Instant::now());
                }
                Step::Offer => {
                    let mut tally = Tally::default();
                    let r = self.hard_inner(&handle, peer, ip, &mut tally).await;
                    let how = match &r {
                        Ok(()) => Offered::Direct,
                        Err(Ended::Failed(why)) if tally.sockets == 0 => {
                            tracing::debug!(%peer, %why, "hard-NAT offer lost before the sockets opened");
                            Offered::LostEarly
                        }
                        Err(Ended::Declined(why)) if why == Decline::Busy.as_str() => {
                            Offered::PeerBusy
                        }
                        Err(_) => Offered::Ended,
                    };
                    last = match r {
                        Ok(()) => Ok(tally),
                        Err(e) => Err((e, tally)),
                    };
                    seq.handle_offer(how, Instant::now());
                }
                Step::Done(Finish::Quiet) => return,
                Step::Done(Finish::Declined(d)) => {
                    let declined = Err((Ended::Declined(d.as_str().into()), Tally::default()));
                    return self.report(&handle, peer, Role::Hard, start, declined);
                }
                Step::Done(Finish::Direct | Finish::Ended) => {
                    return self.report(&handle, peer, Role::Hard, start, last);
                }
            }
        }
    }

    async fn hard_inner(
        &self,
        handle: &impl HardNatNet,
        peer: PeerId,
        ip: IpAddr,
        tally: &mut Tally,
    ) -> Result<(), Ended> {
        let failed = |what: &str| Ended::Failed(what.to_string());
        let stream = tokio::time::timeout(
            STEP,
            handle
                .stream_control()
                .open_stream(peer, StreamProtocol::new(PROTOCOL)),
        )
        .await
        .map_err(|_| failed("timed out opening the stream"))?
        .map_err(|e| Ended::Declined(format!("unsupported: {e}")))?;
        let mut s = Wire(stream);
        let offer = Message::Offer {
            ip,
            sockets: self.plan.sockets,
        };
        s.send(offer).await.map_err(|e| failed(&e))?;
        let (addr, probes) = match s.recv().await.map_err(|e| failed(&e))? {
            Message::Accept { addr, probes } => (addr, probes),
            Message::Decline(d) => return Err(Ended::Declined(d.as_str().into())),
            other => return Err(failed(&format!("unexpected {other:?}"))),
        };
        let routable = self.allow_private || ledgermesh_protocol::path::scope::is_global(addr.ip());
        if !routable || addr.port() == 0 {
            return Err(failed("the peer's address may not be dialed"));
        }
        tally.probes = probes.min(hardnat::MAX_PROBES);
        let report = handle
            .spray(addr, self.plan)
            .ok_or_else(|| failed("too many sprays waiting"))?;
        let direct = handle
            .wait_direct(peer)
            .await
            .ok_or_else(|| failed("stopping"))?;
        let target = crate::addr::socket_to_multiaddr(addr, true).with(Protocol::P2p(peer));
        handle
            .dial_fresh(peer, target)
            .await
            .map_err(|_| failed("stopping"))?;
        tally.sockets = self.plan.sockets;
        s.send(Message::Go {
            sockets: self.plan.sockets,
        })
        .await
        .map_err(|e| failed(&e))?;
        let deadline = tokio::time::Instant::now() + hardnat::ATTEMPT;
        let direct = tokio::time::timeout_at(deadline, direct).await;
        tally.up_at = Some(Instant::now());
        // The peer's `Probed`, if it came: a direct connection may already
        // have closed the relayed one (and this stream), so only a short wait.
        let probed = tokio::time::timeout(Duration::from_millis(500), s.recv()).await;
        if let Ok(Ok(Message::Probed { probes, .. })) = probed {
            tally.probes = probes.min(hardnat::MAX_PROBES);
        }
        if let Ok(Ok(r)) = tokio::time::timeout(Duration::from_millis(500), report).await {
            tally.sockets = r.sockets;
        }
        match direct {
            Ok(Ok(remote)) => {
                tally.remote = Some(remote);
                Ok(())
            }
            _ => Err(failed("no probe met an open port in time")),
        }
    }
}
