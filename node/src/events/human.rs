//! One line for a person per event worth telling (the log at INFO, without
//! `--json`): what the node listens on, what it learned about itself, what
//! relays, peers and payments did, and every refusal with its reason.
//! Routine traffic (vouchers, pings, ledger posts) stays at DEBUG.

use super::{CircuitOutcome, Event, ReservationOutcome};
use ledgermesh_protocol::path::{ChangeReason, PathKind, Route};

/// How loud a line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loudness {
    /// The normal course of things.
    Info,
    /// Something refused, lost or failed.
    Warn,
    /// Routine: only with `RUST_LOG=debug`.
    Debug,
}

/// `12D3KooW…abcdef`: a PeerId shortened, as `status` and the log print it.
pub fn short(id: &str) -> String {
    if id.len() > 16 && id.is_ascii() {
        format!("{}…{}", &id[..8], &id[id.len() - 6..])
    } else {
        id.to_string()
    }
}

fn route(r: &Option<Route>) -> String {
    match r {
        None => "nothing".into(),
        Some(r) => match (r.path, r.via) {
            (PathKind::Relayed, Some(v)) => format!(
                "relayed via {} ({})",
                short(&v.to_string()),
                r.transport.as_str()
            ),
            (p, _) => format!("{} {}", p.as_str(), r.transport.as_str()),
        },
    }
}

/// A byte count for people: `812 B`, `1.5 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn because(reason: &Option<String>) -> String {
    reason
        .as_deref()
        .map_or(String::new(), |r| format!(": {r}"))
}

/// Longest line told; what a peer wrote (a refusal's reason) is cut there.
const MAX_LINE: usize = 400;

/// The line for `e`, and how loud, or `None` for events told elsewhere.
/// Text a peer chose (reasons, details) is in it: control characters
/// are escaped, so no peer can forge a log line or move a terminal's
/// cursor, and the line is cut at [`MAX_LINE`] characters.
pub fn line(e: &Event) -> Option<(Loudness, String)> {
    let (loud, text) = raw_line(e)?;
    let mut clean = String::with_capacity(text.len().min(MAX_LINE));
    let mut n = 0;
    for c in text.chars() {
        let one = [c];
        let shown: Vec<char> = if c.is_control() || invisible(c) {
            c.escape_default().collect()
        } else {
            one.to_vec()
        };
        if n + shown.len() > MAX_LINE {
            clean.push('…');
            break;
        }
        n += shown.len();
        clean.extend(shown);
    }
    Some((loud, clean))
}

/// Format characters that reorder or hide text (bidirectional overrides,
/// zero-width marks, line and paragraph separators): escaped like control
/// characters, so a line reads as it is.
fn invisible(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}' | '\u{2060}'..='\u{206F}' | '\u{FEFF}')
}

fn raw_line(e: &Event) -> Option<(Loudness, String)> {
    relay_line(e)
        .or_else(|| money_line(e))
        .or_else(|| ledger_line(e))
        .or_else(|| path_line(e))
        .or_else(|| route_line(e))
        .or_else(|| stream_line(e))
        .or_else(|| access_line(e))
        .or_else(|| vpn_line(e))
}

/// The tunnel: up, its peers' streams, what it dropped.
fn vpn_line(e: &Event) -> Option<(Loudness, String)> {
    use Loudness::*;
    Some(match e {
        Event::VpnUp { address, tun, mtu } => {
            (Info, format!("vpn up: {address} on {tun} (mtu {mtu})"))
        }
        Event::VpnPeer {
            peer_id,
            address,
            state,
            direction,
        } => (
            Info,
            format!(
                "vpn: {} ({address}) {state} ({})",
                short(peer_id),
                if *direction == "in" {
                    "it opened"
                } else {
                    "we opened"
                }
            ),
        ),
        Event::VpnExit {
            peer_id,
            state,
            routes,
            kill_switch,
        } => (
            if *state == "down" { Warn } else { Info },
            match *state {
                "gateway" => "vpn: this node is an exit for its peers".to_string(),
                "up" => format!(
                    "vpn: exit {} up: {} through the tunnel{}",
                    short(peer_id),
                    routes.join(", "),
                    if *kill_switch { " (kill switch on)" } else { "" }
                ),
                _ if *kill_switch => format!(
                    "vpn: exit {} down: {} held in the tunnel (kill switch: nothing leaves outside it)",
                    short(peer_id),
                    routes.join(", ")
                ),
                _ => format!(
                    "vpn: exit {} down: {} back to the host's own routes",
                    short(peer_id),
                    routes.join(", ")
                ),
            },
        ),
        Event::VpnDropped {
            peer_id,
            reason,
            count,
        } => (
            Warn,
            format!(
                "vpn: dropped {count} packet(s) {} ({reason})",
                peer_id
                    .as_deref()
                    .map_or("from this host".to_string(), |p| format!("of {}", short(p)))
            ),
        ),
        _ => return None,
    })
}

/// Listening, reservations, a relay's reservations and circuits.
fn relay_line(e: &Event) -> Option<(Loudness, String)> {
    use Loudness::*;
    Some(match e {
        Event::Listening { addrs, .. } => {
            // Said only where the log will hide something (loopback and
            // unspecified addresses stay, so a lab's line can be copied).
            let hidden = !crate::logs::shows_addrs()
                && addrs
                    .iter()
                    .any(|a| matches!(crate::logs::redact(a), std::borrow::Cow::Owned(_)));
            let hint = if hidden {
                " (addresses in full with --log-addrs)"
            } else {
                ""
            };
            (Info, format!("listening on {}{hint}", addrs.join(", ")))
        }
        Event::ReservationAccepted { relay, addr } => (
            Info,
            format!(
                "relay {} holds our reservation: reachable at {addr}",
                short(relay)
            ),
        ),
        Event::ReservationRefused { relay, reason } => (
            Warn,
            format!("no reservation on relay {}: {reason}", short(relay)),
        ),
        Event::RelayReservation {
            peer_id,
            outcome,
            reason,
            ..
        } => (
            if *outcome == ReservationOutcome::Refused {
                Warn
            } else {
                Info
            },
            format!(
                "reservation of {} {outcome}{}",
                short(peer_id),
                because(reason)
            ),
        ),
        Event::RelayCircuit {
            src,
            dst,
            outcome,
            reason,
            bytes_to_dst,
            bytes_to_src,
            ..
        } => {
            let carried = match (bytes_to_dst, bytes_to_src) {
                (Some(a), Some(b)) => format!(" after {} and {}", bytes(*a), bytes(*b)),
                _ => String::new(),
            };
            (
                if *outcome == CircuitOutcome::Refused {
                    Warn
                } else {
                    Info
                },
                format!(
                    "circuit {} → {} {outcome}{carried}{}",
                    short(src),
                    short(dst),
                    because(reason)
                ),
            )
        }
        _ => return None,
    })
}

/// Channels, vouchers, payment refusals and claims.
fn money_line(e: &Event) -> Option<(Loudness, String)> {
    use Loudness::*;
    Some(match e {
        Event::ChannelOpened {
            payee,
            channel,
            deposit,
            ..
        } => (
            Info,
            format!(
                "payment channel {} opened to {payee}: {deposit} wei locked",
                short(channel)
            ),
        ),
        Event::VoucherSent { .. } | Event::VoucherReceived { .. } => (Debug, String::new()),
        Event::PaymentRefused {
            peer_id,
            reason,
            detail,
        } => (
            Warn,
            format!(
                "payment with {} refused ({reason}): {detail}",
                short(peer_id)
            ),
        ),
        Event::RelayRefused { peer_id, reason } => (
            Warn,
            format!("refused to relay for {}: {reason}", short(peer_id)),
        ),
        Event::Claimed {
            channel,
            amount,
            tx,
            ..
        } => (
            Info,
            format!(
                "claimed {amount} wei on channel {}{}",
                short(channel),
                tx.as_deref()
                    .map_or(String::new(), |t| format!(" (tx {t})"))
            ),
        ),
        Event::ClaimFailed {
            channel,
            reason,
            detail,
        } => (
            Warn,
            format!(
                "claim on channel {} failed ({reason}): {detail}",
                short(channel)
            ),
        ),
        Event::VoucherLost { channel, amount } => (
            Warn,
            format!(
                "channel {} is gone: a voucher for {amount} wei can no longer be claimed",
                short(channel)
            ),
        ),
        _ => return None,
    })
}

/// Stopping, the public address and the ledger.
fn ledger_line(e: &Event) -> Option<(Loudness, String)> {
    use Loudness::*;
    Some(match e {
        Event::Shutdown { reason, ms, .. } => (Info, format!("stopped ({reason}) in {ms} ms")),
        Event::PublicAddress {
            addr,
            mapping,
            agreeing,
            answered,
            observers,
            ..
        } => match addr {
            Some(a) => (
                Info,
                format!("public address {a} ({mapping}): {agreeing} of {answered} observers agree"),
            ),
            None => (
                Info,
                format!(
                    "public address unknown: {answered} of {observers} observers answered, \
                     {agreeing} agreeing"
                ),
            ),
        },
        Event::LedgerFollowing { from_block, .. } => (
            Info,
            format!("following the ledger from block {from_block}"),
        ),
        Event::LedgerPost { kind, .. } => (Info, format!("posted a {kind} to the ledger")),
        Event::LedgerMessage { kind, from, .. } => {
            (Info, format!("a {kind} from {} on the ledger", short(from)))
        }
        _ => return None,
    })
}

/// Connections, upgrades and hard NAT.
fn path_line(e: &Event) -> Option<(Loudness, String)> {
    use Loudness::*;
    Some(match e {
        Event::Connected {
            peer_id,
            path,
            transport,
            via,
            ..
        } => (
            Info,
            format!(
                "connected to {}: {}",
                short(peer_id),
                route(&Some(Route {
                    path: *path,
                    transport: *transport,
                    via: via.as_deref().and_then(|v| v.parse().ok()),
                }))
            ),
        ),
        Event::Upgraded {
            peer_id,
            transport,
            ms_after_relayed,
        } => (
            Info,
            format!(
                "{}: direct over {} after {ms_after_relayed} ms relayed",
                short(peer_id),
                transport.as_str()
            ),
        ),
        Event::HolePunchFailed { peer_id, reason } => (
            Info,
            format!(
                "hole punch with {} failed ({reason}); staying relayed",
                short(peer_id)
            ),
        ),
        Event::HardNat {
            peer_id,
            role,
            outcome,
            reason,
            ..
        } => (
            Info,
            format!(
                "hard-NAT attempt with {} ({role} side): {outcome}{}",
                short(peer_id),
                because(reason)
            ),
        ),
        // The relayed connection closing after an upgrade is the normal
        // course: only a direct one lost is worth a line.
        _ => return None,
    })
}

/// Disconnections and changes of the route to a peer.
fn route_line(e: &Event) -> Option<(Loudness, String)> {
    use Loudness::*;
    Some(match e {
        Event::Disconnected {
            peer_id,
            path,
            cause,
        } => {
            // A close either side asked for is no news; a failure is.
            let cause = cause
                .as_ref()
                .filter(|c| !c.contains("connection is closed"));
            (
                if *path == PathKind::Relayed {
                    Debug
                } else {
                    Info
                },
                format!(
                    "disconnected from {}{}",
                    short(peer_id),
                    because(&cause.cloned())
                ),
            )
        }
        Event::PathChanged {
            peer_id,
            from,
            to,
            reason,
        } => (
            // An upgrade has its own line; a path to nothing is a disconnect.
            if *reason == ChangeReason::Upgraded || to.is_none() {
                Debug
            } else {
                Info
            },
            format!(
                "{}: now {} instead of {} ({})",
                short(peer_id),
                route(to),
                route(from),
                match reason {
                    ChangeReason::Upgraded => "upgraded",
                    ChangeReason::RelayLost => "the relay was lost",
                    ChangeReason::DirectLost => "the direct connection was lost",
                    ChangeReason::Reconnected => "reconnected",
                    ChangeReason::Degraded => "the old path was degraded",
                }
            ),
        ),
        Event::PathDegraded {
            peer_id,
            via,
            rtt_ms,
            loss_pct,
        } => (
            Warn,
            format!(
                "the path to {}{} is degraded (rtt {} ms, {loss_pct} % loss): trying another",
                short(peer_id),
                via.as_deref()
                    .map_or(String::new(), |v| format!(" via {}", short(v))),
                rtt_ms.map_or("?".into(), |r| r.to_string())
            ),
        ),
        _ => return None,
    })
}

/// Streams opened, resumed, done and served.
fn stream_line(e: &Event) -> Option<(Loudness, String)> {
    use Loudness::*;
    Some(match e {
        Event::StreamResumed {
            peer_id,
            stream,
            offset,
            stalled_ms,
        } => (
            Info,
            format!(
                "{}/{stream} resumed at byte {offset} after {stalled_ms} ms",
                short(peer_id)
            ),
        ),
        Event::StreamOpened {
            peer_id,
            stream,
            offset,
        } => (
            Info,
            format!("{}/{stream} started at byte {offset}", short(peer_id)),
        ),
        Event::StreamDone {
            peer_id,
            stream,
            bytes: n,
            verified,
            ms,
            ..
        } => (
            Info,
            format!(
                "{}/{stream} done: {} in {:.1} s ({}/s){}",
                short(peer_id),
                bytes(*n),
                *ms as f64 / 1000.0,
                bytes((*n as f64 / (*ms).max(1) as f64 * 1000.0) as u64),
                if *verified { ", verified" } else { "" }
            ),
        ),
        Event::Gap {
            peer_id,
            stream,
            bytes: n,
            reason,
            ..
        } => (
            Warn,
            format!(
                "{}/{stream}: {} skipped ({reason})",
                short(peer_id),
                bytes(*n)
            ),
        ),
        Event::StreamServed {
            peer_id,
            stream,
            offset,
            bytes: n,
        } => (
            Info,
            format!(
                "served {stream} to {}: {} from byte {offset}",
                short(peer_id),
                bytes(*n)
            ),
        ),
        _ => return None,
    })
}

/// Grants, refusals, the ACL and errors.
fn access_line(e: &Event) -> Option<(Loudness, String)> {
    use Loudness::*;
    Some(match e {
        Event::Grant {
            peer_id,
            stream,
            renewed,
            ..
        } => (
            Info,
            format!(
                "{} {stream} to {}",
                if *renewed {
                    "renewed the grant of"
                } else {
                    "granted"
                },
                short(peer_id)
            ),
        ),
        Event::AccessRefused {
            peer_id,
            stream,
            reason,
        } => (
            Warn,
            format!("refused {stream} to {}: {reason}", short(peer_id)),
        ),
        Event::GrantExpired {
            peer_id, stream, ..
        } => (
            Info,
            format!("the grant of {stream} to {} expired", short(peer_id)),
        ),
        Event::AclReloaded { detail } => (Info, format!("ACL reloaded: {detail}")),
        Event::Error {
            what,
            detail,
            peer_id,
            ..
        } => (
            Warn,
            format!(
                "{what}{}: {detail}",
                peer_id
                    .as_deref()
                    .map_or(String::new(), |p| format!(" ({})", short(p)))
            ),
        ),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo";

    #[test]
    fn the_lines_a_person_reads() {
        let l = |e: Event| line(&e).unwrap();
        let listening = |addr: &str| {
            l(Event::Listening {
                peer_id: "12D3KooWPeer".into(),
                addrs: vec![addr.into()],
            })
            .1
        };
        assert_eq!(
            listening("/ip4/127.0.0.1/tcp/4001"),
            "listening on /ip4/127.0.0.1/tcp/4001"
        );
        assert_eq!(
            listening("/ip4/203.0.113.9/tcp/4001"),
            "listening on /ip4/203.0.113.9/tcp/4001 (addresses in full with --log-addrs)",
            "the line is redacted by the writer; the hint says how to see it"
        );
        assert_eq!(
            l(Event::ReservationRefused {
                relay: P.into(),
                reason: "Reservation refused.".into()
            }),
            (
                Loudness::Warn,
                "no reservation on relay 12D3KooW…CVe2Xo: Reservation refused.".to_string()
            )
        );
        let (loud, text) = l(Event::StreamDone {
            peer_id: P.into(),
            stream: "feed".into(),
            bytes: 8 << 20,
            sha256: String::new(),
            verified: true,
            ms: 2000,
            resumes: 0,
            path: None,
            first_byte_ts_ms: None,
            live: None,
        });
        assert_eq!(loud, Loudness::Info);
        assert_eq!(
            text,
            "12D3KooW…CVe2Xo/feed done: 8.0 MiB in 2.0 s (4.0 MiB/s), verified"
        );
        let (loud, _) = l(Event::Disconnected {
            peer_id: P.into(),
            path: PathKind::Relayed,
            cause: None,
        });
        assert_eq!(
            loud,
            Loudness::Debug,
            "the relayed path closing after an upgrade is routine"
        );
        let (loud, text) = l(Event::AccessRefused {
            peer_id: P.into(),
            stream: "feed".into(),
            reason: "not_allowed".into(),
        });
        assert_eq!(
            (loud, text.as_str()),
            (
                Loudness::Warn,
                "refused feed to 12D3KooW…CVe2Xo: not_allowed"
            )
        );
        // A peer's words cannot forge a line or drive a terminal.
        let (_, text) = l(Event::PaymentRefused {
            peer_id: P.into(),
            reason: "other",
            detail: format!(
                "nope\n2026-12-07T00:00:00Z INFO claimed 1 ETH\x1b[2J{}",
                "x".repeat(1000)
            ),
        });
        assert!(!text.chars().any(char::is_control), "{text}");
        assert!(text.contains("nope\\n2026"), "{text}");
        assert!(text.chars().count() <= MAX_LINE + 1, "cut");
        let (_, text) = l(Event::AclReloaded {
            detail: "ok \u{202E}gnp.exe".into(),
        });
        assert!(
            text.contains("\\u{202e}"),
            "a bidi override is shown, not obeyed: {text}"
        );
    }
}
