//! Requests posted and not yet answered: which nonce went to which peer and
//! until when an answer is awaited. A response counts only when it answers a
//! pending nonce and comes from the peer that nonce was sent to.

use libp2p_identity::PeerId;
use std::collections::{BTreeSet, HashMap};

/// Requests awaited at most at once.
pub const MAX_PENDING: usize = 4096;

/// Why a request cannot be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutboxError {
    /// Too many requests are awaited already.
    #[error("{MAX_PENDING} requests are already awaiting an answer")]
    Full,
    /// The nonce is in use (never happens with random nonces).
    #[error("nonce already pending")]
    Duplicate,
}

/// The pending requests.
#[derive(Debug, Default)]
pub struct Outbox {
    pending: HashMap<[u8; 16], (PeerId, u64)>,
    by_deadline: BTreeSet<(u64, [u8; 16])>,
}

impl Outbox {
    /// An empty outbox.
    pub fn new() -> Self {
        Self::default()
    }

    /// A request with `nonce` was posted to `peer`; an answer is awaited
    /// until `deadline_ms`.
    pub fn register(
        &mut self,
        nonce: [u8; 16],
        peer: PeerId,
        deadline_ms: u64,
    ) -> Result<(), OutboxError> {
        if self.pending.contains_key(&nonce) {
            return Err(OutboxError::Duplicate);
        }
        if self.pending.len() >= MAX_PENDING {
            return Err(OutboxError::Full);
        }
        self.pending.insert(nonce, (peer, deadline_ms));
        self.by_deadline.insert((deadline_ms, nonce));
        Ok(())
    }

    /// A response from `sender` answering `nonce` arrived at `now_ms`: true
    /// (and the request is settled) when it is the awaited answer.
    pub fn handle_response(&mut self, now_ms: u64, sender: &PeerId, nonce: &[u8; 16]) -> bool {
        match self.pending.get(nonce) {
            Some((peer, deadline)) if peer == sender && now_ms < *deadline => {
                let deadline = *deadline;
                self.pending.remove(nonce);
                self.by_deadline.remove(&(deadline, *nonce));
                true
            }
            _ => false,
        }
    }

    /// Gives up on a request (its waiter went away).
    pub fn cancel(&mut self, nonce: &[u8; 16]) {
        if let Some((_, deadline)) = self.pending.remove(nonce) {
            self.by_deadline.remove(&(deadline, *nonce));
        }
    }

    /// Requests whose deadline passed, removed: nonce and peer.
    pub fn handle_timeout(&mut self, now_ms: u64) -> Vec<([u8; 16], PeerId)> {
        let mut out = Vec::new();
        while let Some((deadline, nonce)) = self.by_deadline.first().copied() {
            if deadline > now_ms {
                break;
            }
            self.by_deadline.pop_first();
            if let Some((peer, _)) = self.pending.remove(&nonce) {
                out.push((nonce, peer));
            }
        }
        out
    }

    /// The earliest deadline.
    pub fn poll_timeout(&self) -> Option<u64> {
        self.by_deadline.first().map(|(d, _)| *d)
    }

    /// Requests awaited.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether nothing is awaited.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> PeerId {
        libp2p_identity::Keypair::generate_ed25519()
            .public()
            .to_peer_id()
    }

    #[test]
    fn only_the_asked_peer_answers_and_only_once_and_in_time() {
        let mut o = Outbox::new();
        let (a, b) = (peer(), peer());
        o.register([1; 16], a, 1_000).unwrap();
        o.register([2; 16], b, 2_000).unwrap();
        assert!(
            !o.handle_response(10, &b, &[1; 16]),
            "another peer cannot answer for a"
        );
        assert!(!o.handle_response(10, &a, &[9; 16]), "unknown nonce");
        assert!(o.handle_response(10, &a, &[1; 16]));
        assert!(
            !o.handle_response(11, &a, &[1; 16]),
            "a replayed answer is ignored"
        );
        assert_eq!(o.poll_timeout(), Some(2_000));
        assert!(!o.handle_response(2_000, &b, &[2; 16]), "too late");
        assert_eq!(o.handle_timeout(2_000), vec![([2; 16], b)]);
        assert!(o.is_empty());
        assert_eq!(o.poll_timeout(), None);
    }

    #[test]
    fn pending_requests_are_bounded() {
        let mut o = Outbox::new();
        let p = peer();
        for i in 0..MAX_PENDING {
            let mut n = [0u8; 16];
            n[..8].copy_from_slice(&(i as u64).to_be_bytes());
            o.register(n, p, 5).unwrap();
        }
        assert_eq!(o.register([0xff; 16], p, 5), Err(OutboxError::Full));
        assert_eq!(o.register([0; 16], p, 5), Err(OutboxError::Duplicate));
        o.cancel(&[0; 16]);
        assert_eq!(o.len(), MAX_PENDING - 1);
        assert_eq!(o.handle_timeout(5).len(), MAX_PENDING - 1);
    }
}
