//! A bounded replay cache of `(sender, nonce)` pairs.
//!
//! An entry lives until the envelope it came from expires; after that the
//! freshness check alone rejects a replay. Two bounds keep strangers from
//! locking genuine senders out:
//! - a **per-sender quota**: a sender with that many live nonces is refused
//!   until some expire (a flood from one key stops at the quota);
//! - when the cache is **full**, the **heaviest sender** (most live nonces)
//!   loses its soonest-expiring nonce to make room, in O(log n). A flood from many throwaway keys
//!   therefore evicts its own entries before a light genuine sender's, and a
//!   genuine envelope is always accepted. What an evicted nonce costs: that
//!   envelope, already handled once, could be replayed and handled again
//!   (a request answered twice) — never a forged one.

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
    /// This sender already has its quota of live nonces.
    OverQuota,
}

/// Remembers nonces until their envelopes expire, holding at most
/// `capacity`, at most `quota` per sender.
#[derive(Debug)]
pub struct ReplayCache {
    capacity: usize,
    quota: usize,
    entries: HashMap<Key, u64>,
    by_expiry: BTreeSet<(u64, Key)>,
    /// Live nonces per sender by expiry, and the senders ordered by count.
    per_sender: HashMap<Vec<u8>, BTreeSet<(u64, [u8; 16])>>,
    by_count: BTreeSet<(usize, Vec<u8>)>,
}

impl ReplayCache {
    /// A cache holding at most `capacity` live nonces, `quota` per sender.
    pub fn new(capacity: usize, quota: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            quota: quota.max(1),
            entries: HashMap::new(),
            by_expiry: BTreeSet::new(),
            per_sender: HashMap::new(),
            by_count: BTreeSet::new(),
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

    fn count(&self, sender: &[u8]) -> usize {
        self.per_sender.get(sender).map_or(0, BTreeSet::len)
    }

    /// Adds or removes `(expires_ms, nonce)` of `sender`, keeping the
    /// count order up to date.
    fn track(&mut self, sender: &[u8], expires_ms: u64, nonce: [u8; 16], add: bool) {
        let before = self.count(sender);
        if before > 0 {
            self.by_count.remove(&(before, sender.to_vec()));
        }
        let set = self.per_sender.entry(sender.to_vec()).or_default();
        if add {
            set.insert((expires_ms, nonce));
        } else {
            set.remove(&(expires_ms, nonce));
        }
        let after = set.len();
        if after == 0 {
            self.per_sender.remove(sender);
        } else {
            self.by_count.insert((after, sender.to_vec()));
        }
    }

    fn remove(&mut self, key: &Key) {
        if let Some(exp) = self.entries.remove(key) {
            self.by_expiry.remove(&(exp, key.clone()));
            self.track(&key.0, exp, key.1, false);
        }
    }

    /// Drops entries whose envelopes expired before `now_ms`.
    pub fn evict_expired(&mut self, now_ms: u64) {
        while let Some((exp, key)) = self.by_expiry.first().cloned() {
            if exp >= now_ms {
                break;
            }
            self.remove(&key);
        }
    }

    /// Makes room: the heaviest sender's soonest-expiring nonce goes.
    fn evict_heaviest(&mut self) {
        let Some((_, sender)) = self.by_count.last().cloned() else {
            return;
        };
        let first = self
            .per_sender
            .get(&sender)
            .and_then(|s| s.first())
            .copied();
        if let Some((_, nonce)) = first {
            self.remove(&(sender, nonce));
        }
    }

    /// Records `(sender, nonce)` valid until `expires_ms`, unless already
    /// present or over the sender's quota.
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
        if self.count(sender) >= self.quota {
            return ReplayVerdict::OverQuota;
        }
        if self.entries.len() >= self.capacity {
            self.evict_heaviest();
        }
        self.entries.insert(key.clone(), expires_ms);
        self.by_expiry.insert((expires_ms, key));
        self.track(sender, expires_ms, nonce, true);
        ReplayVerdict::Fresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_sighting_is_a_replay_until_expiry() {
        let mut c = ReplayCache::new(8, 8);
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
    fn a_sender_over_its_quota_is_refused_until_its_nonces_expire() {
        let mut c = ReplayCache::new(100, 2);
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
            ReplayVerdict::OverQuota
        );
        assert_eq!(
            c.check_and_insert(b"b", [3; 16], 30, 0),
            ReplayVerdict::Fresh
        );
        assert_eq!(
            c.check_and_insert(b"a", [3; 16], 30, 11),
            ReplayVerdict::Fresh
        );
    }

    #[test]
    fn a_flood_of_throwaway_keys_never_locks_out_a_genuine_sender() {
        // Full of one-nonce senders; the genuine one arrives last.
        let mut c = ReplayCache::new(1_000, 4);
        for i in 0..5_000u32 {
            let key = i.to_be_bytes();
            assert_eq!(
                c.check_and_insert(&key, [0; 16], 60_000, 0),
                ReplayVerdict::Fresh
            );
        }
        assert_eq!(c.len(), 1_000);
        assert_eq!(
            c.check_and_insert(b"genuine", [9; 16], 60_000, 1),
            ReplayVerdict::Fresh
        );
        // Still a replay, not room for it twice.
        assert_eq!(
            c.check_and_insert(b"genuine", [9; 16], 60_000, 2),
            ReplayVerdict::Replayed
        );
        // A heavy flooder loses its entries before a light sender does.
        let mut c = ReplayCache::new(10, 8);
        for n in 0..8u8 {
            c.check_and_insert(b"heavy", [n; 16], 1_000 + n as u64, 0);
        }
        c.check_and_insert(b"light", [1; 16], 500, 0);
        c.check_and_insert(b"light2", [1; 16], 500, 0);
        assert_eq!(
            c.check_and_insert(b"new", [1; 16], 900, 0),
            ReplayVerdict::Fresh
        );
        assert_eq!(
            c.check_and_insert(b"light", [1; 16], 500, 0),
            ReplayVerdict::Replayed,
            "kept"
        );
        assert_eq!(c.count(b"heavy"), 7);
    }
}
