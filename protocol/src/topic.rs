//! Ledger topics: 32-byte identifiers derived from a domain string.

use libp2p_identity::PeerId;
use sha2::{Digest, Sha256};
use std::fmt;

/// Domain string of a peer's `stdin` topic. Changing it moves every inbox.
pub const STDIN_DOMAIN: &[u8] = b"ledgermesh/stdin/v1";

/// A 32-byte ledger topic.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Topic(pub [u8; 32]);

impl Topic {
    /// The `stdin` topic of `peer`: SHA-256 of [`STDIN_DOMAIN`] followed by the PeerId bytes.
    pub fn stdin(peer: &PeerId) -> Self {
        let mut h = Sha256::new();
        h.update(STDIN_DOMAIN);
        h.update(peer.to_bytes());
        Topic(h.finalize().into())
    }

    /// Lower-case hex, as shown in events and logs.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Debug for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Topic({})", self.to_hex())
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdin_topics_differ_per_peer_and_are_stable() {
        let a = PeerId::random();
        let b = PeerId::random();
        assert_eq!(Topic::stdin(&a), Topic::stdin(&a));
        assert_ne!(Topic::stdin(&a), Topic::stdin(&b));
        assert_eq!(Topic::stdin(&a).to_hex().len(), 64);
    }
}
