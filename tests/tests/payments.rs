//! The payment protocol between real swarms on loopback, paid on the
//! in-memory chain: a payer pays what it was served and the payee claims
//! it; an inflated invoice is refused, and the payee then cuts; a channel
//! presented by a peer it was not bound to is refused.

use alloy::signers::local::PrivateKeySigner;
use ledgermesh_e2e::*;
use ledgermesh_ledger::payments::{MemoryChain, PaymentChannels};
use ledgermesh_node::events::{Event, PathKind};
use ledgermesh_node::protocols::pay::payee::Room;
use ledgermesh_node::protocols::pay::{pay, PayeeConfig, Payees, PayerConfig, Paying};
use ledgermesh_protocol::payment::{CreditPolicy, Leeway, Terms};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const PRICE: u128 = 1_000_000_000; // wei per MiB
const MIB: u64 = 1 << 20;

struct Setup {
    net: Net,
    chain: MemoryChain,
    payee: ledgermesh_node::swarm::NodeHandle,
    payee_events: Recorder,
    payees: Payees,
    payee_key: alloy::primitives::Address,
    payee_signer: PrivateKeySigner,
}

fn terms() -> Terms {
    Terms {
        price_per_mib: PRICE,
        price_per_hour: 0,
        free_bytes: 0,
        min_deposit: 10 * PRICE,
    }
}

async fn setup(tag: &str, grace: Duration) -> Setup {
    let net = Net::new(tag).await;
    let chain = MemoryChain::new();
    let key = PrivateKeySigner::random();
    let payee_key = key.address();
    let payee_signer = key.clone();
    let mut c = net.dev.config("payee");
    c.relays.clear();
    // Connections are never closed for idling: a close means something.
    c.idle_timeout = Duration::from_secs(3600);
    let payee_events = Recorder::new(c.emitter.as_ref().unwrap());
    let payee = net.dev.spawn(c).await.unwrap();
    let payees = Payees::new(
        PayeeConfig {
            channels: Arc::new(chain.account(key)),
            terms: terms(),
            policy: CreditPolicy {
                initial: 2 * PRICE,
                max: 8 * PRICE,
                grace,
            },
            claim_threshold: 4 * PRICE,
        },
        payee.emitter().clone(),
    )
    .unwrap();
    tokio::spawn(payees.clone().serve(payee.stream_control()));
    Setup {
        net,
        chain,
        payee,
        payee_events,
        payees,
        payee_key,
        payee_signer,
    }
}

async fn payer(
    s: &Setup,
    name: &str,
) -> (
    ledgermesh_node::swarm::NodeHandle,
    Recorder,
    Arc<dyn PaymentChannels>,
) {
    let mut c = s.net.dev.config(name);
    c.relays.clear();
    let events = Recorder::new(c.emitter.as_ref().unwrap());
    let h = s.net.dev.spawn(c).await.unwrap();
    let key = PrivateKeySigner::random();
    s.chain.fund(key.address(), 1_000 * PRICE);
    let addrs = s.payee.wait_listening().await.unwrap().direct_addrs;
    h.dial(s.payee.peer_id(), addrs).await.unwrap();
    (h, events, Arc::new(s.chain.account(key)))
}

/// Pays from `channels`, 100 MiB worth per channel, default leeway.
fn pays_from(channels: Arc<dyn PaymentChannels>) -> PayerConfig {
    PayerConfig {
        channels,
        deposit: 100 * PRICE,
        leeway: Leeway::default(),
        caps: Default::default(),
        consent: None,
    }
}

/// Serves `total` bytes to `peer` in 64 KiB pieces, waiting whenever its
/// budget is paused; counts what `payer_meter` sees as `seen_per_mille`
/// of it. Returns what was served (less if the payer was cut).
async fn serve(
    payees: &Payees,
    peer: libp2p::PeerId,
    total: u64,
    payer_meter: &AtomicU64,
    seen_per_mille: u64,
) -> u64 {
    let budget = payees.budget(&peer).expect("an account");
    let mut served = 0;
    while served < total {
        let room = tokio::time::timeout(
            Duration::from_secs(20),
            futures::future::poll_fn(|cx| budget.poll_ready(cx)),
        )
        .await
        .expect("never paused for long");
        let n = match room {
            Room::Bytes(n) => n.min(64 << 10).min(total - served),
            _ => return served,
        };
        payer_meter.fetch_add(n * seen_per_mille / 1000, Ordering::Relaxed);
        budget.served(n);
        served += n;
    }
    served
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payer_pays_what_it_was_served_and_the_payee_claims_it() {
    let mut s = setup("pay-ok", Duration::from_secs(30)).await;
    let (payer_node, mut payer_events, chans) = payer(&s, "payer").await;
    let meter = Arc::new(AtomicU64::new(0));
    let cfg = pays_from(chans.clone());
    let paying = pay(&payer_node, s.payee.peer_id(), cfg, meter.clone())
        .await
        .expect("attached");
    let Paying::Attached { channel, terms: t } = paying else {
        panic!("a priced payee")
    };
    assert_eq!(t, terms());
    payer_events
        .wait_for("channel opened", |e| {
            matches!(e, Event::ChannelOpened { .. })
        })
        .await;
    let served = serve(&s.payees, payer_node.peer_id(), 40 * MIB, &meter, 1000).await;
    assert_eq!(served, 40 * MIB);
    s.payees.claim_all().await;
    // On chain: the payee has what the vouchers said, within one credit
    // window of everything served.
    let got = s.chain.balance(s.payee_key);
    let owed = 40 * PRICE;
    assert!(
        got <= owed && got + 8 * PRICE >= owed,
        "claimed {got} of {owed}"
    );
    // The channel's claimed total is what reached the payee. The payer's
    // last voucher may still be arriving and be claimed at once (the claim
    // threshold is low), so the channel is read between two balances.
    let state = chans.channel(channel).await.unwrap().unwrap();
    let after = s.chain.balance(s.payee_key);
    assert!(
        got <= state.claimed && state.claimed <= after && after <= owed,
        "balance {got} then {after}, channel claimed {}",
        state.claimed
    );
    let claims = s
        .payee_events
        .matching(|e| matches!(e, Event::Claimed { .. }));
    assert!(!claims.is_empty(), "claims were made");
    assert!(!payer_events
        .matching(|e| matches!(e, Event::VoucherSent { .. }))
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inflated_invoice_is_refused_and_the_payee_cuts_the_payer() {
    let mut s = setup("pay-inflated", Duration::from_secs(1)).await;
    let (payer_node, mut payer_events, chans) = payer(&s, "payer").await;
    let meter = Arc::new(AtomicU64::new(0));
    let cfg = PayerConfig {
        channels: chans,
        deposit: 100 * PRICE,
        leeway: Leeway {
            bytes: 0,
            per_mille: 10,
            time: Duration::ZERO,
        },
        caps: Default::default(),
        consent: None,
    };
    pay(&payer_node, s.payee.peer_id(), cfg, meter.clone())
        .await
        .expect("attached");
    // The payer's meter sees only half of what the payee bills.
    let served = serve(&s.payees, payer_node.peer_id(), 40 * MIB, &meter, 500).await;
    assert!(served < 40 * MIB, "cut before the end ({served})");
    payer_events
        .wait_for(
            "the payer refuses",
            |e| matches!(e, Event::PaymentRefused { reason, .. } if *reason == "overbilled"),
        )
        .await;
    s.payee_events
        .wait_for("the payee cuts", |e| {
            matches!(e, Event::PaymentRefused { reason, detail, .. }
                if *reason == "unpaid" && detail.contains("cut"))
        })
        .await;
    assert_eq!(s.chain.balance(s.payee_key), 0, "nothing was paid");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_bound_to_another_peer_is_refused() {
    use ledgermesh_protocol::payment::wire::{PayMsg, RefusalCode};
    let s = setup("pay-binding", Duration::from_secs(30)).await;
    let (honest, _, chans) = payer(&s, "honest").await;
    let meter = Arc::new(AtomicU64::new(0));
    let cfg = pays_from(chans.clone());
    let Paying::Attached { channel, .. } =
        pay(&honest, s.payee.peer_id(), cfg, meter).await.unwrap()
    else {
        panic!()
    };
    // A rider presents the honest payer's channel and binding as its own.
    let binding = chans.bind(channel, &honest.peer_id().to_bytes()).unwrap();
    let (rider, _, _) = payer(&s, "rider").await;
    let answers = ledgermesh_node::protocols::pay::exchange(
        &rider,
        s.payee.peer_id(),
        vec![PayMsg::Hello, PayMsg::Attach { channel, binding }],
    )
    .await
    .unwrap();
    assert!(matches!(answers[0], PayMsg::Terms(_)));
    assert!(
        matches!(
            &answers[1],
            PayMsg::Refuse {
                code: RefusalCode::BadBinding,
                ..
            }
        ),
        "{:?}",
        answers[1]
    );
    assert!(
        s.payees.budget(&rider.peer_id()).is_none(),
        "no account for the rider"
    );
    // A voucher before any attach is refused too.
    let v = chans.sign(channel, PRICE).unwrap();
    let answers = ledgermesh_node::protocols::pay::exchange(
        &rider,
        s.payee.peer_id(),
        vec![PayMsg::Voucher {
            channel,
            cumulative: PRICE,
            signature: v.signature,
        }],
    )
    .await
    .unwrap();
    assert!(matches!(
        &answers[0],
        PayMsg::Refuse {
            code: RefusalCode::NoChannel,
            ..
        }
    ));
}

/// A relay priced at [`terms`], billing the destination, on the memory chain.
struct PaidRelay {
    relay: ledgermesh_node::swarm::NodeHandle,
    addr: libp2p::Multiaddr,
    events: Recorder,
    payees: Payees,
    account: alloy::primitives::Address,
}

async fn paid_relay(net: &Net, chain: &MemoryChain) -> PaidRelay {
    use ledgermesh_node::swarm::{Bill, RelayLimits, RelayPay};
    let key = PrivateKeySigner::random();
    let account = key.address();
    let mut c = net.dev.config("paid-relay");
    c.relays.clear();
    let events = Recorder::new(c.emitter.as_ref().unwrap());
    let payees = Payees::new(
        PayeeConfig {
            channels: Arc::new(chain.account(key)),
            terms: terms(),
            policy: CreditPolicy::in_mib(PRICE, 2, 16),
            claim_threshold: 1_000 * PRICE,
        },
        c.emitter.clone().unwrap(),
    )
    .unwrap();
    c.relay_server = Some(RelayLimits {
        pay: Some(RelayPay {
            payees: payees.clone(),
            bill: Bill::Destination,
        }),
        ..RelayLimits::default()
    });
    let relay = net.dev.spawn(c).await.unwrap();
    let addr = ledgermesh_node::relay::dial_addr(&relay).await.unwrap();
    PaidRelay {
        relay,
        addr,
        events,
        payees,
        account,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_priced_relay_refuses_the_unpaid_and_carries_a_paying_providers_stream() {
    use ledgermesh_node::source::Source;
    let net = Net::new("paid-relay").await;
    let chain = MemoryChain::new();
    let PaidRelay {
        relay,
        addr: relay_addr,
        events: mut relay_events,
        payees,
        account: relay_account,
    } = paid_relay(&net, &chain).await;
    const LEN: u64 = 8 << 20;
    let src = Source::Random { len: LEN, seed: 21 };
    let provider = |name: &'static str, payer: Option<PayerConfig>| {
        let (net, relay_addr, src) = (&net, &relay_addr, src.clone());
        provider_behind(net, name, relay_addr, src, None, move |c, pc| {
            c.defer_reservations = payer.is_some();
            pc.relay_payer = payer;
        })
    };
    // Without a channel: refused, with the reason.
    let (unpaid, _) = provider("unpaid", None).await;
    relay_events
        .wait_for("the unpaid reservation refused", |e| {
            matches!(e, Event::RelayReservation { peer_id, outcome, status, reason, .. }
                if *peer_id == unpaid.peer_id().to_string() && outcome == "refused"
                    && status.as_deref() == Some("RESERVATION_REFUSED")
                    && reason.as_deref().is_some_and(|r| r.contains("no payment channel")))
        })
        .await;
    assert!(unpaid.snapshot().await.unwrap().circuit_addrs.is_empty());
    // With a deposit: it pays, reserves, and its stream goes through on
    // one lifted circuit.
    let payer_key = PrivateKeySigner::random();
    chain.fund(payer_key.address(), 1_000 * PRICE);
    let cfg = PayerConfig {
        channels: Arc::new(chain.account(payer_key)),
        deposit: 100 * PRICE,
        leeway: Leeway::default(),
        caps: Default::default(),
        consent: None,
    };
    let (paying, mut paying_events) = provider("paying", Some(cfg.clone())).await;
    // It reserves once its channel is attached.
    paying_events
        .wait_for("the paying provider's reservation", |e| {
            matches!(e, Event::ReservationAccepted { .. })
        })
        .await;
    let got = fetch_over_circuits(&net, &paying)
        .await
        .expect("the stream completes through the priced relay");
    assert_eq!(got.bytes, LEN);
    assert_eq!(got.sha256, truth(&src).await);
    // A paying peer's circuit is lifted: one carries the whole stream.
    let pid = paying.peer_id().to_string();
    let opened = relay_events.matching(|e| {
        matches!(e, Event::RelayCircuit { dst, outcome, .. } if *dst == pid && outcome == "opened")
    });
    assert_eq!(opened.len(), 1, "one circuit: {opened:?}");
    // Vouchers flowed; the meters agree.
    paying_events
        .wait_for("a voucher sent", |e| matches!(e, Event::VoucherSent { .. }))
        .await;
    let received = relay_events.wait_for("a voucher received", |e| {
        matches!(e, Event::VoucherReceived { .. })
    });
    received.await;
    payees.claim_all().await;
    let claimed = chain.balance(relay_account);
    let carried = paying.relay_meter(relay.peer_id()).load(Ordering::Relaxed);
    let owed = terms().cost(carried, Duration::ZERO);
    assert!(carried >= LEN, "our meter saw the stream: {carried}");
    assert!(claimed > 0, "the relay was paid");
    assert!(
        claimed <= owed + owed / 20 && claimed + 2 * PRICE * 16 >= owed,
        "claimed {claimed} against our meter's {owed}"
    );
}

/// A provider selling `feed` (8 MiB) at `PRICE` per MiB, paid on `chain`.
async fn priced_provider(
    net: &Net,
    chain: &MemoryChain,
    len: u64,
    grace: Duration,
) -> (TestNode, Payees, alloy::primitives::Address) {
    use ledgermesh_node::provider::ProviderConfig;
    use ledgermesh_node::source::Source;
    let pc = ProviderConfig::new(vec![("feed".into(), Source::Random { len, seed: 8 })]);
    priced_provider_of(net, chain, pc, grace).await
}

/// A provider run by `pc`, its streams priced at [`PRICE`] per MiB.
async fn priced_provider_of(
    net: &Net,
    chain: &MemoryChain,
    mut pc: ledgermesh_node::provider::ProviderConfig,
    grace: Duration,
) -> (TestNode, Payees, alloy::primitives::Address) {
    let key = PrivateKeySigner::random();
    let account = key.address();
    let mut c = net.dev.config("priced-provider");
    c.relays = vec![net.relay_addr.clone()];
    let emitter = c.emitter.clone().expect("the net sets an emitter");
    let events = Recorder::new(&emitter);
    let payees = Payees::new(
        PayeeConfig {
            channels: Arc::new(chain.account(key)),
            terms: terms(),
            policy: CreditPolicy {
                grace,
                ..CreditPolicy::in_mib(PRICE, 1, 16)
            },
            claim_threshold: 1_000 * PRICE,
        },
        emitter,
    )
    .unwrap();
    pc.price = Some(payees.clone());
    let handle = net.dev.spawn(c).await.unwrap();
    net.dev.provide(&handle, None, pc);
    (TestNode { handle, events }, payees, account)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_priced_stream_is_paid_for_as_it_arrives_and_refused_above_the_buyers_limit() {
    use ledgermesh_node::consumer::{BuyError, Want};
    use ledgermesh_node::source::Source;
    let net = Net::new("paid-stream").await;
    let chain = MemoryChain::new();
    let (mut provider, payees, provider_account) =
        priced_provider(&net, &chain, 8 * MIB, Duration::from_secs(10)).await;
    let want = || {
        vec![Want {
            peer: provider.handle.peer_id(),
            stream: "feed".into(),
        }]
    };
    // Above the buyer's limit: refused before any byte or channel.
    let cheap = net.consumer("cheap").await;
    let outcomes = net
        .consume_with(&cheap, want(), |cc| cc.max_price_per_mib = PRICE / 2)
        .await;
    assert!(
        matches!(&outcomes[0].result, Err(BuyError::PriceTooHigh { price, .. }) if *price == PRICE),
        "{:?}",
        outcomes[0].result
    );
    // Within it, with a deposit: delivered, verified, paid.
    let mut buyer = net.consumer("buyer").await;
    let key = PrivateKeySigner::random();
    chain.fund(key.address(), 1_000 * PRICE);
    let cfg = PayerConfig {
        channels: Arc::new(chain.account(key)),
        deposit: 100 * PRICE,
        leeway: Leeway::default(),
        caps: Default::default(),
        consent: None,
    };
    let outcomes = net
        .consume_with(&buyer, want(), |cc| {
            cc.max_price_per_mib = PRICE;
            cc.stream_payer = Some(cfg.clone());
        })
        .await;
    let got = outcomes[0].result.as_ref().expect("delivered");
    let src = Source::Random {
        len: 8 * MIB,
        seed: 8,
    };
    assert_eq!(got.sha256, truth(&src).await);
    buyer
        .events
        .wait_for("a voucher", |e| matches!(e, Event::VoucherSent { .. }))
        .await;
    // The provider asked for the rest when the stream ended; once it is
    // paid, the claim is the stream's price to the wei.
    let owed = 8 * PRICE;
    let paid = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let last = buyer
                .events
                .matching(|e| matches!(e, Event::VoucherSent { .. }))
                .last()
                .cloned();
            if let Some(Event::VoucherSent { cumulative, .. }) = last {
                if cumulative.parse::<u128>().unwrap() >= owed {
                    return;
                }
            }
            buyer
                .events
                .wait_for("another voucher", |e| {
                    matches!(e, Event::VoucherSent { cumulative, .. }
                        if cumulative.parse::<u128>().unwrap() >= owed)
                })
                .await;
        }
    });
    paid.await.expect("the whole stream paid for");
    // Claimed once the payee holds that voucher (sent is not yet received).
    payee_holds(&mut provider, owed).await;
    payees.claim_all().await;
    assert_eq!(chain.balance(provider_account), owed, "paid to the wei");
    // The cheap buyer holds a grant (its request was answered) but never
    // paid: asking the stream protocol directly, it is refused `unpaid`.
    let addrs = provider.handle.wait_listening().await.unwrap().direct_addrs;
    cheap
        .handle
        .dial(provider.handle.peer_id(), addrs.clone())
        .await
        .unwrap();
    let r = ledgermesh_node::streams::fetch(
        &cheap.handle,
        provider.handle.peer_id(),
        &addrs,
        "feed",
        &net.dir.0.join("cheap-direct"),
        &ledgermesh_node::streams::FetchPolicy::default(),
    )
    .await;
    match r {
        Err(ledgermesh_node::streams::StreamError::Rejected(rej)) => {
            assert_eq!(rej.reason, ledgermesh_protocol::RejectReason::Unpaid);
            assert!(rej.detail.contains("wei per MiB"), "{}", rej.detail);
        }
        other => panic!("an unpaid fetch is refused, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payee_claims_at_once_when_its_payer_starts_closing() {
    let mut s = setup("pay-closing", Duration::from_secs(30)).await;
    let (payer_node, _, chans) = payer(&s, "payer").await;
    let meter = Arc::new(AtomicU64::new(0));
    let cfg = pays_from(chans.clone());
    let Paying::Attached { channel, .. } = pay(&payer_node, s.payee.peer_id(), cfg, meter.clone())
        .await
        .unwrap()
    else {
        panic!()
    };
    // Below the claim threshold (4 MiB worth): nothing claimed yet.
    serve(&s.payees, payer_node.peer_id(), 3 * MIB, &meter, 1000).await;
    s.payees.invoice_now(&payer_node.peer_id());
    s.payee_events
        .wait_for("the last voucher", |e| {
            matches!(e, Event::VoucherReceived { cumulative, .. } if cumulative == &(3 * PRICE).to_string())
        })
        .await;
    s.payees.claim_closing().await;
    assert_eq!(
        s.chain.balance(s.payee_key),
        0,
        "not closing: nothing claimed"
    );
    chans.start_close(channel).await.unwrap();
    s.payees.claim_closing().await;
    assert_eq!(
        s.chain.balance(s.payee_key),
        3 * PRICE,
        "claimed inside the close delay"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vouchers_left_unclaimed_by_a_crash_are_claimed_on_restart() {
    let mut s = setup("pay-crash", Duration::from_secs(30)).await;
    let dir = s.net.dir.0.join("payee-data");
    s.payees.keep_vouchers_in(&dir).await.unwrap();
    let (payer_node, _, chans) = payer(&s, "payer").await;
    let meter = Arc::new(AtomicU64::new(0));
    let cfg = pays_from(chans);
    pay(&payer_node, s.payee.peer_id(), cfg, meter.clone())
        .await
        .unwrap();
    // 3 MiB, under the claim threshold: paid by vouchers, not claimed.
    serve(&s.payees, payer_node.peer_id(), 3 * MIB, &meter, 1000).await;
    s.payees.invoice_now(&payer_node.peer_id());
    s.payee_events
        .wait_for("the last voucher", |e| {
            matches!(e, Event::VoucherReceived { cumulative, .. } if cumulative == &(3 * PRICE).to_string())
        })
        .await;
    assert_eq!(s.chain.balance(s.payee_key), 0);
    // The payee "crashes" (its accounts are gone, nothing was claimed) and
    // a new one starts from the same directory: it claims what it was owed.
    let again = Payees::new(
        PayeeConfig {
            channels: Arc::new(s.chain.account(s.payee_signer.clone())),
            terms: terms(),
            policy: CreditPolicy::in_mib(PRICE, 2, 8),
            claim_threshold: 4 * PRICE,
        },
        s.payee.emitter().clone(),
    )
    .unwrap();
    again.keep_vouchers_in(&dir).await.unwrap();
    assert_eq!(
        s.chain.balance(s.payee_key),
        3 * PRICE,
        "claimed after the restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buyer_that_stops_paying_is_cut_and_resumes_from_its_offset_once_it_pays() {
    use ledgermesh_node::consumer::Want;
    use ledgermesh_node::source::Source;
    let net = Net::new("paid-resume").await;
    let chain = MemoryChain::new();
    const LEN: u64 = 16 * MIB;
    let (provider, _payees, _) = priced_provider(&net, &chain, LEN, Duration::from_secs(1)).await;
    // The buyer can afford one channel of 10 MiB worth, and no top-up.
    let key = PrivateKeySigner::random();
    let account = key.address();
    chain.fund(account, 10 * PRICE);
    let cfg = PayerConfig {
        channels: Arc::new(chain.account(key)),
        deposit: 10 * PRICE,
        leeway: Leeway::default(),
        caps: Default::default(),
        consent: None,
    };
    let mut buyer = net.consumer("buyer").await;
    let want = vec![Want {
        peer: provider.handle.peer_id(),
        stream: "feed".into(),
    }];
    let mut seen = Recorder::new(buyer.handle.emitter());
    let buying = net.consume_with(&buyer, want, |cc| {
        cc.max_price_per_mib = PRICE;
        cc.stream_payer = Some(cfg.clone());
    });
    let mut provider = provider;
    let provider_events = &mut provider.events;
    let watch = async {
        // Out of money: it cannot top up its nearly used-up channel.
        seen.wait_for(
            "the buyer cannot top up",
            |e| matches!(e, Event::PaymentRefused { reason, .. } if *reason == "top_up_failed"),
        )
        .await;
        // The provider pauses it at the deposit, then cuts it.
        provider_events
            .wait_for(
                "the provider cuts it",
                |e| matches!(e, Event::PaymentRefused { reason, .. } if *reason == "unpaid"),
            )
            .await;
        // Money arrives; asked again, it tops up, attaches and is served.
        chain.fund(account, 100 * PRICE);
    };
    let (outcomes, ()) = tokio::join!(buying, watch);
    let got = outcomes[0]
        .result
        .as_ref()
        .expect("the stream completes after paying up");
    let src = Source::Random { len: LEN, seed: 8 };
    assert_eq!(got.sha256, truth(&src).await);
    // It was cut for not paying, and went on from where it was, not from 0.
    assert!(got.resumes >= 1, "resumed: {}", got.resumes);
    let reopened = buyer
        .events
        .matching(|e| matches!(e, Event::StreamOpened { offset, .. } if *offset > 0));
    assert!(!reopened.is_empty(), "a stream reopened at its offset");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_bills_more_than_it_carried_is_dropped() {
    let s = setup("pay-overbilling-relay", Duration::from_secs(1)).await;
    // The payer counts the payee among its relays.
    let payee_id = s.payee.peer_id();
    let addr = s.payee.wait_listening().await.unwrap().direct_addrs[0]
        .clone()
        .with(libp2p::multiaddr::Protocol::P2p(payee_id));
    let mut c = s.net.dev.config("payer");
    c.relays = vec![addr.clone()];
    c.defer_reservations = true;
    // Idle connections stay: only dropping the relay can close this one.
    c.idle_timeout = Duration::from_secs(3600);
    let mut events = Recorder::new(c.emitter.as_ref().unwrap());
    let payer_node = s.net.dev.spawn(c).await.unwrap();
    let key = PrivateKeySigner::random();
    s.chain.fund(key.address(), 1_000 * PRICE);
    payer_node.dial(payee_id, vec![addr]).await.unwrap();
    let meter = Arc::new(AtomicU64::new(0));
    let cfg = PayerConfig {
        leeway: Leeway {
            bytes: 0,
            per_mille: 10,
            time: Duration::ZERO,
        },
        ..pays_from(Arc::new(s.chain.account(key)))
    };
    pay(&payer_node, payee_id, cfg, meter.clone())
        .await
        .unwrap();
    // It bills twice what the payer's meter saw.
    serve(&s.payees, payer_node.peer_id(), 40 * MIB, &meter, 500).await;
    events
        .wait_for(
            "the inflated invoice refused",
            |e| matches!(e, Event::PaymentRefused { reason, .. } if *reason == "overbilled"),
        )
        .await;
    events
        .wait_for("the relay dropped", |e| {
            matches!(e, Event::Disconnected { peer_id, .. } if *peer_id == payee_id.to_string())
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_priced_live_stream_is_paid_for_chunk_by_chunk_to_the_wei() {
    use ledgermesh_node::consumer::Want;
    use ledgermesh_node::provider::ProviderConfig;
    use ledgermesh_node::source::Source;
    use ledgermesh_node::streams::live::{fetch::From, LiveSpec};
    let net = Net::new("paid-live").await;
    let chain = MemoryChain::new();
    // 3 MiB from a command, then its end (--exec-once).
    let mut pc = ProviderConfig::new(vec![(
        "ticks".into(),
        Source::Live(LiveSpec::Exec("head -c 3145728 /dev/urandom".into())),
    )]);
    pc.exec_once = true;
    let (mut provider, payees, provider_account) =
        priced_provider_of(&net, &chain, pc, Duration::from_secs(10)).await;
    let buyer = net.consumer("buyer").await;
    let key = PrivateKeySigner::random();
    chain.fund(key.address(), 1_000 * PRICE);
    let cfg = PayerConfig {
        channels: Arc::new(chain.account(key)),
        deposit: 100 * PRICE,
        leeway: Leeway::default(),
        caps: Default::default(),
        consent: None,
    };
    let want = vec![Want {
        peer: provider.handle.peer_id(),
        stream: "ticks".into(),
    }];
    let outcomes = net
        .consume_with(&buyer, want, |cc| {
            cc.max_price_per_mib = PRICE;
            cc.stream_payer = Some(cfg.clone());
            cc.live.from = From::Offset(0);
        })
        .await;
    let got = outcomes[0].result.as_ref().expect("followed to its end");
    assert_eq!(got.bytes, 3 * MIB);
    assert!(got
        .live
        .as_ref()
        .is_some_and(|l| l.source_ended && l.gaps == 0));
    // Paid for what it got, to the wei (the payee holds the voucher), and claimed.
    let owed = 3 * PRICE;
    payee_holds(&mut provider, owed).await;
    payees.claim_all().await;
    assert_eq!(chain.balance(provider_account), owed, "paid to the wei");
}

/// Waits until the payee holds a voucher for `owed` (sent is not yet
/// received: a claim before that would fall short).
async fn payee_holds(provider: &mut TestNode, owed: u128) {
    provider
        .events
        .wait_for("the voucher for all of it", |e| {
            matches!(e, Event::VoucherReceived { cumulative, .. }
                if cumulative.parse::<u128>().unwrap_or(0) >= owed)
        })
        .await;
}

/// Takes what credit `peer` has without paying: serves until its budget is
/// paused or cut. Returns the bytes served.
fn take_credit(payees: &Payees, peer: libp2p::PeerId) -> u64 {
    let Some(budget) = payees.budget(&peer) else {
        return 0;
    };
    let waker = futures::task::noop_waker();
    let mut cx = std::task::Context::from_waker(&waker);
    let mut served = 0;
    while let Room::Bytes(n) = budget.poll_room(&mut cx) {
        let n = n.min(64 << 10);
        budget.served(n);
        served += n;
    }
    served
}

/// A cheater's node: a fresh identity dialled to the payee, and `exchange`
/// to speak the pay protocol by hand.
async fn cheater_node(s: &Setup, name: &str) -> ledgermesh_node::swarm::NodeHandle {
    let mut c = s.net.dev.config(name);
    c.relays.clear();
    let h = s.net.dev.spawn(c).await.unwrap();
    let addrs = s.payee.wait_listening().await.unwrap().direct_addrs;
    h.dial(s.payee.peer_id(), addrs).await.unwrap();
    h
}

/// Attaches `channel` for `node` by hand; the payee's answer.
async fn attach_by_hand(
    s: &Setup,
    node: &ledgermesh_node::swarm::NodeHandle,
    chans: &dyn PaymentChannels,
    channel: [u8; 32],
) -> ledgermesh_protocol::payment::wire::PayMsg {
    use ledgermesh_protocol::payment::wire::PayMsg;
    let binding = chans.bind(channel, &node.peer_id().to_bytes()).unwrap();
    let mut answers = ledgermesh_node::protocols::pay::exchange(
        node,
        s.payee.peer_id(),
        vec![PayMsg::Attach { channel, binding }],
    )
    .await
    .unwrap();
    answers.remove(0)
}

/// Bytes an honest payer, fresh, is served of 8 MiB while it pays.
async fn honest_served(s: &Setup) -> u64 {
    let (honest, _, hc) = payer(s, "honest").await;
    let meter = Arc::new(AtomicU64::new(0));
    pay(&honest, s.payee.peer_id(), pays_from(hc), meter.clone())
        .await
        .unwrap();
    serve(&s.payees, honest.peer_id(), 8 * MIB, &meter, 1000).await
}

/// The payee's first credit window in these tests (`setup`).
const WINDOW_BYTES: u64 = 2 * MIB;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_account_from_two_node_keys_and_a_restart_pays_for_everything_served() {
    let mut s = setup("pay-keys", Duration::from_secs(30)).await;
    let key = PrivateKeySigner::random();
    s.chain.fund(key.address(), 1_000 * PRICE);
    let a = libp2p::identity::Keypair::generate_ed25519();
    let b = libp2p::identity::Keypair::generate_ed25519();
    let addrs = s.payee.wait_listening().await.unwrap().direct_addrs;
    let mut served = 0;
    // Node key A, node key B (a second machine), then A again (a restart):
    // each a fresh process that knows only the ledger account.
    for (run, kp) in [a.clone(), b, a].into_iter().enumerate() {
        let mut c = s.net.dev.config(&format!("buyer{run}"));
        c.relays.clear();
        let mut events = Recorder::new(c.emitter.as_ref().unwrap());
        let node = ledgermesh_node::swarm::spawn(c, kp).await.unwrap();
        node.dial(s.payee.peer_id(), addrs.clone()).await.unwrap();
        let meter = Arc::new(AtomicU64::new(0));
        let chans: Arc<dyn PaymentChannels> = Arc::new(s.chain.account(key.clone()));
        pay(&node, s.payee.peer_id(), pays_from(chans), meter.clone())
            .await
            .expect("attached");
        served += serve(&s.payees, node.peer_id(), 8 * MIB, &meter, 1000).await;
        s.payees.invoice_now(&node.peer_id());
        let owed = (u128::from(served / MIB) * PRICE).to_string();
        s.payee_events
            .wait_for(
                "everything served so far paid",
                |e| matches!(e, Event::VoucherReceived { cumulative, .. } if *cumulative == owed),
            )
            .await;
        let refused = events.matching(|e| matches!(e, Event::PaymentRefused { .. }));
        assert!(refused.is_empty(), "run {run}: {refused:?}");
        node.shutdown().await;
    }
    s.payees.claim_all().await;
    let got = s.chain.balance(s.payee_key);
    println!(
        "served {} MiB, claimed {got} wei of {}",
        served / MIB,
        24 * PRICE
    );
    assert_eq!(served, 24 * MIB);
    assert_eq!(got, 24 * PRICE, "paid for all three runs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_channel_bound_to_many_peer_ids_gets_one_window() {
    use ledgermesh_protocol::payment::wire::PayMsg;
    let s = setup("pay-many-ids", Duration::from_secs(30)).await;
    let key = PrivateKeySigner::random();
    s.chain.fund(key.address(), 1_000 * PRICE);
    let chans = s.chain.account(key);
    let (channel, _) = chans.open(s.payee_key, 100 * PRICE).await.unwrap();
    let mut unpaid = 0;
    for i in 0..12 {
        let node = cheater_node(&s, &format!("id{i}")).await;
        let answer = attach_by_hand(&s, &node, &chans, channel).await;
        assert!(matches!(answer, PayMsg::Ack { .. }), "{answer:?}");
        unpaid += take_credit(&s.payees, node.peer_id());
    }
    let bound = s.payees.report()[0].peers.len();
    println!(
        "12 identities on one channel took {unpaid} bytes unpaid (one window: {WINDOW_BYTES}); {bound} bound at the end"
    );
    assert!(unpaid <= WINDOW_BYTES, "lost {unpaid} bytes");
    assert_eq!(
        bound, 8,
        "at most 8 peers per channel, the idlest make room"
    );
    // An honest payer is served meanwhile, in full.
    assert_eq!(honest_served(&s).await, 8 * MIB);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_thousand_throwaway_identities_on_one_channel_get_one_window() {
    use ledgermesh_protocol::payment::wire::PayMsg;
    const IDS: usize = 4_096;
    let s = setup("pay-4096-ids", Duration::from_secs(30)).await;
    let key = PrivateKeySigner::random();
    s.chain.fund(key.address(), 1_000 * PRICE);
    let chans = s.chain.account(key);
    let (channel, _) = chans.open(s.payee_key, 100 * PRICE).await.unwrap();
    let addrs = s.payee.wait_listening().await.unwrap().direct_addrs;
    let payee = s.payee.peer_id();
    let protocol = ledgermesh_node::protocols::pay::PAY;
    // A cheater mints a PeerId per attempt, binds each to the one channel,
    // takes what credit each is given, and never pays.
    let (mut acked, mut refused, mut unpaid) = (0, 0, 0);
    // A stream that never opens is counted, not fatal: under CI's load one
    // in a few thousand has stalled in negotiation (see docs/payments.md).
    let mut stalled = vec![];
    for _ in 0..IDS {
        let (me, stream, _swarm) =
            match ledgermesh_e2e::throwaway::open(payee, &addrs, protocol.clone()).await {
                Ok(x) => x,
                Err(e) => {
                    stalled.push(e.to_string());
                    continue;
                }
            };
        let binding = chans.bind(channel, &me.to_bytes()).unwrap();
        let answer = ledgermesh_node::protocols::pay::exchange_on(
            stream,
            vec![PayMsg::Attach { channel, binding }],
        )
        .await
        .expect("an answer");
        match &answer[0] {
            PayMsg::Ack { .. } => {
                acked += 1;
                unpaid += take_credit(&s.payees, me);
            }
            PayMsg::Refuse { reason, .. } if reason.contains("8 peers") => refused += 1,
            other => panic!("neither attached nor refused for the cap: {other:?}"),
        }
    }
    let report = s.payees.report();
    assert!(stalled.len() <= IDS / 100, "{stalled:?}");
    println!(
        "{IDS} throwaway identities on one channel: {acked} attached, {refused} refused, {} stalled; \
         {unpaid} bytes taken unpaid (one window: {WINDOW_BYTES}); {} bound at the end",
        stalled.len(),
        report[0].peers.len()
    );
    assert!(unpaid <= WINDOW_BYTES, "lost {unpaid} bytes");
    assert_eq!(report.len(), 1, "one account for the channel");
    assert!(report[0].peers.len() <= 8, "at most 8 peers per channel");
    // An honest payer is served meanwhile, in full.
    assert_eq!(honest_served(&s).await, 8 * MIB);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alternating_channels_renews_no_credit() {
    use ledgermesh_protocol::payment::wire::{PayMsg, RefusalCode};
    let s = setup("pay-alternate", Duration::from_secs(30)).await;
    let key = PrivateKeySigner::random();
    s.chain.fund(key.address(), 1_000 * PRICE);
    let chans = s.chain.account(key);
    let (c1, _) = chans.open(s.payee_key, 100 * PRICE).await.unwrap();
    let (c2, _) = chans.open(s.payee_key, 100 * PRICE).await.unwrap();
    let node = cheater_node(&s, "alternator").await;
    // A second identity holds the other channel, to launder the debt.
    let holder = cheater_node(&s, "holder").await;
    let answer = attach_by_hand(&s, &holder, &chans, c2).await;
    assert!(matches!(answer, PayMsg::Ack { .. }), "{answer:?}");
    let mut unpaid = 0;
    let mut refused = 0;
    for round in 0..6 {
        let ch = if round % 2 == 0 { c1 } else { c2 };
        match attach_by_hand(&s, &node, &chans, ch).await {
            PayMsg::Ack { .. } => unpaid += take_credit(&s.payees, node.peer_id()),
            PayMsg::Refuse { code, reason } => {
                assert_eq!(code, RefusalCode::Other);
                assert!(reason.contains("pay it there first"), "{reason}");
                refused += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(refused, 3, "every move to the other channel while owing");
    println!(
        "six attaches over two channels took {unpaid} bytes unpaid (one window: {WINDOW_BYTES})"
    );
    assert!(unpaid <= WINDOW_BYTES, "lost {unpaid} bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_wei_vouchers_are_refused_and_kept_off_disk() {
    use ledgermesh_protocol::payment::wire::{PayMsg, RefusalCode};
    let s = setup("pay-one-wei", Duration::from_secs(30)).await;
    let dir = s.net.dir.0.join("payee-data");
    s.payees.keep_vouchers_in(&dir).await.unwrap();
    let key = PrivateKeySigner::random();
    s.chain.fund(key.address(), 1_000 * PRICE);
    let chans = s.chain.account(key);
    let (channel, _) = chans.open(s.payee_key, 100 * PRICE).await.unwrap();
    let node = cheater_node(&s, "dripper").await;
    let binding = chans.bind(channel, &node.peer_id().to_bytes()).unwrap();
    let mut msgs = vec![PayMsg::Attach { channel, binding }];
    for wei in 1..=50u128 {
        let v = chans.sign(channel, wei).unwrap();
        msgs.push(PayMsg::Voucher {
            channel,
            cumulative: wei,
            signature: v.signature,
        });
    }
    let answers = ledgermesh_node::protocols::pay::exchange(&node, s.payee.peer_id(), msgs)
        .await
        .unwrap();
    assert!(matches!(answers[0], PayMsg::Ack { .. }));
    for a in &answers[1..] {
        assert!(
            matches!(a, PayMsg::Refuse { code: RefusalCode::BadVoucher, reason } if reason.contains("step")),
            "{a:?}"
        );
    }
    let file = std::fs::read_to_string(dir.join("vouchers.jsonl")).unwrap_or_default();
    assert_eq!(file.lines().count(), 0, "nothing written: {file}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_priced_stream_from_a_relay_only_provider_is_paid_across_the_dcutr_upgrade() {
    use ledgermesh_node::consumer::Want;
    use ledgermesh_node::provider::ProviderConfig;
    use ledgermesh_node::source::Source;
    let net = Net::new("paid-upgrade").await;
    let chain = MemoryChain::new();
    let len = 16 * MIB;
    let src = Source::Random { len, seed: 21 };
    let mut pc = ProviderConfig::new(vec![("feed".into(), src.clone())]);
    pc.relay_only = true;
    let (mut provider, payees, account) =
        priced_provider_of(&net, &chain, pc, Duration::from_secs(10)).await;
    let mut buyer = net.consumer("buyer").await;
    let key = PrivateKeySigner::random();
    chain.fund(key.address(), 1_000 * PRICE);
    let cfg = pays_from(Arc::new(chain.account(key)));
    let pid = provider.handle.peer_id();
    let want = vec![Want {
        peer: pid,
        stream: "feed".into(),
    }];
    let outcomes = net
        .consume_with(&buyer, want, |cc| {
            cc.max_price_per_mib = PRICE;
            cc.stream_payer = Some(cfg.clone());
        })
        .await;
    let got = outcomes[0].result.as_ref().expect("delivered");
    assert_eq!(got.sha256, truth(&src).await);
    // It started relayed and went direct: the payment went along.
    let first = buyer
        .events
        .matching(|e| matches!(e, Event::Connected { peer_id, .. } if *peer_id == pid.to_string()));
    assert!(
        matches!(first.first(), Some(Event::Connected { path, .. }) if *path == PathKind::Relayed),
        "{first:?}"
    );
    let refused = buyer
        .events
        .matching(|e| matches!(e, Event::PaymentRefused { .. }));
    assert!(refused.is_empty(), "{refused:?}");
    let owed = 16 * PRICE;
    payee_holds(&mut provider, owed).await;
    payees.claim_all().await;
    assert_eq!(chain.balance(account), owed, "paid to the wei");
    // The two sides' reports of the channel agree to the wei.
    let theirs = provider.handle.ops().payee_report();
    let ours = buyer.handle.payer_report().await;
    assert_eq!((theirs.len(), ours.len()), (1, 1), "{theirs:?} {ours:?}");
    let (t, o) = (&theirs[0], &ours[0]);
    assert_eq!(t["channel"], o["channel"]);
    assert_eq!(t["highest_voucher_wei"], owed.to_string());
    assert_eq!(o["highest_voucher_wei"], owed.to_string());
    assert_eq!(t["claimed_wei"], owed.to_string());
    assert_eq!(
        (t["unclaimed_wei"].as_str(), t["unpaid_wei"].as_str()),
        (Some("0"), Some("0"))
    );
    assert_eq!(t["bytes"], len);
    assert_eq!(t["claims"].as_array().map(Vec::len), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_pinging_through_a_paid_relay_costs_the_destination_nothing() {
    use futures::{AsyncReadExt, AsyncWriteExt};
    use ledgermesh_node::source::Source;
    let net = Net::new("paid-consent").await;
    let chain = MemoryChain::new();
    let PaidRelay {
        addr: relay_addr,
        events: mut relay_events,
        payees,
        ..
    } = paid_relay(&net, &chain).await;
    // The buyer the provider deals with (named in its ACL), and a stranger.
    let node = |name: &'static str| {
        let mut c = net.dev.config(name);
        c.relays.clear();
        c.hole_punching = false;
        net.dev.spawn(c)
    };
    let buyer = node("buyer").await.unwrap();
    let stranger = node("stranger").await.unwrap();
    let acl = net.dir.0.join("acl-buyer.toml");
    let line = format!(
        "[[allow]]\npeer = \"{}\"\nstreams = [\"*\"]\n",
        buyer.peer_id()
    );
    std::fs::write(&acl, line).unwrap();
    const LEN: u64 = 4 << 20;
    let src = Source::Random { len: LEN, seed: 5 };
    let payer_key = PrivateKeySigner::random();
    chain.fund(payer_key.address(), 1_000 * PRICE);
    let cfg = pays_from(Arc::new(chain.account(payer_key)));
    let (provider, mut provider_events) =
        provider_behind(&net, "provider", &relay_addr, src.clone(), None, |c, pc| {
            c.defer_reservations = true;
            pc.acl = Some(acl.clone());
            pc.relay_payer = Some(cfg);
        })
        .await;
    provider_events
        .wait_for("the reservation", |e| {
            matches!(e, Event::ReservationAccepted { .. })
        })
        .await;
    let circuits = provider.snapshot().await.unwrap().circuit_addrs;
    // The buyer's stream: a billed, lifted circuit.
    let got = ledgermesh_node::streams::fetch(
        &buyer,
        provider.peer_id(),
        &circuits,
        "feed",
        &net.dir.0,
        &ledgermesh_node::streams::FetchPolicy::default(),
    )
    .await
    .expect("the buyer's stream completes");
    assert_eq!(got.sha256, truth(&src).await);
    // The buyer leaves; its circuit closes and bills nothing more.
    buyer.disconnect(provider.peer_id()).await;
    let bid = buyer.peer_id().to_string();
    relay_events
        .wait_for("the buyer's circuit closed", |e| {
            matches!(e, Event::RelayCircuit { src, outcome, .. } if *src == bid && outcome == "closed")
        })
        .await;
    let opened = relay_events.matching(|e| {
        matches!(e, Event::RelayCircuit { src, outcome, .. } if *src == bid && outcome == "opened")
    });
    assert!(
        matches!(
            opened.first(),
            Some(Event::RelayCircuit { reason: None, .. })
        ),
        "billed and lifted: {opened:?}"
    );
    let billed = payees
        .billed_bytes(&provider.peer_id())
        .expect("an account");
    assert!(billed >= LEN, "the buyer's circuit is billed: {billed}");
    // The stranger pings the provider through the relay, many times.
    stranger
        .dial(provider.peer_id(), circuits.clone())
        .await
        .unwrap();
    // A ping stream each time (a node answers one inbound ping stream per
    // connection: its own pings would take ours over).
    let mut pongs = 0;
    for _ in 0..200 {
        let ping = async {
            let mut s = (stranger.stream_control())
                .open_stream(
                    provider.peer_id(),
                    libp2p::StreamProtocol::new("/ipfs/ping/1.0.0"),
                )
                .await
                .map_err(std::io::Error::other)?;
            s.write_all(&[7u8; 32]).await?;
            s.flush().await?;
            let mut back = [0u8; 32];
            s.read_exact(&mut back).await?;
            let _ = s.close().await;
            std::io::Result::Ok(back)
        };
        if ping.await.is_ok_and(|b| b == [7u8; 32]) {
            pongs += 1;
        }
    }
    assert!(pongs >= 150, "the stranger is carried: {pongs} pongs");
    let sid = stranger.peer_id().to_string();
    let opened = relay_events
        .wait_for("the stranger's circuit", |e| {
            matches!(e, Event::RelayCircuit { src, outcome, .. } if *src == sid && outcome == "opened")
        })
        .await;
    assert!(
        matches!(&opened, Event::RelayCircuit { reason: Some(r), .. } if r.contains("unbilled")),
        "{opened:?}"
    );
    let after = payees.billed_bytes(&provider.peer_id()).unwrap();
    println!(
        "the stranger got {pongs} pongs through the relay; the provider was billed {} more bytes",
        after - billed
    );
    assert_eq!(after, billed, "nothing billed for the stranger");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payer_that_closes_withdraws_and_keeps_consuming_loses_the_payee_at_most_a_window() {
    let mut s = setup("pay-withdraw", Duration::from_secs(30)).await;
    let (payer_node, _, chans) = payer(&s, "withdrawer").await;
    let meter = Arc::new(AtomicU64::new(0));
    let Paying::Attached { channel, .. } = pay(
        &payer_node,
        s.payee.peer_id(),
        pays_from(chans.clone()),
        meter.clone(),
    )
    .await
    .unwrap() else {
        panic!("a priced payee")
    };
    let peer = payer_node.peer_id();
    serve(&s.payees, peer, 3 * MIB, &meter, 1000).await;
    s.payees.invoice_now(&peer);
    s.payee_events
        .wait_for("paid so far", |e| {
            matches!(e, Event::VoucherReceived { cumulative, .. } if cumulative == &(3 * PRICE).to_string())
        })
        .await;
    // It starts closing: the payee claims what it holds at once.
    chans.start_close(channel).await.unwrap();
    s.payees.claim_closing().await;
    assert_eq!(s.chain.balance(s.payee_key), 3 * PRICE, "claimed at once");
    // Until an hour before the close, it is served (and claimed at once).
    let before = take_credit(&s.payees, peer);
    assert!(before > 0, "credit while the close is far");
    // Within the hour before the close: no credit at all.
    let delay = chans.close_delay();
    s.chain.advance(delay - Duration::from_secs(1800));
    s.payees.claim_closing().await;
    let near = take_credit(&s.payees, peer);
    // The delay passes, it withdraws the rest, and keeps asking for service.
    s.chain.advance(Duration::from_secs(1801));
    chans.finish_close(channel).await.unwrap();
    s.payees.claim_closing().await;
    let after = take_credit(&s.payees, peer);
    println!(
        "served unpaid while closing: {before} bytes (at most the grown window, {}), near the close {near}, after the withdrawal {after}",
        8 * MIB
    );
    assert!(before <= 8 * MIB, "at most the grown window: {before}");
    assert_eq!(near, 0, "no credit within the margin");
    assert_eq!(after, 0, "cut once the channel is gone");
    assert!(s.payees.budget(&peer).is_none(), "no account left");
    assert_eq!(s.chain.balance(s.payee_key), 3 * PRICE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_idle_pay_streams_from_one_peer_hold_four_and_honest_payers_are_served() {
    use futures::AsyncReadExt;
    use ledgermesh_node::protocols::pay::PAY;
    use ledgermesh_protocol::framing::split_frame;
    use ledgermesh_protocol::payment::wire::PayMsg;
    let s = setup("pay-idle-streams", Duration::from_secs(30)).await;
    let idler = cheater_node(&s, "idler").await;
    let mut held = vec![];
    let mut refused = 0;
    for _ in 0..1_024 {
        let Ok(mut st) = idler
            .stream_control()
            .open_stream(s.payee.peer_id(), PAY)
            .await
        else {
            refused += 1;
            continue;
        };
        // A refused stream hears why at once; a held one hears nothing.
        let mut buf = vec![0u8; 512];
        match tokio::time::timeout(Duration::from_millis(200), st.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {
                let (body, _) = split_frame(&buf[..n]).unwrap().unwrap();
                assert!(matches!(PayMsg::decode(body), Ok(PayMsg::Refuse { .. })));
                refused += 1;
            }
            Ok(_) => refused += 1,
            Err(_) => held.push(st),
        }
        if held.len() > 4 {
            break;
        }
    }
    println!(
        "1,024 pay streams from one peer: {} held, {refused} refused",
        held.len()
    );
    assert_eq!(held.len(), 4, "four pay streams per peer");
    // An honest payer meanwhile: attached, served, paid.
    let (honest, _, chans) = payer(&s, "honest").await;
    let meter = Arc::new(AtomicU64::new(0));
    pay(&honest, s.payee.peer_id(), pays_from(chans), meter.clone())
        .await
        .expect("attached");
    let served = serve(&s.payees, honest.peer_id(), 8 * MIB, &meter, 1000).await;
    assert_eq!(served, 8 * MIB);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payee_that_switches_its_terms_mid_run_is_refused_before_anything_is_signed() {
    let net = Net::new("pay-switch").await;
    let chain = MemoryChain::new();
    let kp = libp2p::identity::Keypair::generate_ed25519();
    // The payee, twice under one PeerId: honest terms, then dearer ones paid
    // to another account.
    let start = |price: u128| {
        let (net, chain, kp) = (&net, &chain, kp.clone());
        async move {
            let mut c = net.dev.config("switcher");
            c.relays.clear();
            let emitter = c.emitter.clone().unwrap();
            let h = ledgermesh_node::swarm::spawn(c, kp).await.unwrap();
            let payees = Payees::new(
                PayeeConfig {
                    channels: Arc::new(chain.account(PrivateKeySigner::random())),
                    terms: Terms {
                        price_per_mib: price,
                        ..terms()
                    },
                    policy: CreditPolicy::in_mib(price, 2, 8),
                    claim_threshold: 4 * price,
                },
                emitter,
            )
            .unwrap();
            tokio::spawn(payees.clone().serve(h.stream_control()));
            h
        }
    };
    let payee = start(PRICE).await;
    let mut c = net.dev.config("buyer");
    c.relays.clear();
    let mut events = Recorder::new(c.emitter.as_ref().unwrap());
    let buyer = net.dev.spawn(c).await.unwrap();
    let key = PrivateKeySigner::random();
    chain.fund(key.address(), 1_000 * PRICE);
    let chans: Arc<dyn PaymentChannels> = Arc::new(chain.account(key.clone()));
    let addrs = payee.wait_listening().await.unwrap().direct_addrs;
    buyer.dial(payee.peer_id(), addrs).await.unwrap();
    let meter = buyer.stream_meter(payee.peer_id());
    pay(
        &buyer,
        payee.peer_id(),
        pays_from(chans.clone()),
        meter.clone(),
    )
    .await
    .expect("the honest terms");
    let balance = chain.balance(key.address());
    payee.shutdown().await;
    let switched = start(3 * PRICE).await;
    let addrs = switched.wait_listening().await.unwrap().direct_addrs;
    buyer.dial(switched.peer_id(), addrs).await.unwrap();
    let r = pay(&buyer, switched.peer_id(), pays_from(chans), meter).await;
    assert!(
        matches!(&r, Err(e) if e.reason() == "terms_changed"),
        "{r:?}"
    );
    assert_eq!(
        chain.balance(key.address()),
        balance,
        "no channel opened or topped up"
    );
    let refused = events.matching(
        |e| matches!(e, Event::PaymentRefused { reason, .. } if *reason == "terms_changed"),
    );
    assert_eq!(refused.len(), 1, "said once: {refused:?}");
}
