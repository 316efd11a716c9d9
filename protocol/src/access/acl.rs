//! Access-control entries an operator writes by hand (sales off the ledger,
//! friends): peer or `*`, streams or `*`, an optional expiry.

use libp2p_identity::PeerId;
use std::collections::BTreeSet;

/// Which peers an entry covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerMatch {
    /// Every peer (`*`).
    Any,
    /// One peer.
    Peer(PeerId),
}

/// Which streams an entry covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamMatch {
    /// Every stream (`*`).
    Any,
    /// These names.
    Names(BTreeSet<String>),
}

impl StreamMatch {
    /// Whether `stream` is covered.
    pub fn covers(&self, stream: &str) -> bool {
        match self {
            StreamMatch::Any => true,
            StreamMatch::Names(n) => n.contains(stream),
        }
    }
}

/// One entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclEntry {
    /// Who.
    pub peer: PeerMatch,
    /// What.
    pub streams: StreamMatch,
    /// Until when (unix ms); `None`: no end.
    pub expires_ms: Option<u64>,
}

impl AclEntry {
    /// Whether this entry lets `peer` fetch `stream` at `now_ms`.
    pub fn allows(&self, now_ms: u64, peer: &PeerId, stream: &str) -> bool {
        let who = match &self.peer {
            PeerMatch::Any => true,
            PeerMatch::Peer(p) => p == peer,
        };
        who && self.streams.covers(stream) && self.expires_ms.is_none_or(|e| now_ms < e)
    }
}

/// A whole ACL: access is the union of its entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acl {
    /// The entries, in file order.
    pub entries: Vec<AclEntry>,
}

impl Acl {
    /// An ACL that lets everyone fetch everything (benchmarks, open data).
    pub fn open() -> Self {
        Self {
            entries: vec![AclEntry {
                peer: PeerMatch::Any,
                streams: StreamMatch::Any,
                expires_ms: None,
            }],
        }
    }

    /// The latest end among entries allowing `peer` to fetch `stream` now:
    /// `None` when none allows it, `Some(None)` when one never ends.
    pub fn allowed_until(&self, now_ms: u64, peer: &PeerId, stream: &str) -> Option<Option<u64>> {
        let mut best: Option<Option<u64>> = None;
        for e in self
            .entries
            .iter()
            .filter(|e| e.allows(now_ms, peer, stream))
        {
            best = Some(match (best, e.expires_ms) {
                (Some(None), _) | (_, None) => None,
                (Some(Some(a)), Some(b)) => Some(a.max(b)),
                (None, Some(b)) => Some(b),
            });
        }
        best
    }

    /// The earliest future expiry of any entry (when access may change by itself).
    pub fn next_expiry(&self, now_ms: u64) -> Option<u64> {
        self.entries
            .iter()
            .filter_map(|e| e.expires_ms)
            .filter(|e| *e > now_ms)
            .min()
    }
}
