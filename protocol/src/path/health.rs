//! How healthy a connection is, from its pings: round-trip time (a moving
//! average) and loss (over the last pings), rated green, yellow or red.
//!
//! | rating | round trip | loss (last 10 pings) |
//! |---|---|---|
//! | green | < 150 ms | none |
//! | yellow | < 400 ms | ≤ 1 in 10 |
//! | red | otherwise | otherwise |

use serde::Serialize;
use std::collections::VecDeque;

/// Round trip under which a hop is green, ms.
pub const GREEN_RTT_MS: f64 = 150.0;
/// Round trip under which a hop is yellow, ms.
pub const YELLOW_RTT_MS: f64 = 400.0;
/// Pings remembered for the loss figure.
pub const LOSS_WINDOW: usize = 10;
/// Weight of a new sample in the moving average.
const ALPHA: f64 = 0.4;

/// A hop's rating.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rating {
    /// Good.
    Green,
    /// Usable, worse than it should be.
    Yellow,
    /// Bad enough to move off.
    Red,
}

/// Pings of one connection.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Health {
    rtt_ms: Option<f64>,
    outcomes: VecDeque<bool>,
    /// Red ratings in a row.
    red_streak: u32,
}

impl Health {
    /// A ping came back after `rtt_ms`, or (`None`) failed.
    pub fn on_ping(&mut self, rtt_ms: Option<f64>) {
        if let Some(ms) = rtt_ms {
            self.rtt_ms = Some(match self.rtt_ms {
                Some(avg) => avg + ALPHA * (ms - avg),
                None => ms,
            });
        }
        self.outcomes.push_back(rtt_ms.is_some());
        if self.outcomes.len() > LOSS_WINDOW {
            self.outcomes.pop_front();
        }
        if self.rating() == Some(Rating::Red) {
            self.red_streak += 1;
        } else {
            self.red_streak = 0;
        }
    }

    /// The moving average round trip, ms (`None` before any reply).
    pub fn rtt_ms(&self) -> Option<f64> {
        self.rtt_ms
    }

    /// Lost pings over the last ones (0 before any ping).
    pub fn loss(&self) -> f64 {
        let n = self.outcomes.len();
        if n == 0 {
            return 0.0;
        }
        self.outcomes.iter().filter(|ok| !**ok).count() as f64 / n as f64
    }

    /// The rating (`None` before any ping).
    pub fn rating(&self) -> Option<Rating> {
        if self.outcomes.is_empty() {
            return None;
        }
        let lost = self.outcomes.iter().filter(|ok| !**ok).count();
        let rtt = self.rtt_ms.unwrap_or(f64::INFINITY);
        Some(if rtt < GREEN_RTT_MS && lost == 0 {
            Rating::Green
        } else if rtt < YELLOW_RTT_MS && lost <= 1 {
            Rating::Yellow
        } else {
            Rating::Red
        })
    }

    /// Red ratings in a row, up to now.
    pub fn red_streak(&self) -> u32 {
        self.red_streak
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratings_follow_the_documented_thresholds() {
        let mut h = Health::default();
        assert_eq!(h.rating(), None);
        h.on_ping(Some(20.0));
        assert_eq!(h.rating(), Some(Rating::Green));
        // One loss in the window: yellow however fast.
        h.on_ping(None);
        assert_eq!(h.rating(), Some(Rating::Yellow));
        assert!((h.loss() - 0.5).abs() < 1e-9);
        // Two losses: red.
        h.on_ping(None);
        assert_eq!(h.rating(), Some(Rating::Red));
        assert_eq!(h.red_streak(), 1);
        // Losses leave the window after ten pings.
        for _ in 0..LOSS_WINDOW {
            h.on_ping(Some(20.0));
        }
        assert_eq!(h.rating(), Some(Rating::Green));
        assert_eq!(h.red_streak(), 0);
        // A slow hop: the average climbs past 150 ms, then 400 ms.
        let mut slow = Health::default();
        for _ in 0..10 {
            slow.on_ping(Some(250.0));
        }
        assert_eq!(slow.rating(), Some(Rating::Yellow));
        for _ in 0..10 {
            slow.on_ping(Some(900.0));
        }
        assert_eq!(slow.rating(), Some(Rating::Red));
        assert!(slow.red_streak() >= 3);
    }
}
