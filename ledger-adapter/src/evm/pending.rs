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
use alloy::sol_types::SolCall;
use futures::stream::{self, BoxStream, StreamExt};
use std::collections::{HashSet, VecDeque};
use std::time::Duration;

/// Longest wait between pending-block reads after failures.
const MAX_PENDING_BACKOFF: Duration = Duration::from_secs(30);

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
        let mut out = vec![];
        for tx in block.transactions.into_transactions() {
            if tx.to() != Some(self.contract) {
                continue;
            }
            let Ok(call) = SignalBoard::postCall::abi_decode(tx.input()) else {
                continue;
            };
            // The board reverts an oversized payload: it never lands.
            if call.topic.0 != topic || call.payload.len() > MAX_PAYLOAD {
                continue;
            }
            out.push((
                tx.tx_hash(),
                PendingMessage {
                    topic,
                    sender: format!("{}", tx.from()),
                    payload: call.payload.to_vec(),
                },
            ));
        }
        Ok(Some(out))
    }

    /// [`crate::Ledger::follow_pending`]: polls the pending block every
    /// `poll_interval` (or when a websocket says a transaction arrived) and yields each post to `topic` the first time a poll
    /// shows it. Only the last poll's transactions are remembered (a block's
    /// worth), so one that stays pending is yielded once; failures back off
    /// up to 30 s and are logged, not yielded.
    pub(super) fn pending_stream(&self, topic: TopicId) -> BoxStream<'static, PendingMessage> {
        struct State {
            ledger: EvmLedger,
            topic: TopicId,
            seen: HashSet<B256>,
            ready: VecDeque<PendingMessage>,
            wait: Option<Duration>,
            said_none: bool,
            nudges: Nudges,
        }
        let state = State {
            ledger: self.clone(),
            topic,
            seen: HashSet::new(),
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
                    // Caught up: the next pending transaction wakes us.
                    Some(wait) if wait == every => st.nudges.wait(every).await,
                    Some(wait) => tokio::time::sleep(wait).await,
                    None => {}
                }
                match st.ledger.pending_posts(st.topic).await {
                    Ok(Some(posts)) => {
                        let now: HashSet<B256> = posts.iter().map(|(h, _)| *h).collect();
                        for (hash, m) in posts {
                            if !st.seen.contains(&hash) {
                                st.ready.push_back(m);
                            }
                        }
                        st.seen = now;
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
