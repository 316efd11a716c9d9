//! Carries out [`FairShare`] for one node's streams: each stream holds a
//! [`FairTurn`], waits for its turn before a write (or a read), and reports
//! the write's start and end; the decisions are the machine's. A stream
//! told to wait is woken by name when the machine releases it (no broadcast:
//! a thousand held streams are not all woken for each chunk).

use ledgermesh_protocol::stream::fair::{FairConfig, FairShare, Turn};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Longest wait without a wake-up before a held stream asks again.
const RECHECK_AT_LEAST: Duration = Duration::from_millis(50);

/// One node's share of sending (or of receiving) between its streams.
pub struct FairGate {
    inner: Mutex<Inner>,
    next: AtomicU64,
    epoch: Instant,
}

struct Inner {
    share: FairShare<u64>,
    /// Each stream's own wake-up.
    wakes: std::collections::HashMap<u64, Arc<Notify>>,
}

impl Inner {
    fn wake(&self, released: Vec<u64>) {
        for k in released {
            if let Some(n) = self.wakes.get(&k) {
                n.notify_one();
            }
        }
    }
}

impl FairGate {
    /// A gate for the streams of one direction of one node.
    pub fn new(config: FairConfig) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(Inner {
                share: FairShare::new(config),
                wakes: Default::default(),
            }),
            next: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner, u64) -> T) -> T {
        let now = self.now_us();
        f(
            &mut self.inner.lock().unwrap_or_else(|p| p.into_inner()),
            now,
        )
    }

    /// A new stream's place in the share; it leaves when dropped.
    pub fn join(self: &Arc<Self>) -> FairTurn {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let wake = Arc::new(Notify::new());
        self.with(|i, now| {
            i.share.join(id, now);
            i.wakes.insert(id, wake.clone());
        });
        FairTurn {
            gate: self.clone(),
            id,
            wake,
        }
    }

    /// Streams in the share now.
    pub fn len(&self) -> usize {
        self.with(|i, _| i.share.len())
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
    wake: Arc<Notify>,
}

impl FairTurn {
    /// Waits for this stream's turn, then does `io`, a write of `n` bytes
    /// or a read of up to `n`, timed for the share; `moved` says how many
    /// bytes it moved.
    pub async fn take<T>(
        &self,
        n: usize,
        io: impl std::future::Future<Output = T>,
        moved: impl FnOnce(&T) -> usize,
    ) -> T {
        self.turn().await;
        self.begin(n);
        let r = io.await;
        self.end(moved(&r));
        r
    }

    /// Waits until this stream may send (or read) its next chunk.
    async fn turn(&self) {
        loop {
            // A release between the turn and the wait leaves a permit: not lost.
            let recheck = match self.gate.with(|i, now| i.share.turn(&self.id, now)) {
                Turn::Go => return,
                Turn::Wait { recheck_at_us } => recheck_at_us
                    .map(|at| Duration::from_micros(at.saturating_sub(self.gate.now_us())))
                    .unwrap_or(RECHECK_AT_LEAST)
                    .min(RECHECK_AT_LEAST),
            };
            let _ = tokio::time::timeout(recheck, self.wake.notified()).await;
        }
    }

    /// A write (or read) of up to `n` bytes starts.
    fn begin(&self, n: usize) {
        self.gate
            .with(|i, now| i.share.begin(&self.id, n as u64, now));
    }

    /// The write (or read) begun last ended, having moved `n` bytes.
    fn end(&self, n: usize) {
        self.gate.with(|i, now| {
            let go = i.share.end(&self.id, n as u64, now);
            i.wake(go);
        });
    }

    /// The stream stops asking for a while (waiting for credit, pacing).
    pub fn pause(&self) {
        self.gate.with(|i, now| {
            let go = i.share.pause(&self.id, now);
            i.wake(go);
        });
    }
}

impl Drop for FairTurn {
    fn drop(&mut self) {
        self.gate.with(|i, now| {
            i.wakes.remove(&self.id);
            let go = i.share.leave(&self.id, now);
            i.wake(go);
        });
    }
}
