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

/// Whether INFO-and-above lines keep their addresses (`--log-addrs`).
pub fn show_addrs(on: bool) {
    SHOW_ADDRS.store(on, Ordering::Relaxed);
}

/// Whether INFO-and-above lines keep their addresses.
pub fn shows_addrs() -> bool {
    SHOW_ADDRS.load(Ordering::Relaxed)
}

/// Standard error, redacting lines at INFO and above (see the module).
#[derive(Clone, Copy, Debug, Default)]
pub struct RedactingStderr;

/// One log line's writer: redacts what it is handed when the line's level
/// asks for it (the formatter hands over each line in one write).
pub struct LineWriter {
    redact: bool,
}

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut err = std::io::stderr().lock();
        match (self.redact, std::str::from_utf8(buf)) {
            (true, Ok(text)) => err.write_all(redact(text).as_bytes())?,
            _ => err.write_all(buf)?,
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> MakeWriter<'a> for RedactingStderr {
    type Writer = LineWriter;
    fn make_writer(&'a self) -> LineWriter {
        LineWriter {
            redact: !SHOW_ADDRS.load(Ordering::Relaxed),
        }
    }
    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> LineWriter {
        LineWriter {
            redact: *meta.level() <= Level::INFO && !SHOW_ADDRS.load(Ordering::Relaxed),
        }
    }
}

/// `text` with every IP address and port replaced: multiaddr components
/// (`/ip4/…`, `/ip6/…`, `/tcp/…`, `/udp/…`), socket addresses
/// (`1.2.3.4:5`, `[::1]:5`) and bare addresses.
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
            out.push_str(with);
            i += skip;
            changed = true;
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

/// What to write at byte `i` of `text`, when an address starts there: the
/// bytes it covers (up to the protocol name for multiaddr parts) and the
/// replacement.
fn at(text: &str, i: usize) -> Option<(usize, &'static str)> {
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
    let before = text[..i].chars().next_back();
    let word_start = !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '.' || c == ':');
    if !word_start {
        return None;
    }
    // `[v6]:port`
    if let Some(inner) = rest.strip_prefix('[') {
        let close = inner.find(']')?;
        inner[..close].parse::<Ipv6Addr>().ok()?;
        let port = port_len(&inner[close + 1..]);
        return Some(match port {
            0 => (close + 2, "[<ip>]"),
            n => (close + 2 + n, "[<ip>]:<port>"),
        });
    }
    let len = rest
        .find(|c: char| !(c.is_ascii_hexdigit() || c == '.' || c == ':'))
        .unwrap_or(rest.len());
    let token = &rest[..len];
    if token.matches(':').count() >= 2 && token.parse::<Ipv6Addr>().is_ok() {
        return Some((len, "<ip>"));
    }
    // IPv4, maybe with a port: the token up to a colon, not run on into
    // another word or dotted number.
    let v4 = token.split(':').next().unwrap_or("");
    let next = rest[v4.len()..].chars().next();
    if v4.parse::<Ipv4Addr>().is_ok()
        && !next.is_some_and(|c| c.is_ascii_alphanumeric() || c == '.')
    {
        let port = port_len(&rest[v4.len()..]);
        return Some(match port {
            0 => (v4.len(), "<ip>"),
            n => (v4.len() + n, "<ip>:<port>"),
        });
    }
    None
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
    use super::redact;

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
                "from [<ip>]:<port> and <ip>%eth0 and <ip>".into(),
            ),
            (
                "2026-12-07T16:49:27.123456Z  INFO ledgermesh: 1.5 MiB in 2.25 s, v1.2.3.4".into(),
                "2026-12-07T16:49:27.123456Z  INFO ledgermesh: 1.5 MiB in 2.25 s, v1.2.3.4".into(),
            ),
            (
                "version 1.2.3.4.5 at 10:30:15, ratio 0.8:1".into(),
                "version 1.2.3.4.5 at 10:30:15, ratio 0.8:1".into(),
            ),
            ("café 127.0.0.1 — ok".into(), "café <ip> — ok".into()),
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
}
