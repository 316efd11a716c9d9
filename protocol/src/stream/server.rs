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

/// Decides a request from `peer`. `info` is the catalog's entry for the name
/// (if any); `have_permit` says whether a serving slot is free. Access is
/// checked first, so a peer without a grant learns nothing, not even whether
/// the name exists. Refusals and starts are audited in `access`.
pub fn decide(
    now_ms: u64,
    access: &mut AccessControl,
    peer: PeerId,
    req: &StreamRequest,
    info: Option<&StreamInfo>,
    have_permit: bool,
) -> ServeDecision {
    let refuse = |access: &mut AccessControl, reason: RejectReason, detail: String| {
        access.refused(now_ms, peer, &req.name, reason);
        ServeDecision::Refuse(StreamRejection {
            name: req.name.clone(),
            reason,
            detail,
        })
    };
    let Allowed { until_ms } = match access.check(now_ms, &peer, &req.name) {
        Ok(a) => a,
        Err(d) => return refuse(access, d.reason(), d.detail().into()),
    };
    let Some(info) = info else {
        return refuse(
            access,
            RejectReason::UnknownStream,
            format!("no stream named {:?}", req.name),
        );
    };
    if !have_permit {
        return refuse(
            access,
            RejectReason::Busy,
            "provider is serving its maximum number of streams (in total or to you)".into(),
        );
    }
    if let Some(len) = info.length {
        if req.offset > len {
            return refuse(
                access,
                RejectReason::BadOffset,
                format!("offset {} is past the end ({len})", req.offset),
            );
        }
    }
    access.serve_started(now_ms, peer, &req.name, req.offset);
    ServeDecision::Serve {
        info: info.clone(),
        offset: req.offset,
        until_ms,
    }
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
        }
    }

    fn req(name: &str, offset: u64) -> StreamRequest {
        StreamRequest {
            name: name.into(),
            offset,
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
        let d = decide(T0, &mut ac, p, &req("feed", 0), Some(&info()), true);
        let ServeDecision::Refuse(r) = d else {
            panic!()
        };
        assert_eq!(r.reason, RejectReason::NotAllowed);
        assert!(!r.detail.contains("100") && !r.detail.contains("feed"));
        let d = decide(T0, &mut ac, p, &req("other", 0), None, true);
        assert_eq!(reason(d), RejectReason::NotAllowed);
        let audit = ac.poll_audit().unwrap();
        assert_eq!(audit.kind, AuditKind::Refuse);
        assert_eq!(audit.reason.as_deref(), Some("not_allowed"));
    }

    #[test]
    fn a_granted_peer_is_served_until_its_grant_ends() {
        let p = peer();
        let mut ac = granted(p);
        let d = decide(T0 + 1, &mut ac, p, &req("feed", 40), Some(&info()), true);
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
        );
        assert_eq!(reason(d), Denial::GrantExpired.reason());
    }

    #[test]
    fn busy_and_bad_offset_only_after_access() {
        let p = peer();
        let mut ac = granted(p);
        let d = decide(T0, &mut ac, p, &req("feed", 0), Some(&info()), false);
        assert_eq!(reason(d), RejectReason::Busy);
        let d = decide(T0, &mut ac, p, &req("feed", 101), Some(&info()), true);
        assert_eq!(reason(d), RejectReason::BadOffset);
        // Granted by a wildcard ACL but the stream does not exist: unknown,
        // without a catalog.
        ac.set_acl(T0, crate::access::Acl::open(), "test");
        let d = decide(T0, &mut ac, p, &req("nope", 0), None, true);
        let ServeDecision::Refuse(r) = d else {
            panic!()
        };
        assert_eq!(r.reason, RejectReason::UnknownStream);
        assert_eq!(r.detail, "no stream named \"nope\"");
    }
}
