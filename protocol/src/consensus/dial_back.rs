//! The observer's side of consensus: dial-backs in flight.
//!
//! An asker that wants a dial-back waits for its answer while the observer
//! dials the address it saw. Each probe is held until its connection is up
//! (reachable), fails or times out (unreachable). Strangers can ask, so the
//! table is capped in total and to one probe per asker; an ask over the cap
//! is answered at once without a dial-back.

use libp2p_identity::PeerId;
use std::collections::VecDeque;

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
    peer: PeerId,
    deadline_ms: u64,
    reply: R,
}

/// Probes in flight, keyed by the probe's connection id `C`; `R` is whatever
/// the owner needs to answer the asker (a response channel).
#[derive(Debug)]
pub struct DialBacks<C, R> {
    probes: VecDeque<Probe<C, R>>,
    max: usize,
    timeout_ms: u64,
}

impl<C: Copy + Eq, R> DialBacks<C, R> {
    /// At most `max` probes at once, each given `timeout_ms`.
    pub fn new(max: usize, timeout_ms: u64) -> Self {
        Self {
            probes: VecDeque::new(),
            max,
            timeout_ms,
        }
    }

    /// Starts a probe `id` for `peer`; gives `reply` back when the table is
    /// full or `peer` already has one in flight (answer without dial-back).
    pub fn start(&mut self, now_ms: u64, id: C, peer: PeerId, reply: R) -> Result<(), R> {
        if self.probes.len() >= self.max || self.probes.iter().any(|p| p.peer == peer) {
            return Err(reply);
        }
        // Deadlines grow with `now_ms`, so the queue stays ordered by them.
        self.probes.push_back(Probe {
            id,
            peer,
            deadline_ms: now_ms.saturating_add(self.timeout_ms),
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

    /// Probes that timed out by `now_ms`: answer each as unreachable.
    pub fn handle_timeout(&mut self, now_ms: u64) -> Vec<(C, R)> {
        let mut late = vec![];
        while self.probes.front().is_some_and(|p| p.deadline_ms <= now_ms) {
            let p = self.probes.pop_front().expect("front exists");
            late.push((p.id, p.reply));
        }
        late
    }

    /// When the oldest probe times out.
    pub fn poll_timeout(&self) -> Option<u64> {
        self.probes.front().map(|p| p.deadline_ms)
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
