//! The behaviour every [`PaymentChannels`] implementation must show, run
//! against the in-memory chain and against the contract on anvil. Each
//! function panics with a message on a violation.

use super::{PayError, PaymentChannels, Wei};
use crate::payments::ChannelId;
use crate::BoxFuture;

/// Moves the chain's clock forward by this many seconds.
pub type Advance<'a> = &'a (dyn Fn(u64) -> BoxFuture<'static, ()> + Sync);

/// Opening, paying by voucher, claiming: only the payee claims, only what
/// the latest voucher owes beyond what was claimed, never beyond the
/// deposit; a replayed, lower, forged or foreign voucher claims nothing.
pub async fn vouchers_pay_the_payee_and_nothing_else(
    payer: &dyn PaymentChannels,
    payee: &dyn PaymentChannels,
    stranger: &dyn PaymentChannels,
) {
    let payee_addr = payee.account().expect("payee key");
    let payer_addr = payer.account().expect("payer key");
    let (id, _) = payer.open(payee_addr, 1_000).await.expect("open");
    let c = payer
        .channel(id)
        .await
        .unwrap()
        .expect("the channel exists");
    assert_eq!(
        (c.payer, c.payee, c.deposit, c.claimed),
        (payer_addr, payee_addr, 1_000, 0)
    );
    assert_eq!(c.closes_at, None);
    assert_eq!(
        payer.open(payee_addr, 0).await.unwrap_err(),
        PayError::ZeroDeposit
    );
    assert_eq!(
        payer.open(payer_addr, 5).await.unwrap_err(),
        PayError::BadPayee
    );
    claims_take_the_highest_voucher_once(payer, payee, stranger, id).await;
    let other = forged_vouchers_claim_nothing(payer, payee, stranger, id).await;
    deposits_cap_claims_and_only_the_payer_tops_up(payer, payee, stranger, id, other).await;
}

/// Only the payee claims, and each voucher above what was claimed claims
/// its difference once.
async fn claims_take_the_highest_voucher_once(
    payer: &dyn PaymentChannels,
    payee: &dyn PaymentChannels,
    stranger: &dyn PaymentChannels,
    id: ChannelId,
) {
    let payer_addr = payer.account().expect("payer key");
    let v300 = payer.sign(id, 300).expect("sign");
    payee
        .verify(&v300, payer_addr)
        .expect("off chain, the voucher checks out");
    assert_eq!(
        stranger.claim(v300.clone()).await.unwrap_err(),
        PayError::NotPayee
    );
    let (got, _) = payee.claim(v300.clone()).await.expect("claim");
    assert_eq!(got, 300);
    assert!(
        matches!(
            payee.claim(v300.clone()).await,
            Err(PayError::NothingToClaim { .. })
        ),
        "a replayed voucher claims nothing"
    );
    let v200 = payer.sign(id, 200).unwrap();
    assert!(
        matches!(
            payee.claim(v200).await,
            Err(PayError::NothingToClaim { .. })
        ),
        "a lower voucher claims nothing"
    );
}

/// A voucher signed by someone else, bumped, malleated, or for another
/// channel claims nothing.
async fn forged_vouchers_claim_nothing(
    payer: &dyn PaymentChannels,
    payee: &dyn PaymentChannels,
    stranger: &dyn PaymentChannels,
    id: ChannelId,
) -> ChannelId {
    let (payee_addr, payer_addr) = (
        payee.account().expect("payee key"),
        payer.account().expect("payer key"),
    );
    // Forged: signed by someone else, or the payer's signature on another
    // amount.
    let forged = stranger.sign(id, 900).unwrap();
    assert!(payee.verify(&forged, payer_addr).is_err());
    assert_eq!(
        payee.claim(forged).await.unwrap_err(),
        PayError::BadSignature
    );
    let mut bumped = payer.sign(id, 400).unwrap();
    bumped.cumulative = 900;
    assert_eq!(
        payee.claim(bumped).await.unwrap_err(),
        PayError::BadSignature
    );
    // Malleable: the (r, n − s, flipped v) twin of a good signature.
    let good = payer.sign(id, 450).unwrap();
    let mut twin = good.clone();
    twin.signature = malleable_twin(&good.signature);
    assert!(payee.verify(&twin, payer_addr).is_err());
    assert_eq!(payee.claim(twin).await.unwrap_err(), PayError::BadSignature);
    // Foreign: a voucher for another channel of the same payer.
    let (other, _) = payer.open(payee_addr, 50).await.unwrap();
    let mut foreign = payer.sign(other, 50).unwrap();
    foreign.channel = id;
    assert_eq!(
        payee.claim(foreign).await.unwrap_err(),
        PayError::BadSignature
    );
    other
}

/// A voucher over the deposit is capped at it; only the payer tops up, and
/// the payee then claims the rest.
async fn deposits_cap_claims_and_only_the_payer_tops_up(
    payer: &dyn PaymentChannels,
    payee: &dyn PaymentChannels,
    stranger: &dyn PaymentChannels,
    id: ChannelId,
    other: ChannelId,
) {
    let payee_addr = payee.account().expect("payee key");
    // Over the deposit: capped at it.
    let v5000 = payer.sign(id, 5_000).unwrap();
    let (got, _) = payee.claim(v5000).await.unwrap();
    assert_eq!(got, 700, "capped at the deposit");
    let c = payee.channel(id).await.unwrap().unwrap();
    assert_eq!((c.deposit, c.claimed), (1_000, 1_000));
    // Top-up: only the payer; the payee may then claim the rest.
    assert_eq!(payee.top_up(id, 10).await.unwrap_err(), PayError::NotPayer);
    payer.top_up(id, 500).await.expect("top up");
    let v1200 = payer.sign(id, 1_200).unwrap();
    assert_eq!(payee.claim(v1200).await.unwrap().0, 200);
    let listed = payee.channels_of(payee_addr).await.unwrap();
    assert!(listed.iter().any(|c| c.id == id) && listed.iter().any(|c| c.id == other));
    assert!(stranger
        .channels_of(stranger.account().unwrap())
        .await
        .unwrap()
        .is_empty());
}

/// Closing: the payer's close waits the delay, during which the payee can
/// still claim; after it the rest goes back to the payer. The payee can
/// claim and close at once.
pub async fn a_close_waits_for_the_payee_then_refunds(
    payer: &dyn PaymentChannels,
    payee: &dyn PaymentChannels,
    advance: Advance<'_>,
) {
    let payee_addr = payee.account().unwrap();
    let (id, _) = payer.open(payee_addr, 1_000).await.unwrap();
    let owed: Wei = 250;
    let voucher = payer.sign(id, owed).unwrap();
    assert_eq!(payee.start_close(id).await.unwrap_err(), PayError::NotPayer);
    assert_eq!(
        payer.finish_close(id).await.unwrap_err(),
        PayError::NotClosing
    );
    payer.start_close(id).await.expect("start closing");
    let c = payer.channel(id).await.unwrap().unwrap();
    let closes_at = c.closes_at.expect("closing");
    assert_eq!(payer.start_close(id).await.unwrap_err(), PayError::Closing);
    assert_eq!(payer.top_up(id, 1).await.unwrap_err(), PayError::Closing);
    assert!(matches!(
        payer.finish_close(id).await,
        Err(PayError::TooEarly { closes_at: at }) if at == closes_at
    ));
    // The payee claims inside the delay.
    assert_eq!(payee.claim(voucher).await.unwrap().0, owed);
    advance(payer.close_delay().as_secs() + 1).await;
    payer
        .finish_close(id)
        .await
        .expect("finish after the delay");
    assert_eq!(payer.channel(id).await.unwrap(), None, "finished");
    assert_eq!(
        payer.finish_close(id).await.unwrap_err(),
        PayError::NoSuchChannel
    );

    // Claim-and-close by the payee, no delay.
    let (id, _) = payer.open(payee_addr, 400).await.unwrap();
    let v = payer.sign(id, 100).unwrap();
    payee
        .claim_and_close(id, Some(v))
        .await
        .expect("claim and close");
    assert_eq!(payee.channel(id).await.unwrap(), None);
}

/// The high-s twin of a low-s signature: it recovers the same signer, and
/// must be refused anyway.
pub fn malleable_twin(sig: &[u8; 65]) -> [u8; 65] {
    use alloy::primitives::{Signature, U256};
    let s = Signature::from_raw_array(sig).expect("a signature");
    let n = U256::from_be_bytes(alloy::primitives::hex!(
        "fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141"
    ));
    Signature::new(s.r(), n - s.s(), !s.v()).as_bytes()
}
