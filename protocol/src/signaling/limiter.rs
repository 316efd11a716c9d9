//! How often one sender's requests are answered: a token bucket per sender.
//! Every answer costs the provider a ledger post, so a key that floods gets
//! `burst` answers and then `per_minute`; the rest are dropped unanswered.
//! The table of senders is bounded: idle (full) buckets are forgotten first,
//! then the least recently seen.

use libp2p_identity::PeerId;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    /// Answers a sender may get at once.
    pub burst: u32,
    /// Answers a sender regains per minute.
    pub per_minute: u32,
    /// Senders remembered.
    pub max_tracked: usize,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            burst: 8,
            per_minute: 10,
            max_tracked: 4096,
        }
    }
}

/// One token: a minute in ms, so `per_minute` tokens a minute refill
/// `per_minute` units a ms.
const TOKEN: u64 = 60_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Tokens, in units of 1/60,000 (a minute of ms: refills are exact).
    units: u64,
    at: Instant,
}

/// Token buckets by sender.
#[derive(Debug)]
pub struct SenderLimiter {
    limits: RateLimits,
    buckets: HashMap<PeerId, Bucket>,
}

impl SenderLimiter {
    /// No sender seen yet.
    pub fn new(limits: RateLimits) -> Self {
        Self {
            limits,
            buckets: HashMap::new(),
        }
    }

    fn full(&self) -> u64 {
        u64::from(self.limits.burst.max(1)) * TOKEN
    }

    /// The bucket's tokens at `now`, and the instant they are counted to:
    /// whole milliseconds only, so the part of a millisecond not yet
    /// counted is kept for the next look.
    fn refilled(&self, b: Bucket, now: Instant) -> Bucket {
        let ms = u64::try_from(now.saturating_duration_since(b.at).as_millis()).unwrap_or(u64::MAX);
        let gained = ms.saturating_mul(u64::from(self.limits.per_minute));
        Bucket {
            units: b.units.saturating_add(gained).min(self.full()),
            at: b.at.checked_add(Duration::from_millis(ms)).unwrap_or(now),
        }
    }

    /// Whether `sender` may be answered now (takes a token if so).
    pub fn allow(&mut self, now: Instant, sender: PeerId) -> bool {
        if !self.buckets.contains_key(&sender) && self.buckets.len() >= self.limits.max_tracked {
            let full = self.full();
            let idle: Vec<PeerId> = (self.buckets.iter())
                .filter(|(_, b)| self.refilled(**b, now).units >= full)
                .map(|(p, _)| *p)
                .collect();
            for p in idle {
                self.buckets.remove(&p);
            }
            if self.buckets.len() >= self.limits.max_tracked {
                let oldest = (self.buckets.iter())
                    .min_by_key(|(_, b)| b.at)
                    .map(|(p, _)| *p);
                if let Some(p) = oldest {
                    self.buckets.remove(&p);
                }
            }
        }
        let start = Bucket {
            units: self.full(),
            at: now,
        };
        let b = self.buckets.get(&sender).copied().unwrap_or(start);
        let Bucket { units, at } = self.refilled(b, now);
        let (units, ok) = match units.checked_sub(TOKEN) {
            Some(left) => (left, true),
            None => (units, false),
        };
        self.buckets.insert(sender, Bucket { units, at });
        ok
    }

    /// Senders remembered.
    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ms` after `t0`.
    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn a_flooding_sender_gets_its_burst_then_its_rate_and_others_are_unaffected() {
        let mut l = SenderLimiter::new(RateLimits {
            burst: 3,
            per_minute: 6,
            max_tracked: 100,
        });
        let (flood, other) = (PeerId::random(), PeerId::random());
        let t0 = Instant::now();
        let got = (0..50).filter(|_| l.allow(t0, flood)).count();
        assert_eq!(got, 3, "the burst, then nothing at once");
        assert!(l.allow(t0, other), "another sender has its own bucket");
        assert!(!l.allow(at(t0, 9_999), flood), "one answer per 10 s");
        assert!(l.allow(at(t0, 10_000), flood));
        assert!(!l.allow(at(t0, 10_001), flood));
        // Asks less than a millisecond apart lose no refill: 10 s of them
        // earn the one answer 10 s earn.
        let mut now = at(t0, 10_001);
        let mut answered = 0;
        for _ in 0..20_000 {
            now += Duration::from_micros(500);
            answered += usize::from(l.allow(now, flood));
        }
        assert_eq!(
            answered, 1,
            "one answer per 10 s, however the asks are spaced"
        );
    }

    #[test]
    fn the_sender_table_is_bounded() {
        let mut l = SenderLimiter::new(RateLimits {
            burst: 1,
            per_minute: 60,
            max_tracked: 10,
        });
        let t0 = Instant::now();
        for i in 0..1_000u64 {
            assert!(
                l.allow(at(t0, i), PeerId::random()),
                "a new sender is answered"
            );
            assert!(l.tracked() <= 10);
        }
    }
}
