//! How many streams a provider serves at once: in total, and per peer, so
//! that one buyer cannot take every slot. A request over a cap is refused
//! `busy`; refusals themselves are bounded too (past that, the stream is
//! dropped unanswered).

use libp2p_identity::PeerId;
use std::collections::HashMap;

/// The caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotLimits {
    /// Streams served at once, all peers together.
    pub max_streams: usize,
    /// Streams served at once to one peer.
    pub max_per_peer: usize,
    /// Busy refusals being written at once (each reads one small request).
    pub max_refusals: usize,
}

impl Default for SlotLimits {
    fn default() -> Self {
        Self {
            max_streams: 1024,
            max_per_peer: 16,
            max_refusals: 64,
        }
    }
}

/// What to do with a new inbound stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Serve it (a slot is taken: release it with [`Slots::release`]).
    Serve,
    /// Read its request and refuse it `busy` (a refusal slot is taken:
    /// release it with [`Slots::refused`]); `peer_cap` says which cap.
    Refuse {
        /// The per-peer cap, rather than the total one, is reached.
        peer_cap: bool,
    },
    /// Drop it unanswered: even refusals are at their cap.
    Drop,
}

/// Slots in use.
#[derive(Debug, Default)]
pub struct Slots {
    limits: SlotLimits,
    serving: usize,
    refusing: usize,
    per_peer: HashMap<PeerId, usize>,
}

impl Slots {
    /// No slot in use.
    pub fn new(limits: SlotLimits) -> Self {
        Self {
            limits,
            ..Default::default()
        }
    }

    /// A stream from `peer` arrived: serve, refuse or drop it.
    pub fn admit(&mut self, peer: PeerId) -> Admit {
        let mine = self.per_peer.get(&peer).copied().unwrap_or(0);
        let peer_cap = mine >= self.limits.max_per_peer;
        if !peer_cap && self.serving < self.limits.max_streams {
            self.serving += 1;
            *self.per_peer.entry(peer).or_default() += 1;
            return Admit::Serve;
        }
        if self.refusing < self.limits.max_refusals {
            self.refusing += 1;
            return Admit::Refuse { peer_cap };
        }
        Admit::Drop
    }

    /// A served stream of `peer` ended.
    pub fn release(&mut self, peer: PeerId) {
        self.serving = self.serving.saturating_sub(1);
        if let Some(n) = self.per_peer.get_mut(&peer) {
            *n -= 1;
            if *n == 0 {
                self.per_peer.remove(&peer);
            }
        }
    }

    /// A refusal was written (or given up).
    pub fn refused(&mut self) {
        self.refusing = self.refusing.saturating_sub(1);
    }

    /// Streams being served.
    pub fn serving(&self) -> usize {
        self.serving
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_peer_cannot_take_every_slot_and_refusals_are_bounded() {
        let (greedy, other) = (PeerId::random(), PeerId::random());
        let mut s = Slots::new(SlotLimits {
            max_streams: 3,
            max_per_peer: 2,
            max_refusals: 1,
        });
        assert_eq!(s.admit(greedy), Admit::Serve);
        assert_eq!(s.admit(greedy), Admit::Serve);
        assert_eq!(s.admit(greedy), Admit::Refuse { peer_cap: true });
        assert_eq!(s.admit(greedy), Admit::Drop, "one refusal at a time");
        s.refused();
        assert_eq!(
            s.admit(other),
            Admit::Serve,
            "another peer still gets the last slot"
        );
        assert_eq!(s.admit(other), Admit::Refuse { peer_cap: false });
        s.refused();
        s.release(greedy);
        assert_eq!(s.serving(), 2);
        assert_eq!(s.admit(greedy), Admit::Serve);
        for _ in 0..3 {
            s.release(greedy);
            s.release(other);
        }
        assert_eq!(s.serving(), 0);
        assert!(s.per_peer.is_empty(), "no memory of peers that left");
    }
}
