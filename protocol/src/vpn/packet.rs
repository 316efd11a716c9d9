//! What the router reads of an IP packet: its version, source and
//! destination, checked against the length the header claims. Nothing
//! else is looked at; the payload goes through untouched.

use super::Drop;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The addresses of a well-formed packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Where it comes from.
    pub src: IpAddr,
    /// Where it goes.
    pub dst: IpAddr,
}

/// Reads `packet`'s header. The header's own length field must match the
/// packet's length: a truncated packet, or one with trailing bytes, is
/// [`Drop::Malformed`] (a tunnel frame holds exactly one packet).
pub fn header(packet: &[u8]) -> Result<Header, Drop> {
    match packet.first().map(|b| b >> 4) {
        Some(4) => v4(packet),
        Some(6) => v6(packet),
        _ => Err(Drop::Malformed),
    }
}

fn v4(p: &[u8]) -> Result<Header, Drop> {
    if p.len() < 20 {
        return Err(Drop::Malformed);
    }
    let ihl = usize::from(p[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([p[2], p[3]]));
    if ihl < 20 || total < ihl || total != p.len() {
        return Err(Drop::Malformed);
    }
    let at = |i: usize| Ipv4Addr::new(p[i], p[i + 1], p[i + 2], p[i + 3]);
    Ok(Header {
        src: IpAddr::V4(at(12)),
        dst: IpAddr::V4(at(16)),
    })
}

fn v6(p: &[u8]) -> Result<Header, Drop> {
    if p.len() < 40 {
        return Err(Drop::Malformed);
    }
    let payload = usize::from(u16::from_be_bytes([p[4], p[5]]));
    // A jumbogram (payload length 0 with a hop-by-hop option) never fits
    // a tunnel's MTU: refused with the rest.
    if payload == 0 && p.len() != 40 || 40 + payload != p.len() {
        return Err(Drop::Malformed);
    }
    let at = |i: usize| {
        let mut o = [0u8; 16];
        o.copy_from_slice(&p[i..i + 16]);
        Ipv6Addr::from(o)
    };
    Ok(Header {
        src: IpAddr::V6(at(8)),
        dst: IpAddr::V6(at(24)),
    })
}

/// Test packets.
#[cfg(test)]
pub(crate) mod build {
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// An IPv6 packet (UDP, as next header) with `payload` bytes.
    pub fn v6(src: Ipv6Addr, dst: Ipv6Addr, payload: usize) -> Vec<u8> {
        let mut p = vec![0u8; 40 + payload];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&(payload as u16).to_be_bytes());
        p[6] = 17;
        p[7] = 64;
        p[8..24].copy_from_slice(&src.octets());
        p[24..40].copy_from_slice(&dst.octets());
        p
    }

    /// An IPv4 packet (UDP) with `payload` bytes.
    pub fn v4(src: Ipv4Addr, dst: Ipv4Addr, payload: usize) -> Vec<u8> {
        let mut p = vec![0u8; 20 + payload];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&((20 + payload) as u16).to_be_bytes());
        p[8] = 64;
        p[9] = 17;
        p[12..16].copy_from_slice(&src.octets());
        p[16..20].copy_from_slice(&dst.octets());
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_read_and_lying_lengths_refused() {
        let (a, b): (Ipv6Addr, Ipv6Addr) = ("fd00::1".parse().unwrap(), "fd00::2".parse().unwrap());
        let p = build::v6(a, b, 8);
        assert_eq!(
            header(&p),
            Ok(Header {
                src: a.into(),
                dst: b.into()
            })
        );
        assert_eq!(header(&p[..p.len() - 1]), Err(Drop::Malformed), "truncated");
        let mut longer = p.clone();
        longer.push(0);
        assert_eq!(header(&longer), Err(Drop::Malformed), "trailing bytes");
        let (c, d) = (Ipv4Addr::new(10, 7, 0, 1), Ipv4Addr::new(10, 7, 0, 2));
        let p = build::v4(c, d, 0);
        assert_eq!(header(&p).map(|h| h.dst), Ok(d.into()));
        let mut bad_ihl = p.clone();
        bad_ihl[0] = 0x44;
        assert_eq!(header(&bad_ihl), Err(Drop::Malformed));
        for junk in [&[][..], &[0x00], &[0x60; 39], &[0x45; 19], &[0x70; 60]] {
            assert_eq!(header(junk), Err(Drop::Malformed), "{junk:?}");
        }
    }
}
