//! The observer's side of consensus: dial-backs in flight.
//!
//! An asker that wants a dial-back waits for its answer while the observer
//! dials the address it saw. Each probe is held until its connection is up
//! (reachable), fails or times out (unreachable). Strangers can ask, and a
//! few bytes of request make the observer dial and hold a socket, so probes
//! are capped: in total at once, and to one per asker and one per target IP
//! per interval. An ask over a cap is answered at once without a dial-back.

use crate::Machine;
use libp2p_identity::PeerId;
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The bounds of the dial-back table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DialBackLimits {
    /// Probes in flight at once.
    pub max_concurrent: usize,
    /// Each probe's time to connect.
    pub timeout: Duration,
    /// One probe per asker and per target IP in this long.
    pub interval: Duration,
    /// Askers and IPs remembered for the interval; past it, no probe.
    pub max_tracked: usize,
}

impl Default for DialBackLimits {
    fn default() -> Self {
        Self {
            max_concurrent: 64,
            timeout: Duration::from_secs(5),
            interval: Duration::from_secs(30),
            max_tracked: 4_096,
        }
    }
}

/// Why no probe was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoProbe {
    /// As many probes as allowed are in flight.
    Busy,
    /// This asker, or this IP, was probed within the interval.
    TooSoon,
}

/// Recent probes by key, oldest first, for the per-interval limit.
#[derive(Debug)]
struct Recent<K> {
    at: HashMap<K, Instant>,
    order: VecDeque<(Instant, K)>,
}

impl<K: Copy + Eq + std::hash::Hash> Recent<K> {
    fn new() -> Self {
        Self {
            at: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Forgets what happened at or before `t`.
    fn forget_through(&mut self, t: Instant) {
        while let Some(&(when, key)) = self.order.front() {
            if when > t {
                break;
            }
            self.order.pop_front();
            if self.at.get(&key) == Some(&when) {
                self.at.remove(&key);
            }
        }
    }

    fn contains(&self, key: &K) -> bool {
        self.at.contains_key(key)
    }

    fn insert(&mut self, now: Instant, key: K) {
        self.at.insert(key, now);
        self.order.push_back((now, key));
    }
}

/// What a dial-back found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialBackAnswer {
    /// The probe connected.
    Reachable,
    /// The probe failed or timed out.
    Unreachable,
}

#[derive(Debug)]
struct Probe<C, R> {
    id: C,
    deadline: Instant,
    reply: R,
}

/// Probes in flight, keyed by the probe's connection id `C`; `R` is whatever
/// the owner needs to answer the asker (a response channel).
#[derive(Debug)]
pub struct DialBacks<C, R> {
    probes: VecDeque<Probe<C, R>>,
    limits: DialBackLimits,
    peers: Recent<PeerId>,
    ips: Recent<IpAddr>,
    /// Probes that timed out, to be answered unreachable.
    late: VecDeque<(C, R)>,
}

impl<C: Copy + Eq, R> DialBacks<C, R> {
    /// An empty table with `limits`.
    pub fn new(limits: DialBackLimits) -> Self {
        Self {
            probes: VecDeque::new(),
            limits,
            peers: Recent::new(),
            ips: Recent::new(),
            late: VecDeque::new(),
        }
    }

    /// Starts a probe `id` of `ip` for `peer`; gives `reply` back, with the
    /// reason, when a cap forbids it (answer without a dial-back).
    pub fn start(
        &mut self,
        now: Instant,
        id: C,
        peer: PeerId,
        ip: IpAddr,
        reply: R,
    ) -> Result<(), (R, NoProbe)> {
        if let Some(t) = now.checked_sub(self.limits.interval) {
            self.peers.forget_through(t);
            self.ips.forget_through(t);
        }
        if self.probes.len() >= self.limits.max_concurrent
            || self.peers.at.len() >= self.limits.max_tracked
            || self.ips.at.len() >= self.limits.max_tracked
        {
            return Err((reply, NoProbe::Busy));
        }
        if self.peers.contains(&peer) || self.ips.contains(&ip) {
            return Err((reply, NoProbe::TooSoon));
        }
        self.peers.insert(now, peer);
        self.ips.insert(now, ip);
        // Deadlines grow with `now`, so the queue stays ordered by them.
        self.probes.push_back(Probe {
            id,
            // A timeout too long to add is as good as none.
            deadline: now
                .checked_add(self.limits.timeout)
                .unwrap_or(now + Duration::from_secs(86_400 * 365)),
            reply,
        });
        Ok(())
    }

    /// Whether `id` is one of our probes.
    pub fn is_probe(&self, id: C) -> bool {
        self.probes.iter().any(|p| p.id == id)
    }

    /// Probe `id` connected (`reachable`) or failed; the reply to answer with.
    pub fn finish(&mut self, id: C, reachable: bool) -> Option<(R, DialBackAnswer)> {
        let pos = self.probes.iter().position(|p| p.id == id)?;
        let probe = self.probes.remove(pos)?;
        let answer = if reachable {
            DialBackAnswer::Reachable
        } else {
            DialBackAnswer::Unreachable
        };
        Some((probe.reply, answer))
    }

    /// Probes in flight.
    pub fn len(&self) -> usize {
        self.probes.len()
    }

    /// Whether no probe is in flight.
    pub fn is_empty(&self) -> bool {
        self.probes.is_empty()
    }
}

/// Its actions are the probes that timed out: `(probe id, reply)`, each to
/// be answered unreachable.
impl<C: Copy + Eq, R> Machine for DialBacks<C, R> {
    type Action = (C, R);

    fn poll_action(&mut self) -> Option<(C, R)> {
        self.late.pop_front()
    }

    /// When the oldest probe times out.
    fn poll_timeout(&self) -> Option<Instant> {
        self.probes.front().map(|p| p.deadline)
    }

    fn handle_timeout(&mut self, now: Instant) {
        while self.probes.front().is_some_and(|p| p.deadline <= now) {
            let p = self.probes.pop_front().expect("front exists");
            self.late.push_back((p.id, p.reply));
        }
    }
}
