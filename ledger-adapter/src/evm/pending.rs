//! Reading the pending block: `post` calls to the board, decoded from the
//! transactions the endpoint would put in its next block.
//!
//! Logs exist only once a transaction is executed in a block, and most
//! endpoints (anvil among them) return no logs for the `pending` tag; the
//! pending block's transactions are what they do show. A transaction that
//! calls the board directly is read here; one that reaches it through another
//! contract shows up only in [`crate::Ledger::follow`], a block later.

use super::nudge::{Kind, Nudges};
use super::{timed, EvmLedger, SignalBoard, MAX_PAYLOAD};
use crate::{PendingMessage, TopicId};
use alloy::consensus::Transaction as _;
use alloy::eips::BlockNumberOrTag;
use alloy::network::TransactionResponse as _;
use alloy::primitives::B256;
use alloy::providers::Provider;
use alloy::rpc::types::Transaction;
use alloy::sol_types::SolCall;
use futures::stream::{self, BoxStream, StreamExt};
use std::collections::{HashSet, VecDeque};
use std::time::Duration;

/// Longest wait between pending-block reads after failures.
const MAX_PENDING_BACKOFF: Duration = Duration::from_secs(30);

/// Posts taken from the subscription that are remembered, so a later
/// pending-block read does not yield them again (a few blocks' worth).
const MAX_PUSHED: usize = 4_096;

impl EvmLedger {
    /// The board posts to `topic` in the endpoint's pending block, with their
    /// transaction hashes (`Ok(None)`: the endpoint has no pending block).
    async fn pending_posts(
        &self,
        topic: TopicId,
    ) -> Result<Option<Vec<(B256, PendingMessage)>>, String> {
        let read = self
            .provider
            .get_block_by_number(BlockNumberOrTag::Pending)
            .full();
        let Some(block) = timed(self.options.rpc_timeout, read).await? else {
            return Ok(None);
        };
        let txs = block.transactions.into_transactions();
        Ok(Some(
            txs.filter_map(|tx| self.pending_post(topic, &tx)).collect(),
        ))
    }

    /// `tx` as a post to `topic` on the board, with its hash, if it is one.
    fn pending_post(&self, topic: TopicId, tx: &Transaction) -> Option<(B256, PendingMessage)> {
        if tx.to() != Some(self.contract) {
            return None;
        }
        let call = SignalBoard::postCall::abi_decode(tx.input()).ok()?;
        // The board reverts an oversized payload: it never lands.
        if call.topic.0 != topic || call.payload.len() > MAX_PAYLOAD {
            return None;
        }
        let message = PendingMessage {
            topic,
            sender: format!("{}", tx.from()),
            payload: call.payload.to_vec(),
        };
        Some((tx.tx_hash(), message))
    }

    /// [`crate::Ledger::follow_pending`]: polls the pending block every
    /// `poll_interval` (with a websocket: takes each transaction it pushes,
    /// and reads the pending block only every [`super::SUBSCRIBED_POLL`]) and yields each post to `topic` the first time a poll
    /// shows it. Only the last poll's transactions are remembered (a block's
    /// worth), so one that stays pending is yielded once; failures back off
    /// up to 30 s and are logged, not yielded.
    pub(super) fn pending_stream(&self, topic: TopicId) -> BoxStream<'static, PendingMessage> {
        struct State {
            ledger: EvmLedger,
            topic: TopicId,
            seen: Seen,
            ready: VecDeque<PendingMessage>,
            wait: Option<Duration>,
            said_none: bool,
            nudges: Nudges,
        }
        let state = State {
            ledger: self.clone(),
            topic,
            seen: Seen::default(),
            ready: VecDeque::new(),
            wait: None,
            said_none: false,
            nudges: Nudges::new(self.ws.clone(), Kind::Pending, self.options.rpc_timeout),
        };
        stream::unfold(state, |mut st| async move {
            loop {
                if let Some(m) = st.ready.pop_front() {
                    return Some((m, st));
                }
                let every = st.ledger.options.poll_interval;
                match st.wait {
                    // Caught up: the next pending transaction wakes us, and
                    // comes whole: no pending-block read is needed for it.
                    Some(wait) if wait == every => {
                        let txs = st.nudges.wait(every).await;
                        if !txs.is_empty() {
                            let posts = txs.iter().filter_map(|tx| st.ledger.pending_post(st.topic, tx));
                            for (hash, m) in posts {
                                if st.seen.pushed(hash) {
                                    st.ready.push_back(m);
                                }
                            }
                            continue;
                        }
                    }
                    Some(wait) => tokio::time::sleep(wait).await,
                    None => {}
                }
                match st.ledger.pending_posts(st.topic).await {
                    Ok(Some(posts)) => {
                        st.ready.extend(st.seen.polled(posts));
                        st.wait = Some(every);
                    }
                    Ok(None) => {
                        if !std::mem::replace(&mut st.said_none, true) {
                            tracing::info!("the endpoint shows no pending block; reading mined blocks only until it does");
                        }
                        st.wait = Some(MAX_PENDING_BACKOFF);
                    }
                    Err(e) => {
                        let wait = st.wait.map_or(every, |w| (w * 2).min(MAX_PENDING_BACKOFF));
                        tracing::debug!(error = %e, ?wait, "cannot read the pending block");
                        st.wait = Some(wait.max(every));
                    }
                }
            }
        })
        .boxed()
    }
}

/// Which pending posts were yielded already: those of the last pending-block
/// read (a block's worth; a post still pending at the next read is not
/// yielded again), and those pushed by the websocket, kept apart (a read
/// replaces the first set) and bounded by [`MAX_PUSHED`].
#[derive(Default)]
struct Seen {
    last_read: HashSet<B256>,
    pushed: HashSet<B256>,
    pushed_order: VecDeque<B256>,
}

impl Seen {
    /// A post pushed by the websocket: whether it is new.
    fn pushed(&mut self, hash: B256) -> bool {
        if self.last_read.contains(&hash) || !self.pushed.insert(hash) {
            return false;
        }
        self.pushed_order.push_back(hash);
        while self.pushed_order.len() > MAX_PUSHED {
            if let Some(old) = self.pushed_order.pop_front() {
                self.pushed.remove(&old);
            }
        }
        true
    }

    /// The posts of a pending-block read: those not yielded before.
    fn polled<M>(&mut self, posts: Vec<(B256, M)>) -> Vec<M> {
        let now: HashSet<B256> = posts.iter().map(|(h, _)| *h).collect();
        let new = (posts.into_iter())
            .filter(|(h, _)| !self.last_read.contains(h) && !self.pushed.contains(h))
            .map(|(_, m)| m)
            .collect();
        self.last_read = now;
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(n: u8) -> B256 {
        B256::repeat_byte(n)
    }

    #[test]
    fn a_post_is_yielded_once_whether_pushed_or_read() {
        let mut seen = Seen::default();
        assert!(seen.pushed(h(1)));
        assert!(!seen.pushed(h(1)), "pushed twice");
        // Read while still pending: the pushed one is not yielded again.
        assert_eq!(seen.polled(vec![(h(1), 1), (h(2), 2)]), [2]);
        assert!(seen.polled(vec![(h(1), 1), (h(2), 2)]).is_empty());
        assert!(!seen.pushed(h(2)), "read, then pushed");
        // Mined meanwhile, then shown again: still not yielded twice.
        assert!(seen.polled::<u8>(vec![]).is_empty());
        assert!(seen.polled(vec![(h(1), 1)]).is_empty());
    }

    #[test]
    fn pushed_posts_are_remembered_up_to_a_bound() {
        let mut seen = Seen::default();
        for i in 0..=MAX_PUSHED as u32 {
            assert!(seen.pushed(B256::left_padding_from(&i.to_be_bytes())));
        }
        assert_eq!(seen.pushed.len(), MAX_PUSHED);
        // The oldest was forgotten; the newest is still known.
        assert!(seen.pushed(B256::left_padding_from(&0u32.to_be_bytes())));
        let newest = B256::left_padding_from(&(MAX_PUSHED as u32).to_be_bytes());
        assert!(!seen.pushed(newest));
    }
}
