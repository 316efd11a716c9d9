//! Paying the relays a node uses: for each, agree terms over the payment
//! protocol and, if it charges, attach a channel and pay its invoices
//! against our own count of the bytes through it.

use crate::events::Event;
use crate::protocols::pay::{pay, PayerConfig, Paying};
use crate::swarm::NodeHandle;

/// Attempts at reaching and paying a relay.
const PAY_TRIES: u32 = 3;

/// Agrees with each of the node's relays at once and, where it charges,
/// attaches a channel; then asks each for its reservation (the node's
/// reservations are deferred, so a priced relay never sees a reservation
/// before the channel). A relay that cannot be paid is still asked: its
/// refusal is reported like any.
pub async fn pay_relays(handle: &NodeHandle, cfg: &PayerConfig) {
    let each = handle.relays().to_vec().into_iter().map(|(relay, addr)| {
        let (h, cfg) = (handle.clone(), cfg.clone());
        async move {
            // A connection lost while agreeing (a loaded relay, a reset) is
            // tried again a few times before the relay is left unpaid.
            let mut tries = 0u32;
            let paid = loop {
                tries += 1;
                let r = match h.dial(relay, vec![addr.clone()]).await {
                    Err(e) => Err(e.to_string()),
                    Ok(()) => pay(&h, relay, cfg.clone(), h.relay_meter(relay))
                        .await
                        .map_err(|e| e.to_string()),
                };
                match r {
                    Err(e) if tries < PAY_TRIES => {
                        tracing::info!(%relay, error = %e, tries, "paying the relay failed; again");
                        tokio::time::sleep(std::time::Duration::from_millis(250 << tries)).await;
                    }
                    r => break r,
                }
            };
            match paid {
                Ok(Paying::Free) => tracing::debug!(%relay, "relay is free"),
                Ok(Paying::Attached { .. }) => tracing::info!(%relay, "paying relay"),
                Err(e) => {
                    tracing::warn!(%relay, error = %e, "cannot pay relay");
                    h.emit(Event::PaymentRefused {
                        peer_id: relay.to_string(),
                        reason: "relay_payment",
                        detail: e,
                    });
                }
            }
            if let Err(e) = h.reserve(relay).await {
                tracing::debug!(%relay, error = %e, "no reservation asked");
            }
        }
    });
    futures::future::join_all(each).await;
}

/// For a node with nothing to pay relays with: asks each relay's terms
/// first and reserves only on those that charge nothing (or do not speak
/// the payment protocol). A priced relay is never asked, so nobody waits
/// for a refusal that is certain; it is told once, naming the flag.
pub async fn check_relays(handle: &NodeHandle) {
    use futures::StreamExt;
    // Asked all at once, answered in the order of preference: the first
    // relay that charges nothing is the first asked for a reservation.
    let mut asked: futures::stream::FuturesOrdered<_> = (handle.relays().iter().cloned())
        .map(|(relay, addr)| {
            let h = handle.clone();
            async move {
                // An unreachable or silent relay is asked anyway: the
                // reservations' own back-off takes it from there.
                let terms = async {
                    h.dial(relay, vec![addr]).await.ok()?;
                    crate::protocols::pay::terms(&h, relay).await.ok().flatten()
                };
                (
                    relay,
                    tokio::time::timeout(TERMS_WITHIN, terms)
                        .await
                        .ok()
                        .flatten(),
                )
            }
        })
        .collect();
    while let Some((relay, terms)) = asked.next().await {
        match terms.filter(|t| !t.is_free()) {
            Some(t) => handle.emit(Event::ReservationRefused {
                relay: relay.to_string(),
                reason: format!(
                    "it charges {} wei per MiB and {} per hour (deposit at least {} wei) \
                     and this node has no --relay-deposit to pay it: not asked",
                    t.price_per_mib, t.price_per_hour, t.min_deposit
                ),
            }),
            None => {
                if let Err(e) = handle.reserve(relay).await {
                    tracing::debug!(%relay, error = %e, "no reservation asked");
                }
            }
        }
    }
}

/// Where a node stands before it signals: its relays reserved on (paying
/// those that charge with `payer`, or, with nothing to pay, asking only
/// those that do not), the first round of reservations played out, then its
/// public address by consensus of `observers`.
pub async fn settle(
    handle: &NodeHandle,
    payer: Option<&PayerConfig>,
    observers: &[libp2p::Multiaddr],
    quorum: Option<usize>,
) -> Result<(), crate::swarm::NodeError> {
    match payer {
        Some(payer) => pay_relays(handle, payer).await,
        None if handle.defers_reservations() => check_relays(handle).await,
        None => {}
    }
    handle.wait_relays().await?;
    crate::observe::start(handle, observers, quorum).await;
    Ok(())
}

/// How long a relay's terms are waited for before it is asked anyway.
const TERMS_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);

/// Keeps `consent` to the peers a provider deals with (its granted buyers
/// and ACL peers), so its relays bill it for their circuits and no others.
pub fn consent_from_access(
    handle: &NodeHandle,
    access: &crate::access::Access,
    consent: crate::protocols::pay::payer::Consent,
) {
    let access = access.clone();
    handle.spawn(async move {
        loop {
            let ((any, peers), mut changed) = access.dealing_with();
            consent.set(any, peers);
            // Grants also end by themselves: looked at again within a minute.
            let _ =
                tokio::time::timeout(std::time::Duration::from_secs(60), changed.changed()).await;
        }
    });
}

/// Pays the exit `exit` for what crosses it (`meter`, the tunnel's count)
/// from `payer`'s channel; with nothing to pay with, asks its terms and
/// says once, naming the flag, that a priced exit drops what we send.
pub async fn pay_exit(
    handle: &NodeHandle,
    exit: libp2p::PeerId,
    payer: Option<PayerConfig>,
    meter: std::sync::Arc<std::sync::atomic::AtomicU64>,
) {
    let refused = |detail: String| {
        tracing::warn!(%exit, %detail, "the exit is not paid");
        handle.emit(Event::PaymentRefused {
            peer_id: exit.to_string(),
            reason: "exit_payment",
            detail,
        });
    };
    let Some(cfg) = payer else {
        match crate::protocols::pay::terms(handle, exit).await {
            Ok(Some(t)) if !t.is_free() => refused(format!(
                "it charges {} wei per MiB (deposit at least {} wei) and this node has no \
                 --deposit to pay it: what goes through it is dropped",
                t.price_per_mib, t.min_deposit
            )),
            _ => {}
        }
        return;
    };
    match pay(handle, exit, cfg, meter).await {
        Ok(Paying::Free) => tracing::debug!(%exit, "the exit is free"),
        Ok(Paying::Attached { .. }) => tracing::info!(%exit, "paying the exit"),
        Err(e) => refused(e.to_string()),
    }
}
