//! The behaviour every [`Ledger`] implementation must show. Each function
//! panics with a message on a violation; implementations call them from their
//! own tests (the memory ledger below, the EVM ledger against anvil).

use crate::{Cursor, Ledger, LedgerError, LedgerMessage};
use futures::StreamExt;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

async fn next(
    stream: &mut futures::stream::BoxStream<'static, Result<LedgerMessage, LedgerError>>,
) -> LedgerMessage {
    loop {
        match tokio::time::timeout(WAIT, stream.next()).await {
            Ok(Some(Ok(m))) => return m,
            Ok(Some(Err(e))) => {
                tracing::warn!(error = %e, "transient follow error in conformance test")
            }
            Ok(None) => panic!("follow stream ended"),
            Err(_) => panic!("no message within {WAIT:?}"),
        }
    }
}

/// Messages come back in order, with their sender, only on their topic.
pub async fn posts_are_followed_in_order(ledger: &dyn Ledger, topic: [u8; 32], other: [u8; 32]) {
    ledger
        .post(other, b"elsewhere".to_vec())
        .await
        .expect("post to other topic");
    let mut follow = ledger.follow(topic, Cursor::START);
    for i in 0..5u8 {
        ledger.post(topic, vec![i; 3]).await.expect("post");
    }
    let mut last = Cursor::START;
    for i in 0..5u8 {
        let m = next(&mut follow).await;
        assert_eq!(m.topic, topic);
        assert_eq!(
            m.payload,
            vec![i; 3],
            "message {i} out of order or from another topic"
        );
        assert!(m.cursor > last, "cursors must increase");
        last = m.cursor;
    }
}

/// Re-following from the cursor of the last handled message yields exactly
/// the rest: nothing lost, nothing repeated.
pub async fn resubscription_loses_and_repeats_nothing(ledger: &dyn Ledger, topic: [u8; 32]) {
    for i in 0..3u8 {
        ledger.post(topic, vec![i]).await.expect("post");
    }
    let mut follow = ledger.follow(topic, Cursor::START);
    let first = next(&mut follow).await;
    assert_eq!(first.payload, vec![0]);
    drop(follow);
    for i in 3..5u8 {
        ledger.post(topic, vec![i]).await.expect("post");
    }
    let mut follow = ledger.follow(topic, first.cursor);
    for i in 1..5u8 {
        assert_eq!(
            next(&mut follow).await.payload,
            vec![i],
            "after re-subscription"
        );
    }
    let extra = tokio::time::timeout(Duration::from_millis(200), follow.next()).await;
    assert!(extra.is_err(), "no message may be repeated: got {extra:?}");
}

/// A payload over the cap is refused with `PayloadTooLarge`; the cap itself passes.
pub async fn oversized_payload_is_refused(ledger: &dyn Ledger, topic: [u8; 32]) {
    let max = ledger.max_payload();
    let err = ledger
        .post(topic, vec![0; max + 1])
        .await
        .expect_err("over the cap");
    assert!(
        matches!(err, LedgerError::PayloadTooLarge { .. }),
        "got {err:?}"
    );
    ledger
        .post(topic, vec![0; max])
        .await
        .expect("exactly the cap");
}
