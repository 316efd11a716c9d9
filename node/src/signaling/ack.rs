//! Which followed messages are handled: each one's [`Ack`], and the early
//! copies read from the pending pool before their mined copy lands. The
//! saved cursor never passes a message that was not handled.

use ledgermesh_ledger::Cursor;
use ledgermesh_protocol::Opened;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// A message from our `stdin` topic: what it says, its size, and the
/// [`Ack`] to drop once it is fully handled.
pub type Inbound = (Opened, usize, Ack);

/// Says a followed message was fully handled ([`Ack::done`]). The saved
/// cursor never passes a message that was not: one dropped undone (its task
/// cancelled, its answer failed) is read again after a restart.
#[derive(Debug)]
pub struct Ack(pub(super) AckOf);

#[derive(Debug)]
pub(super) enum AckOf {
    /// A message read from a block: its place goes back to the follower.
    Mined {
        at: At,
        tx: mpsc::UnboundedSender<At>,
    },
    /// A message read from the pending pool: it has no place yet; the
    /// mined copy's ack waits in the slot until this one is done.
    Early(Arc<Mutex<EarlySlot>>),
}

/// A message handled from the pending pool, as its mined copy finds it.
#[derive(Debug, Default)]
pub(super) struct EarlySlot {
    done: bool,
    mined: Option<Ack>,
}

/// A message's place: its cursor, then its block's hash (ordered by the
/// cursor; the hash goes into the cursor file with it).
pub(super) type At = (Cursor, Option<[u8; 32]>);

impl Ack {
    /// The message is handled: the cursor may pass it.
    pub fn done(self) {
        match self.0 {
            AckOf::Mined { at, tx } => {
                let _ = tx.send(at);
            }
            AckOf::Early(slot) => {
                let mined = {
                    let mut s = slot.lock().unwrap_or_else(|p| p.into_inner());
                    s.done = true;
                    s.mined.take()
                };
                if let Some(mined) = mined {
                    mined.done();
                }
            }
        }
    }
}

/// Messages opened from the pending pool whose mined copy has not been read
/// yet, by payload hash: the mined copy is then passed over quietly (the
/// replay cache would refuse it), and the cursor passes it only once the
/// early copy is handled. At most [`EARLY_MAX`]; past that the oldest is
/// forgotten, and its mined copy is reported as a replay.
#[derive(Default)]
pub(super) struct EarlyCopies {
    slots: HashMap<[u8; 32], Arc<Mutex<EarlySlot>>>,
    order: VecDeque<[u8; 32]>,
}

/// Early copies remembered (a few blocks' worth of messages to one node).
const EARLY_MAX: usize = 4_096;

impl EarlyCopies {
    fn key(payload: &[u8]) -> [u8; 32] {
        Sha256::digest(payload).into()
    }

    /// Remembers an early copy; returns the ack for its handler.
    pub(super) fn insert(&mut self, payload: &[u8]) -> Ack {
        let key = Self::key(payload);
        let slot = Arc::new(Mutex::new(EarlySlot::default()));
        if self.slots.insert(key, slot.clone()).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > EARLY_MAX {
            if let Some(old) = self.order.pop_front() {
                self.slots.remove(&old);
            }
        }
        Ack(AckOf::Early(slot))
    }

    /// The mined copy of an early one: hands its ack to the early copy's
    /// slot (done at once if that one is handled). `Err` gives the ack back
    /// when no early copy is known.
    pub(super) fn mined(&mut self, payload: &[u8], ack: Ack) -> Result<(), Ack> {
        let key = Self::key(payload);
        let Some(slot) = self.slots.remove(&key) else {
            return Err(ack);
        };
        self.order.retain(|k| *k != key);
        let mut s = slot.lock().unwrap_or_else(|p| p.into_inner());
        if s.done {
            drop(s);
            ack.done();
        } else {
            s.mined = Some(ack);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mined_ack(block: u64) -> (Ack, mpsc::UnboundedReceiver<At>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let at = (Cursor { block, index: 0 }, None);
        (Ack(AckOf::Mined { at, tx }), rx)
    }

    #[test]
    fn a_mined_copy_waits_for_its_early_copy_to_be_handled() {
        let mut early = EarlyCopies::default();
        let handler = early.insert(b"request");
        let (ack, mut cursor) = mined_ack(7);
        assert!(early.mined(b"request", ack).is_ok(), "known: passed over");
        assert!(
            cursor.try_recv().is_err(),
            "not handled yet: the cursor waits"
        );
        handler.done();
        assert_eq!(cursor.try_recv().unwrap().0.block, 7);
        // Each early copy covers one mined copy: another is opened normally.
        let (again, _rx) = mined_ack(8);
        assert!(early.mined(b"request", again).is_err());
    }

    #[test]
    fn a_mined_copy_after_its_early_copy_was_handled_moves_the_cursor_at_once() {
        let mut early = EarlyCopies::default();
        early.insert(b"response").done();
        let (ack, mut cursor) = mined_ack(3);
        assert!(early.mined(b"response", ack).is_ok());
        assert_eq!(cursor.try_recv().unwrap().0.block, 3);
        let (other, _rx) = mined_ack(4);
        assert!(early.mined(b"never seen pending", other).is_err());
    }

    #[test]
    fn early_copies_are_bounded_and_forget_the_oldest() {
        let mut early = EarlyCopies::default();
        for i in 0..EARLY_MAX + 10 {
            early.insert(&(i as u64).to_le_bytes()).done();
        }
        assert_eq!(early.slots.len(), EARLY_MAX);
        assert_eq!(early.order.len(), EARLY_MAX);
        let (oldest, _rx) = mined_ack(1);
        assert!(early.mined(&0u64.to_le_bytes(), oldest).is_err());
        let (newest, _rx2) = mined_ack(2);
        let last = (EARLY_MAX + 9) as u64;
        assert!(early.mined(&last.to_le_bytes(), newest).is_ok());
    }
}
