//! A bounded replay cache of `(sender, nonce)` pairs.
//!
//! An entry lives until the envelope it came from expires; after that the
//! freshness check alone rejects a replay. When the cache is full of live
//! entries it refuses new envelopes rather than forgetting a live nonce: failing
//! closed keeps replays out, and the sender can retry once entries expire.

use std::collections::{BTreeSet, HashMap};

/// Key of a cache entry: the sender's PeerId bytes and the nonce.
type Key = (Vec<u8>, [u8; 16]);

/// Outcome of [`ReplayCache::check_and_insert`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayVerdict {
    /// Never seen: recorded now.
    Fresh,
    /// Seen before and still live.
    Replayed,
    /// The cache is full of live entries.
    Full,
}

/// Remembers nonces until their envelopes expire, holding at most `capacity`.
#[derive(Debug)]
pub struct ReplayCache {
    capacity: usize,
    entries: HashMap<Key, u64>,
    by_expiry: BTreeSet<(u64, Key)>,
}

impl ReplayCache {
    /// A cache holding at most `capacity` live nonces.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            entries: HashMap::new(),
            by_expiry: BTreeSet::new(),
        }
    }

    /// Number of live entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Drops entries whose envelopes expired before `now_ms`.
    pub fn evict_expired(&mut self, now_ms: u64) {
        while let Some((exp, _)) = self.by_expiry.first() {
            if *exp >= now_ms {
                break;
            }
            let (_, key) = self.by_expiry.pop_first().expect("non-empty");
            self.entries.remove(&key);
        }
    }

    /// Records `(sender, nonce)` valid until `expires_ms`, unless already present.
    pub fn check_and_insert(
        &mut self,
        sender: &[u8],
        nonce: [u8; 16],
        expires_ms: u64,
        now_ms: u64,
    ) -> ReplayVerdict {
        self.evict_expired(now_ms);
        let key = (sender.to_vec(), nonce);
        if self.entries.contains_key(&key) {
            return ReplayVerdict::Replayed;
        }
        if self.entries.len() >= self.capacity {
            return ReplayVerdict::Full;
        }
        self.entries.insert(key.clone(), expires_ms);
        self.by_expiry.insert((expires_ms, key));
        ReplayVerdict::Fresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_sighting_is_a_replay_until_expiry() {
        let mut c = ReplayCache::new(8);
        assert_eq!(
            c.check_and_insert(b"a", [1; 16], 100, 0),
            ReplayVerdict::Fresh
        );
        assert_eq!(
            c.check_and_insert(b"a", [1; 16], 100, 50),
            ReplayVerdict::Replayed
        );
        assert_eq!(
            c.check_and_insert(b"b", [1; 16], 100, 50),
            ReplayVerdict::Fresh
        );
        c.evict_expired(101);
        assert!(c.is_empty());
    }

    #[test]
    fn full_cache_fails_closed_then_recovers() {
        let mut c = ReplayCache::new(2);
        assert_eq!(
            c.check_and_insert(b"a", [1; 16], 10, 0),
            ReplayVerdict::Fresh
        );
        assert_eq!(
            c.check_and_insert(b"a", [2; 16], 20, 0),
            ReplayVerdict::Fresh
        );
        assert_eq!(
            c.check_and_insert(b"a", [3; 16], 30, 0),
            ReplayVerdict::Full
        );
        assert_eq!(
            c.check_and_insert(b"a", [3; 16], 30, 11),
            ReplayVerdict::Fresh
        );
        assert_eq!(c.len(), 2);
    }
}
