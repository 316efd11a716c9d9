//! What a live subscription reports when it ends: bytes, chunks, gaps,
//! the offsets it covered, and the lag of its chunks (percentiles over a
//! bounded reservoir).

use crate::events::LiveSummary;

/// Lags (µs) kept for the percentiles (a reservoir past this).
const LAG_SAMPLES: usize = 65_536;

#[derive(Default)]
pub(super) struct Stats {
    pub(super) bytes: u64,
    pub(super) chunks: u64,
    pub(super) gaps: u32,
    pub(super) gap_bytes: u64,
    lags: Vec<u64>,
    seen: u64,
    pub(super) from_offset: Option<u64>,
    pub(super) to_offset: u64,
    pub(super) ended: bool,
}

impl Stats {
    pub(super) fn lag(&mut self, ms: u64) {
        self.seen += 1;
        if self.lags.len() < LAG_SAMPLES {
            self.lags.push(ms);
        } else {
            let i = rand::random_range(0..self.seen);
            if let Some(slot) = self.lags.get_mut(i as usize) {
                *slot = ms;
            }
        }
    }

    pub(super) fn summary(&mut self) -> LiveSummary {
        let to_offset = self.to_offset;
        self.lags.sort_unstable();
        let ms = |us: u64| us as f64 / 1000.0;
        let pct = |p: usize| {
            if self.lags.is_empty() {
                0.0
            } else {
                ms(self.lags[(self.lags.len() - 1) * p / 100])
            }
        };
        LiveSummary {
            from_offset: self.from_offset.unwrap_or(to_offset),
            to_offset,
            chunks: self.chunks,
            gap_bytes: self.gap_bytes,
            gaps: self.gaps,
            source_ended: self.ended,
            lag_ms_p50: pct(50),
            lag_ms_p99: pct(99),
            lag_ms_max: self.lags.last().copied().map_or(0.0, ms),
        }
    }
}
