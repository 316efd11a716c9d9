//! One buyer's work per provider: request (and renew) a grant over the
//! ledger, connect (direct first, then relays), fetch every granted stream.

use super::{BuyError, ConsumerConfig, StreamOutcome};
use crate::access::audit_log::AuditLine;
use crate::clock::now_ms;
use crate::events::Event;
use crate::signaling::requests::RequestError;
use crate::signaling::requests::Requester;
use crate::streams::live::fetch::fetch_live;
use crate::streams::{fetch_to, Output, Renew};
use crate::swarm::NodeHandle;
use ledgermesh_protocol::access::{AuditKind, AuditRecord};
use ledgermesh_protocol::stream::priced::{buyer_gate, check_attached};
use ledgermesh_protocol::{ServiceRequest, ServiceResponse};
use libp2p::{Multiaddr, PeerId};
use std::sync::Arc;
use std::time::Instant;
use tokio::task::JoinSet;

/// What every per-provider task shares.
pub(super) struct Buyer {
    pub(super) handle: NodeHandle,
    pub(super) requester: Requester,
    pub(super) my_addrs: Vec<Multiaddr>,
    pub(super) config: ConsumerConfig,
}

impl Buyer {
    fn audit(&self, rec: AuditRecord) {
        if let Some(log) = &self.config.audit {
            if let Err(e) = log.append(&AuditLine::of(&rec, self.handle.emitter().node())) {
                self.handle
                    .emit(Event::error(crate::events::ErrorPart::Audit, e));
            }
        }
    }

    /// Asks `peer` for `streams` (or, for a direct provider, skips the
    /// ledger), then receives what it accepted.
    pub(super) async fn buy(
        self: Arc<Self>,
        peer: PeerId,
        streams: Vec<String>,
    ) -> Vec<StreamOutcome> {
        let direct: Vec<Multiaddr> = self
            .config
            .direct
            .iter()
            .filter(|a| crate::addr::peer_of(a) == Some(peer))
            .cloned()
            .collect();
        let resp = if !direct.is_empty() {
            // Off the ledger: the provider's ACL decides when we ask.
            ServiceResponse {
                addrs: direct,
                accepted: streams
                    .iter()
                    .map(|s| ledgermesh_protocol::StreamInfo {
                        name: s.clone(),
                        length: None,
                        sha256: None,
                        live: None,
                    })
                    .collect(),
                ..Default::default()
            }
        } else {
            match self.request(peer, streams.clone(), false).await {
                Ok(r) => r,
                Err(e) => {
                    self.handle.emit(Event::Error {
                        what: crate::events::ErrorPart::ServiceResponse,
                        detail: e.to_string(),
                        reason: Some(e.reason()),
                        peer_id: Some(peer.to_string()),
                    });
                    let e = Arc::new(e);
                    return streams
                        .into_iter()
                        .map(|s| StreamOutcome {
                            peer,
                            stream: s,
                            result: Err(BuyError::Request(e.clone())),
                        })
                        .collect();
                }
            }
        };
        buy_from(self, peer, resp, streams).await
    }

    /// Posts a request for `streams` and waits for the response; reports
    /// the grants it carries.
    async fn request(
        &self,
        peer: PeerId,
        streams: Vec<String>,
        renewal: bool,
    ) -> Result<ServiceResponse, RequestError> {
        let request = ServiceRequest {
            addrs: self.my_addrs.clone(),
            streams,
            hire_secs: self.config.hire_secs,
        };
        let resp = self
            .requester
            .request(peer, request, self.config.response_timeout)
            .await?;
        if let Some(expires_ms) = resp.grant_expires_ms {
            for info in &resp.accepted {
                self.handle.emit(Event::Grant {
                    peer_id: peer.to_string(),
                    stream: info.name.clone(),
                    expires_ms,
                    renewed: renewal,
                });
                let kind = if renewal {
                    AuditKind::Renew
                } else {
                    AuditKind::Grant
                };
                let mut rec = AuditRecord::new(now_ms(), kind).about(peer, &info.name);
                rec.expires_ms = Some(expires_ms);
                self.audit(rec);
            }
        }
        Ok(resp)
    }

    /// A renewal hook for `stream` of `peer`: a new service request when
    /// the grant ran out (with `--renew`), paying up when a priced stream
    /// was refused `unpaid` (with `--deposit`).
    fn renewal(self: &Arc<Self>, peer: PeerId, stream: &str) -> Box<Renew> {
        let buyer = self.clone();
        let stream = stream.to_string();
        Box::new(move |reason| {
            let buyer = buyer.clone();
            let stream = stream.clone();
            Box::pin(async move {
                if reason == ledgermesh_protocol::RejectReason::Unpaid {
                    let cfg = (buyer.config.stream_payer.clone()).ok_or(BuyError::NoDeposit)?;
                    let meter = buyer.handle.stream_meter(peer);
                    crate::protocols::pay::pay(&buyer.handle, peer, cfg, meter)
                        .await
                        .map_err(|e| BuyError::Payment(Arc::new(e)))?;
                    return Ok(());
                }
                if !buyer.config.renew {
                    return Err("the grant ran out and renewing is off (--renew)".into());
                }
                let mut rec = AuditRecord::new(now_ms(), AuditKind::Expire)
                    .about(peer, &stream)
                    .reason("grant_expired");
                rec.detail = Some("renewing".into());
                buyer.audit(rec);
                let resp = buyer
                    .request(peer, vec![stream.clone()], true)
                    .await
                    .map_err(|e| BuyError::Request(Arc::new(e)))?;
                if resp.accepted.iter().any(|i| i.name == stream) {
                    Ok(())
                } else {
                    Err(match resp.rejected.into_iter().find(|r| r.name == stream) {
                        Some(r) => BuyError::Refused(r),
                        None => BuyError::NotMentioned,
                    }
                    .into())
                }
            })
        })
    }
}

/// Connects to `peer` as the connect policy says
/// (`ledgermesh_protocol::path::connect`): its direct addresses first, for a
/// head start, then every address, in a few rounds backing off.
async fn connect(
    handle: &NodeHandle,
    peer: PeerId,
    addrs: &[Multiaddr],
) -> Result<(), crate::swarm::DialError> {
    use futures::future::{BoxFuture, FutureExt};
    use ledgermesh_protocol::path::connect::{Addrs, Connect, ConnectAction, Dialed};
    use ledgermesh_protocol::Machine;
    let direct: Vec<Multiaddr> = (addrs.iter())
        .filter(|a| !crate::addr::is_circuit(a))
        .cloned()
        .collect();
    let mut policy = Connect::new(Instant::now(), !direct.is_empty());
    let mut dialing: Option<(Addrs, BoxFuture<'_, _>)> = None;
    let mut last = crate::swarm::DialError::Stopped;
    loop {
        while let Some(action) = policy.poll_action() {
            match action {
                ConnectAction::Dial(which) => {
                    let to = match which {
                        Addrs::Direct => direct.clone(),
                        Addrs::All => addrs.to_vec(),
                    };
                    dialing = Some((which, handle.dial(peer, to).boxed()));
                }
                ConnectAction::Connected => return Ok(()),
                ConnectAction::GaveUp => return Err(last),
            }
        }
        let wake = policy.poll_timeout();
        let timer = async {
            match wake {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        let dial = async {
            match dialing.as_mut() {
                Some((which, d)) => (*which, d.await),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            (which, result) = dial => {
                dialing = None;
                let how = match result {
                    Ok(()) => Dialed::Up,
                    // Asking again cannot help: only a flag can.
                    Err(e @ crate::swarm::DialError::PrivateOnly(_)) => {
                        last = e;
                        Dialed::FailedForGood
                    }
                    Err(e) => {
                        if which == Addrs::All {
                            tracing::info!(%peer, round = policy.round(), error = %e, "cannot reach the provider yet");
                        }
                        last = e;
                        Dialed::Failed
                    }
                };
                policy.handle_dialed(Instant::now(), which, how);
            }
            () = timer => policy.handle_timeout(Instant::now()),
        }
    }
}

/// The wanted streams the response accepted, and an outcome (with its
/// event) for each it refused or left out.
fn sort_response(
    handle: &NodeHandle,
    peer: PeerId,
    resp: &ServiceResponse,
    wanted: Vec<String>,
) -> (Vec<String>, Vec<StreamOutcome>) {
    let mut accepted = Vec::new();
    let mut out = Vec::new();
    for name in wanted {
        if resp.accepted.iter().any(|i| i.name == name) {
            accepted.push(name);
        } else if let Some(r) = resp.rejected.iter().find(|r| r.name == name) {
            out.push(refused(handle, peer, name, BuyError::Refused(r.clone())));
        } else {
            out.push(refused(handle, peer, name, BuyError::NotMentioned));
        }
    }
    (accepted, out)
}

/// A stream not bought, and the event that says why.
fn refused(handle: &NodeHandle, peer: PeerId, stream: String, why: BuyError) -> StreamOutcome {
    handle.emit(Event::Error {
        what: crate::events::ErrorPart::StreamRejected,
        detail: format!("{stream}: {why}"),
        reason: why.reason(),
        peer_id: Some(peer.to_string()),
    });
    StreamOutcome {
        peer,
        stream,
        result: Err(why),
    }
}

/// Every one of `streams` ended with the same error.
fn all_failed(
    handle: &NodeHandle,
    peer: PeerId,
    streams: Vec<String>,
    why: BuyError,
) -> Vec<StreamOutcome> {
    (streams.into_iter())
        .map(|name| refused(handle, peer, name, why.clone()))
        .collect()
}

/// Attaches a channel to a priced seller and checks the terms it gave.
async fn pay_for(
    handle: &NodeHandle,
    peer: PeerId,
    cfg: crate::protocols::pay::PayerConfig,
    max: u128,
) -> Result<(), BuyError> {
    use crate::protocols::pay::payer::PayFailure;
    use crate::protocols::pay::{pay, Paying};
    use ledgermesh_protocol::payment::TermsRefusal;
    match pay(handle, peer, cfg, handle.stream_meter(peer)).await {
        Ok(Paying::Attached { terms, .. }) => Ok(check_attached(terms.price_per_mib, max)?),
        Ok(_) => Ok(()),
        Err(PayFailure::Terms(TermsRefusal::PriceTooHigh { price, max })) => {
            Err(BuyError::PriceTooHigh { price, max })
        }
        Err(e) => Err(BuyError::Payment(Arc::new(e))),
    }
}

/// Connects to one provider and receives every accepted stream in parallel.
async fn buy_from(
    buyer: Arc<Buyer>,
    peer: PeerId,
    resp: ServiceResponse,
    wanted: Vec<String>,
) -> Vec<StreamOutcome> {
    let handle = buyer.handle.clone();
    let (accepted, mut out) = sort_response(&handle, peer, &resp, wanted);
    if accepted.is_empty() {
        return out;
    }
    // Priced: within our limit, and only with a deposit to pay from; refused
    // here, before any byte or channel.
    let max = buyer.config.max_price_per_mib;
    let payer = buyer.config.stream_payer.clone();
    let priced = match buyer_gate(resp.price_per_mib, max, payer.is_some()) {
        Ok(priced) => priced,
        Err(why) => {
            out.extend(all_failed(&handle, peer, accepted, why.into()));
            return out;
        }
    };
    // The provider chose these addresses: dial only what our policy allows.
    let mut addrs: Vec<Multiaddr> = handle.dial_candidates(&resp.addrs);
    if addrs.is_empty() {
        // Every address was private: the dial says so, and names the flag.
        addrs.extend(resp.addrs.first().cloned());
    }
    if let Err(e) = connect(&handle, peer, &addrs).await {
        handle.emit(Event::Error {
            what: crate::events::ErrorPart::Dial,
            detail: format!(
                "cannot reach provider at any of {} addresses: {e}",
                addrs.len()
            ),
            reason: None,
            peer_id: Some(peer.to_string()),
        });
        let e = Arc::new(e);
        out.extend(accepted.into_iter().map(|name| StreamOutcome {
            peer,
            stream: name,
            result: Err(BuyError::Connect(e.clone())),
        }));
        return out;
    }
    if let (true, Some(cfg)) = (priced, payer) {
        if let Err(why) = pay_for(&handle, peer, cfg, max).await {
            out.extend(all_failed(&handle, peer, accepted, why));
            return out;
        }
    }
    let mut fetches = JoinSet::new();
    for name in accepted {
        let live = (resp.accepted.iter()).any(|i| i.name == name && i.live.is_some());
        let job = Fetch {
            buyer: buyer.clone(),
            peer,
            addrs: addrs.clone(),
            name,
            live,
            priced,
        };
        fetches.spawn(job.run());
    }
    while let Some(r) = fetches.join_next().await {
        match r {
            Ok(o) => out.push(o),
            Err(e) => tracing::error!(error = %e, "fetch task panicked"),
        }
    }
    out
}

/// One accepted stream to receive.
struct Fetch {
    buyer: Arc<Buyer>,
    peer: PeerId,
    addrs: Vec<Multiaddr>,
    name: String,
    /// The response said it is live.
    live: bool,
    priced: bool,
}

impl Fetch {
    async fn run(self) -> StreamOutcome {
        let Fetch {
            buyer,
            peer,
            addrs,
            name,
            live,
            priced,
        } = self;
        let (handle, config) = (&buyer.handle, &buyer.config);
        let renew = (config.renew || priced).then(|| buyer.renewal(peer, &name));
        let renew = renew.as_deref();
        let out = match &config.listen_local {
            Some(f) => Output::Local(f.clone()),
            None => Output::for_stream(&config.out_dir, &peer, &name),
        };
        let follow = || {
            let out = out.clone();
            let (addrs, name) = (&addrs, &name);
            async move {
                let (fetch, live) = (&config.fetch, &config.live);
                fetch_live(handle, peer, addrs, name, &out, fetch, live, renew).await
            }
        };
        let r = if config.send {
            crate::streams::send::exchange(handle, peer, &name, &out, &config.fetch).await
        } else if live {
            follow().await
        } else {
            match fetch_to(handle, peer, &addrs, &name, &out, &config.fetch, renew).await {
                // Found live only at its header (a provider reached without
                // the ledger, whose response would have said).
                Err(crate::streams::StreamError::Live) => follow().await,
                r => r,
            }
        };
        report(handle, peer, &name, &r);
        StreamOutcome {
            peer,
            stream: name,
            result: r.map_err(|e| BuyError::Stream(Arc::new(e))),
        }
    }
}

/// The event for a received stream, or for why it was not.
fn report(
    handle: &NodeHandle,
    peer: PeerId,
    name: &str,
    r: &Result<crate::streams::Fetched, crate::streams::StreamError>,
) {
    match r {
        Ok(f) => handle.emit(Event::StreamDone {
            peer_id: peer.to_string(),
            stream: name.to_string(),
            bytes: f.bytes,
            sha256: hex::encode(f.sha256),
            verified: f.verified,
            ms: f.elapsed.as_millis() as u64,
            resumes: f.resumes,
            path: Some(f.path.display().to_string()),
            first_byte_ts_ms: f.first_byte_ts_ms,
            live: f.live.clone(),
        }),
        Err(crate::streams::StreamError::OutputClosed) => {
            tracing::info!(%peer, stream = %name, "the output was closed; stopping");
        }
        Err(e) => handle.emit(Event::Error {
            what: crate::events::ErrorPart::Stream,
            detail: format!("{name}: {e}"),
            reason: match &e {
                crate::streams::StreamError::Rejected(r) => Some(r.reason.as_str()),
                _ => None,
            },
            peer_id: Some(peer.to_string()),
        }),
    }
}
