//! Hard NAT, one side: a direct QUIC path between a node behind an
//! endpoint-dependent NAT (the *hard* side, a fresh public port per
//! destination) and one behind an endpoint-independent NAT (the *easy*
//! side, one public port for every destination). Stock DCUtR cannot pass
//! such a pair: the hard side's port toward us is unknowable in advance.
//!
//! The two sides meet on the relayed connection they already share
//! (`/ledgermesh/hardnat/1`, authenticated by it) and run a birthday search:
//!
//! ```text
//!  hard                                   easy
//!   │ Offer{ip, sockets N} ───────────────► │ decides (mapping, bounds, cooldown)
//!   │ ◄─────────────── Accept{quic addr, M} │
//!   │ N fresh UDP sockets each dial easy's  │
//!   │ public QUIC address: N random ports   │
//!   │ open on the hard NAT toward it        │
//!   │ Go{sockets} ────────────────────────► │ M probes from easy's QUIC listen
//!   │                                       │ socket to M distinct random ports
//!   │                                       │ of hard's IP, in paced waves
//!   │ ◄────────────────────── Probed{M, ms} │
//!   │ a probe that hit one of the N ports opened easy's NAT toward it: that
//!   │ socket's next QUIC Initial gets through and the handshake completes
//! ```
//!
//! With ports drawn uniformly over 64,512 (`masquerade random-fully`) a
//! probe run finds a mapped port with probability 1 − e^(−N·M/64512)
//! ([`success_probability`]). Everything a stranger could make grow is
//! bounded here: sockets and probes per attempt ([`MAX_SOCKETS`],
//! [`MAX_PROBES`]), the probe rate ([`Plan`]), attempts at once and per peer
//! ([`Limiter`]); the probes go only to the IP the peer declared over the
//! authenticated relayed connection, and only when it is globally routable.

use crate::consensus::Mapping;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

/// The protocol on the relayed connection.
pub const PROTOCOL: &str = "/ledgermesh/hardnat/1";
/// Sockets the hard side opens by default (N).
pub const DEFAULT_SOCKETS: u16 = 256;
/// Probes the easy side sends by default (M): 1 − e^(−256·2048/64512) ≈ 99.97%.
pub const DEFAULT_PROBES: u16 = 2048;
/// Most sockets one attempt may open.
pub const MAX_SOCKETS: u16 = 512;
/// Most probes one attempt may send (and conntrack entries it may make on
/// the easy side's NAT).
pub const MAX_PROBES: u16 = 4096;
/// The lowest port a NAT hands out for ports ≥ 1024 (Linux, and most).
pub const FIRST_PORT: u16 = 1024;
/// Ports a random-port NAT picks from.
pub const PORT_SPACE: u32 = 65536 - FIRST_PORT as u32;
/// Longest a whole attempt may take, from offer to direct path.
pub const ATTEMPT: Duration = Duration::from_secs(10);
/// Between two attempts with the same peer.
pub const PEER_COOLDOWN: Duration = Duration::from_secs(60);
/// Attempts at once (both roles together).
pub const MAX_CONCURRENT: usize = 4;
/// Peers whose last attempt is remembered (for the cooldown).
pub const MAX_REMEMBERED: usize = 4096;

/// The chance that `m` probes over the port space hit one of `n` mapped
/// ports: 1 − e^(−n·m/64512).
pub fn success_probability(n: u16, m: u16) -> f64 {
    1.0 - (-(f64::from(n) * f64::from(m)) / f64::from(PORT_SPACE)).exp()
}

/// How an attempt is paced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Sockets the hard side opens (N).
    pub sockets: u16,
    /// Probes the easy side sends (M).
    pub probes: u16,
    /// Sockets opened, or probes sent, per wave.
    pub wave: u16,
    /// Between two waves.
    pub wave_interval_ms: u64,
    /// How long each probe target is punched: the stock puncher sends at
    /// once and then sleeps at least 10 ms, so under 10 ms is one packet.
    pub probe_life_ms: u64,
}

impl Plan {
    /// A plan for `sockets` and `probes`, each clamped to its maximum; waves
    /// of 128 every 25 ms (at most 5,120 packets a second).
    pub fn new(sockets: u16, probes: u16) -> Plan {
        Plan {
            sockets: sockets.clamp(1, MAX_SOCKETS),
            probes: probes.clamp(1, MAX_PROBES),
            wave: 128,
            wave_interval_ms: 25,
            probe_life_ms: 8,
        }
    }

    /// Waves needed for `count` items.
    pub fn waves(&self, count: u16) -> u16 {
        count.div_ceil(self.wave.max(1))
    }

    /// The chance this plan finds a path through a random-port NAT.
    pub fn success_probability(&self) -> f64 {
        success_probability(self.sockets, self.probes)
    }
}

impl Default for Plan {
    fn default() -> Plan {
        Plan::new(DEFAULT_SOCKETS, DEFAULT_PROBES)
    }
}

/// `m` distinct ports in `FIRST_PORT..=65535`, in random order (a partial
/// Fisher–Yates shuffle over the port space, without materialising it).
pub fn probe_ports<R: rand::Rng>(rng: &mut R, m: u16) -> Vec<u16> {
    let m = u32::from(m.min(MAX_PROBES));
    let mut swapped: HashMap<u32, u32> = HashMap::with_capacity(m as usize * 2);
    let mut out = Vec::with_capacity(m as usize);
    for i in 0..m {
        let j = rng.random_range(i..PORT_SPACE);
        let at_j = *swapped.get(&j).unwrap_or(&j);
        let at_i = *swapped.get(&i).unwrap_or(&i);
        swapped.insert(j, at_i);
        out.push((at_j + u32::from(FIRST_PORT)) as u16);
    }
    out
}

/// Which side a node plays, from its own mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Endpoint-dependent: opens the sockets.
    Hard,
    /// Endpoint-independent: sends the probes.
    Easy,
}

impl Role {
    /// The name in events.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Hard => "hard",
            Role::Easy => "easy",
        }
    }
}

/// Whether a node with `mapping` offers an attempt over a new relayed
/// connection: only an endpoint-dependent one does (it is the side DCUtR
/// cannot help), and only with QUIC.
pub fn should_offer(enabled: bool, mapping: Mapping, quic: bool) -> bool {
    enabled && quic && mapping == Mapping::EndpointDependent
}

/// Why the easy side turns an offer down (sent to the offerer, and in events).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Decline {
    /// `--hard-nat off`.
    #[error("hard-NAT traversal is off here")]
    Disabled,
    /// Both sides are endpoint-dependent: no birthday search can pair two
    /// unknown ports; the traffic stays relayed.
    #[error("both sides are endpoint-dependent")]
    BothHard,
    /// We have no consensus verdict on our own mapping.
    #[error("our NAT mapping is unknown")]
    MappingUnknown,
    /// We have no public QUIC address to be dialed at.
    #[error("no public QUIC address here")]
    NoQuicAddress,
    /// The offered IP is not one we may probe (not global, or another family).
    #[error("the offered address may not be probed")]
    BadAddress,
    /// Too many attempts at once.
    #[error("too many attempts at once")]
    Busy,
    /// An attempt with this peer happened too recently.
    #[error("an attempt with this peer ran too recently")]
    Cooldown,
    /// Sent only by older nodes, which capped the peer IPs they probed
    /// (their QUIC transport kept every probe target); kept so the code
    /// still reads.
    #[error("this node has probed as many peer addresses as it may")]
    ProbeBudget,
}

impl Decline {
    fn code(self) -> u8 {
        match self {
            Decline::Disabled => 1,
            Decline::BothHard => 2,
            Decline::MappingUnknown => 3,
            Decline::NoQuicAddress => 4,
            Decline::BadAddress => 5,
            Decline::Busy => 6,
            Decline::Cooldown => 7,
            Decline::ProbeBudget => 8,
        }
    }

    fn from_code(c: u8) -> Option<Decline> {
        Some(match c {
            1 => Decline::Disabled,
            2 => Decline::BothHard,
            3 => Decline::MappingUnknown,
            4 => Decline::NoQuicAddress,
            5 => Decline::BadAddress,
            6 => Decline::Busy,
            7 => Decline::Cooldown,
            8 => Decline::ProbeBudget,
            _ => return None,
        })
    }

    /// The short name in events.
    pub fn as_str(self) -> &'static str {
        match self {
            Decline::Disabled => "disabled",
            Decline::BothHard => "both_endpoint_dependent",
            Decline::MappingUnknown => "mapping_unknown",
            Decline::NoQuicAddress => "no_quic_address",
            Decline::BadAddress => "bad_address",
            Decline::Busy => "busy",
            Decline::Cooldown => "cooldown",
            Decline::ProbeBudget => "probe_budget",
        }
    }
}

/// What the easy side knows about itself when an offer arrives.
#[derive(Debug, Clone, Copy)]
pub struct EasySelf {
    /// `--hard-nat on`.
    pub enabled: bool,
    /// Our mapping from address consensus.
    pub mapping: Mapping,
    /// Our public QUIC address (consensus over UDP).
    pub quic_addr: Option<SocketAddr>,
    /// Whether non-global addresses may be probed (labs, loopback).
    pub allow_private: bool,
}

/// The easy side's answer to an offer from a peer at `offered_ip`: the
/// address it is to dial, or why not. Limits ([`Limiter`]) come after.
pub fn answer(me: &EasySelf, offered_ip: IpAddr) -> Result<SocketAddr, Decline> {
    if !me.enabled {
        return Err(Decline::Disabled);
    }
    match me.mapping {
        Mapping::EndpointDependent => return Err(Decline::BothHard),
        Mapping::Unknown => return Err(Decline::MappingUnknown),
        Mapping::EndpointIndependent => {}
    }
    let addr = me.quic_addr.ok_or(Decline::NoQuicAddress)?;
    let routable = me.allow_private || crate::path::scope::is_global(offered_ip);
    if !routable || addr.is_ipv4() != offered_ip.is_ipv4() || offered_ip.is_unspecified() {
        return Err(Decline::BadAddress);
    }
    Ok(addr)
}

/// The seed of the probe ports for one peer IP: the same IP gets the same
/// ports in every attempt (a habit from when the QUIC transport kept every
/// probe target; harmless now), and `salt`, a per-process secret, keeps
/// them unpredictable to everyone else. The hard side's mapped ports are
/// fresh in every attempt, so the chance of a meeting is unchanged.
pub fn probe_seed(salt: &[u8; 32], ip: IpAddr) -> [u8; 32] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(b"ledgermesh hardnat probe ports v1");
    h.update(salt);
    match ip {
        IpAddr::V4(v4) => h.update(v4.octets()),
        IpAddr::V6(v6) => h.update(v6.octets()),
    }
    h.finalize().into()
}

/// The `m` ports the easy side probes at `ip`: [`probe_ports`] drawn from
/// [`probe_seed`], so the same IP gets the same ports from this node.
pub fn probe_ports_at(salt: &[u8; 32], ip: IpAddr, m: u16) -> Vec<u16> {
    use rand::SeedableRng;
    probe_ports(&mut rand::rngs::StdRng::from_seed(probe_seed(salt, ip)), m)
}

/// Attempts at once and per peer.
#[derive(Debug, Default)]
pub struct Limiter<K> {
    running: usize,
    last: HashMap<K, Instant>,
}

impl<K: std::hash::Hash + Eq + Clone> Limiter<K> {
    /// A fresh limiter.
    pub fn new() -> Self {
        Limiter {
            running: 0,
            last: HashMap::new(),
        }
    }

    /// Takes a slot for an attempt with `peer`, or says why not. Every
    /// `Ok` must be matched by [`Limiter::finish`].
    pub fn start(&mut self, now: Instant, peer: &K) -> Result<(), Decline> {
        if let Some(&at) = self.last.get(peer) {
            if now.saturating_duration_since(at) < PEER_COOLDOWN {
                return Err(Decline::Cooldown);
            }
        }
        if self.running >= MAX_CONCURRENT {
            return Err(Decline::Busy);
        }
        if self.last.len() >= MAX_REMEMBERED {
            self.last
                .retain(|_, at| now.saturating_duration_since(*at) < PEER_COOLDOWN);
            if self.last.len() >= MAX_REMEMBERED {
                return Err(Decline::Busy);
            }
        }
        self.running += 1;
        self.last.insert(peer.clone(), now);
        Ok(())
    }

    /// An attempt ended (its cooldown runs from its start).
    pub fn finish(&mut self) {
        self.running = self.running.saturating_sub(1);
    }

    /// Attempts running now.
    pub fn running(&self) -> usize {
        self.running
    }
}

/// A message of `/ledgermesh/hardnat/1`. Each goes as one length byte and
/// the body; bodies are tiny and fixed-layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message {
    /// hard → easy: my public IP, and the sockets I would open.
    Offer {
        /// The hard side's public IP (from its address consensus).
        ip: IpAddr,
        /// N.
        sockets: u16,
    },
    /// easy → hard: dial my public QUIC address; I will send `probes`.
    Accept {
        /// The easy side's public QUIC address.
        addr: SocketAddr,
        /// M.
        probes: u16,
    },
    /// easy → hard: no attempt.
    Decline(Decline),
    /// hard → easy: the sockets are open and sending; probe now.
    Go {
        /// Sockets actually opened.
        sockets: u16,
    },
    /// easy → hard: the probes went out.
    Probed {
        /// Probes sent.
        probes: u16,
        /// How long the waves took.
        ms: u32,
    },
}

/// A malformed `/ledgermesh/hardnat/1` message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// Empty, or a body whose layout does not match its type.
    #[error("malformed hardnat message: {0}")]
    Malformed(&'static str),
    /// An unknown message type.
    #[error("unknown hardnat message type {0}")]
    UnknownType(u8),
}

/// Largest body.
pub const MAX_MESSAGE: usize = 32;

fn put_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            out.push(4);
            out.extend_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            out.push(6);
            out.extend_from_slice(&v6.octets());
        }
    }
}

fn take_ip(b: &[u8]) -> Result<(IpAddr, &[u8]), WireError> {
    match b.split_first() {
        Some((4, rest)) if rest.len() >= 4 => {
            let (o, rest) = rest.split_at(4);
            Ok((Ipv4Addr::new(o[0], o[1], o[2], o[3]).into(), rest))
        }
        Some((6, rest)) if rest.len() >= 16 => {
            let (o, rest) = rest.split_at(16);
            let mut a = [0u8; 16];
            a.copy_from_slice(o);
            Ok((Ipv6Addr::from(a).into(), rest))
        }
        _ => Err(WireError::Malformed("address")),
    }
}

fn take_u16(b: &[u8]) -> Result<(u16, &[u8]), WireError> {
    match b {
        [x, y, rest @ ..] => Ok((u16::from_be_bytes([*x, *y]), rest)),
        _ => Err(WireError::Malformed("short")),
    }
}

fn done<T>(v: T, rest: &[u8]) -> Result<T, WireError> {
    match rest.is_empty() {
        true => Ok(v),
        false => Err(WireError::Malformed("trailing bytes")),
    }
}

impl Message {
    /// The body (without the length byte).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(MAX_MESSAGE);
        match *self {
            Message::Offer { ip, sockets } => {
                out.push(1);
                put_ip(&mut out, ip);
                out.extend_from_slice(&sockets.to_be_bytes());
            }
            Message::Accept { addr, probes } => {
                out.push(2);
                put_ip(&mut out, addr.ip());
                out.extend_from_slice(&addr.port().to_be_bytes());
                out.extend_from_slice(&probes.to_be_bytes());
            }
            Message::Decline(d) => out.extend_from_slice(&[3, d.code()]),
            Message::Go { sockets } => {
                out.push(4);
                out.extend_from_slice(&sockets.to_be_bytes());
            }
            Message::Probed { probes, ms } => {
                out.push(5);
                out.extend_from_slice(&probes.to_be_bytes());
                out.extend_from_slice(&ms.to_be_bytes());
            }
        }
        out
    }

    /// Parses a body.
    pub fn decode(b: &[u8]) -> Result<Message, WireError> {
        let (&t, rest) = b.split_first().ok_or(WireError::Malformed("empty"))?;
        match t {
            1 => {
                let (ip, rest) = take_ip(rest)?;
                let (sockets, rest) = take_u16(rest)?;
                done(Message::Offer { ip, sockets }, rest)
            }
            2 => {
                let (ip, rest) = take_ip(rest)?;
                let (port, rest) = take_u16(rest)?;
                let (probes, rest) = take_u16(rest)?;
                let addr = SocketAddr::new(ip, port);
                done(Message::Accept { addr, probes }, rest)
            }
            3 => match rest {
                [c] => Decline::from_code(*c)
                    .map(Message::Decline)
                    .ok_or(WireError::Malformed("decline reason")),
                _ => Err(WireError::Malformed("decline")),
            },
            4 => {
                let (sockets, rest) = take_u16(rest)?;
                done(Message::Go { sockets }, rest)
            }
            5 => {
                let (probes, rest) = take_u16(rest)?;
                match rest {
                    [a, b, c, d] => Ok(Message::Probed {
                        probes,
                        ms: u32::from_be_bytes([*a, *b, *c, *d]),
                    }),
                    _ => Err(WireError::Malformed("probed")),
                }
            }
            t => Err(WireError::UnknownType(t)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    /// `ms` into the test.
    fn at(ms: u64) -> Instant {
        static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *START.get_or_init(Instant::now) + Duration::from_millis(ms)
    }

    #[test]
    fn the_probability_matches_the_birthday_bound() {
        let p = success_probability(256, 1024);
        assert!((p - 0.9827).abs() < 0.001, "{p}");
        assert!(Plan::default().success_probability() > 0.999);
        assert_eq!(success_probability(0, 1024), 0.0);
    }

    #[test]
    fn plans_are_clamped_and_paced() {
        let p = Plan::new(60_000, 60_000);
        assert_eq!((p.sockets, p.probes), (MAX_SOCKETS, MAX_PROBES));
        assert_eq!(Plan::new(0, 0).sockets, 1);
        let d = Plan::default();
        assert_eq!(d.waves(d.probes), 16);
        // One packet per probe target: the stock puncher sleeps ≥ 10 ms.
        assert!(d.probe_life_ms < 10);
        let pps = u64::from(d.wave) * 1000 / d.wave_interval_ms;
        assert!(pps <= 5_120, "{pps}");
    }

    #[test]
    fn probe_ports_are_distinct_and_in_range() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let ports = probe_ports(&mut rng, MAX_PROBES);
        assert_eq!(ports.len(), usize::from(MAX_PROBES));
        let set: std::collections::HashSet<_> = ports.iter().collect();
        assert_eq!(set.len(), ports.len(), "distinct");
        assert!(ports.iter().all(|&p| p >= FIRST_PORT));
        // Spread over the whole space, not a run of neighbours.
        let low = ports.iter().filter(|&&p| p < 33_000).count();
        assert!((1_500..2_600).contains(&low), "{low}");
        // The whole space can be drawn without repeats.
        let mut rng = rand::rngs::StdRng::seed_from_u64(8);
        let mut all = vec![];
        let mut drawn = std::collections::HashSet::new();
        for _ in 0..16 {
            all.extend(probe_ports(&mut rng, MAX_PROBES));
        }
        drawn.extend(all.iter().copied());
        assert!(drawn.len() > 40_000);
    }

    fn easy(mapping: Mapping) -> EasySelf {
        EasySelf {
            enabled: true,
            mapping,
            quic_addr: Some("203.0.113.101:4001".parse().unwrap()),
            allow_private: false,
        }
    }

    #[test]
    fn only_an_easy_side_with_a_public_quic_address_accepts() {
        let global: IpAddr = "8.8.4.4".parse().unwrap();
        let me = easy(Mapping::EndpointIndependent);
        assert_eq!(answer(&me, global), Ok(me.quic_addr.unwrap()));
        assert_eq!(
            answer(&easy(Mapping::EndpointDependent), global),
            Err(Decline::BothHard)
        );
        assert_eq!(
            answer(&easy(Mapping::Unknown), global),
            Err(Decline::MappingUnknown)
        );
        let off = EasySelf {
            enabled: false,
            ..me
        };
        assert_eq!(answer(&off, global), Err(Decline::Disabled));
        let no_quic = EasySelf {
            quic_addr: None,
            ..me
        };
        assert_eq!(answer(&no_quic, global), Err(Decline::NoQuicAddress));
    }

    #[test]
    fn a_stranger_cannot_aim_the_probes_at_a_lan_or_another_family() {
        let me = easy(Mapping::EndpointIndependent);
        for ip in [
            "10.0.0.1",
            "127.0.0.1",
            "192.168.1.1",
            "0.0.0.0",
            "2001:db8::1",
        ] {
            assert_eq!(
                answer(&me, ip.parse().unwrap()),
                Err(Decline::BadAddress),
                "{ip}"
            );
        }
        assert_eq!(
            answer(&me, "2606:4700::1".parse().unwrap()),
            Err(Decline::BadAddress),
            "IPv6 toward an IPv4 listener"
        );
        let lab = EasySelf {
            allow_private: true,
            ..me
        };
        assert!(answer(&lab, "198.51.100.7".parse().unwrap()).is_ok());
        assert_eq!(
            answer(&lab, "0.0.0.0".parse().unwrap()),
            Err(Decline::BadAddress)
        );
    }

    #[test]
    fn only_endpoint_dependent_nodes_offer() {
        assert!(should_offer(true, Mapping::EndpointDependent, true));
        assert!(!should_offer(false, Mapping::EndpointDependent, true));
        assert!(!should_offer(true, Mapping::EndpointDependent, false));
        assert!(!should_offer(true, Mapping::EndpointIndependent, true));
        assert!(!should_offer(true, Mapping::Unknown, true));
    }

    #[test]
    fn attempts_are_limited_at_once_and_per_peer_on_virtual_time() {
        let mut l = Limiter::new();
        assert_eq!(l.start(at(0), &1u32), Ok(()));
        assert_eq!(l.start(at(10), &1u32), Err(Decline::Cooldown));
        for p in 2..=MAX_CONCURRENT as u32 {
            assert_eq!(l.start(at(10), &p), Ok(()));
        }
        assert_eq!(l.start(at(10), &99u32), Err(Decline::Busy));
        l.finish();
        assert_eq!(l.start(at(20), &99u32), Ok(()));
        assert_eq!(l.running(), MAX_CONCURRENT);
        for _ in 0..MAX_CONCURRENT {
            l.finish();
        }
        assert_eq!(
            l.start(at(0) + PEER_COOLDOWN - Duration::from_millis(1), &1u32),
            Err(Decline::Cooldown)
        );
        assert_eq!(l.start(at(0) + PEER_COOLDOWN, &1u32), Ok(()));
        l.finish();
        l.finish();
        assert_eq!(l.running(), 0);
    }

    #[test]
    fn the_remembered_peers_are_bounded() {
        let mut l = Limiter::new();
        for p in 0..MAX_REMEMBERED as u32 {
            l.start(at(0), &p).unwrap();
            l.finish();
        }
        assert_eq!(l.start(at(1), &u32::MAX), Err(Decline::Busy));
        // Once their cooldowns end they are forgotten.
        assert_eq!(l.start(at(0) + PEER_COOLDOWN, &u32::MAX), Ok(()));
        assert_eq!(l.last.len(), 1);
    }

    #[test]
    fn messages_round_trip_and_garbage_is_refused() {
        let msgs = [
            Message::Offer {
                ip: "203.0.113.102".parse().unwrap(),
                sockets: 256,
            },
            Message::Offer {
                ip: "2606:4700::1".parse().unwrap(),
                sockets: 1,
            },
            Message::Accept {
                addr: "203.0.113.101:4001".parse().unwrap(),
                probes: 2048,
            },
            Message::Decline(Decline::BothHard),
            Message::Go { sockets: 200 },
            Message::Probed {
                probes: 2048,
                ms: 412,
            },
        ];
        for m in msgs {
            let b = m.encode();
            assert!(b.len() <= MAX_MESSAGE);
            assert_eq!(Message::decode(&b), Ok(m));
            // Every truncation and any trailing byte is refused.
            for cut in 0..b.len() {
                assert!(Message::decode(&b[..cut]).is_err(), "{m:?} cut at {cut}");
            }
            let mut long = b.clone();
            long.push(0);
            assert!(Message::decode(&long).is_err(), "{m:?} + 1 byte");
        }
        assert_eq!(Message::decode(&[9]), Err(WireError::UnknownType(9)));
        assert!(Message::decode(&[3, 0]).is_err());
        assert!(Message::decode(&[1, 5, 1, 2, 3, 4, 0, 1]).is_err());
        // Every reason survives the wire.
        for code in 1..=8u8 {
            let d = Decline::from_code(code).unwrap();
            assert_eq!(d.code(), code);
            assert_eq!(
                Message::decode(&Message::Decline(d).encode()),
                Ok(Message::Decline(d))
            );
        }
        assert_eq!(Decline::from_code(9), None);
    }

    #[test]
    fn the_same_ip_gets_the_same_ports_and_another_ip_or_node_others() {
        let ports = |salt: &[u8; 32], ip: &str| probe_ports_at(salt, ip.parse().unwrap(), 2048);
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let first = ports(&a, "198.51.100.7");
        assert_eq!(first, ports(&a, "198.51.100.7"));
        assert_ne!(first, ports(&a, "198.51.100.8"));
        assert_ne!(first, ports(&b, "198.51.100.7"));
        assert_ne!(ports(&a, "2001:db8::1"), ports(&a, "2001:db8::2"));
        // Still 2,048 distinct ports in the allowed range.
        let distinct: std::collections::HashSet<_> = first.iter().collect();
        assert_eq!(distinct.len(), 2048);
        assert!(first.iter().all(|&p| p >= FIRST_PORT));
    }

    #[test]
    fn the_old_probe_budget_decline_still_reads() {
        assert_eq!(
            Decline::from_code(Decline::ProbeBudget.code()),
            Some(Decline::ProbeBudget)
        );
        assert_eq!(Decline::ProbeBudget.as_str(), "probe_budget");
    }
}
