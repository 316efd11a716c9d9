//! Who may fetch what, decided without I/O.
//!
//! A provider serves a stream only to a peer that holds a grant for it (issued
//! when a verified service request is accepted, for the period it hired,
//! capped, renewed by a later request) or that an ACL entry allows. Every
//! decision leaves an [`AuditRecord`] for the node to write.
//!
//! The machine follows the crate's contract: inputs come with `now` (unix
//! ms), [`AccessControl::poll_timeout`] says when to call
//! [`AccessControl::handle_timeout`] next, and records are drained with
//! [`AccessControl::poll_audit`].

mod acl;
mod audit;

pub use acl::{Acl, AclEntry, PeerMatch, StreamMatch};
pub use audit::{AuditKind, AuditRecord, AUDIT_NAME_BYTES};

use crate::signal::RejectReason;
use libp2p_identity::PeerId;
use std::collections::{BTreeSet, HashMap, VecDeque};

/// Default cap on a grant's length, in seconds.
pub const DEFAULT_MAX_GRANT_SECS: u64 = 3600;
/// Live grants held at most; further requests are refused `busy`.
pub const MAX_GRANTS: usize = 65_536;
/// Expired grants remembered (so a returning peer hears `grant_expired`, not
/// `not_allowed`), at most, and for how long.
pub const MAX_EXPIRED: usize = 65_536;
/// How long an expired grant is remembered, in ms.
pub const EXPIRED_MEMORY_MS: u64 = 3_600_000;
/// Audit records queued at most between two drains; older ones are dropped
/// and counted.
pub const MAX_QUEUED_AUDIT: usize = 16_384;
/// Live grants one sender key holds at most; a new one replaces its
/// soonest-ending one.
pub const MAX_GRANTS_PER_PEER: usize = 64;
/// Refusals of one peer audited one by one in a minute; the rest are
/// counted and audited as one summary.
pub const REFUSALS_AUDITED_PER_MINUTE: u32 = 8;
/// Peers whose refusals are counted at once (a flood of identities is
/// summarised as one).
const MAX_REFUSAL_COUNTERS: usize = 4_096;

/// Why access was denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// No grant and no ACL entry covers the peer and stream.
    NotAllowed,
    /// The peer held a grant for the stream and it ran out.
    GrantExpired,
}

impl Denial {
    /// The wire reason.
    pub fn reason(self) -> RejectReason {
        match self {
            Denial::NotAllowed => RejectReason::NotAllowed,
            Denial::GrantExpired => RejectReason::GrantExpired,
        }
    }

    /// What the refused peer is told: nothing about the catalog.
    pub fn detail(self) -> &'static str {
        match self {
            Denial::NotAllowed => "no grant for this stream: post a service request first",
            Denial::GrantExpired => {
                "the grant for this stream expired: post a new service request to renew it"
            }
        }
    }
}

/// Access was allowed, until when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowed {
    /// Unix ms at which access ends; `None`: no end (an ACL entry without expiry).
    pub until_ms: Option<u64>,
}

/// What became of one stream named in a service request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestVerdict {
    /// Granted until `expires_ms`; `renewed` when it extended a live grant.
    Granted {
        /// Stream name.
        stream: String,
        /// Unix ms.
        expires_ms: u64,
        /// An existing grant was extended.
        renewed: bool,
    },
    /// The provider has no such stream.
    Unknown(String),
    /// The grant table is full.
    Full(String),
}

type Key = (PeerId, String);

/// The access state of a provider.
#[derive(Debug)]
pub struct AccessControl {
    max_grant_ms: u64,
    /// Live grants and their end; `by_expiry` indexes the same set by end.
    grants: HashMap<Key, u64>,
    by_expiry: BTreeSet<(u64, Key)>,
    /// Expired grants and when they ended; `expired_order` by that time (a
    /// queue entry whose time no longer matches the map is stale).
    expired: HashMap<Key, u64>,
    expired_order: VecDeque<(u64, Key)>,
    acl: Acl,
    audit: VecDeque<AuditRecord>,
    dropped_audit: u64,
    /// Each peer's live grants, by end (to cap them per sender key).
    by_peer: HashMap<PeerId, BTreeSet<(u64, String)>>,
    /// The minute refusals are counted in, and each peer's count in it.
    refusal_minute: u64,
    refusals: HashMap<PeerId, u32>,
    /// Refusals of peers past the counters' bound, this minute.
    refusals_unattributed: u32,
}

impl AccessControl {
    /// A machine capping grants at `max_grant_secs`, with an empty ACL.
    pub fn new(max_grant_secs: u64) -> Self {
        Self {
            max_grant_ms: max_grant_secs.max(1).saturating_mul(1000),
            grants: HashMap::new(),
            by_expiry: BTreeSet::new(),
            expired: HashMap::new(),
            expired_order: VecDeque::new(),
            acl: Acl::default(),
            audit: VecDeque::new(),
            dropped_audit: 0,
            by_peer: HashMap::new(),
            refusal_minute: 0,
            refusals: HashMap::new(),
            refusals_unattributed: 0,
        }
    }

    fn insert_grant(&mut self, key: Key, until: u64) {
        if let Some(old) = self.grants.insert(key.clone(), until) {
            self.by_expiry.remove(&(old, key.clone()));
            if let Some(set) = self.by_peer.get_mut(&key.0) {
                set.remove(&(old, key.1.clone()));
            }
        }
        self.by_expiry.insert((until, key.clone()));
        (self.by_peer.entry(key.0).or_default()).insert((until, key.1));
    }

    fn remove_grant(&mut self, key: &Key) -> Option<u64> {
        let until = self.grants.remove(key)?;
        self.by_expiry.remove(&(until, key.clone()));
        if let Some(set) = self.by_peer.get_mut(&key.0) {
            set.remove(&(until, key.1.clone()));
            if set.is_empty() {
                self.by_peer.remove(&key.0);
            }
        }
        Some(until)
    }

    /// Whether the ACL names `peer` itself.
    fn acl_names(&self, peer: &PeerId) -> bool {
        (self.acl.entries.iter()).any(|e| matches!(&e.peer, acl::PeerMatch::Peer(p) if p == peer))
    }

    /// Makes room for one grant of `peer`: its own soonest-ending grant
    /// when it holds [`MAX_GRANTS_PER_PEER`], else, with the table full, the
    /// soonest-ending grant of a peer the ACL does not name. `false` when
    /// there is no room to make.
    fn make_room(&mut self, now_ms: u64, peer: PeerId) -> bool {
        let own = self.by_peer.get(&peer).map_or(0, BTreeSet::len);
        let victim = if own >= MAX_GRANTS_PER_PEER {
            self.by_peer[&peer].first().map(|(_, s)| (peer, s.clone()))
        } else if self.grants.len() >= MAX_GRANTS {
            (self.by_expiry.iter())
                .find(|(_, k)| !self.acl_names(&k.0))
                .map(|(_, k)| k.clone())
        } else {
            return true;
        };
        let Some(key) = victim else {
            return false;
        };
        let until = self.remove_grant(&key);
        let mut r = AuditRecord::new(now_ms, AuditKind::Expire)
            .about(key.0, &key.1)
            .reason("grant_replaced");
        r.expires_ms = until;
        self.record(r);
        true
    }

    fn record(&mut self, r: AuditRecord) {
        if r.kind == AuditKind::Refuse {
            if let Some(peer) = r.peer {
                if !self.count_refusal(r.ts_ms, peer) {
                    return;
                }
            }
        }
        self.push_audit(r);
    }

    /// Counts a refusal of `peer`: `false` when it is past the minute's
    /// allowance (summarised when the minute ends).
    fn count_refusal(&mut self, now_ms: u64, peer: PeerId) -> bool {
        self.end_refusal_minute(now_ms);
        let full = self.refusals.len() >= MAX_REFUSAL_COUNTERS;
        match self.refusals.get_mut(&peer) {
            Some(n) => {
                *n += 1;
                *n <= REFUSALS_AUDITED_PER_MINUTE
            }
            None if full => {
                self.refusals_unattributed += 1;
                false
            }
            None => {
                self.refusals.insert(peer, 1);
                true
            }
        }
    }

    /// When a new minute began: one summary record per peer refused more
    /// often than audited one by one in the last.
    fn end_refusal_minute(&mut self, now_ms: u64) {
        let minute = now_ms / 60_000;
        if minute == self.refusal_minute {
            return;
        }
        self.refusal_minute = minute;
        let mut over: Vec<(PeerId, u32)> = (self.refusals.drain())
            .filter(|(_, n)| *n > REFUSALS_AUDITED_PER_MINUTE)
            .map(|(p, n)| (p, n - REFUSALS_AUDITED_PER_MINUTE))
            .collect();
        over.sort();
        for (peer, n) in over {
            let mut r = AuditRecord::new(now_ms, AuditKind::Refuse).reason("refusals_summarised");
            r.peer = Some(peer);
            r.detail = Some(format!("{n} more refusals in the last minute"));
            self.push_audit(r);
        }
        let n = std::mem::take(&mut self.refusals_unattributed);
        if n > 0 {
            let mut r = AuditRecord::new(now_ms, AuditKind::Refuse).reason("refusals_summarised");
            r.detail = Some(format!(
                "{n} more refusals of other peers in the last minute"
            ));
            self.push_audit(r);
        }
    }

    fn push_audit(&mut self, r: AuditRecord) {
        if self.audit.len() >= MAX_QUEUED_AUDIT {
            self.audit.pop_front();
            self.dropped_audit += 1;
        }
        self.audit.push_back(r);
    }

    /// A verified service request from `peer` for `streams`, hiring them for
    /// `hire_secs` (0: the cap). `known` says which names exist. Names are
    /// granted, renewed or refused; each verdict is audited.
    pub fn handle_request(
        &mut self,
        now_ms: u64,
        peer: PeerId,
        streams: &[String],
        hire_secs: u64,
        known: impl Fn(&str) -> bool,
    ) -> Vec<RequestVerdict> {
        self.handle_timeout(now_ms);
        let hire_ms = match hire_secs {
            0 => self.max_grant_ms,
            s => s.saturating_mul(1000).min(self.max_grant_ms),
        };
        let expires_ms = now_ms.saturating_add(hire_ms);
        let mut out = Vec::with_capacity(streams.len());
        for name in streams {
            if !known(name) {
                self.record(
                    AuditRecord::new(now_ms, AuditKind::Refuse)
                        .about(peer, name)
                        .reason(RejectReason::UnknownStream.as_str()),
                );
                out.push(RequestVerdict::Unknown(name.clone()));
                continue;
            }
            let key = (peer, name.clone());
            let renewed = self.grants.contains_key(&key);
            if !renewed && !self.make_room(now_ms, peer) {
                self.record(
                    AuditRecord::new(now_ms, AuditKind::Refuse)
                        .about(peer, name)
                        .reason("grant_table_full"),
                );
                out.push(RequestVerdict::Full(name.clone()));
                continue;
            }
            // A renewal never shortens a grant.
            let until = match self.grants.get(&key).copied() {
                Some(old) if old >= expires_ms => old,
                _ => expires_ms,
            };
            self.insert_grant(key.clone(), until);
            self.expired.remove(&key);
            let kind = if renewed {
                AuditKind::Renew
            } else {
                AuditKind::Grant
            };
            let mut r = AuditRecord::new(now_ms, kind).about(peer, name);
            r.expires_ms = Some(until);
            self.record(r);
            out.push(RequestVerdict::Granted {
                stream: name.clone(),
                expires_ms: until,
                renewed,
            });
        }
        out
    }

    /// May `peer` fetch `stream` now? Pure: the caller audits a refusal with
    /// [`AccessControl::refused`] where it refuses.
    pub fn check(&self, now_ms: u64, peer: &PeerId, stream: &str) -> Result<Allowed, Denial> {
        let key = (*peer, stream.to_string());
        let grant = self.grants.get(&key).copied().filter(|e| *e > now_ms);
        let acl = self.acl.allowed_until(now_ms, peer, stream);
        match (grant, acl) {
            (_, Some(None)) => Ok(Allowed { until_ms: None }),
            (Some(g), Some(Some(a))) => Ok(Allowed {
                until_ms: Some(g.max(a)),
            }),
            (Some(g), None) => Ok(Allowed { until_ms: Some(g) }),
            (None, Some(Some(a))) => Ok(Allowed { until_ms: Some(a) }),
            (None, None) => {
                let had_grant = self.grants.contains_key(&key) || self.expired.contains_key(&key);
                Err(if had_grant {
                    Denial::GrantExpired
                } else {
                    Denial::NotAllowed
                })
            }
        }
    }

    /// Audits a refusal of `stream` to `peer`.
    pub fn refused(&mut self, now_ms: u64, peer: PeerId, stream: &str, reason: RejectReason) {
        self.record(
            AuditRecord::new(now_ms, AuditKind::Refuse)
                .about(peer, stream)
                .reason(reason.as_str()),
        );
    }

    /// Audits the start of serving `stream` to `peer` from `offset`.
    pub fn serve_started(&mut self, now_ms: u64, peer: PeerId, stream: &str, offset: u64) {
        let mut r = AuditRecord::new(now_ms, AuditKind::ServeStart).about(peer, stream);
        r.offset = Some(offset);
        self.record(r);
    }

    /// Audits the end of serving: `bytes` sent from `offset`, and why it ended.
    pub fn serve_ended(
        &mut self,
        now_ms: u64,
        peer: PeerId,
        stream: &str,
        offset: u64,
        bytes: u64,
        reason: &str,
    ) {
        let mut r = AuditRecord::new(now_ms, AuditKind::ServeEnd)
            .about(peer, stream)
            .reason(reason);
        r.offset = Some(offset);
        r.bytes = Some(bytes);
        self.record(r);
    }

    /// The peers this provider deals with now: those holding a live grant
    /// and those its ACL names; `true` when the ACL lets every peer fetch.
    pub fn dealing_with(&self, now_ms: u64) -> (bool, Vec<PeerId>) {
        let mut any = false;
        let mut peers: Vec<PeerId> = vec![];
        for e in self.acl.entries.iter() {
            if e.expires_ms.is_some_and(|t| t <= now_ms) {
                continue;
            }
            match &e.peer {
                acl::PeerMatch::Any => any = true,
                acl::PeerMatch::Peer(p) => peers.push(*p),
            }
        }
        let mut granted: Vec<(u64, PeerId)> = (self.grants.iter())
            .filter(|(_, end)| **end > now_ms)
            .map(|(k, end)| (*end, k.0))
            .collect();
        // The grants ending last are the newest: they go last.
        granted.sort();
        peers.extend(granted.into_iter().map(|(_, p)| p));
        (any, peers)
    }

    /// Replaces the ACL (`source` says where it came from, for the audit).
    pub fn set_acl(&mut self, now_ms: u64, acl: Acl, source: &str) {
        let mut r = AuditRecord::new(now_ms, AuditKind::AclReload);
        r.detail = Some(format!("{source}: {} entries", acl.entries.len()));
        self.acl = acl;
        self.record(r);
    }

    /// Audits an ACL that could not be used; the current one stays.
    pub fn acl_rejected(&mut self, now_ms: u64, detail: &str) {
        let mut r = AuditRecord::new(now_ms, AuditKind::AclError).reason("invalid_acl");
        r.detail = Some(detail.to_string());
        self.record(r);
    }

    /// Expires grants whose time has come (each audited) and forgets old
    /// expired ones. Costs O(log n) per grant expired, nothing otherwise.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        while let Some((at_ms, key)) = self.by_expiry.first().cloned() {
            if at_ms > now_ms {
                break;
            }
            self.remove_grant(&key);
            let mut r = AuditRecord::new(now_ms, AuditKind::Expire)
                .about(key.0, &key.1)
                .reason(RejectReason::GrantExpired.as_str());
            r.expires_ms = Some(at_ms);
            self.record(r);
            self.expired.insert(key.clone(), at_ms);
            self.expired_order.push_back((at_ms, key));
        }
        while let Some((at_ms, key)) = self.expired_order.front() {
            let stale = self.expired.get(key) != Some(at_ms);
            let old = now_ms.saturating_sub(*at_ms) >= EXPIRED_MEMORY_MS;
            if !(stale || old || self.expired.len() > MAX_EXPIRED) {
                break;
            }
            if !stale {
                self.expired.remove(key);
            }
            self.expired_order.pop_front();
        }
    }

    /// When [`AccessControl::handle_timeout`] next has work: the earliest
    /// grant or ACL expiry, or the moment an expired grant is forgotten.
    pub fn poll_timeout(&self, now_ms: u64) -> Option<u64> {
        let grant = self.by_expiry.first().map(|(at, _)| *at);
        let acl = self.acl.next_expiry(now_ms);
        let forget = self
            .expired_order
            .iter()
            .find(|(at, k)| self.expired.get(k) == Some(at))
            .map(|(at, _)| at + EXPIRED_MEMORY_MS);
        [grant, acl, forget].into_iter().flatten().min()
    }

    /// The next audit record to write.
    pub fn poll_audit(&mut self) -> Option<AuditRecord> {
        self.audit.pop_front()
    }

    /// Audit records dropped because nobody drained them in time.
    pub fn dropped_audit(&self) -> u64 {
        self.dropped_audit
    }

    /// Live grants in all.
    pub fn grant_count(&self) -> usize {
        self.grants.len()
    }

    /// Every live grant at `now_ms`: peer, stream, end (what a provider
    /// keeps on disk to honour them after a restart).
    pub fn live_grants(&self, now_ms: u64) -> Vec<(PeerId, String, u64)> {
        (self.grants.iter())
            .filter(|(_, until)| **until > now_ms)
            .map(|((peer, stream), until)| (*peer, stream.clone(), *until))
            .collect()
    }

    /// Restores grants saved before a restart: those still live at `now_ms`,
    /// never shortening one held now, never beyond the table's size or the
    /// grant cap from now. Returns how many were restored.
    pub fn restore(&mut self, now_ms: u64, saved: &[(PeerId, String, u64)]) -> usize {
        let cap = now_ms.saturating_add(self.max_grant_ms);
        let mut restored = 0;
        for (peer, stream, until) in saved {
            let until = (*until).min(cap);
            let key = (*peer, stream.clone());
            let held = self.grants.get(&key).copied();
            if until <= now_ms || held.is_some_and(|h| h >= until) {
                continue;
            }
            if held.is_none() && self.grants.len() >= MAX_GRANTS {
                break;
            }
            self.insert_grant(key, until);
            restored += 1;
        }
        restored
    }
}

#[cfg(test)]
mod tests;
