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
use std::time::{Duration, Instant};

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
    deadline: Instant,
    actions: VecDeque<RoundAction>,
}

impl Round {
    /// Starts a round over `observers` (ourselves and duplicates skipped),
    /// giving up on silent ones at `now + timeout`. `configured` is how
    /// many observers the operator named: fewer than the policy's minimum
    /// asks nobody, since too few cannot outvote a liar.
    pub fn new(
        now: Instant,
        local: PeerId,
        configured: usize,
        observers: impl IntoIterator<Item = (PeerId, Group)>,
        policy: ConsensusPolicy,
        timeout: Duration,
    ) -> Self {
        let mut round = Self {
            policy,
            configured,
            answers: HashMap::new(),
            groups: HashMap::new(),
            deadline: now + timeout,
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

impl crate::Machine for Round {
    type Action = RoundAction;

    fn poll_action(&mut self) -> Option<RoundAction> {
        self.actions.pop_front()
    }

    /// When the round gives up on silent observers.
    fn poll_timeout(&self) -> Option<Instant> {
        (!self.is_done()).then_some(self.deadline)
    }

    /// Gives up on observers still silent at `now`, if the deadline passed.
    fn handle_timeout(&mut self, now: Instant) {
        if now >= self.deadline {
            for a in self.answers.values_mut() {
                if matches!(a, Answer::Waiting) {
                    *a = Answer::Failed;
                }
            }
        }
    }
}

/// A round is due ([`Rechecks`]' action).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecheckDue {
    /// Also ask over QUIC: at most once per period, however often a
    /// recheck is asked for (it opens a connection to every observer).
    pub with_quic: bool,
}

/// When the next round is due: every period, and at once after a failed
/// hole punch or a change of the node's direct addresses. While a round
/// runs (from its [`RecheckDue`] to [`Rechecks::checked`]) nothing more
/// is due.
#[derive(Debug, Clone)]
pub struct Rechecks {
    every: Duration,
    due: Instant,
    running: bool,
    last_quic: Instant,
    direct: Option<Vec<String>>,
    actions: VecDeque<RecheckDue>,
}

impl Rechecks {
    /// The first recheck is due `every` after `now` (the first round, with
    /// QUIC, is the caller's).
    pub fn new(now: Instant, every: Duration) -> Self {
        Self {
            every,
            due: now + every,
            running: false,
            last_quic: now,
            direct: None,
            actions: VecDeque::new(),
        }
    }

    /// A hole punch failed: the mapping we believe in may be wrong.
    pub fn on_hole_punch_failed(&mut self, now: Instant) {
        self.due = self.due.min(now);
    }

    /// The node's direct addresses are now `addrs`: a change (after the
    /// first report) means the network changed.
    pub fn on_direct_addrs(&mut self, now: Instant, addrs: impl IntoIterator<Item = String>) {
        let mut seen: Vec<String> = addrs.into_iter().collect();
        seen.sort();
        seen.dedup();
        match &self.direct {
            Some(known) if *known != seen => self.due = self.due.min(now),
            _ => {}
        }
        self.direct = Some(seen);
    }

    /// The round [`RecheckDue`] asked for finished at `now`.
    pub fn checked(&mut self, now: Instant) {
        self.running = false;
        self.due = now + self.every;
    }
}

impl crate::Machine for Rechecks {
    type Action = RecheckDue;

    fn poll_action(&mut self) -> Option<RecheckDue> {
        self.actions.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        (!self.running).then_some(self.due)
    }

    fn handle_timeout(&mut self, now: Instant) {
        if self.running || now < self.due {
            return;
        }
        self.running = true;
        let with_quic = now.duration_since(self.last_quic) >= self.every;
        if with_quic {
            self.last_quic = now;
        }
        self.actions.push_back(RecheckDue { with_quic });
    }
}
