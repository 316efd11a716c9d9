//! Whom a node pays a relay for when it is billed as a circuit's
//! destination (`--bill destination`, the default): the peers it deals
//! with (a provider's granted buyers and ACL peers, a consumer's
//! providers). The relay gives any other source a circuit it does not
//! bill, so a stranger cannot make us pay for its traffic.

use ledgermesh_protocol::payment::book::MAX_CONSENT;
use ledgermesh_protocol::payment::wire::{PayMsg, CONSENT_PER_MESSAGE};
use libp2p::PeerId;
use std::sync::Arc;
use tokio::sync::watch;

/// The sources consented to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsentSet {
    /// Every source.
    pub any: bool,
    /// These, newest last (at most [`MAX_CONSENT`]).
    pub peers: Vec<PeerId>,
}

impl ConsentSet {
    /// The messages that give a payee this set: the first starts it again.
    pub fn messages(&self) -> Vec<PayMsg> {
        let mut out: Vec<PayMsg> = (self.peers.chunks(CONSENT_PER_MESSAGE).enumerate())
            .map(|(i, c)| PayMsg::Consent {
                replace: i == 0,
                any: self.any,
                peers: c.to_vec(),
            })
            .collect();
        if out.is_empty() {
            out.push(PayMsg::Consent {
                replace: true,
                any: self.any,
                peers: vec![],
            });
        }
        out
    }
}

/// The consent a node's pay sessions send to its relays; clones share it.
#[derive(Debug, Clone)]
pub struct Consent(Arc<watch::Sender<ConsentSet>>);

impl Default for Consent {
    fn default() -> Self {
        Self(Arc::new(watch::channel(ConsentSet::default()).0))
    }
}

impl Consent {
    /// The set is now `any` and `peers` (the newest [`MAX_CONSENT`]).
    pub fn set(&self, any: bool, peers: impl IntoIterator<Item = PeerId>) {
        let mut v: Vec<PeerId> = vec![];
        for p in peers {
            if !v.contains(&p) {
                v.push(p);
            }
        }
        let skip = v.len().saturating_sub(MAX_CONSENT);
        let new = ConsentSet {
            any,
            peers: v.split_off(skip),
        };
        self.0.send_if_modified(|s| {
            let changed = *s != new;
            *s = new;
            changed
        });
    }

    /// `peer` is consented to as well.
    pub fn add(&self, peer: PeerId) {
        self.0.send_if_modified(|s| {
            if s.peers.contains(&peer) {
                return false;
            }
            if s.peers.len() >= MAX_CONSENT {
                s.peers.remove(0);
            }
            s.peers.push(peer);
            true
        });
    }

    /// The set now.
    pub fn get(&self) -> ConsentSet {
        self.0.borrow().clone()
    }

    pub(super) fn subscribe(&self) -> watch::Receiver<ConsentSet> {
        self.0.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_set_goes_in_frames_that_fit_and_the_first_replaces() {
        let c = Consent::default();
        let peers: Vec<PeerId> = (0..MAX_CONSENT + 5).map(|_| PeerId::random()).collect();
        c.set(false, peers.clone());
        let set = c.get();
        assert_eq!(set.peers.len(), MAX_CONSENT, "the newest kept");
        assert_eq!(set.peers.last(), peers.last());
        let msgs = set.messages();
        assert_eq!(msgs.len(), MAX_CONSENT.div_ceil(CONSENT_PER_MESSAGE));
        for (i, m) in msgs.iter().enumerate() {
            assert!(matches!(m, PayMsg::Consent { replace, .. } if *replace == (i == 0)));
            assert!(m.encode().len() <= ledgermesh_protocol::framing::MAX_FRAME + 4);
        }
        assert_eq!(
            ConsentSet::default().messages().len(),
            1,
            "an empty set is said too"
        );
    }
}
