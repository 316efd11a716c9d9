//! Sharing one node's sending (or receiving) between its streams, by bytes.
//!
//! Left to the async runtime, streams of one provider do not share: in a
//! busy process some connections' tasks simply get polled more often, and a
//! benchmark of one provider and ten buyers saw the slowest stream at half
//! the rate of the fastest. [`FairShare`] keeps every stream that is
//! competing for this node's CPU within `lag` bytes of the slowest such
//! stream: a stream that far ahead waits for its turn, which gives the CPU
//! to the ones behind.
//!
//! A stream that is slow because of its *path* (a buyer on a thin link, or a
//! buyer that reads slowly) must not hold the others back. What tells the two
//! apart is the time a write takes once it starts: a stream starved of CPU
//! writes at about the pace of the others when it runs, while one held by its
//! path takes far longer per byte. A stream whose pace (an average over its
//! last writes, or the write now under way) is more than `outlier` times the
//! median pace of the streams is *path-limited*: it is not waited for, and
//! when it comes back within the pace of the others it starts level with the
//! slowest competing stream instead of owing its backlog.
//!
//! A stream that stops asking (a paid stream waiting for credit, a paced
//! source) is *paused*, and one that has neither written nor asked for
//! `idle_after_us` is *idle*: neither is waited for, and each comes back
//! level with the slowest. Time is a parameter (`now_us`, microseconds); the
//! node's side awaits, and wakes each released stream by name.

use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;

/// How far ahead a stream may run, and what counts as path-limited.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FairConfig {
    /// Bytes a stream may be ahead of the slowest competing one.
    pub lag: u64,
    /// A pace this many times the median pace is the path's doing.
    pub outlier: f64,
    /// Paces below this (ns per byte) are all equally fast: the median is
    /// never taken as lower, so tiny timing noise on fast writes does not
    /// make outliers.
    pub pace_floor: f64,
    /// A stream neither writing nor done with a write this recently (µs)
    /// is busy elsewhere (its source, its end) and not waited for.
    pub idle_after_us: u64,
    /// A write that takes longer than this (µs) is the path's doing
    /// whatever the others' pace: on a machine so loaded that every write
    /// is slow, the median alone cannot tell, and no stream is held back
    /// longer than this by one write of another.
    pub slow_write_us: u64,
}

impl Default for FairConfig {
    fn default() -> Self {
        Self {
            lag: 1 << 20,
            outlier: 4.0,
            // 0.5 ns per byte: 2 GB/s, faster than any one stream goes.
            pace_floor: 0.5,
            idle_after_us: 50_000,
            slow_write_us: 200_000,
        }
    }
}

/// What a stream asking for its turn is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// Send now.
    Go,
    /// Wait until another stream's progress is reported (a wake-up), or
    /// until `recheck_at_us` when given: a stream that is holding this one
    /// may by then count as path-limited.
    Wait {
        /// When to ask again without a wake-up.
        recheck_at_us: Option<u64>,
    },
}

#[derive(Debug, Clone, Default)]
struct Flow {
    /// Bytes counted (raised when the stream comes back level).
    done: u64,
    /// Average ns per byte of its writes, once it has written.
    pace: Option<f64>,
    /// A write under way: when it started, and its size.
    writing: Option<(u64, u64)>,
    /// When it joined, asked for a turn, or last ended a write.
    last_us: u64,
    /// Not asking for turns now.
    paused: bool,
    /// Path-limited at its last write.
    outlier: bool,
    /// Its last write took longer than `slow_write_us`.
    slow: bool,
    /// Told to wait, at this count (its place in `waiting`).
    waiting_at: Option<u64>,
}

/// The byte-fair share of one node's streams (see the module docs).
#[derive(Debug, Clone)]
pub struct FairShare<K> {
    config: FairConfig,
    flows: HashMap<K, Flow>,
    /// Median pace of the flows that have one (refreshed as writes end).
    median: Option<f64>,
    /// Writes ended since the median was refreshed.
    stale: usize,
    /// The streams told to wait, by count: those a moved floor releases
    /// are found without looking at the others.
    waiting: BTreeSet<(u64, K)>,
}

impl<K: Hash + Eq + Ord + Copy> FairShare<K> {
    /// An empty share.
    pub fn new(config: FairConfig) -> Self {
        Self {
            config,
            flows: HashMap::new(),
            median: None,
            stale: 0,
            waiting: BTreeSet::new(),
        }
    }

    /// Streams in the share.
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    /// Whether no stream is in the share.
    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// A new stream, level with the slowest competing one.
    pub fn join(&mut self, k: K, now_us: u64) {
        let done = self.floor(None, now_us).unwrap_or(0);
        self.flows.insert(
            k,
            Flow {
                done,
                last_us: now_us,
                ..Flow::default()
            },
        );
    }

    /// A stream ended. Returns the waiting streams that may go now.
    pub fn leave(&mut self, k: &K, now_us: u64) -> Vec<K> {
        self.unwait(k);
        match self.flows.remove(k) {
            Some(_) => self.released(now_us),
            None => vec![],
        }
    }

    /// The stream stops asking for a while (waiting for credit, pacing):
    /// the others do not wait for it. Returns the waiting streams that may
    /// go now.
    pub fn pause(&mut self, k: &K, now_us: u64) -> Vec<K> {
        self.unwait(k);
        match self.flows.get_mut(k) {
            Some(f) if !f.paused => {
                f.paused = true;
                self.released(now_us)
            }
            _ => vec![],
        }
    }

    /// Takes `k` off the waiting list.
    fn unwait(&mut self, k: &K) {
        if let Some(at) = self.flows.get_mut(k).and_then(|f| f.waiting_at.take()) {
            self.waiting.remove(&(at, *k));
        }
    }

    /// The waiting streams that the slowest competing stream's count now
    /// lets go (all of them when none competes), taken off the list.
    fn released(&mut self, now_us: u64) -> Vec<K> {
        let bound = self
            .floor(None, now_us)
            .map(|f| f.saturating_add(self.config.lag));
        let go: Vec<(u64, K)> = self
            .waiting
            .iter()
            .take_while(|(done, _)| bound.is_none_or(|b| *done <= b))
            .copied()
            .collect();
        for entry in &go {
            self.waiting.remove(entry);
            if let Some(f) = self.flows.get_mut(&entry.1) {
                f.waiting_at = None;
            }
        }
        go.into_iter().map(|(_, k)| k).collect()
    }

    /// May `k` send now?
    pub fn turn(&mut self, k: &K, now_us: u64) -> Turn {
        self.unwait(k);
        let Some(flow) = self.flows.get(k) else {
            return Turn::Go;
        };
        let back = flow.paused || now_us.saturating_sub(flow.last_us) > self.config.idle_after_us;
        if back {
            // Back from a pause: level with the slowest, owing nothing.
            let floor = self.floor(Some(k), now_us);
            let f = self.flows.get_mut(k).expect("present");
            f.paused = false;
            if let Some(floor) = floor {
                f.done = f.done.max(floor);
            }
        }
        self.flows.get_mut(k).expect("present").last_us = now_us;
        let done = self.flows[k].done;
        let Some(floor) = self.floor(Some(k), now_us) else {
            return Turn::Go;
        };
        if done <= floor.saturating_add(self.config.lag) {
            return Turn::Go;
        }
        // Held by the streams more than `lag` behind: the earliest moment
        // one of those stops counting (a write under way turns out
        // path-limited, or a stream not writing turns out idle).
        let limit = self.limit().map(|(limit, _)| limit);
        let recheck_at_us = self
            .flows
            .iter()
            .filter(|(j, f)| *j != k && f.done.saturating_add(self.config.lag) < done)
            .filter(|(j, _)| self.competing(j, now_us))
            .map(|(_, f)| match f.writing {
                Some((start, n)) => {
                    let slow = start + self.config.slow_write_us;
                    let by_pace = limit.map(|l| start + (l * n as f64 / 1000.0).ceil() as u64);
                    by_pace.map_or(slow, |p| p.min(slow)) + 1
                }
                None => f.last_us + self.config.idle_after_us + 1,
            })
            .min();
        self.flows.get_mut(k).expect("present").waiting_at = Some(done);
        self.waiting.insert((done, *k));
        Turn::Wait { recheck_at_us }
    }

    /// `k` starts writing `n` bytes (or reading up to `n`).
    pub fn begin(&mut self, k: &K, n: u64, now_us: u64) {
        if let Some(f) = self.flows.get_mut(k) {
            f.writing = Some((now_us, n));
            f.paused = false;
        }
    }

    /// `k`'s write ended, having moved `n` bytes. Returns the waiting
    /// streams that may go now (the slowest stream moved, or this one
    /// stopped counting).
    pub fn end(&mut self, k: &K, n: u64, now_us: u64) -> Vec<K> {
        let Some(f) = self.flows.get_mut(k) else {
            return vec![];
        };
        let Some((start, _)) = f.writing.take() else {
            return vec![];
        };
        let took_us = now_us.saturating_sub(start);
        f.slow = took_us > self.config.slow_write_us;
        let pace = took_us as f64 * 1000.0 / n.max(1) as f64;
        f.pace = Some(match f.pace {
            Some(p) => 0.75 * p + 0.25 * pace,
            None => pace,
        });
        let was_outlier = f.outlier;
        f.done += n;
        f.last_us = now_us;
        self.stale += 1;
        // Refreshed every len/8 ends: O(1) per end on average.
        if self.median.is_none() || self.stale >= (self.flows.len() / 8).max(1) {
            self.refresh_median();
        }
        let outlier = !self.competing(k, now_us);
        // Back within the pace of the others: level, owing nothing.
        let level = if was_outlier && !outlier {
            self.floor(Some(k), now_us)
        } else {
            None
        };
        let f = self.flows.get_mut(k).expect("present");
        f.outlier = outlier;
        if let Some(floor) = level {
            f.done = f.done.max(floor);
        }
        self.released(now_us)
    }

    /// The median pace, floored, and the outlier bound over it.
    fn limit(&self) -> Option<(f64, f64)> {
        let m = self.median?.max(self.config.pace_floor);
        Some((m * self.config.outlier, m))
    }

    fn refresh_median(&mut self) {
        let mut paces: Vec<f64> = self.flows.values().filter_map(|f| f.pace).collect();
        self.stale = 0;
        if paces.is_empty() {
            self.median = None;
            return;
        }
        // The lower median: of two streams, the faster one.
        let mid = (paces.len() - 1) / 2;
        let (_, m, _) = paces.select_nth_unstable_by(mid, |a, b| a.total_cmp(b));
        self.median = Some(*m);
    }

    /// Whether `j` is competing for this node's CPU now: not paused, not
    /// idle, and not slower per byte than `outlier` × the median pace (a
    /// write under way counts with the pace it has at least reached).
    fn competing(&self, j: &K, now_us: u64) -> bool {
        let Some(f) = self.flows.get(j) else {
            return false;
        };
        let idle =
            f.writing.is_none() && now_us.saturating_sub(f.last_us) > self.config.idle_after_us;
        if f.paused || idle {
            return false;
        }
        // Its last write, or the one under way, took too long.
        let slow_now = f
            .writing
            .is_some_and(|(start, _)| now_us.saturating_sub(start) > self.config.slow_write_us);
        if f.slow || slow_now {
            return false;
        }
        let Some((limit, _)) = self.limit() else {
            return true;
        };
        let mut pace = f.pace.unwrap_or(0.0);
        if let Some((start, n)) = f.writing {
            let so_far = now_us.saturating_sub(start) as f64 * 1000.0 / n.max(1) as f64;
            pace = pace.max(so_far);
        }
        pace <= limit
    }

    /// The fewest bytes of a competing stream other than `except`.
    fn floor(&self, except: Option<&K>, now_us: u64) -> Option<u64> {
        self.flows
            .iter()
            .filter(|(j, _)| Some(*j) != except)
            .filter(|(j, _)| self.competing(j, now_us))
            .map(|(_, f)| f.done)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const CHUNK: u64 = 256 << 10;

    fn share() -> FairShare<u8> {
        FairShare::new(FairConfig::default())
    }

    /// One write of a chunk by `k` from `at` taking `us`.
    fn write(s: &mut FairShare<u8>, k: u8, at: u64, us: u64) -> Vec<u8> {
        assert_eq!(s.turn(&k, at), Turn::Go, "stream {k} may write at {at}");
        s.begin(&k, CHUNK, at);
        s.end(&k, CHUNK, at + us)
    }

    /// Streams 1..=`n`, of which 1 and 2 have written four chunks each at
    /// 100 µs a chunk (their pace is known); and the time after that.
    fn warmed(n: u8) -> (FairShare<u8>, u64) {
        let mut s = share();
        for k in 1..=n {
            s.join(k, 0);
        }
        let mut t = 0;
        for _ in 0..4 {
            write(&mut s, 1, t, 100);
            write(&mut s, 2, t, 100);
            t += 100;
        }
        (s, t)
    }

    /// `k` writes chunks at 100 µs each for as long as it may; the time after.
    fn run_ahead(s: &mut FairShare<u8>, k: u8, mut t: u64) -> u64 {
        while s.turn(&k, t) == Turn::Go {
            s.begin(&k, CHUNK, t);
            s.end(&k, CHUNK, t + 100);
            t += 100;
        }
        t
    }

    #[test]
    fn a_stream_starved_of_turns_holds_the_others_within_the_lag() {
        // Same pace (100 µs a chunk); `a` is polled far more often than `b`.
        let mut s = share();
        s.join(1, 0);
        s.join(2, 0);
        write(&mut s, 2, 0, 100);
        let t = run_ahead(&mut s, 1, 0);
        // `a` ran `lag` ahead of `b` (and one chunk), no further.
        let ahead = s.flows[&1].done - s.flows[&2].done;
        assert!(ahead > MIB && ahead <= MIB + CHUNK, "{ahead}");
        assert!(matches!(s.turn(&1, t), Turn::Wait { .. }));
        // `b` catching up lets `a` go again, and says so.
        assert_eq!(
            write(&mut s, 2, t, 100),
            vec![1],
            "the slowest moved: wake 1"
        );
        assert_eq!(s.turn(&1, t + 100), Turn::Go);
    }

    #[test]
    fn a_stream_slow_on_its_path_does_not_hold_the_others() {
        // Paces: 1 and 2 write a chunk in 100 µs; 3's writes take 50 ms
        // each (its buyer's path).
        let (mut s, mut t) = warmed(3);
        write(&mut s, 3, t, 50_000);
        t += 50_000;
        // 3 is path-limited now: 1 and 2 run on, far past the lag.
        for _ in 0..40 {
            write(&mut s, 1, t, 100);
            write(&mut s, 2, t, 100);
            t += 100;
        }
        assert!(s.flows[&1].done > s.flows[&3].done + 8 * MIB);
    }

    #[test]
    fn a_write_that_runs_long_stops_holding_the_others_when_it_turns_out_path_limited() {
        let (mut s, t) = warmed(2);
        // 2 starts a write that does not end; 1 runs up to the lag.
        s.begin(&2, CHUNK, t);
        let t = run_ahead(&mut s, 1, t);
        let Turn::Wait {
            recheck_at_us: Some(at),
        } = s.turn(&1, t)
        else {
            panic!("held, with a time to ask again");
        };
        assert!(at > t);
        // By then 2's write has taken `outlier` × the median pace.
        assert_eq!(s.turn(&1, at), Turn::Go);
    }

    #[test]
    fn a_path_limited_stream_coming_back_owes_nothing() {
        let (mut s, mut t) = warmed(2);
        write(&mut s, 2, t, 100_000);
        t += 100_000;
        for _ in 0..40 {
            write(&mut s, 1, t, 100);
            t += 100;
        }
        // 2 is fast again (its average pace takes a few writes to come
        // down): level with 1, not 10 MiB behind it.
        for _ in 0..20 {
            write(&mut s, 2, t, 100);
            t += 100;
        }
        assert!(!s.flows[&2].outlier);
        assert!(s.flows[&2].done + MIB >= s.flows[&1].done);
        assert_eq!(s.turn(&1, t), Turn::Go, "1 is not held for 2's old backlog");
    }

    #[test]
    fn a_write_slower_than_the_bound_is_the_paths_even_when_the_pace_cannot_tell() {
        // The pace rule switched off (a loaded machine where every write is
        // slow per byte looks the same to it): the 200 ms bound alone.
        let mut s = FairShare::new(FairConfig {
            outlier: 1e12,
            ..FairConfig::default()
        });
        s.join(1, 0);
        s.join(2, 0);
        write(&mut s, 2, 0, 100);
        s.begin(&2, CHUNK, 100);
        let t = run_ahead(&mut s, 1, 100);
        let Turn::Wait {
            recheck_at_us: Some(at),
        } = s.turn(&1, t)
        else {
            panic!("held by 2's write, with a time to ask again");
        };
        assert_eq!(at, 100 + 200_000 + 1);
        assert_eq!(s.turn(&1, at), Turn::Go, "2's write passed the bound");
        // It ends at 250 ms: slow, and still not waited for.
        s.end(&2, CHUNK, 250_100);
        assert!(s.flows[&2].slow);
        let mut t = 250_100;
        for _ in 0..12 {
            write(&mut s, 1, t, 100);
            t += 100;
        }
        assert!(s.flows[&1].done > s.flows[&2].done + 2 * MIB);
        // A quick write brings it back, level with 1.
        write(&mut s, 2, t, 100);
        assert!(!s.flows[&2].slow);
        assert!(s.flows[&2].done + CHUNK >= s.flows[&1].done);
    }

    #[test]
    fn paused_and_idle_streams_are_not_waited_for_and_come_back_level() {
        let mut s = share();
        s.join(1, 0);
        s.join(2, 0);
        s.join(3, 0);
        let mut t = 0;
        write(&mut s, 2, t, 100);
        write(&mut s, 3, t, 100);
        // 2 waits for credit; 3 just goes quiet.
        s.pause(&2, t);
        assert!(s.flows[&2].paused);
        t += 100;
        let quiet = t;
        while t < quiet + FairConfig::default().idle_after_us {
            if s.turn(&1, t) == Turn::Go {
                s.begin(&1, CHUNK, t);
                s.end(&1, CHUNK, t + 100);
            }
            t += 100;
        }
        t += 1;
        for _ in 0..20 {
            write(&mut s, 1, t, 100);
            t += 100;
        }
        assert!(s.flows[&1].done > 4 * MIB);
        // Back: level with the slowest competing stream (1).
        assert_eq!(s.turn(&2, t), Turn::Go);
        assert_eq!(s.flows[&2].done, s.flows[&1].done);
        assert_eq!(s.turn(&3, t), Turn::Go);
        assert_eq!(s.flows[&3].done, s.flows[&1].done);
    }

    #[test]
    fn a_stream_that_leaves_releases_the_others() {
        let mut s = share();
        s.join(1, 0);
        s.join(2, 0);
        let t = run_ahead(&mut s, 1, 0);
        assert_eq!(s.leave(&2, t), vec![1], "the one holding 1 left: wake 1");
        assert_eq!(s.turn(&1, t), Turn::Go);
        assert!(s.leave(&2, t).is_empty());
        assert_eq!(s.len(), 1);
    }
}
