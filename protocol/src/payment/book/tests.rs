//! The payee's book on virtual time, and a payer and a payee machine
//! trading invoices for vouchers through it against a pretend chain.

use super::*;
use crate::payment::{Leeway, Payer, MIB};
use crate::Machine;

const PRICE: Wei = 1_000_000; // per MiB
const MB: u64 = 1 << 20;
const CH: ChannelId = [1; 32];
const CH2: ChannelId = [2; 32];
const PAYER: [u8; 20] = [9; 20];

fn cfg() -> BookConfig {
    let terms = Terms {
        price_per_mib: PRICE,
        price_per_hour: 0,
        free_bytes: 0,
        min_deposit: 10 * PRICE,
    };
    let policy = CreditPolicy {
        initial: 4 * PRICE,
        max: 16 * PRICE,
        grace: Duration::from_secs(10),
    };
    BookConfig::new(terms, policy, 8 * PRICE)
}

fn view(deposit: Wei, claimed: Wei) -> ChannelView {
    ChannelView {
        payer: PAYER,
        deposit,
        claimed,
        closes_at: None,
    }
}

fn v(cumulative: Wei) -> Voucher {
    Voucher {
        cumulative,
        signature: [cumulative as u8; 65],
    }
}

fn drain(b: &mut Book) -> Vec<BookAction> {
    std::iter::from_fn(|| b.poll_action()).collect()
}

/// Serves `peer` in 64 KiB pieces until it is paused or `total` is served;
/// returns what was served.
fn serve_until_paused(b: &mut Book, peer: &PeerId, total: u64, now: Instant) -> u64 {
    let mut served = 0;
    while served < total {
        let Room::Bytes(n) = b.room(peer) else { break };
        let n = n.min(64 << 10).min(total - served);
        b.served(peer, n, now);
        served += n;
    }
    served
}

#[test]
fn peers_bound_to_one_channel_share_one_window() {
    let t0 = Instant::now();
    let mut b = Book::new(cfg());
    let peers: Vec<PeerId> = (0..8).map(|_| PeerId::random()).collect();
    let mut served = 0;
    for p in &peers {
        b.attach(*p, CH, view(100 * PRICE, 0), None, 0, t0).unwrap();
        served += serve_until_paused(&mut b, p, 100 * MB, t0);
    }
    assert_eq!(served, 4 * MB, "one window for all eight identities");
    // Attaching again renews nothing.
    b.attach(peers[0], CH, view(100 * PRICE, 0), None, 0, t0)
        .unwrap();
    assert_eq!(b.room(&peers[0]), Room::Paused);
    // A ninth takes the place of the one idle longest: nothing more served.
    let ninth = PeerId::random();
    let later = t0 + Duration::from_secs(1);
    b.attach(ninth, CH, view(100 * PRICE, 0), None, 0, later)
        .unwrap();
    assert_eq!(b.room(&ninth), Room::Paused);
    let left = peers.iter().filter(|p| b.channel_of(p).is_none()).count();
    assert_eq!(left, 1, "the idlest left");
    assert_eq!(b.sizes(), (1, 8));
    // With all eight holding pay streams, a newcomer is refused.
    let mut b = Book::new(cfg());
    for p in &peers {
        assert!(b.stream_opened(*p, t0));
        b.attach(*p, CH, view(100 * PRICE, 0), None, 0, t0).unwrap();
    }
    assert_eq!(
        b.attach(ninth, CH, view(100 * PRICE, 0), None, 0, t0),
        Err(AttachRefusal::TooManyPeers { max: 8 })
    );
}

#[test]
fn a_peer_that_owes_pays_where_it_owes_before_another_channel_serves_it() {
    let t0 = Instant::now();
    let mut b = Book::new(cfg());
    let p = PeerId::random();
    let mut served = 0;
    for round in 0..6 {
        let ch = if round % 2 == 0 { CH } else { CH2 };
        match b.attach(p, ch, view(100 * PRICE, 0), None, 0, t0) {
            Ok(_) => served += serve_until_paused(&mut b, &p, 100 * MB, t0),
            Err(e) => assert_eq!(e, AttachRefusal::OwesElsewhere { owed: 4 * PRICE }),
        }
    }
    assert_eq!(served, 4 * MB, "one window across both channels");
    assert_eq!(b.sizes().0, 1, "no account left for the refused channel");
    // A second identity bound to CH2 does not launder the debt either.
    let q = PeerId::random();
    b.attach(q, CH2, view(100 * PRICE, 0), None, 0, t0).unwrap();
    assert_eq!(
        b.attach(p, CH2, view(100 * PRICE, 0), None, 0, t0),
        Err(AttachRefusal::OwesElsewhere { owed: 4 * PRICE })
    );
    // Paid where it owes: served again, and free to move.
    drain(&mut b);
    b.voucher(&p, CH, v(4 * PRICE), t0).unwrap();
    assert!(matches!(b.room(&p), Room::Bytes(_)));
    b.attach(p, CH2, view(100 * PRICE, 0), None, 0, t0).unwrap();
}

#[test]
fn debts_outlive_idle_eviction_and_strangers_leave_no_entry() {
    let t0 = Instant::now();
    let mut b = Book::new(cfg());
    let p = PeerId::random();
    b.attach(p, CH, view(100 * PRICE, 0), None, 0, t0).unwrap();
    serve_until_paused(&mut b, &p, 100 * MB, t0);
    // Two idle hours later the debt is still there, and so is the binding.
    b.handle_timeout(t0 + Duration::from_secs(7_200));
    assert_eq!(b.sizes(), (1, 1));
    assert_eq!(
        b.attach(p, CH2, view(100 * PRICE, 0), None, 0, t0),
        Err(AttachRefusal::OwesElsewhere { owed: 4 * PRICE })
    );
    // A stranger that opens a pay stream and leaves is forgotten at once.
    let s = PeerId::random();
    assert!(b.stream_opened(s, t0));
    b.stream_closed(&s);
    assert_eq!(b.sizes(), (1, 1));
    // Attaches are limited per peer and minute.
    let r = PeerId::random();
    let allowed = (0..20).filter(|_| b.may_attach(r, t0)).count();
    assert_eq!(allowed, MAX_ATTACHES_PER_MINUTE as usize);
    assert!(b.may_attach(r, t0 + Duration::from_secs(60)));
}

#[test]
fn a_restarted_payee_counts_from_the_larger_of_claimed_and_held() {
    let t0 = Instant::now();
    let p = PeerId::random();
    // Claimed 8 on chain, holding a voucher for 12: paid starts at 12.
    let mut b = Book::new(cfg());
    let ack = b
        .attach(
            p,
            CH,
            view(100 * PRICE, 8 * PRICE),
            Some(v(12 * PRICE)),
            0,
            t0,
        )
        .unwrap();
    assert_eq!(ack.paid, 12 * PRICE);
    assert_eq!(ack.owed, 12 * PRICE);
    assert_eq!(ack.voucher, Some(v(12 * PRICE).signature));
    assert_eq!(b.machine(&CH).unwrap().paid(), 12 * PRICE);
    // A voucher at or below what is held is worth nothing: refused.
    assert!(matches!(
        b.voucher(&p, CH, v(10 * PRICE), t0),
        Err(VoucherRefusal::NotIncreasing { .. })
    ));
    // Only claimed, nothing held: from the claimed amount, no signature.
    let mut b = Book::new(cfg());
    let ack = b
        .attach(p, CH, view(100 * PRICE, 8 * PRICE), None, 0, t0)
        .unwrap();
    assert_eq!((ack.paid, ack.voucher), (8 * PRICE, None));
    // Credit is what the deposit holds beyond it.
    let mut b = Book::new(cfg());
    b.attach(p, CH, view(10 * PRICE, 8 * PRICE), None, 0, t0)
        .unwrap();
    assert_eq!(serve_until_paused(&mut b, &p, 100 * MB, t0), 2 * MB);
}

#[test]
fn vouchers_beyond_owed_plus_the_window_or_in_tiny_steps_are_refused() {
    let t0 = Instant::now();
    let mut b = Book::new(cfg());
    let p = PeerId::random();
    b.attach(p, CH, view(100 * PRICE, 0), None, 0, t0).unwrap();
    b.served(&p, 2 * MB, t0);
    assert!(matches!(
        b.voucher(&p, CH, v(7 * PRICE), t0),
        Err(VoucherRefusal::AboveOwed { .. })
    ));
    assert!(matches!(
        b.voucher(&p, CH, v(1), t0),
        Err(VoucherRefusal::TooSmall { .. })
    ));
    assert_eq!(
        b.voucher(&p, CH, v(2 * PRICE), t0).map(|a| a.0),
        Ok(2 * PRICE)
    );
    // Another channel's voucher is not this peer's.
    assert_eq!(
        b.voucher(&p, CH2, v(3 * PRICE), t0),
        Err(VoucherRefusal::Cut)
    );
}

#[test]
fn a_closing_channel_is_claimed_at_once_and_frozen_before_its_close() {
    let t0 = Instant::now();
    let mut b = Book::new(cfg());
    let p = PeerId::random();
    b.attach(p, CH, view(100 * PRICE, 0), None, 1_000, t0)
        .unwrap();
    b.served(&p, 2 * MB, t0);
    b.voucher(&p, CH, v(2 * PRICE), t0).unwrap();
    drain(&mut b);
    // The payer starts closing: the close takes effect in 1.5 h.
    let closing = ChannelView {
        closes_at: Some(1_000 + 5_400),
        ..view(100 * PRICE, 0)
    };
    b.channel_read(CH, Ok(Some(closing)), 1_000, t0);
    let acts = drain(&mut b);
    assert!(
        acts.contains(&BookAction::Claim {
            channel: CH,
            voucher: v(2 * PRICE)
        }),
        "claimed at once: {acts:?}"
    );
    assert!(
        matches!(b.room(&p), Room::Bytes(_)),
        "an hour of credit left"
    );
    // An hour before the close: no more credit.
    let later = t0 + Duration::from_secs(1_800);
    assert_eq!(b.poll_timeout().map(|t| t <= later), Some(true));
    b.handle_timeout(later);
    assert_eq!(b.room(&p), Room::Paused);
    // Attaching a channel that closes within the margin is refused.
    let soon = ChannelView {
        closes_at: Some(1_000 + 600),
        ..view(100 * PRICE, 0)
    };
    let q = PeerId::random();
    assert_eq!(
        b.attach(q, CH2, soon, None, 1_000, t0),
        Err(AttachRefusal::Closing)
    );
}

#[test]
fn a_channel_gone_cuts_its_payers_and_reports_what_is_lost() {
    let t0 = Instant::now();
    let mut b = Book::new(cfg());
    let p = PeerId::random();
    b.attach(p, CH, view(100 * PRICE, 0), None, 0, t0).unwrap();
    b.served(&p, 2 * MB, t0);
    b.voucher(&p, CH, v(2 * PRICE), t0).unwrap();
    drain(&mut b);
    b.channel_read(CH, Ok(None), 0, t0);
    let acts = drain(&mut b);
    assert!(acts.contains(&BookAction::Event(BookEvent::VoucherLost {
        channel: CH,
        amount: 2 * PRICE
    })));
    assert!(acts.contains(&BookAction::Wake { channel: CH }));
    assert_eq!(b.room(&p), Room::Cut);
}

#[test]
fn claims_report_their_failures_and_never_run_twice_at_once() {
    let t0 = Instant::now();
    let mut b = Book::new(cfg());
    let p = PeerId::random();
    b.attach(p, CH, view(100 * PRICE, 0), None, 0, t0).unwrap();
    for paid in [4, 8] {
        b.served(&p, 4 * MB, t0);
        b.voucher(&p, CH, v(paid * PRICE), t0).unwrap();
    }
    let claims = |acts: &[BookAction]| {
        acts.iter()
            .filter(|a| matches!(a, BookAction::Claim { .. }))
            .count()
    };
    assert_eq!(claims(&drain(&mut b)), 1, "at the threshold");
    b.served(&p, 4 * MB, t0);
    b.voucher(&p, CH, v(12 * PRICE), t0).unwrap();
    assert_eq!(claims(&drain(&mut b)), 0, "one claim at a time");
    b.claim_all();
    assert_eq!(claims(&drain(&mut b)), 1, "on shutdown, the newest too");
    b.claimed(
        CH,
        Err(ClaimFailure::NothingToClaim {
            claimed: 12 * PRICE,
        }),
    );
    let acts = drain(&mut b);
    assert_eq!(
        acts,
        vec![BookAction::Event(BookEvent::ClaimFailed {
            channel: CH,
            reason: ClaimFailure::NothingToClaim {
                claimed: 12 * PRICE
            }
        })]
    );
    assert_eq!(b.held(&CH).unwrap().1, 12 * PRICE);
}

#[test]
fn streams_per_peer_and_idle_entries_are_bounded() {
    let t0 = Instant::now();
    let mut b = Book::new(cfg());
    let p = PeerId::random();
    for _ in 0..4 {
        assert!(b.stream_opened(p, t0));
    }
    assert!(!b.stream_opened(p, t0), "a fifth pay stream");
    for _ in 0..4 {
        b.stream_closed(&p);
    }
    b.attach(p, CH, view(100 * PRICE, 0), None, 0, t0).unwrap();
    b.served(&p, 2 * MB, t0);
    b.voucher(&p, CH, v(2 * PRICE), t0).unwrap();
    // Idle for an hour with a voucher unclaimed: claimed, then forgotten.
    let later = t0 + Duration::from_secs(3_601);
    b.handle_timeout(later);
    let acts = drain(&mut b);
    assert!(acts.iter().any(|a| matches!(a, BookAction::Claim { .. })));
    b.claimed(CH, Ok(2 * PRICE));
    b.handle_timeout(later + Duration::from_secs(3_601));
    assert_eq!(b.sizes(), (0, 0));
}

#[test]
fn poll_timeout_is_never_in_the_past_after_handling_it() {
    let t0 = Instant::now();
    let mut b = Book::new(cfg());
    let p = PeerId::random();
    b.attach(p, CH, view(100 * PRICE, 0), None, 0, t0).unwrap();
    serve_until_paused(&mut b, &p, 100 * MB, t0);
    let mut now = t0;
    for _ in 0..20 {
        let Some(next) = b.poll_timeout() else { break };
        assert!(next >= now, "a deadline behind the clock");
        now = next;
        b.handle_timeout(now);
        for a in drain(&mut b) {
            if let BookAction::ReadChannel { channel } = a {
                b.channel_read(channel, Ok(Some(view(100 * PRICE, 0))), 0, now);
            }
        }
    }
    assert_eq!(b.room(&p), Room::Cut, "cut after the grace");
}

/// Carries out the book's actions between a payer and the pretend chain:
/// invoices are paid as the payer decides, claims land at once.
fn pump(book: &mut Book, payer: &mut Payer, key: &PeerId, claimed: &mut Wei, now: Instant) {
    while let Some(act) = book.poll_action() {
        match act {
            BookAction::Send {
                msg: PayMsg::Invoice { owed, .. },
                ..
            } => {
                if let Some(c) = payer.invoice(owed).unwrap() {
                    let (paid, _) = book.voucher(key, CH, v(c), now).unwrap();
                    payer.acked(paid);
                }
            }
            BookAction::Claim { voucher, .. } => {
                *claimed = voucher.cumulative;
                book.claimed(CH, Ok(voucher.cumulative));
            }
            _ => {}
        }
    }
}

/// A payer and a payee machine on virtual time against a pretend chain:
/// one account, two node keys and a restarted payer all pay for what they
/// were served, to the wei.
#[test]
fn one_account_from_two_node_keys_and_a_restart_pays_for_everything() {
    let t0 = Instant::now();
    let mut book = Book::new(cfg());
    let (mut claimed, deposit) = (0, 1_000 * PRICE);
    let mut served_total = 0u64;
    let keys = [PeerId::random(), PeerId::random()];
    for (run, key) in [keys[0], keys[1], keys[0]].into_iter().enumerate() {
        let now = t0 + Duration::from_secs(run as u64 * 60);
        // A fresh payer process: it knows nothing but the chain.
        let mut payer = Payer::new(cfg().terms, Leeway::default(), deposit);
        let ack = book
            .attach(key, CH, view(deposit, claimed), None, 0, now)
            .unwrap();
        // The signature proves the voucher is ours; here every voucher is.
        payer.attached(ack.paid.max(claimed), ack.owed - ack.paid);
        let mut served = 0;
        while served < 8 * MB {
            let n = match book.room(&key) {
                Room::Bytes(n) => n.min(64 << 10).min(8 * MB - served),
                r => panic!("run {run}: {r:?} after {served}"),
            };
            payer.metered(n);
            book.served(&key, n, now);
            served += n;
            pump(&mut book, &mut payer, &key, &mut claimed, now);
        }
        served_total += served;
        book.invoice_now(&key);
        pump(&mut book, &mut payer, &key, &mut claimed, now);
    }
    book.claim_all();
    let mut idle = Payer::new(cfg().terms, Leeway::default(), deposit);
    pump(&mut book, &mut idle, &keys[0], &mut claimed, t0);
    let owed = u128::from(served_total) * PRICE / MIB;
    assert_eq!(served_total, 24 * MB);
    assert_eq!(claimed, owed, "paid for all 24 MiB, claimed {claimed}");
}

#[test]
fn a_destination_pays_only_for_the_sources_it_consented_to() {
    let t0 = Instant::now();
    let mut b = Book::new(cfg());
    let (dst, buyer, stranger) = (PeerId::random(), PeerId::random(), PeerId::random());
    assert!(
        !b.consent(&dst, true, false, &[buyer]),
        "no channel, no consent"
    );
    b.attach(dst, CH, view(100 * PRICE, 0), None, 0, t0)
        .unwrap();
    assert!(b.consent(&dst, true, false, &[buyer]));
    assert!(b.consents_to(&dst, &buyer));
    assert!(!b.consents_to(&dst, &stranger));
    // Bounded: the newest are kept.
    let many: Vec<PeerId> = (0..MAX_CONSENT + 10).map(|_| PeerId::random()).collect();
    b.consent(&dst, false, false, &many);
    assert!(!b.consents_to(&dst, &buyer), "pushed out by newer ones");
    assert!(b.consents_to(&dst, many.last().unwrap()));
    // Replaced by `any`.
    b.consent(&dst, true, true, &[]);
    assert!(b.consents_to(&dst, &stranger));
    b.consent(&dst, true, false, &[]);
    assert!(!b.consents_to(&dst, &stranger));
}

/// The payee's book and a payer across a link with a delay, on the
/// two-party harness: bytes and invoices go one way, vouchers the other,
/// claims land on a pretend chain at once.
mod on_the_harness {
    use super::*;
    use crate::harness::{Link, Pair};
    use std::collections::VecDeque;

    /// Serves one peer a piece every tick, as far as the book has room.
    struct Seller {
        book: Book,
        peer: PeerId,
        piece: u64,
        every: Duration,
        until: Instant,
        next: Option<Instant>,
        served: u64,
        paused_ticks: u32,
        claimed: Wei,
        cut: bool,
        out: VecDeque<ToBuyer>,
    }

    enum ToBuyer {
        Data(u64),
        Invoice(Wei),
        Ack(Wei),
    }

    impl Machine for Seller {
        type Action = ToBuyer;
        fn poll_action(&mut self) -> Option<ToBuyer> {
            while let Some(a) = self.book.poll_action() {
                match a {
                    BookAction::Send {
                        msg: PayMsg::Invoice { owed, .. },
                        ..
                    } => self.out.push_back(ToBuyer::Invoice(owed)),
                    BookAction::Claim { voucher, .. } => {
                        self.claimed = voucher.cumulative;
                        self.book.claimed(CH, Ok(voucher.cumulative));
                    }
                    BookAction::Event(BookEvent::Cut { .. }) => self.cut = true,
                    _ => {}
                }
            }
            self.out.pop_front()
        }
        fn poll_timeout(&self) -> Option<Instant> {
            [self.next, self.book.poll_timeout()]
                .into_iter()
                .flatten()
                .min()
        }
        fn handle_timeout(&mut self, now: Instant) {
            if self.book.poll_timeout().is_some_and(|t| t <= now) {
                self.book.handle_timeout(now);
            }
            if self.next.is_none_or(|t| t > now) {
                return;
            }
            self.next = (now + self.every < self.until).then(|| now + self.every);
            match self.book.room(&self.peer) {
                Room::Bytes(n) => {
                    let n = n.min(self.piece);
                    self.book.served(&self.peer, n, now);
                    self.served += n;
                    self.out.push_back(ToBuyer::Data(n));
                }
                Room::Paused => self.paused_ticks += 1,
                Room::Cut => self.next = None,
            }
            if self.next.is_none() {
                self.book.invoice_now(&self.peer);
            }
        }
    }

    /// Pays every invoice it agrees with, until it has paid `stop_at`.
    struct Buyer {
        payer: Payer,
        stop_at: Wei,
        received: u64,
        signed: Wei,
        out: VecDeque<Wei>,
    }

    impl Machine for Buyer {
        type Action = Wei;
        fn poll_action(&mut self) -> Option<Wei> {
            self.out.pop_front()
        }
        fn poll_timeout(&self) -> Option<Instant> {
            None
        }
        fn handle_timeout(&mut self, _: Instant) {}
    }

    struct Wire;

    impl Link for Wire {
        type A = Seller;
        type B = Buyer;
        type AtoB = ToBuyer;
        type BtoA = Wei;
        fn a_sends(&mut self, m: ToBuyer, _: Instant) -> Option<ToBuyer> {
            Some(m)
        }
        fn b_sends(&mut self, voucher: Wei, _: Instant) -> Option<Wei> {
            Some(voucher)
        }
        fn b_takes(&mut self, b: &mut Buyer, m: ToBuyer, _: Instant) {
            match m {
                ToBuyer::Data(n) => {
                    b.payer.metered(n);
                    b.received += n;
                }
                ToBuyer::Invoice(owed) => {
                    if let Ok(Some(c)) = b.payer.invoice(owed) {
                        if c <= b.stop_at {
                            b.signed = b.signed.max(c);
                            b.out.push_back(c);
                        }
                    }
                }
                ToBuyer::Ack(paid) => b.payer.acked(paid),
            }
        }
        fn a_takes(&mut self, a: &mut Seller, c: Wei, now: Instant) {
            if let Ok((paid, _)) = a.book.voucher(&a.peer, CH, v(c), now) {
                a.out.push_back(ToBuyer::Ack(paid));
            }
        }
    }

    /// 64 KiB every 10 ms (6.25 MiB/s) for 20 s across a 60 ms one-way link.
    fn trade(stop_at: Wei) -> Pair<Wire> {
        let t0 = Instant::now();
        let deposit = 1_000 * PRICE;
        let peer = PeerId::random();
        let mut book = Book::new(cfg());
        let ack = book
            .attach(peer, CH, view(deposit, 0), None, 0, t0)
            .unwrap();
        let mut payer = Payer::new(cfg().terms, Leeway::default(), deposit);
        payer.attached(ack.paid, ack.owed - ack.paid);
        let seller = Seller {
            book,
            peer,
            piece: 64 << 10,
            every: Duration::from_millis(10),
            until: t0 + Duration::from_secs(20),
            next: Some(t0),
            served: 0,
            paused_ticks: 0,
            claimed: 0,
            cut: false,
            out: VecDeque::new(),
        };
        let buyer = Buyer {
            payer,
            stop_at,
            received: 0,
            signed: 0,
            out: VecDeque::new(),
        };
        let mut pair = Pair::new(seller, buyer, Wire, Duration::from_millis(60), t0);
        pair.run_for(Duration::from_secs(120));
        pair.a.book.claim_all();
        while pair.a.poll_action().is_some() {}
        pair
    }

    #[test]
    fn an_honest_payer_is_never_paused_and_every_byte_is_claimed() {
        let p = trade(Wei::MAX);
        let (s, b) = (&p.a, &p.b);
        assert_eq!(s.served, 2_000 * (64 << 10), "a piece every tick for 20 s");
        assert_eq!(s.paused_ticks, 0, "the credit window covers the round trip");
        assert_eq!(b.received, s.served);
        let owed = u128::from(s.served) * PRICE / MIB;
        assert_eq!(s.claimed, owed, "claimed to the wei");
        assert!(!s.cut);
    }

    #[test]
    fn a_payer_that_stops_paying_gets_one_window_then_is_cut() {
        let stop_at = 16 * PRICE;
        let p = trade(stop_at);
        let (s, b) = (&p.a, &p.b);
        assert!(b.signed <= stop_at && b.signed > stop_at - 4 * PRICE);
        let unpaid = u128::from(s.served) * PRICE / MIB - b.signed;
        assert!(
            unpaid <= cfg().policy.max,
            "served {} MiB unpaid, more than the largest window",
            unpaid / PRICE
        );
        assert!(
            s.paused_ticks > 0 && s.cut,
            "paused, then cut after the grace"
        );
        assert_eq!(s.claimed, b.signed, "what it paid is claimed");
    }
}
