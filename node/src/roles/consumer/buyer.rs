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
use ledgermesh_protocol::{ServiceRequest, ServiceResponse};
use libp2p::{Multiaddr, PeerId};
use std::sync::Arc;
use std::time::Duration;
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
                self.handle.emit(Event::error("audit", e));
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
                        what: "service_response".into(),
                        detail: e.to_string(),
                        reason: Some(e.reason().into()),
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

/// Head start of direct addresses over relay circuits when connecting.
const DIRECT_HEAD_START: Duration = Duration::from_millis(500);

/// Connects to `peer`: its direct addresses first, and if none answers within
/// [`DIRECT_HEAD_START`], every address at once (relay circuits included), so
/// a reachable provider is never reached through a relay by accident of timing
/// and an unreachable one costs only the head start.
async fn connect(
    handle: &NodeHandle,
    peer: PeerId,
    addrs: &[Multiaddr],
) -> Result<(), crate::swarm::DialError> {
    let direct: Vec<Multiaddr> = addrs
        .iter()
        .filter(|a| !crate::addr::is_circuit(a))
        .cloned()
        .collect();
    // A provider that is restarting (or re-reserving on its relay) is
    // unreachable for a moment: a few attempts, backing off, before giving up.
    let mut wait = Duration::from_millis(500);
    let mut attempt = 1;
    loop {
        if !direct.is_empty() {
            let first = tokio::time::timeout(DIRECT_HEAD_START, handle.dial(peer, direct.clone()));
            if let Ok(Ok(())) = first.await {
                return Ok(());
            }
        }
        match handle.dial(peer, addrs.to_vec()).await {
            // Asking again cannot help: only a flag can.
            Err(e @ crate::swarm::DialError::PrivateOnly(_)) => return Err(e),
            Err(e) if attempt < CONNECT_ATTEMPTS => {
                tracing::info!(%peer, attempt, error = %e, "cannot reach the provider yet; retrying");
                tokio::time::sleep(wait).await;
                wait *= 2;
                attempt += 1;
            }
            result => return result,
        }
    }
}

/// Rounds of dialing a provider before giving up (0.5 + 1 + 2 + 4 s apart).
const CONNECT_ATTEMPTS: u32 = 5;

/// Connects to one provider and receives every accepted stream in parallel.
async fn buy_from(
    buyer: Arc<Buyer>,
    peer: PeerId,
    resp: ServiceResponse,
    wanted: Vec<String>,
) -> Vec<StreamOutcome> {
    let handle = buyer.handle.clone();
    let mut out = Vec::new();
    let fail = |stream: &str, why: BuyError, reason: &str| {
        handle.emit(Event::Error {
            what: "stream_rejected".into(),
            detail: format!("{stream}: {why}"),
            reason: Some(reason.into()),
            peer_id: Some(peer.to_string()),
        });
        StreamOutcome {
            peer,
            stream: stream.into(),
            result: Err(why),
        }
    };
    let mut accepted = Vec::new();
    for name in &wanted {
        if resp.accepted.iter().any(|i| &i.name == name) {
            accepted.push(name.clone());
        } else if let Some(r) = resp.rejected.iter().find(|r| &r.name == name) {
            out.push(fail(name, BuyError::Refused(r.clone()), r.reason.as_str()));
        } else {
            out.push(fail(name, BuyError::NotMentioned, "missing"));
        }
    }
    if accepted.is_empty() {
        return out;
    }
    // Priced: within our limit, and only with a deposit to pay from.
    let price = resp.price_per_mib;
    let max = buyer.config.max_price_per_mib;
    let payer = buyer.config.stream_payer.clone();
    if price > 0 {
        // Refused here, before any byte or channel: above our limit, or
        // nothing to pay from.
        let reason = if price > max {
            Some("price_too_high")
        } else if payer.is_none() {
            Some("no_deposit")
        } else {
            None
        };
        if let Some(reason) = reason {
            for name in accepted {
                let why = match reason {
                    "price_too_high" => BuyError::PriceTooHigh { price, max },
                    _ => BuyError::NoDeposit,
                };
                out.push(fail(&name, why, reason));
            }
            return out;
        }
    }
    // The provider chose these addresses: dial only what our policy allows.
    let mut addrs: Vec<Multiaddr> = handle.dial_candidates(&resp.addrs);
    if addrs.is_empty() {
        // Every address was private: the dial says so, and names the flag.
        addrs.extend(resp.addrs.first().cloned());
    }
    if let Err(e) = connect(&handle, peer, &addrs).await {
        handle.emit(Event::Error {
            what: "dial".into(),
            detail: format!(
                "cannot reach provider at any of {} addresses: {e}",
                addrs.len()
            ),
            reason: None,
            peer_id: Some(peer.to_string()),
        });
        let e = Arc::new(e);
        for name in accepted {
            out.push(StreamOutcome {
                peer,
                stream: name,
                result: Err(BuyError::Connect(e.clone())),
            });
        }
        return out;
    }
    if let (true, Some(cfg)) = (price > 0, payer) {
        use crate::protocols::pay::{pay, Paying};
        let paid = match pay(&handle, peer, cfg, handle.stream_meter(peer)).await {
            Ok(Paying::Attached { terms, .. }) if terms.price_per_mib > max => {
                Err(BuyError::PriceTooHigh {
                    price: terms.price_per_mib,
                    max,
                })
            }
            Ok(_) => Ok(()),
            Err(crate::protocols::pay::payer::PayFailure::Terms(
                ledgermesh_protocol::payment::TermsRefusal::PriceTooHigh { price, max },
            )) => Err(BuyError::PriceTooHigh { price, max }),
            Err(e) => Err(BuyError::Payment(Arc::new(e))),
        };
        if let Err(why) = paid {
            let reason = match &why {
                BuyError::PriceTooHigh { .. } => "price_too_high",
                _ => "payment",
            };
            for name in &accepted {
                out.push(fail(name, why.clone(), reason));
            }
            return out;
        }
    }
    let priced = price > 0;
    let mut fetches = JoinSet::new();
    for name in accepted {
        let handle = handle.clone();
        let addrs = addrs.clone();
        let buyer = buyer.clone();
        let live = resp
            .accepted
            .iter()
            .any(|i| i.name == name && i.live.is_some());
        fetches.spawn(async move {
            let config = &buyer.config;
            let renew = (config.renew || priced).then(|| buyer.renewal(peer, &name));
            let out = match &config.listen_local {
                Some(f) => Output::Local(f.clone()),
                None => Output::for_stream(&config.out_dir, &peer, &name),
            };
            let follow = || {
                let out = out.clone();
                let (handle, addrs, name, renew) = (&handle, &addrs, &name, renew.as_deref());
                async move {
                    fetch_live(
                        handle,
                        peer,
                        addrs,
                        name,
                        &out,
                        &config.fetch,
                        &config.live,
                        renew,
                    )
                    .await
                }
            };
            let r = if config.send {
                crate::streams::send::exchange(&handle, peer, &name, &out, &config.fetch).await
            } else if live {
                follow().await
            } else {
                match fetch_to(
                    &handle,
                    peer,
                    &addrs,
                    &name,
                    &out,
                    &config.fetch,
                    renew.as_deref(),
                )
                .await
                {
                    // Found live only at its header (a provider reached
                    // without the ledger, whose response would have said).
                    Err(crate::streams::StreamError::Live) => follow().await,
                    r => r,
                }
            };
            match &r {
                Ok(f) => handle.emit(Event::StreamDone {
                    peer_id: peer.to_string(),
                    stream: name.clone(),
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
                    what: "stream".into(),
                    detail: format!("{name}: {e}"),
                    reason: match &e {
                        crate::streams::StreamError::Rejected(r) => Some(r.reason.as_str().into()),
                        _ => None,
                    },
                    peer_id: Some(peer.to_string()),
                }),
            }
            StreamOutcome {
                peer,
                stream: name,
                result: r.map_err(|e| BuyError::Stream(Arc::new(e))),
            }
        });
    }
    while let Some(r) = fetches.join_next().await {
        match r {
            Ok(o) => out.push(o),
            Err(e) => tracing::error!(error = %e, "fetch task panicked"),
        }
    }
    out
}
