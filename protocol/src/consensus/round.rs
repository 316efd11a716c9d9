//! One consensus round (ask every observer, collect, decide) and the
//! schedule of rounds, as machines on the caller's clock.
//!
//! ```text
//!   Round::new ──► Ask(observer)… ──► on_answer / on_failure / handle_timeout ──► outcome()
//!   Rechecks: due every `every`, at once after a failed hole punch or a change of direct addresses
//! ```

use super::{decide, decide_among, ConsensusPolicy, Observation, Verdict};
use libp2p_identity::PeerId;
use multiaddr::{Multiaddr, Protocol};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;

/// The transport and IP family an observer is asked over. Mappings differ
/// per transport and per family, so each group is decided on its own, and an
/// answer only counts in the group it was asked in: an observer cannot move
/// its vote to a smaller group by answering with another kind of address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Group {
    /// Over QUIC (UDP) rather than TCP.
    pub udp: bool,
    /// Over IPv6 (`None`: a DNS name; either family is accepted).
    pub v6: Option<bool>,
}

impl Group {
    /// The group of the observer address `a` (`/ip4|ip6|dns…/tcp|udp…`).
    pub fn of(a: &Multiaddr) -> Self {
        let mut group = Group {
            udp: false,
            v6: None,
        };
        for p in a.iter() {
            match p {
                Protocol::Ip4(_) => group.v6 = Some(false),
                Protocol::Ip6(_) => group.v6 = Some(true),
                Protocol::Udp(_) => group.udp = true,
                _ => {}
            }
        }
        group
    }

    fn admits(self, addr: &SocketAddr, udp: bool) -> bool {
        self.udp == udp && self.v6.is_none_or(|v6| v6 == addr.is_ipv6())
    }
}

/// What a round asks its owner to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoundAction {
    /// Connect to `observer` and ask it (with a dial-back) where it sees us.
    Ask {
        /// The observer.
        observer: PeerId,
    },
}

#[derive(Debug, Clone)]
enum Answer {
    Waiting,
    Saw {
        addr: SocketAddr,
        reachable: Option<bool>,
    },
    Failed,
}

/// The result of a round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The decision.
    pub verdict: Verdict,
    /// Whether it was decided on UDP (QUIC) observations rather than TCP ones.
    pub udp: bool,
    /// The observations it was decided on.
    pub answers: Vec<Observation>,
    /// Why no observer was asked, when none was.
    pub note: Option<String>,
}

/// One round over a fixed set of observers.
#[derive(Debug)]
pub struct Round {
    policy: ConsensusPolicy,
    configured: usize,
    answers: HashMap<PeerId, Answer>,
    groups: HashMap<PeerId, Group>,
    deadline_ms: u64,
    actions: VecDeque<RoundAction>,
}

impl Round {
    /// Starts a round over `observers` (ourselves and duplicates skipped),
    /// giving up on silent ones at `now_ms + timeout_ms`. `configured` is how
    /// many observers the operator named: fewer than the policy's minimum
    /// asks nobody, since too few cannot outvote a liar.
    pub fn new(
        now_ms: u64,
        local: PeerId,
        configured: usize,
        observers: impl IntoIterator<Item = (PeerId, Group)>,
        policy: ConsensusPolicy,
        timeout_ms: u64,
    ) -> Self {
        let mut round = Self {
            policy,
            configured,
            answers: HashMap::new(),
            groups: HashMap::new(),
            deadline_ms: now_ms.saturating_add(timeout_ms),
            actions: VecDeque::new(),
        };
        if configured < policy.min_observers {
            return round;
        }
        for (observer, group) in observers {
            if observer != local && !round.answers.contains_key(&observer) {
                round.answers.insert(observer, Answer::Waiting);
                round.groups.insert(observer, group);
                round.actions.push_back(RoundAction::Ask { observer });
            }
        }
        round
    }

    /// The next action.
    pub fn poll_action(&mut self) -> Option<RoundAction> {
        self.actions.pop_front()
    }

    /// `observer` saw us at `addr` (over UDP when `udp`); `reachable` is its
    /// dial-back result. Answers from peers not asked, or twice, are ignored;
    /// an answer of another transport or family than the one asked over
    /// counts as a failure.
    pub fn on_answer(
        &mut self,
        observer: PeerId,
        addr: SocketAddr,
        udp: bool,
        reachable: Option<bool>,
    ) {
        let Some(group) = self.groups.get(&observer).copied() else {
            return;
        };
        if let Some(a @ Answer::Waiting) = self.answers.get_mut(&observer) {
            *a = if group.admits(&addr, udp) {
                Answer::Saw { addr, reachable }
            } else {
                Answer::Failed
            };
        }
    }

    /// `observer` could not be reached or gave no usable answer.
    pub fn on_failure(&mut self, observer: PeerId) {
        if let Some(a @ Answer::Waiting) = self.answers.get_mut(&observer) {
            *a = Answer::Failed;
        }
    }

    /// When the round gives up on silent observers.
    pub fn poll_timeout(&self) -> Option<u64> {
        (!self.is_done()).then_some(self.deadline_ms)
    }

    /// Gives up on observers still silent at `now_ms`, if the deadline passed.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        if now_ms >= self.deadline_ms {
            for a in self.answers.values_mut() {
                if matches!(a, Answer::Waiting) {
                    *a = Answer::Failed;
                }
            }
        }
    }

    /// Whether every observer answered or failed (after the deadline, the
    /// silent ones count as failed).
    pub fn is_done(&self) -> bool {
        self.answers.values().all(|a| !matches!(a, Answer::Waiting))
    }

    /// Decides on what arrived. Mappings differ per transport, so the
    /// decision is made on the transport most observers answered over.
    pub fn outcome(&self) -> Outcome {
        if self.configured < self.policy.min_observers {
            return Outcome {
                verdict: decide(&[], &self.policy),
                udp: false,
                answers: vec![],
                note: Some(format!(
                    "{} observer(s) configured; consensus needs at least {} (add --observer)",
                    self.configured, self.policy.min_observers
                )),
            };
        }
        // Every group's asked observers and answers; the group most
        // observers were asked in decides (ties: TCP, then IPv4), so what
        // the observers answer cannot choose the group.
        let mut groups: BTreeMap<Group, (usize, Vec<Observation>)> = BTreeMap::new();
        let mut asked: Vec<(&PeerId, &Answer)> = self.answers.iter().collect();
        asked.sort_by_key(|(p, _)| **p);
        for (peer, a) in asked {
            let entry = groups.entry(self.groups[peer]).or_default();
            entry.0 += 1;
            if let Answer::Saw {
                addr, reachable, ..
            } = a
            {
                entry.1.push(Observation {
                    observer: peer.to_string(),
                    addr: *addr,
                    reachable: *reachable,
                });
            }
        }
        let best = groups
            .into_iter()
            .max_by_key(|(g, (asked, _))| (*asked, std::cmp::Reverse(*g)));
        let (group, (asked, answers)) = best.unwrap_or((
            Group {
                udp: false,
                v6: None,
            },
            (0, vec![]),
        ));
        Outcome {
            verdict: decide_among(asked, &answers, &self.policy),
            udp: group.udp,
            answers,
            note: None,
        }
    }
}

/// When the next round is due.
#[derive(Debug, Clone)]
pub struct Rechecks {
    every_ms: u64,
    due_ms: u64,
    direct: Option<Vec<String>>,
}

impl Rechecks {
    /// The first recheck is due `every_ms` after `now_ms` (the first round
    /// is the caller's).
    pub fn new(now_ms: u64, every_ms: u64) -> Self {
        Self {
            every_ms,
            due_ms: now_ms.saturating_add(every_ms),
            direct: None,
        }
    }

    /// A hole punch failed: the mapping we believe in may be wrong.
    pub fn on_hole_punch_failed(&mut self, now_ms: u64) {
        self.due_ms = self.due_ms.min(now_ms);
    }

    /// The node's direct addresses are now `addrs`: a change (after the
    /// first report) means the network changed.
    pub fn on_direct_addrs(&mut self, now_ms: u64, addrs: impl IntoIterator<Item = String>) {
        let mut now: Vec<String> = addrs.into_iter().collect();
        now.sort();
        now.dedup();
        match &self.direct {
            Some(known) if *known != now => self.due_ms = self.due_ms.min(now_ms),
            _ => {}
        }
        self.direct = Some(now);
    }

    /// When the next round is due.
    pub fn poll_timeout(&self) -> u64 {
        self.due_ms
    }

    /// Whether a round is due at `now_ms`.
    pub fn is_due(&self, now_ms: u64) -> bool {
        now_ms >= self.due_ms
    }

    /// A round finished at `now_ms`.
    pub fn checked(&mut self, now_ms: u64) {
        self.due_ms = now_ms.saturating_add(self.every_ms);
    }
}
