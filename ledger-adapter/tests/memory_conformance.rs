//! The conformance suite against the in-memory ledger.

use ledgermesh_ledger::{conformance, MemoryLedger};

#[tokio::test]
async fn memory_posts_are_followed_in_order() {
    conformance::posts_are_followed_in_order(&MemoryLedger::new(), [1; 32], [2; 32]).await;
}

#[tokio::test]
async fn memory_resubscription_loses_and_repeats_nothing() {
    conformance::resubscription_loses_and_repeats_nothing(&MemoryLedger::new(), [3; 32]).await;
}

#[tokio::test]
async fn memory_oversized_payload_is_refused() {
    conformance::oversized_payload_is_refused(&MemoryLedger::new(), [4; 32]).await;
}
