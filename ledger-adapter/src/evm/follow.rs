//! Following one topic: bounded block ranges up to the confirmed head, a
//! cursor per message, back-off and re-read on RPC errors.

use super::nudge::{Kind, Nudges};
use super::{timed, EvmLedger, SignalBoard, MAX_PAYLOAD};
use crate::{
    BoxFuture, Cursor, Ledger, LedgerError, LedgerMessage, PendingMessage, PostReceipt, TopicId,
};
use alloy::primitives::B256;
use alloy::providers::Provider;
use alloy::rpc::types::Filter;
use alloy::sol_types::SolEvent;
use futures::stream::{self, BoxStream, StreamExt};
use std::collections::VecDeque;
use std::time::Duration;

/// Blocks whose hashes the follower remembers to notice a reorg.
const REMEMBERED_BLOCKS: usize = 128;

impl EvmLedger {
    /// The hash of block `n`, if the chain has one.
    async fn block_hash(&self, n: u64) -> Result<Option<B256>, String> {
        let block = timed(
            self.options.rpc_timeout,
            self.provider.get_block_by_number(n.into()),
        )
        .await?;
        Ok(block.map(|b| b.header.hash))
    }

    /// Reads the logs of `topic` in `from..=to`, in order, after `after`.
    async fn read_range(
        &self,
        topic: TopicId,
        from: u64,
        to: u64,
        after: Cursor,
    ) -> Result<Vec<LedgerMessage>, String> {
        let filter = Filter::new()
            .address(self.contract)
            .event_signature(SignalBoard::Posted::SIGNATURE_HASH)
            .topic1(B256::from(topic))
            .from_block(from)
            .to_block(to);
        let logs = timed(self.options.rpc_timeout, self.provider.get_logs(&filter)).await?;
        let mut out = Vec::with_capacity(logs.len());
        for log in logs {
            let (Some(block), Some(index)) = (log.block_number, log.log_index) else {
                continue;
            };
            let cursor = Cursor { block, index };
            if cursor <= after || log.removed {
                continue;
            }
            match log.log_decode::<SignalBoard::Posted>() {
                Ok(decoded) => {
                    let ev = decoded.inner.data;
                    out.push(LedgerMessage {
                        topic: ev.topic.0,
                        sender: format!("{}", ev.sender),
                        payload: ev.payload.to_vec(),
                        cursor,
                        block_hash: log.block_hash.map(|h| h.0),
                    });
                }
                Err(e) => {
                    tracing::warn!(block, index, error = %e, "undecodable Posted log skipped")
                }
            }
        }
        out.sort_by_key(|m| m.cursor);
        Ok(out)
    }
}

struct FollowState {
    ledger: EvmLedger,
    topic: TopicId,
    /// Last cursor yielded (or the starting one).
    after: Cursor,
    /// Next block to read.
    next_block: u64,
    buffer: VecDeque<LedgerMessage>,
    backoff: Duration,
    /// Blocks per `eth_getLogs` now: halved when a read fails (an endpoint's
    /// result or range limit, a timeout) or returns more than
    /// [`MAX_BUFFERED`] logs, doubled back after each success up to
    /// `max_block_range`. A flooded topic slows the follower; it never wedges it.
    range: u64,
    /// The hashes of the last blocks read through, oldest first: when the
    /// newest no longer matches the chain, a reorg replaced blocks already
    /// read, and the follower rewinds to the newest that still matches.
    read_through: VecDeque<(u64, B256)>,
    /// The chain head's hash when the reorg check last ran.
    last_head: Option<B256>,
    /// New heads pushed by the endpoint, if it can.
    nudges: Nudges,
}

impl FollowState {
    /// The chain's head; a new head is checked for a reorg first (only a
    /// new head can come with one: an idle poll costs one request, not a
    /// hash check too).
    async fn head(&mut self) -> Result<u64, String> {
        let opts = &self.ledger.options;
        let latest = self.ledger.provider.get_block_by_number(Default::default());
        let (number, hash) = timed(opts.rpc_timeout, latest).await.and_then(|b| {
            b.map(|b| (b.header.number, b.header.hash))
                .ok_or_else(|| "the endpoint has no latest block".to_string())
        })?;
        if self.last_head != Some(hash) {
            match self.check_reorg().await {
                Ok(()) => self.last_head = Some(hash),
                Err(e) => tracing::debug!(error = %e, "reorg check failed; trying again"),
            }
        }
        Ok(number)
    }

    /// The next range of confirmed blocks below `head`, read (`None`: none
    /// yet, after waiting for a new head; new heads carry no transactions).
    /// A failed read halves the range: it may have been too wide for the
    /// endpoint.
    async fn read_next(&mut self, head: u64) -> Option<Result<(u64, Vec<LedgerMessage>), String>> {
        let opts = &self.ledger.options;
        let safe = head.saturating_sub(opts.confirmations.saturating_sub(1));
        if self.next_block > safe {
            let every = opts.poll_interval;
            self.nudges.wait(every).await;
            return None;
        }
        let to = safe.min(self.next_block.saturating_add(self.range - 1));
        let read = self
            .ledger
            .read_range(self.topic, self.next_block, to, self.after);
        Some(match read.await {
            Ok(msgs) => Ok((to, msgs)),
            Err(e) => {
                self.range = (self.range / 2).max(1);
                Err(e)
            }
        })
    }

    /// Blocks read through `to`, with `msgs`: buffered, the range adapted,
    /// and the blocks with messages and the last one remembered, so a reorg
    /// is undone to the newest block that still stands, repeating nothing
    /// before it.
    async fn took(&mut self, to: u64, msgs: Vec<LedgerMessage>) {
        let opts = &self.ledger.options;
        self.backoff = opts.poll_interval;
        self.range = if msgs.len() > MAX_BUFFERED {
            (self.range / 2).max(1)
        } else {
            self.range
                .saturating_mul(2)
                .min(opts.max_block_range.max(1))
        };
        let mut blocks: Vec<u64> = msgs.iter().map(|m| m.cursor.block).collect();
        blocks.push(to);
        blocks.dedup();
        self.buffer.extend(msgs);
        self.next_block = to + 1;
        for b in blocks {
            if let Ok(Some(hash)) = self.ledger.block_hash(b).await {
                self.read_through.push_back((b, hash));
            }
        }
        while self.read_through.len() > REMEMBERED_BLOCKS {
            self.read_through.pop_front();
        }
    }

    /// Waits out the back-off (doubling it) after failure `e`; the error
    /// to report.
    async fn back_off(&mut self, e: String) -> LedgerError {
        let wait = self.backoff;
        self.backoff = (self.backoff * 2).min(self.ledger.options.max_backoff);
        let err = LedgerError::Unavailable(format!("{e} (retrying in {wait:?})"));
        tokio::time::sleep(wait).await;
        err
    }

    /// Checks the newest block read through against the chain; after a
    /// reorg, rewinds to just past the last block that still matches (the
    /// messages of the replaced blocks are read again; envelopes seen
    /// before are dropped by the reader's replay cache).
    async fn check_reorg(&mut self) -> Result<(), String> {
        let Some(&(n, hash)) = self.read_through.back() else {
            return Ok(());
        };
        if self.ledger.block_hash(n).await? == Some(hash) {
            return Ok(());
        }
        let mut fork = None;
        while let Some((m, h)) = self.read_through.pop_back() {
            if self.ledger.block_hash(m).await? == Some(h) {
                self.read_through.push_back((m, h));
                fork = Some(m);
                break;
            }
        }
        // No remembered block matches: rewind past the oldest one.
        let fork =
            fork.unwrap_or_else(|| self.next_block.saturating_sub(REMEMBERED_BLOCKS as u64 + 1));
        tracing::warn!(
            from = n,
            to = fork,
            "chain reorganised: reading again from the fork"
        );
        self.after = Cursor {
            block: fork,
            index: u64::MAX,
        }
        .min(self.after);
        self.next_block = fork + 1;
        self.buffer.clear();
        Ok(())
    }
}

/// Logs held between reads; a read returning more shrinks the next range.
pub const MAX_BUFFERED: usize = 4_096;

impl Ledger for EvmLedger {
    fn describe(&self) -> String {
        format!(
            "evm:{}@{} (chain {})",
            self.url, self.contract, self.chain_id
        )
    }

    fn max_payload(&self) -> usize {
        MAX_PAYLOAD
    }

    fn post(
        &self,
        topic: TopicId,
        payload: Vec<u8>,
    ) -> BoxFuture<'_, Result<PostReceipt, LedgerError>> {
        Box::pin(self.post_inner(topic, payload))
    }

    fn block_hash(&self, block: u64) -> BoxFuture<'_, Result<Option<[u8; 32]>, LedgerError>> {
        Box::pin(async move {
            let hash = EvmLedger::block_hash(self, block).await;
            hash.map(|h| h.map(|h| h.0))
                .map_err(LedgerError::Unavailable)
        })
    }

    fn reorg_rewind(&self) -> u64 {
        REMEMBERED_BLOCKS as u64
    }

    fn initial_cursor(&self) -> BoxFuture<'_, Result<Cursor, LedgerError>> {
        Box::pin(async {
            let head = self.head_cursor().await?;
            let block = head.block.saturating_sub(self.options.lookback_blocks);
            Ok(Cursor { block, index: 0 })
        })
    }

    fn follow_pending(&self, topic: TopicId) -> Option<BoxStream<'static, PendingMessage>> {
        self.options
            .read_pending
            .then(|| self.pending_stream(topic))
    }

    fn follow(
        &self,
        topic: TopicId,
        from: Cursor,
    ) -> BoxStream<'static, Result<LedgerMessage, LedgerError>> {
        let state = FollowState {
            ledger: self.clone(),
            topic,
            after: from,
            next_block: from.block,
            buffer: VecDeque::new(),
            backoff: self.options.poll_interval,
            range: self.options.max_block_range.max(1),
            read_through: VecDeque::new(),
            last_head: None,
            nudges: Nudges::new(self.ws.clone(), Kind::Heads, self.options.rpc_timeout),
        };
        stream::unfold(state, |mut st| async move {
            loop {
                if let Some(m) = st.buffer.pop_front() {
                    st.after = m.cursor;
                    return Some((Ok(m), st));
                }
                let read = match st.head().await {
                    Err(e) => Err(e),
                    Ok(head) => match st.read_next(head).await {
                        Some(read) => read,
                        None => continue, // waited for a new head
                    },
                };
                match read {
                    Ok((to, msgs)) => st.took(to, msgs).await,
                    Err(e) => {
                        // Report, wait, and re-read the same range: the
                        // cursor check drops anything already yielded.
                        let err = st.back_off(e).await;
                        return Some((Err(err), st));
                    }
                }
            }
        })
        .boxed()
    }
}
