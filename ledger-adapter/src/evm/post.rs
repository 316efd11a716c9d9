//! Posting: sign `post(topic, payload)` with the account key, wait for the receipt.

use super::{timed, EvmLedger, SignalBoard, MAX_PAYLOAD};
use crate::{Cursor, LedgerError, PostReceipt, TopicId};
use alloy::primitives::{Bytes, B256};

impl EvmLedger {
    pub(super) async fn post_inner(
        &self,
        topic: TopicId,
        payload: Vec<u8>,
    ) -> Result<PostReceipt, LedgerError> {
        if payload.len() > MAX_PAYLOAD {
            return Err(LedgerError::PayloadTooLarge {
                len: payload.len(),
                max: MAX_PAYLOAD,
            });
        }
        let Some(from) = self.account else {
            return Err(LedgerError::Rejected(
                "no ledger account key: pass --ledger-key FILE or set LEDGERMESH_LEDGER_KEY".into(),
            ));
        };
        let board = SignalBoard::new(self.contract, &self.provider);
        let call = board
            .post(B256::from(topic), Bytes::from(payload))
            .from(from);
        let t = self.options.rpc_timeout;
        let sent = {
            let _one_at_a_time = self.send_lock.lock().await;
            timed(t, call.send()).await
        };
        let pending = match sent {
            Ok(p) => p,
            Err(e) if e.contains("insufficient funds") => {
                return Err(LedgerError::Rejected(format!(
                    "ledger account {from} cannot pay gas (insufficient funds): {e}"
                )))
            }
            Err(e) if e.contains("revert") => return Err(LedgerError::Rejected(e)),
            Err(e) => return Err(LedgerError::Unavailable(e)),
        };
        let receipt = timed(t * 3, pending.get_receipt())
            .await
            .map_err(LedgerError::Unavailable)?;
        if !receipt.status() {
            return Err(LedgerError::Rejected(format!(
                "post transaction {} reverted",
                receipt.transaction_hash
            )));
        }
        let index = receipt
            .inner
            .logs()
            .iter()
            .find(|l| l.address() == self.contract)
            .and_then(|l| l.log_index);
        Ok(PostReceipt {
            cursor: receipt
                .block_number
                .zip(index)
                .map(|(block, index)| Cursor { block, index }),
            tx: Some(format!("{}", receipt.transaction_hash)),
            gas_used: Some(receipt.gas_used),
        })
    }
}
