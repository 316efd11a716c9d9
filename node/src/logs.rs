//! The node's log on standard error: addresses redacted at INFO and above.
//!
//! An operator pastes log lines into issues and chats. Peer ids are public
//! by design and stay; IP addresses and ports say where a person is, so
//! lines at INFO, WARN and ERROR carry `<ip>` and `<port>` in their place
//! unless the node runs with `--log-addrs`. DEBUG and TRACE lines (asked
//! for with `RUST_LOG`) and the JSON events (`--json`, data a program
//! reads) keep them.

use std::borrow::Cow;
use std::io::Write;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

static SHOW_ADDRS: AtomicBool = AtomicBool::new(false);

/// The tracing target of lines whose address is public by design and is
/// what the line is for (a relay's `relay reachable at ADDR`): never
/// redacted.
pub const PUBLIC: &str = "ledgermesh::public";

/// Whether INFO-and-above lines keep their addresses (`--log-addrs`).
pub fn show_addrs(on: bool) {
    SHOW_ADDRS.store(on, Ordering::Relaxed);
}

/// Whether INFO-and-above lines keep their addresses.
pub fn shows_addrs() -> bool {
    SHOW_ADDRS.load(Ordering::Relaxed)
}

/// A log's writer (standard error in the binary) that redacts lines at
/// INFO and above (see the module).
#[derive(Clone, Copy, Debug)]
pub struct Redacting<M>(pub M);

/// Standard error, redacting.
pub type RedactingStderr = Redacting<fn() -> std::io::Stderr>;

impl RedactingStderr {
    /// The binary's log.
    pub fn stderr() -> Self {
        Redacting(std::io::stderr)
    }
}

/// One log line's writer: redacts what it is handed when the line's level
/// asks for it (the formatter hands over each line in one write).
pub struct LineWriter<W> {
    inner: W,
    redact: bool,
}

impl<W: Write> Write for LineWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match (self.redact, std::str::from_utf8(buf)) {
            (true, Ok(text)) => self.inner.write_all(redact(text).as_bytes())?,
            _ => self.inner.write_all(buf)?,
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for Redacting<M> {
    type Writer = LineWriter<M::Writer>;
    fn make_writer(&'a self) -> Self::Writer {
        LineWriter {
            inner: self.0.make_writer(),
            redact: !SHOW_ADDRS.load(Ordering::Relaxed),
        }
    }
    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        LineWriter {
            inner: self.0.make_writer_for(meta),
            redact: *meta.level() <= Level::INFO
                && meta.target() != PUBLIC
                && !SHOW_ADDRS.load(Ordering::Relaxed),
        }
    }
}

/// `text` with every IP address and port replaced: multiaddr components
/// (`/ip4/…`, `/ip6/…`, `/tcp/…`, `/udp/…`), socket addresses
/// (`1.2.3.4:5`, `[2001:db8::1]:5`) and bare addresses. Loopback and
/// unspecified addresses, which name nobody, are kept with their ports.
pub fn redact(text: &str) -> Cow<'_, str> {
    if !text.bytes().any(|b| b == b'.' || b == b':') {
        return Cow::Borrowed(text);
    }
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut changed = false;
    while i < b.len() {
        if let Some((skip, with)) = at(text, i) {
            match with {
                Some(with) => {
                    out.push_str(with);
                    changed = true;
                }
                None => out.push_str(&text[i..i + skip]),
            }
            i += skip;
            continue;
        }
        let c = text[i..].chars().next().expect("in bounds");
        out.push(c);
        i += c.len_utf8();
    }
    if changed {
        Cow::Owned(out)
    } else {
        Cow::Borrowed(text)
    }
}

/// Whether `ip` says nothing of where anybody is: loopback and the
/// unspecified address are the same on every machine (a lab on one host
/// keeps its addresses in the log), and a mesh address is a hash of a
/// PeerId, which the log keeps anyway.
fn says_nothing(ip: &str) -> bool {
    let ip = ip.split('%').next().unwrap_or_default();
    ip.parse::<std::net::IpAddr>().is_ok_and(|a| {
        a.is_loopback()
            || a.is_unspecified()
            || matches!(a, std::net::IpAddr::V6(v6) if ledgermesh_protocol::vpn::is_mesh(&v6))
    })
}

/// What to write at byte `i` of `text`, when an address starts there: the
/// bytes it covers (up to the protocol name for multiaddr parts) and the
/// replacement (`None`: kept as it is).
fn at(text: &str, i: usize) -> Option<(usize, Option<&'static str>)> {
    let (skip, with) = redacted_at(text, i)?;
    let covered = &text[i..i + skip];
    let ip = covered
        .strip_prefix("/ip4/")
        .or_else(|| covered.strip_prefix("/ip6/"))
        .unwrap_or(covered);
    let host = match ip.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None if ip.matches(':').count() == 1 => ip.split(':').next().unwrap_or_default(),
        None => ip,
    };
    if !with.contains("<ip>") || !says_nothing(host) {
        return Some((skip, Some(with)));
    }
    // A loopback address keeps its port too: `/ip4/127.0.0.1/tcp/4001`.
    let after = &text[i + skip..];
    let port = ["/tcp/", "/udp/"].iter().find_map(|p| {
        let digits = after.strip_prefix(p)?;
        let n = digits
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(digits.len());
        (n > 0).then_some(p.len() + n)
    });
    Some((skip + port.unwrap_or(0), None))
}

fn redacted_at(text: &str, i: usize) -> Option<(usize, &'static str)> {
    let rest = &text[i..];
    for (proto, with) in [
        ("/ip4/", "/ip4/<ip>"),
        ("/ip6/", "/ip6/<ip>"),
        ("/tcp/", "/tcp/<port>"),
        ("/udp/", "/udp/<port>"),
    ] {
        if let Some(value) = rest.strip_prefix(proto) {
            let len = value
                .find(|c: char| !(c.is_ascii_hexdigit() || c == '.' || c == ':' || c == '%'))
                .unwrap_or(value.len());
            if len > 0 {
                return Some((proto.len() + len, with));
            }
        }
    }
    let before = before_ansi(&text[..i]).chars().next_back();
    let word_start = !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '.' || c == ':');
    if !word_start {
        return None;
    }
    // `[v6]:port`, `[v6%zone]:port`
    if let Some(inner) = rest.strip_prefix('[') {
        let close = inner.find(']')?;
        let addr = inner[..close].split('%').next().unwrap_or_default();
        addr.parse::<Ipv6Addr>().ok()?;
        let port = port_len(&inner[close + 1..]);
        return Some(match port {
            0 => (close + 2, "[<ip>]"),
            n => (close + 2 + n, "[<ip>]:<port>"),
        });
    }
    let len = rest
        .find(|c: char| !(c.is_ascii_hexdigit() || c == '.' || c == ':'))
        .unwrap_or(rest.len());
    // A sentence's full stop or a label's colon may follow an address.
    let token = rest[..len].trim_end_matches(['.', ':']);
    let v6 = token.matches(':').count() >= 2 && token.contains(|c: char| c.is_ascii_hexdigit());
    if v6 && token.parse::<Ipv6Addr>().is_ok() {
        return Some((token.len(), "<ip>"));
    }
    // IPv4, maybe with a port: the token up to a colon, not run on into
    // another word or dotted number (a full stop ends a sentence).
    let v4 = token.split(':').next().unwrap_or("");
    let after = &rest[v4.len()..];
    let run_on = |c: char| c.is_ascii_alphanumeric() || c == '.';
    let next = after.chars().next();
    let full_stop = after.starts_with('.') && !after[1..].starts_with(run_on);
    if v4.parse::<Ipv4Addr>().is_ok() && (full_stop || !next.is_some_and(run_on)) {
        let port = port_len(&rest[v4.len()..]);
        return Some(match port {
            0 => (v4.len(), "<ip>"),
            n => (v4.len() + n, "<ip>:<port>"),
        });
    }
    None
}

/// `s` without the ANSI colour sequences (`ESC [ digits ; … m`) it ends
/// with: a coloured field's value follows one, and its start is still a
/// word's start.
fn before_ansi(mut s: &str) -> &str {
    while let Some(head) = s.strip_suffix('m') {
        let Some(esc) = head.rfind('\x1b') else {
            break;
        };
        let params = &head[esc + 1..];
        let csi = params
            .strip_prefix('[')
            .is_some_and(|p| p.chars().all(|c| c.is_ascii_digit() || c == ';'));
        if !csi {
            break;
        }
        s = &s[..esc];
    }
    s
}

/// The length of a `:digits` port at the start of `s` (0 when none).
fn port_len(s: &str) -> usize {
    let Some(digits) = s.strip_prefix(':') else {
        return 0;
    };
    let n = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    let followed = digits[n..]
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    if n == 0 || n > 5 || followed {
        0
    } else {
        1 + n
    }
}

#[cfg(test)]
mod tests {
    use super::{redact, Redacting, PUBLIC};
    use std::io::Write;
    use tracing::Level;

    #[test]
    fn addresses_and_ports_go_peer_ids_and_times_stay() {
        let pid = "12D3KooWGzXn3mCb4dWvAx7zq5c2rUR2h1FJ3ogcRVv7Yh8eLJ5o";
        for (line, want) in [
            (
                format!("listening on /ip4/203.0.113.10/tcp/4001/p2p/{pid}"),
                format!("listening on /ip4/<ip>/tcp/<port>/p2p/{pid}"),
            ),
            (
                "dial /ip6/2001:db8::7/udp/4001/quic-v1 failed".into(),
                "dial /ip6/<ip>/udp/<port>/quic-v1 failed".into(),
            ),
            (
                "observed 198.51.100.7:51234, asked 192.0.2.1".into(),
                "observed <ip>:<port>, asked <ip>".into(),
            ),
            (
                "from [2001:db8::1]:9000 and fe80::1%eth0 and ::1".into(),
                "from [<ip>]:<port> and <ip>%eth0 and ::1".into(),
            ),
            (
                "2026-12-07T16:49:27.123456Z  INFO ledgermesh: 1.5 MiB in 2.25 s, v1.2.3.4".into(),
                "2026-12-07T16:49:27.123456Z  INFO ledgermesh: 1.5 MiB in 2.25 s, v1.2.3.4".into(),
            ),
            (
                "version 1.2.3.4.5 at 10:30:15, ratio 0.8:1".into(),
                "version 1.2.3.4.5 at 10:30:15, ratio 0.8:1".into(),
            ),
            ("café 192.0.2.1 — ok".into(), "café <ip> — ok".into()),
            (
                "vpn up: fda2:12b9:3212:88b2:7717:7a8f:aeef:43c3 on ledgermesh0, via 2001:db8::7".into(),
                "vpn up: fda2:12b9:3212:88b2:7717:7a8f:aeef:43c3 on ledgermesh0, via <ip>".into(),
            ),
            (
                "answered from 203.0.113.7. Then [fe80::1%2]:9000 and 2001:db8::1: gone".into(),
                "answered from <ip>. Then [<ip>]:<port> and <ip>: gone".into(),
            ),
            (
                // A coloured field (stderr a terminal): the value follows an
                // ANSI sequence ending in `m`.
                "\x1b[3mpeer\x1b[0m\x1b[2m=\x1b[0m198.51.100.7:4001 \x1b[3mn\x1b[0m=2".into(),
                "\x1b[3mpeer\x1b[0m\x1b[2m=\x1b[0m<ip>:<port> \x1b[3mn\x1b[0m=2".into(),
            ),
            (
                "a wildcard :: and ledgermesh_node::swarm::quic stay".into(),
                "a wildcard :: and ledgermesh_node::swarm::quic stay".into(),
            ),
            (
                // Loopback and unspecified addresses name nobody: kept.
                "on /ip4/127.0.0.1/tcp/4001/p2p/x, /ip6/::1/udp/9/quic-v1, 0.0.0.0:80, [::1]:7 and 127.0.0.1"
                    .into(),
                "on /ip4/127.0.0.1/tcp/4001/p2p/x, /ip6/::1/udp/9/quic-v1, 0.0.0.0:80, [::1]:7 and 127.0.0.1"
                    .into(),
            ),
        ] {
            assert_eq!(redact(&line), want, "{line}");
        }
    }

    #[test]
    fn a_line_without_addresses_is_not_copied() {
        assert!(matches!(
            redact("no addresses here, peer 12D3KooW"),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    /// The writer as the binary sets it up, over a buffer: INFO and WARN
    /// lines lose their addresses, DEBUG lines and the public target keep
    /// them.
    #[test]
    fn the_log_writer_redacts_by_level_and_target() {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let out = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(Redacting(move || out.clone()))
            .with_max_level(Level::DEBUG)
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("observed 198.51.100.7:51234 at /ip4/203.0.113.9/udp/4001/quic-v1");
            tracing::warn!(peer = %"[2001:db8::5]:9", "lost");
            tracing::debug!("dialing 198.51.100.8:4001");
            tracing::info!(target: PUBLIC, "relay reachable at /ip4/203.0.113.10/tcp/4001");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].ends_with("observed <ip>:<port> at /ip4/<ip>/udp/<port>/quic-v1"));
        assert!(lines[1].contains("peer=[<ip>]:<port>"), "{}", lines[1]);
        assert!(
            lines[2].ends_with("dialing 198.51.100.8:4001"),
            "DEBUG keeps it"
        );
        assert!(lines[3].ends_with("relay reachable at /ip4/203.0.113.10/tcp/4001"));
    }
}
