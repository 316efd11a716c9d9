//! The payment machines on virtual time.

use super::*;
use std::time::{Duration, Instant};

const PRICE: Wei = 1_000_000; // per MiB
const MB: u64 = 1 << 20;

fn terms() -> Terms {
    Terms {
        price_per_mib: PRICE,
        price_per_hour: 0,
        free_bytes: 0,
        min_deposit: 0,
    }
}

fn policy() -> CreditPolicy {
    CreditPolicy {
        initial: 4 * PRICE, // 4 MiB of credit
        max: 64 * PRICE,
        grace: Duration::from_secs(10),
    }
}

#[test]
fn costs_round_down_free_bytes_come_first_and_time_is_billed() {
    let t = Terms {
        free_bytes: MB,
        price_per_hour: 3_600,
        ..terms()
    };
    assert_eq!(t.cost(MB, Duration::ZERO), 0, "the free allowance");
    assert_eq!(t.cost(3 * MB, Duration::ZERO), 2 * PRICE);
    assert_eq!(
        t.cost(MB + 1, Duration::ZERO),
        0,
        "a byte is less than a wei here"
    );
    assert_eq!(t.cost(0, Duration::from_secs(90)), 90);
    assert!(Terms::FREE.is_free() && Terms::FREE.cost(u64::MAX, Duration::MAX) == 0);
}

#[test]
fn invoice_at_half_pause_at_the_window_resume_on_payment_and_grow() {
    let t0 = Instant::now();
    let mut p = Payee::new(terms(), policy(), 100 * PRICE);
    assert_eq!(p.window(), 4 * PRICE);
    assert_eq!(p.room(), 4 * MB);
    assert_eq!(p.served(MB, t0), vec![]);
    assert_eq!(
        p.served(MB, t0),
        vec![PayeeAction::Invoice { owed: 2 * PRICE }],
        "half the window"
    );
    assert_eq!(p.served(MB, t0), vec![], "one invoice per payment");
    let acts = p.served(MB, t0);
    assert_eq!(
        acts,
        vec![PayeeAction::Pause, PayeeAction::Invoice { owed: 4 * PRICE }]
    );
    assert!(!p.serving() && p.room() == 0);
    // Paid in the grace period: resume; a late voucher does not grow the window.
    let acts = p.voucher(4 * PRICE, t0 + Duration::from_secs(3)).unwrap();
    assert_eq!(acts, vec![PayeeAction::Resume]);
    assert_eq!(p.window(), 4 * PRICE);
    // Paid on time: the window doubles.
    p.served(2 * MB, t0);
    p.voucher(6 * PRICE, t0).unwrap();
    assert_eq!(p.window(), 8 * PRICE);
    assert_eq!(p.room(), 8 * MB);
}

#[test]
fn unpaid_past_the_grace_is_cut_until_everything_owed_is_paid() {
    let t0 = Instant::now();
    let mut p = Payee::new(terms(), policy(), 100 * PRICE);
    p.served(4 * MB, t0);
    assert!(!p.serving());
    assert_eq!(p.next_deadline(), Some(t0 + Duration::from_secs(10)));
    assert_eq!(p.tick(t0 + Duration::from_secs(9)), None);
    assert_eq!(p.tick(t0 + Duration::from_secs(10)), Some(PayeeAction::Cut));
    assert_eq!(p.tick(t0 + Duration::from_secs(11)), None, "cut once");
    assert!(p.is_cut() && p.next_deadline().is_none());
    assert_eq!(
        p.voucher(3 * PRICE, t0 + Duration::from_secs(12)),
        Err(VoucherRefusal::Cut),
        "less than everything owed"
    );
    assert!(!p.serving());
    assert_eq!(
        p.voucher(4 * PRICE, t0 + Duration::from_secs(13)),
        Ok(vec![PayeeAction::Resume]),
        "paid up: served again"
    );
    assert!(p.serving() && !p.is_cut());
    assert_eq!(p.window(), 4 * PRICE, "starting over at the first window");
}

#[test]
fn replayed_lower_and_over_deposit_vouchers_are_refused() {
    let t0 = Instant::now();
    let mut p = Payee::new(terms(), policy(), 10 * PRICE);
    p.served(3 * MB, t0);
    p.voucher(3 * PRICE, t0).unwrap();
    assert_eq!(
        p.voucher(3 * PRICE, t0),
        Err(VoucherRefusal::NotIncreasing { paid: 3 * PRICE })
    );
    assert_eq!(
        p.voucher(2 * PRICE, t0),
        Err(VoucherRefusal::NotIncreasing { paid: 3 * PRICE })
    );
    assert_eq!(
        p.voucher(11 * PRICE, t0),
        Err(VoucherRefusal::OverDeposit {
            deposit: 10 * PRICE
        })
    );
    assert_eq!(p.paid(), 3 * PRICE, "a refusal changes nothing");
}

#[test]
fn credit_never_exceeds_what_the_deposit_can_still_pay_and_a_top_up_restores_it() {
    let t0 = Instant::now();
    let mut p = Payee::new(terms(), policy(), 6 * PRICE);
    p.served(4 * MB, t0);
    p.voucher(4 * PRICE, t0 + Duration::from_secs(1)).unwrap();
    assert_eq!(p.window(), 2 * PRICE, "only 2 left to claim");
    p.served(2 * MB, t0);
    assert!(!p.serving(), "the deposit is used up");
    p.voucher(6 * PRICE, t0 + Duration::from_secs(2)).unwrap();
    assert_eq!(p.window(), 0);
    assert!(!p.serving(), "nothing left: paused until a top-up");
    let acts = p.deposit_changed(20 * PRICE, t0 + Duration::from_secs(3));
    assert_eq!(acts, vec![PayeeAction::Resume]);
    assert_eq!(p.window(), 4 * PRICE);
}

#[test]
fn the_payer_pays_what_it_measured_and_refuses_an_inflated_invoice() {
    let leeway = Leeway {
        bytes: 64 << 10,
        per_mille: 20,
        time: Duration::ZERO,
    };
    let mut payer = Payer::new(terms(), leeway, 100 * PRICE);
    payer.metered(10 * MB);
    // The payee counted framing too: 1 % more. Within the leeway.
    let owed = terms().cost(10 * MB + MB / 10, Duration::ZERO);
    assert_eq!(payer.invoice(owed), Ok(Some(owed)));
    assert_eq!(
        payer.invoice(owed),
        Ok(Some(owed)),
        "signed, not acknowledged: sent again"
    );
    payer.acked(owed);
    assert_eq!(payer.invoice(owed), Ok(None), "already signed and held");
    // Asked for twice what was carried.
    let inflated = 20 * PRICE;
    assert!(matches!(
        payer.invoice(inflated),
        Err(PayerRefusal::Overbilled { owed: o, .. }) if o == inflated
    ));
    assert_eq!(payer.signed(), owed, "a refusal signs nothing");
    // More than the channel holds.
    let mut small = Payer::new(terms(), leeway, PRICE);
    small.metered(3 * MB);
    assert!(matches!(
        small.invoice(2 * PRICE),
        Err(PayerRefusal::OverDeposit { .. })
    ));
}

#[test]
fn a_paying_payer_is_never_paused_and_the_two_meters_agree() {
    let t0 = Instant::now();
    let mut payee = Payee::new(terms(), policy(), 1_000 * PRICE);
    let mut payer = Payer::new(terms(), Leeway::default(), 1_000 * PRICE);
    let chunk = 64 << 10;
    for i in 0..(100 * MB / chunk) {
        let now = t0 + Duration::from_millis(i);
        assert!(payee.serving(), "chunk {i}: never paused");
        payer.metered(chunk);
        for act in payee.served(chunk, now) {
            if let PayeeAction::Invoice { owed } = act {
                if let Some(v) = payer.invoice(owed).unwrap() {
                    payee.voucher(v, now).unwrap();
                }
            }
        }
    }
    assert_eq!(payee.owed(), 100 * PRICE);
    assert_eq!(payer.measured(), 100 * PRICE);
    assert!(payee.unpaid() < payee.window(), "paid to within the window");
    assert_eq!(payee.window(), 64 * PRICE, "grown to the cap");
}

#[test]
fn free_service_is_never_billed() {
    let t0 = Instant::now();
    let mut p = Payee::new(Terms::FREE, policy(), 0);
    assert_eq!(p.served(1 << 40, t0), vec![]);
    assert!(p.serving() && p.room() == u64::MAX);
}

#[test]
fn a_payee_cannot_bill_a_phantom_debt_on_every_attach() {
    let mut payer = Payer::new(terms(), Leeway::default(), 1_000 * PRICE);
    // A restart: the first attach may bring a debt from before.
    payer.attached(10 * PRICE, 4 * PRICE);
    assert_eq!(payer.measured(), 14 * PRICE);
    payer.invoice(14 * PRICE).unwrap();
    payer.acked(14 * PRICE);
    // Attached again (the payee closed the stream): it asks for 4 more
    // than it holds, though our meter saw nothing since.
    payer.attached(14 * PRICE, 4 * PRICE);
    assert_eq!(payer.measured(), 14 * PRICE, "no phantom debt");
    assert!(matches!(
        payer.invoice(18 * PRICE),
        Err(PayerRefusal::Overbilled { .. })
    ));
    // What our meter did see and we had not signed for still counts.
    payer.metered(2 * MB);
    payer.attached(14 * PRICE, 4 * PRICE);
    assert_eq!(payer.measured(), 16 * PRICE);
}

#[test]
fn caps_refuse_prices_deposits_and_changed_terms_before_anything_is_signed() {
    let caps = Caps {
        max_price_per_mib: Some(PRICE),
        max_deposit: Some(100 * PRICE),
        max_spend: None,
    };
    let t = terms();
    assert_eq!(caps.check(&t, [1; 20], None), Ok(()));
    let dear = Terms {
        price_per_mib: 2 * PRICE,
        ..t
    };
    assert!(matches!(
        caps.check(&dear, [1; 20], None),
        Err(TermsRefusal::PriceTooHigh { .. })
    ));
    let deep = Terms {
        min_deposit: 101 * PRICE,
        ..t
    };
    assert!(matches!(
        caps.check(&deep, [1; 20], None),
        Err(TermsRefusal::DepositTooHigh { .. })
    ));
    // Bait and switch: another account, or a higher price, mid-run.
    let cheap = Terms {
        price_per_mib: PRICE / 2,
        ..t
    };
    assert_eq!(
        caps.check(&t, [2; 20], Some((t, [1; 20]))),
        Err(TermsRefusal::TermsChanged {
            what: "another payee account"
        })
    );
    assert_eq!(
        caps.check(&t, [1; 20], Some((cheap, [1; 20]))),
        Err(TermsRefusal::TermsChanged {
            what: "a higher price"
        })
    );
    // Deposits: never beyond the cap, at least the minimum or nothing.
    assert_eq!(caps.top_up(0, 10 * PRICE, 50 * PRICE), Some(50 * PRICE));
    assert_eq!(caps.top_up(90 * PRICE, 0, 50 * PRICE), Some(10 * PRICE));
    assert_eq!(caps.top_up(100 * PRICE, 0, 50 * PRICE), None);
    assert_eq!(caps.top_up(0, 150 * PRICE, 50 * PRICE), None);
}

#[test]
fn the_spend_cap_refuses_what_would_pass_it() {
    let mut payer =
        Payer::new(terms(), Leeway::default(), 1_000 * PRICE).with_max_spend(Some(5 * PRICE));
    payer.attached(10 * PRICE, 0);
    payer.metered(8 * MB);
    assert_eq!(payer.invoice(14 * PRICE), Ok(Some(14 * PRICE)));
    assert!(matches!(
        payer.invoice(16 * PRICE),
        Err(PayerRefusal::SpendCap { .. })
    ));
    assert_eq!(payer.spent(), 4 * PRICE);
}

#[test]
fn a_voucher_paying_the_last_invoice_is_taken_however_small_its_step() {
    let t0 = Instant::now();
    let mut p = Payee::new(terms(), policy(), 100 * PRICE);
    p.served(2 * MB, t0);
    p.voucher(2 * PRICE, t0).unwrap();
    // A little more served, then asked for (a service ended).
    p.served(MB / 16, t0);
    let asked = p.ask();
    // More is served before the voucher for the invoice arrives.
    p.served(MB, t0);
    assert_eq!(p.voucher(asked, t0).map(|_| p.paid()), Ok(asked));
    // Below what was asked and a tiny step: still refused.
    p.served(MB / 16, t0);
    assert!(matches!(
        p.voucher(asked + 1, t0),
        Err(VoucherRefusal::TooSmall { .. })
    ));
}
