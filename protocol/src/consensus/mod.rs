//! Public address by peer consensus, without I/O.
//!
//! A node asks K observers which address they see it at. A public IP is
//! accepted only when a quorum of observers (default ⌈2K/3⌉) report it, so a
//! minority of liars cannot steer it. The NAT's mapping is read from the
//! ports: a quorum that also agrees on the port means the NAT kept one
//! mapping for every destination (endpoint-independent: hole punching can
//! work); agreement on the IP but not on any port means a fresh mapping per
//! destination (endpoint-dependent, "symmetric": rely on relays). Too few
//! observers, or no quorum, gives `Unknown` — never a guess.
//!
//! Observations of different transports (TCP, QUIC) map differently and are
//! decided separately; so are IPv4 and IPv6 (a [`Round`] groups observers by
//! the transport and family it asked them over).

mod dial_back;
mod round;
#[cfg(test)]
mod tests;

pub use dial_back::{DialBackAnswer, DialBackLimits, DialBacks, NoProbe};
pub use round::{Group, Outcome, RecheckDue, Rechecks, Round, RoundAction};

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

/// One observer's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// Who observed (any stable id: its PeerId as a string).
    pub observer: String,
    /// The remote address it saw our connection come from.
    pub addr: SocketAddr,
    /// Dial-back result, when one was tried.
    pub reachable: Option<bool>,
}

/// How the NAT maps our outgoing connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mapping {
    /// One public port for every destination (hole punching can work).
    EndpointIndependent,
    /// A different public port per destination ("symmetric" NAT).
    EndpointDependent,
    /// Not enough agreement to tell.
    Unknown,
}

impl Mapping {
    /// The name used in events: `endpoint-independent`, `endpoint-dependent`, `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mapping::EndpointIndependent => "endpoint-independent",
            Mapping::EndpointDependent => "endpoint-dependent",
            Mapping::Unknown => "unknown",
        }
    }

    /// Whether a direct or hole-punched path is worth advertising.
    pub fn allows_direct(self) -> bool {
        self == Mapping::EndpointIndependent
    }
}

/// Knobs of the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsensusPolicy {
    /// Observers needed before any decision (K ≥ this).
    pub min_observers: usize,
    /// Agreeing observers needed; `None` means ⌈2K/3⌉.
    pub quorum: Option<usize>,
}

impl Default for ConsensusPolicy {
    fn default() -> Self {
        Self {
            min_observers: 3,
            quorum: None,
        }
    }
}

impl ConsensusPolicy {
    /// The quorum for `k` observers.
    pub fn quorum_for(&self, k: usize) -> usize {
        match self.quorum {
            Some(q) => q.max(1),
            None => (2 * k).div_ceil(3).max(1),
        }
    }
}

/// Why the verdict is what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// A quorum agreed on the IP.
    Quorum,
    /// Fewer observers than `min_observers`.
    TooFewObservers,
    /// No IP reached the quorum.
    NoQuorum,
}

/// The outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The accepted public IP.
    pub ip: Option<IpAddr>,
    /// The accepted public address (IP and port) when the mapping is endpoint-independent.
    pub addr: Option<SocketAddr>,
    /// The mapping.
    pub mapping: Mapping,
    /// What a quorum of the dial-backs said, when enough were tried.
    pub reachable: Option<bool>,
    /// Observers asked (K): the quorum is taken over these, not over the
    /// answers, so silent honest observers cannot hand liars a majority.
    pub observers: usize,
    /// Observers that answered.
    pub answered: usize,
    /// Observers agreeing on the accepted IP.
    pub agreeing: usize,
    /// Why.
    pub reason: Reason,
}

/// Decides from the observations of observers that all answered (K = the
/// answers); see [`decide_among`].
pub fn decide(observations: &[Observation], policy: &ConsensusPolicy) -> Verdict {
    decide_among(0, observations, policy)
}

/// Decides from one transport's and one IP family's observations, when
/// `asked` observers were asked (one answer per observer; later duplicates
/// from the same observer are ignored). K is `asked` (or the answers, if
/// more): an observer that did not answer counts against every address.
pub fn decide_among(
    asked: usize,
    observations: &[Observation],
    policy: &ConsensusPolicy,
) -> Verdict {
    let mut seen = std::collections::HashSet::new();
    let obs: Vec<&Observation> = observations
        .iter()
        .filter(|o| seen.insert(o.observer.as_str()))
        .collect();
    let answered = obs.len();
    let k = asked.max(answered);
    let unknown = |reason, agreeing| Verdict {
        ip: None,
        addr: None,
        mapping: Mapping::Unknown,
        reachable: None,
        observers: k,
        answered,
        agreeing,
        reason,
    };
    if k < policy.min_observers.max(1) {
        return unknown(Reason::TooFewObservers, 0);
    }
    let q = policy.quorum_for(k);
    let mut by_ip: HashMap<IpAddr, usize> = HashMap::new();
    for o in &obs {
        *by_ip.entry(o.addr.ip()).or_default() += 1;
    }
    let Some((&ip, &agreeing)) = by_ip.iter().max_by_key(|(ip, n)| (**n, **ip)) else {
        return unknown(Reason::NoQuorum, 0);
    };
    if agreeing < q {
        return unknown(Reason::NoQuorum, agreeing);
    }
    let mut by_port: HashMap<u16, usize> = HashMap::new();
    for o in obs.iter().filter(|o| o.addr.ip() == ip) {
        *by_port.entry(o.addr.port()).or_default() += 1;
    }
    let best_port = by_port
        .iter()
        .max_by_key(|(p, n)| (**n, **p))
        .map(|(p, n)| (*p, *n));
    let (mapping, addr) = match best_port {
        Some((port, n)) if n >= q => (
            Mapping::EndpointIndependent,
            Some(SocketAddr::new(ip, port)),
        ),
        _ => (Mapping::EndpointDependent, None),
    };
    // Reachability: only dial-backs from observers that agree on the IP count,
    // and a quorum of the tried ones must say the same thing.
    let tried: Vec<bool> = obs
        .iter()
        .filter(|o| o.addr.ip() == ip)
        .filter_map(|o| o.reachable)
        .collect();
    let yes = tried.iter().filter(|r| **r).count();
    let no = tried.len() - yes;
    let tq = policy.quorum_for(tried.len());
    let reachable = if tried.is_empty() {
        None
    } else if yes >= tq && yes > no {
        Some(true)
    } else if no >= tq && no > yes {
        Some(false)
    } else {
        None
    };
    Verdict {
        ip: Some(ip),
        addr,
        mapping,
        reachable,
        observers: k,
        answered,
        agreeing,
        reason: Reason::Quorum,
    }
}
