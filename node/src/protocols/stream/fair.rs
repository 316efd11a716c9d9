//! Carries out [`FairShare`] for one node's streams: each stream holds a
//! [`FairTurn`], waits for its turn before a write (or a read), and reports
//! the write's start and end; the decisions are the machine's.

use ledgermesh_protocol::stream::fair::{FairConfig, FairShare, Turn};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Longest wait without a wake-up before a held stream asks again.
const RECHECK_AT_LEAST: Duration = Duration::from_millis(50);

/// One node's share of sending (or of receiving) between its streams.
pub struct FairGate {
    share: Mutex<FairShare<u64>>,
    wake: Notify,
    next: AtomicU64,
    epoch: Instant,
}

impl FairGate {
    /// A gate for the streams of one direction of one node.
    pub fn new(config: FairConfig) -> Arc<Self> {
        Arc::new(Self {
            share: Mutex::new(FairShare::new(config)),
            wake: Notify::new(),
            next: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    fn with<T>(&self, f: impl FnOnce(&mut FairShare<u64>, u64) -> T) -> T {
        let now = self.now_us();
        f(
            &mut self.share.lock().unwrap_or_else(|p| p.into_inner()),
            now,
        )
    }

    /// A new stream's place in the share; it leaves when dropped.
    pub fn join(self: &Arc<Self>) -> FairTurn {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.with(|s, now| s.join(id, now));
        FairTurn {
            gate: self.clone(),
            id,
        }
    }

    /// Streams in the share now.
    pub fn len(&self) -> usize {
        self.with(|s, _| s.len())
    }

    /// Whether no stream is in the share.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A stream's place in a [`FairGate`].
pub struct FairTurn {
    gate: Arc<FairGate>,
    id: u64,
}

impl FairTurn {
    /// Waits until this stream may send (or read) its next chunk.
    pub async fn turn(&self) {
        loop {
            let woken = self.gate.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let recheck = match self.gate.with(|s, now| s.turn(&self.id, now)) {
                Turn::Go => return,
                Turn::Wait { recheck_at_us } => recheck_at_us
                    .map(|at| Duration::from_micros(at.saturating_sub(self.gate.now_us())))
                    .unwrap_or(RECHECK_AT_LEAST)
                    .min(RECHECK_AT_LEAST),
            };
            let _ = tokio::time::timeout(recheck, woken).await;
        }
    }

    /// A write (or read) of up to `n` bytes starts.
    pub fn begin(&self, n: usize) {
        self.gate.with(|s, now| s.begin(&self.id, n as u64, now));
    }

    /// The write (or read) begun last ended, having moved `n` bytes.
    pub fn end(&self, n: usize) {
        if self.gate.with(|s, now| s.end(&self.id, n as u64, now)) {
            self.gate.wake.notify_waiters();
        }
    }

    /// The stream stops asking for a while (waiting for credit, pacing).
    pub fn pause(&self) {
        if self.gate.with(|s, _| s.pause(&self.id)) {
            self.gate.wake.notify_waiters();
        }
    }
}

impl Drop for FairTurn {
    fn drop(&mut self) {
        if self.gate.with(|s, _| s.leave(&self.id)) {
            self.gate.wake.notify_waiters();
        }
    }
}
