//! Which packets from an exit answer something we sent: a client pays for
//! what it exchanges with its exit, and counts a packet from the exit only
//! when it belongs to a flow the client opened, so that an exit cannot make
//! it count (and then invoice) packets nobody asked for.
//!
//! A flow is the protocol, the far address and, for TCP and UDP, both
//! ports (ICMP echo: its identifier; anything else: the protocol and the
//! far address). Only a packet that opens something opens a flow: a TCP
//! SYN, a UDP datagram, an echo request (what the host answers on its own,
//! a reply, a reset, an error, opens none: an exit cannot make the client
//! open flows for it by asking). It lives while packets go out on it, and
//! for [`FLOW_IDLE`] after the last; at most [`MAX_FLOWS`] are kept, the
//! oldest forgotten first. A packet of ours past the bound still goes: it
//! is only its answers that count once the flow is known again.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Flows kept at most.
pub const MAX_FLOWS: usize = 65_536;
/// How long a flow outlives the last packet sent on it (TCP's own idle
/// connections are kept alive by their keepalives long before).
pub const FLOW_IDLE: Duration = Duration::from_secs(300);

/// A flow, from our side: protocol, far address, far and near "ports".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Flow {
    proto: u8,
    far: IpAddr,
    far_port: u16,
    near_port: u16,
}

/// The flows we opened (see the module docs).
#[derive(Debug, Default)]
pub struct Flows {
    last: HashMap<Flow, Instant>,
    /// Flows in the order they were last sent on (with stale copies,
    /// skipped when their time does not match).
    order: VecDeque<(Flow, Instant)>,
}

/// The protocol and the two "ports" of `p` (the packet's source port
/// first), its addresses, and whether it opens a flow; `None` when it is
/// not an IP packet.
fn flow_of(p: &[u8]) -> Option<(u8, IpAddr, IpAddr, u16, u16, bool)> {
    let (proto, src, dst, l4) = match p.first()? >> 4 {
        4 if p.len() >= 20 => {
            let ihl = usize::from(p[0] & 0x0f) * 4;
            let a = |i: usize| IpAddr::from([p[i], p[i + 1], p[i + 2], p[i + 3]]);
            (p[9], a(12), a(16), p.get(ihl..)?)
        }
        6 if p.len() >= 40 => {
            let a = |i: usize| {
                let mut o = [0u8; 16];
                o.copy_from_slice(&p[i..i + 16]);
                IpAddr::from(o)
            };
            (p[6], a(8), a(24), &p[40..])
        }
        _ => return None,
    };
    let port = |i: usize| {
        l4.get(i..i + 2)
            .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]))
    };
    let (sport, dport, opens) = match proto {
        // TCP: the ports; a SYN without ACK opens.
        6 => (
            port(0),
            port(2),
            l4.get(13).is_some_and(|f| f & 0x12 == 0x02),
        ),
        // UDP: the ports; any datagram opens.
        17 => (port(0), port(2), true),
        // ICMP echo request / reply, ICMPv6 echo request / reply: the
        // identifier on both sides; a request opens.
        1 | 58 if matches!(l4.first(), Some(0 | 8 | 128 | 129)) => {
            (port(4), port(4), matches!(l4.first(), Some(8 | 128)))
        }
        // Other ICMP (errors): none opens.
        1 | 58 => (0, 0, false),
        _ => (0, 0, true),
    };
    Some((proto, src, dst, sport, dport, opens))
}

impl Flows {
    /// A packet of ours went out: its flow lives on.
    pub fn sent(&mut self, packet: &[u8], now: Instant) {
        let Some((proto, _, dst, sport, dport, opens)) = flow_of(packet) else {
            return;
        };
        let flow = Flow {
            proto,
            far: dst,
            far_port: dport,
            near_port: sport,
        };
        self.expire(now);
        if !opens && !self.last.contains_key(&flow) {
            return;
        }
        if self.last.len() >= MAX_FLOWS && !self.last.contains_key(&flow) {
            self.forget_oldest();
        }
        self.last.insert(flow, now);
        self.order.push_back((flow, now));
        // Stale copies are bounded too: compacted when they outgrow the
        // live flows by far.
        if self.order.len() > 4 * MAX_FLOWS {
            let last = &self.last;
            self.order.retain(|(f, t)| last.get(f) == Some(t));
        }
    }

    /// Whether a packet that came in answers a flow of ours.
    pub fn answers(&self, packet: &[u8], now: Instant) -> bool {
        let Some((proto, src, _, sport, dport, _)) = flow_of(packet) else {
            return false;
        };
        let flow = Flow {
            proto,
            far: src,
            far_port: sport,
            near_port: dport,
        };
        (self.last.get(&flow)).is_some_and(|t| now.saturating_duration_since(*t) <= FLOW_IDLE)
    }

    /// Flows kept.
    pub fn len(&self) -> usize {
        self.last.len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }

    fn expire(&mut self, now: Instant) {
        while let Some((flow, at)) = self.order.front().copied() {
            let current = self.last.get(&flow) == Some(&at);
            if current && now.saturating_duration_since(at) <= FLOW_IDLE {
                break;
            }
            self.order.pop_front();
            if current {
                self.last.remove(&flow);
            }
        }
    }

    fn forget_oldest(&mut self) {
        while let Some((flow, at)) = self.order.pop_front() {
            if self.last.get(&flow) == Some(&at) {
                self.last.remove(&flow);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    /// An IPv4 packet of `proto` from `src`:`sport` to `dst`:`dport`.
    fn v4(proto: u8, src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Vec<u8> {
        let mut p = vec![0u8; 28];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&28u16.to_be_bytes());
        p[9] = proto;
        p[12..16].copy_from_slice(&src);
        p[16..20].copy_from_slice(&dst);
        p[20..22].copy_from_slice(&sport.to_be_bytes());
        p[22..24].copy_from_slice(&dport.to_be_bytes());
        p
    }

    /// A TCP SYN of ours.
    fn syn(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Vec<u8> {
        let mut p = v4(6, src, sport, dst, dport);
        p.resize(40, 0);
        p[2..4].copy_from_slice(&40u16.to_be_bytes());
        p[33] = 0x02;
        p
    }

    const ME: [u8; 4] = [100, 64, 0, 9];
    const WEB: [u8; 4] = [198, 51, 100, 7];

    #[test]
    fn only_answers_to_flows_we_opened_count() {
        let t0 = Instant::now();
        let mut f = Flows::default();
        f.sent(&syn(ME, 40000, WEB, 443), t0);
        assert!(f.answers(&v4(6, WEB, 443, ME, 40000), t0));
        // Another port, another protocol, another host: nobody asked.
        assert!(!f.answers(&v4(6, WEB, 443, ME, 40001), t0));
        assert!(!f.answers(&v4(17, WEB, 443, ME, 40000), t0));
        assert!(!f.answers(&v4(6, [198, 51, 100, 8], 443, ME, 40000), t0));
        assert!(!f.answers(&v4(6, WEB, 80, ME, 40000), t0));
        // An echo's reply, by its identifier.
        let mut echo = v4(1, ME, 0, WEB, 0);
        echo[20] = 8;
        echo[24..26].copy_from_slice(&7u16.to_be_bytes());
        f.sent(&echo, t0);
        let mut reply = v4(1, WEB, 0, ME, 0);
        reply[24..26].copy_from_slice(&7u16.to_be_bytes());
        assert!(f.answers(&reply, t0));
        reply[24..26].copy_from_slice(&8u16.to_be_bytes());
        assert!(!f.answers(&reply, t0), "another identifier");
        assert!(!f.answers(b"not a packet", t0));
    }

    #[test]
    fn what_the_host_answers_on_its_own_opens_no_flow() {
        let t0 = Instant::now();
        let mut f = Flows::default();
        // Asked unbidden, the host resets, replies to an echo, reports an
        // error: none of it opens a flow for the asker.
        let mut rst = v4(6, ME, 22, WEB, 5555);
        rst.resize(40, 0);
        rst[2..4].copy_from_slice(&40u16.to_be_bytes());
        rst[33] = 0x14;
        f.sent(&rst, t0);
        let mut echo_reply = v4(1, ME, 0, WEB, 0);
        echo_reply[20] = 0;
        echo_reply[24..26].copy_from_slice(&7u16.to_be_bytes());
        f.sent(&echo_reply, t0);
        let mut unreachable = v4(1, ME, 0, WEB, 0);
        unreachable[20] = 3;
        f.sent(&unreachable, t0);
        assert!(f.is_empty());
        assert!(!f.answers(&v4(6, WEB, 5555, ME, 22), t0));
        let mut echo = v4(1, WEB, 0, ME, 0);
        echo[20] = 8;
        echo[24..26].copy_from_slice(&7u16.to_be_bytes());
        assert!(!f.answers(&echo, t0));
        // A SYN opens; what follows on it keeps it.
        f.sent(&syn(ME, 40000, WEB, 443), t0);
        let later = t0 + FLOW_IDLE - Duration::from_secs(1);
        f.sent(&v4(6, ME, 40000, WEB, 443), later);
        assert!(f.answers(&v4(6, WEB, 443, ME, 40000), later + Duration::from_secs(2)));
    }

    #[test]
    fn a_flow_lives_while_it_is_used_and_the_table_is_bounded() {
        let t0 = Instant::now();
        let mut f = Flows::default();
        let ours = v4(17, ME, 5353, WEB, 53);
        let answer = v4(17, WEB, 53, ME, 5353);
        f.sent(&ours, t0);
        let later = t0 + FLOW_IDLE - Duration::from_secs(1);
        f.sent(&ours, later);
        assert!(f.answers(&answer, later + FLOW_IDLE - Duration::from_secs(1)));
        assert!(!f.answers(&answer, later + FLOW_IDLE + Duration::from_secs(1)));
        // Gone from the table once idle, when the next packet goes.
        f.sent(
            &v4(17, ME, 1, WEB, 1),
            later + FLOW_IDLE + Duration::from_secs(1),
        );
        assert_eq!(f.len(), 1);
        // Never more than the bound: the oldest go first.
        let mut f = Flows::default();
        for i in 0..(MAX_FLOWS as u32 + 10) {
            let port = (i % 60_000) as u16 + 1;
            let host = Ipv4Addr::from(0xc633_6400 + (i / 60_000)).octets();
            f.sent(&syn(ME, port, host, 443), t0);
        }
        assert_eq!(f.len(), MAX_FLOWS);
        let first = Ipv4Addr::from(0xc633_6400).octets();
        assert!(
            !f.answers(&v4(6, first, 443, ME, 1), t0),
            "the first went first"
        );
        let last = (MAX_FLOWS as u32 + 9) % 60_000 + 1;
        let last_host = Ipv4Addr::from(0xc633_6400 + (MAX_FLOWS as u32 + 9) / 60_000).octets();
        assert!(
            f.answers(&v4(6, last_host, 443, ME, last as u16), t0),
            "the last stays"
        );
    }
}
