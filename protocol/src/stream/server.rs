//! The provider's answer to one stream request.

use crate::access::{AccessControl, Allowed};
use crate::framing::StreamRequest;
use crate::signal::{RejectReason, StreamInfo, StreamRejection};
use libp2p_identity::PeerId;

/// What to do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServeDecision {
    /// Serve `info` from `offset`, until access ends at `until_ms` (`None`: no end).
    Serve {
        /// The stream.
        info: StreamInfo,
        /// First byte.
        offset: u64,
        /// When access ends.
        until_ms: Option<u64>,
    },
    /// Answer this refusal and send nothing else.
    Refuse(StreamRejection),
}

/// Where a live stream stands when a request arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveWindow {
    /// The oldest offset still held.
    pub earliest: u64,
    /// Where the next chunk will start.
    pub edge: u64,
    /// This peer was lately cut from the stream for falling behind.
    pub cut_slow: bool,
}

/// What kind of stream a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// Known bytes from an offset to the end.
    Finite,
    /// A live stream, and where it stands.
    Live(LiveWindow),
    /// It takes bytes from the consumer (an echo): asked for with `send`.
    Inbound,
}

/// Decides a request from `peer`. `info` is the catalog's entry for the name
/// (if any); `have_permit` says whether a serving slot is free. Access is
/// checked first, so a peer without a grant learns nothing, not even whether
/// the name exists. Refusals and starts are audited in `access`. A live
/// stream (`window`) is served from its live edge when asked, else from an
/// offset it still holds: an older one is refused `gone` (`too_slow` for a
/// peer just cut for falling behind), with the earliest offset held.
pub fn decide(
    now_ms: u64,
    access: &mut AccessControl,
    peer: PeerId,
    req: &StreamRequest,
    info: Option<&StreamInfo>,
    have_permit: bool,
    kind: StreamKind,
) -> ServeDecision {
    let checked = match access.check(now_ms, &peer, &req.name) {
        Err(d) => Err(Refused(d.reason(), d.detail().into(), None)),
        Ok(Allowed { until_ms }) => match info {
            None => Err(Refused(
                RejectReason::UnknownStream,
                format!("no stream named {:?}", req.name),
                None,
            )),
            Some(info) => serve_from(req, info, have_permit, kind).map(|o| (info, o, until_ms)),
        },
    };
    match checked {
        Ok((info, offset, until_ms)) => {
            access.serve_started(now_ms, peer, &req.name, offset);
            ServeDecision::Serve {
                info: info.clone(),
                offset,
                until_ms,
            }
        }
        Err(Refused(reason, detail, earliest)) => {
            access.refused(now_ms, peer, &req.name, reason);
            ServeDecision::Refuse(StreamRejection {
                name: req.name.clone(),
                reason,
                detail,
                earliest,
            })
        }
    }
}

/// A refusal: its reason, what the peer is told, and (a live stream) the
/// earliest offset held.
struct Refused(RejectReason, String, Option<u64>);

impl Refused {
    fn new(reason: RejectReason, detail: String) -> Self {
        Self(reason, detail, None)
    }
}

/// Where a stream the peer may fetch is served from, or why it is not:
/// the direction, a free slot, and the offset.
fn serve_from(
    req: &StreamRequest,
    info: &StreamInfo,
    have_permit: bool,
    kind: StreamKind,
) -> Result<u64, Refused> {
    let inbound = kind == StreamKind::Inbound;
    if req.send != inbound {
        let detail = if inbound {
            format!("{} takes bytes: open it sending (nc --send)", req.name)
        } else {
            format!("{} only sends: open it without sending", req.name)
        };
        return Err(Refused::new(RejectReason::Direction, detail));
    }
    if !have_permit {
        return Err(Refused::new(
            RejectReason::Busy,
            "provider is serving its maximum number of streams (in total or to you)".into(),
        ));
    }
    if let Some(len) = info.length.filter(|len| req.offset > *len) {
        let detail = format!("offset {} is past the end ({len})", req.offset);
        return Err(Refused::new(RejectReason::BadOffset, detail));
    }
    match kind {
        StreamKind::Live(w) => live_offset(req, w),
        _ => Ok(req.offset),
    }
}

/// A live stream is served from its edge when asked, else from an offset
/// it still holds: an older one is refused `gone` (`too_slow` for a peer
/// just cut for falling behind), with the earliest offset held.
fn live_offset(req: &StreamRequest, w: LiveWindow) -> Result<u64, Refused> {
    let offset = req.offset;
    if req.live_edge {
        return Ok(w.edge);
    }
    if offset < w.earliest {
        let (reason, detail) = if w.cut_slow {
            (
                RejectReason::TooSlow,
                format!(
                    "you fell behind the live buffer and were cut; offset {offset} is gone, the earliest held is {}",
                    w.earliest
                ),
            )
        } else {
            (
                RejectReason::Gone,
                format!(
                    "offset {offset} has left the live buffer; the earliest held is {}",
                    w.earliest
                ),
            )
        };
        return Err(Refused(reason, detail, Some(w.earliest)));
    }
    if offset > w.edge {
        let detail = format!("offset {offset} is past the live edge ({})", w.edge);
        return Err(Refused::new(RejectReason::BadOffset, detail));
    }
    Ok(offset)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::{AuditKind, Denial};

    const T0: u64 = 1_800_000_000_000;

    fn peer() -> PeerId {
        libp2p_identity::Keypair::generate_ed25519()
            .public()
            .to_peer_id()
    }

    fn info() -> StreamInfo {
        StreamInfo {
            name: "feed".into(),
            length: Some(100),
            sha256: Some([7; 32]),
            live: None,
        }
    }

    fn req(name: &str, offset: u64) -> StreamRequest {
        StreamRequest {
            name: name.into(),
            offset,
            live_edge: false,
            send: false,
        }
    }

    fn granted(p: PeerId) -> AccessControl {
        let mut ac = AccessControl::new(3600);
        ac.handle_request(T0, p, &["feed".to_string()], 10, |n| n == "feed");
        while ac.poll_audit().is_some() {}
        ac
    }

    fn reason(d: ServeDecision) -> RejectReason {
        match d {
            ServeDecision::Refuse(r) => r.reason,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn no_grant_means_not_allowed_whether_or_not_the_stream_exists() {
        let p = peer();
        let mut ac = AccessControl::new(3600);
        let d = decide(
            T0,
            &mut ac,
            p,
            &req("feed", 0),
            Some(&info()),
            true,
            StreamKind::Finite,
        );
        let ServeDecision::Refuse(r) = d else {
            panic!()
        };
        assert_eq!(r.reason, RejectReason::NotAllowed);
        assert!(!r.detail.contains("100") && !r.detail.contains("feed"));
        let d = decide(
            T0,
            &mut ac,
            p,
            &req("other", 0),
            None,
            true,
            StreamKind::Finite,
        );
        assert_eq!(reason(d), RejectReason::NotAllowed);
        let audit = ac.poll_audit().unwrap();
        assert_eq!(audit.kind, AuditKind::Refuse);
        assert_eq!(audit.reason.as_deref(), Some("not_allowed"));
    }

    #[test]
    fn a_granted_peer_is_served_until_its_grant_ends() {
        let p = peer();
        let mut ac = granted(p);
        let d = decide(
            T0 + 1,
            &mut ac,
            p,
            &req("feed", 40),
            Some(&info()),
            true,
            StreamKind::Finite,
        );
        assert_eq!(
            d,
            ServeDecision::Serve {
                info: info(),
                offset: 40,
                until_ms: Some(T0 + 10_000)
            }
        );
        assert_eq!(ac.poll_audit().unwrap().kind, AuditKind::ServeStart);
        // Past the end of its grant: grant_expired.
        let d = decide(
            T0 + 10_000,
            &mut ac,
            p,
            &req("feed", 40),
            Some(&info()),
            true,
            StreamKind::Finite,
        );
        assert_eq!(reason(d), Denial::GrantExpired.reason());
    }

    #[test]
    fn busy_and_bad_offset_only_after_access() {
        let p = peer();
        let mut ac = granted(p);
        let d = decide(
            T0,
            &mut ac,
            p,
            &req("feed", 0),
            Some(&info()),
            false,
            StreamKind::Finite,
        );
        assert_eq!(reason(d), RejectReason::Busy);
        let d = decide(
            T0,
            &mut ac,
            p,
            &req("feed", 101),
            Some(&info()),
            true,
            StreamKind::Finite,
        );
        assert_eq!(reason(d), RejectReason::BadOffset);
        // Granted by a wildcard ACL but the stream does not exist: unknown,
        // without a catalog.
        ac.set_acl(T0, crate::access::Acl::open(), "test");
        let d = decide(
            T0,
            &mut ac,
            p,
            &req("nope", 0),
            None,
            true,
            StreamKind::Finite,
        );
        let ServeDecision::Refuse(r) = d else {
            panic!()
        };
        assert_eq!(r.reason, RejectReason::UnknownStream);
        assert_eq!(r.detail, "no stream named \"nope\"");
    }

    #[test]
    fn a_live_stream_serves_its_edge_or_a_held_offset_and_says_what_is_gone() {
        let p = peer();
        let mut ac = granted(p);
        let live = StreamInfo {
            length: None,
            sha256: None,
            live: Some(9),
            ..info()
        };
        let w = LiveWindow {
            earliest: 1_000,
            edge: 5_000,
            cut_slow: false,
        };
        let edge = StreamRequest {
            live_edge: true,
            ..req("feed", 0)
        };
        let served = |d: ServeDecision| match d {
            ServeDecision::Serve { offset, .. } => offset,
            ServeDecision::Refuse(r) => panic!("refused: {r:?}"),
        };
        assert_eq!(
            served(decide(
                T0,
                &mut ac,
                p,
                &edge,
                Some(&live),
                true,
                StreamKind::Live(w)
            )),
            5_000
        );
        assert_eq!(
            served(decide(
                T0,
                &mut ac,
                p,
                &req("feed", 1_000),
                Some(&live),
                true,
                StreamKind::Live(w)
            )),
            1_000
        );
        let ServeDecision::Refuse(r) = decide(
            T0,
            &mut ac,
            p,
            &req("feed", 999),
            Some(&live),
            true,
            StreamKind::Live(w),
        ) else {
            panic!()
        };
        assert_eq!((r.reason, r.earliest), (RejectReason::Gone, Some(1_000)));
        let slow = LiveWindow {
            cut_slow: true,
            ..w
        };
        let ServeDecision::Refuse(r) = decide(
            T0,
            &mut ac,
            p,
            &req("feed", 999),
            Some(&live),
            true,
            StreamKind::Live(slow),
        ) else {
            panic!()
        };
        assert_eq!((r.reason, r.earliest), (RejectReason::TooSlow, Some(1_000)));
        let d = decide(
            T0,
            &mut ac,
            p,
            &req("feed", 5_001),
            Some(&live),
            true,
            StreamKind::Live(w),
        );
        assert_eq!(reason(d), RejectReason::BadOffset);
        // A stranger learns nothing of the window.
        let d = decide(
            T0,
            &mut ac,
            peer(),
            &req("feed", 999),
            Some(&live),
            true,
            StreamKind::Live(w),
        );
        assert_eq!(reason(d), RejectReason::NotAllowed);
    }

    #[test]
    fn an_echo_is_opened_sending_and_nothing_else_is() {
        let p = peer();
        let mut ac = granted(p);
        let sending = StreamRequest {
            send: true,
            ..req("feed", 0)
        };
        let d = decide(
            T0,
            &mut ac,
            p,
            &sending,
            Some(&info()),
            true,
            StreamKind::Finite,
        );
        assert_eq!(reason(d), RejectReason::Direction);
        let d = decide(
            T0,
            &mut ac,
            p,
            &req("feed", 0),
            Some(&info()),
            true,
            StreamKind::Inbound,
        );
        assert_eq!(reason(d), RejectReason::Direction);
        let d = decide(
            T0,
            &mut ac,
            p,
            &sending,
            Some(&info()),
            true,
            StreamKind::Inbound,
        );
        assert!(matches!(d, ServeDecision::Serve { .. }));
    }
}
