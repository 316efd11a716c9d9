//! The provider's side of signaling: a verified service request becomes a
//! response built from the access machine's verdicts. The response describes
//! only the streams asked for and granted; it never lists what else exists.
//!
//! ```text
//!   opened request ─► requested_names (≤ 64) ─► AccessControl::handle_request
//!                  ─► response(verdicts): Granted → accepted (info + grant end)
//!                                         Unknown → rejected unknown_stream
//!                                         Full    → rejected busy
//! ```

use crate::access::RequestVerdict;
use crate::signal::{RejectReason, ServiceRequest, ServiceResponse, StreamInfo, StreamRejection};

/// Names one request may ask for; the rest are ignored.
pub const MAX_NAMES_PER_REQUEST: usize = 64;

/// The names of `req` that are considered (the first [`MAX_NAMES_PER_REQUEST`]).
pub fn requested_names(req: &ServiceRequest) -> Vec<String> {
    req.streams
        .iter()
        .take(MAX_NAMES_PER_REQUEST)
        .cloned()
        .collect()
}

/// The response to the request `nonce`, from the access verdicts on its
/// names; `info` describes a stream that exists. The grant end announced is
/// the earliest of the grants given (addresses are the caller's to add).
pub fn response(
    nonce: [u8; 16],
    verdicts: impl IntoIterator<Item = RequestVerdict>,
    info: impl Fn(&str) -> Option<StreamInfo>,
) -> ServiceResponse {
    let mut response = ServiceResponse {
        request_nonce: nonce,
        ..Default::default()
    };
    for v in verdicts {
        match v {
            RequestVerdict::Granted {
                stream, expires_ms, ..
            } => {
                if let Some(info) = info(&stream) {
                    response.accepted.push(info);
                    let end = response
                        .grant_expires_ms
                        .map_or(expires_ms, |e| e.min(expires_ms));
                    response.grant_expires_ms = Some(end);
                }
            }
            RequestVerdict::Unknown(name) => response.rejected.push(StreamRejection {
                detail: format!("no stream named {name:?}"),
                name,
                reason: RejectReason::UnknownStream,
                earliest: None,
            }),
            RequestVerdict::Full(name) => response.rejected.push(StreamRejection {
                name,
                reason: RejectReason::Busy,
                detail: "the provider holds its maximum number of grants; try later".into(),
                earliest: None,
            }),
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::AccessControl;
    use libp2p_identity::PeerId;

    fn info(name: &str) -> Option<StreamInfo> {
        ["feed", "log", "secret"]
            .contains(&name)
            .then(|| StreamInfo {
                name: name.into(),
                length: Some(10),
                sha256: None,
                live: None,
            })
    }

    #[test]
    fn a_request_is_answered_with_what_it_asked_and_was_granted_only() {
        let mut access = AccessControl::new(3_600_000);
        let peer = PeerId::random();
        let mut req = ServiceRequest {
            addrs: vec![],
            streams: vec!["feed".into(), "nope".into(), "log".into()],
            hire_secs: 60,
        };
        req.streams.extend((0..100).map(|i| format!("s{i}")));
        let names = requested_names(&req);
        assert_eq!(names.len(), MAX_NAMES_PER_REQUEST);
        let verdicts = access.handle_request(1_000, peer, &names, 60, |n| info(n).is_some());
        let resp = response([7; 16], verdicts, info);
        assert_eq!(resp.request_nonce, [7; 16]);
        let accepted: Vec<&str> = resp.accepted.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(
            accepted,
            ["feed", "log"],
            "never `secret`: it was not asked for"
        );
        assert_eq!(resp.grant_expires_ms, Some(61_000));
        assert_eq!(resp.rejected[0].name, "nope");
        assert_eq!(resp.rejected[0].reason, RejectReason::UnknownStream);
        assert!(!resp.rejected[0].detail.contains("feed"));
        assert_eq!(resp.rejected.len(), MAX_NAMES_PER_REQUEST - 2);
    }

    #[test]
    fn the_earliest_grant_end_is_announced_and_a_full_table_says_busy() {
        let verdicts = vec![
            RequestVerdict::Granted {
                stream: "feed".into(),
                expires_ms: 9_000,
                renewed: true,
            },
            RequestVerdict::Granted {
                stream: "log".into(),
                expires_ms: 5_000,
                renewed: false,
            },
            RequestVerdict::Full("secret".into()),
        ];
        let resp = response([0; 16], verdicts, info);
        assert_eq!(resp.grant_expires_ms, Some(5_000));
        assert_eq!(resp.rejected[0].reason, RejectReason::Busy);
        assert_eq!(resp.accepted.len(), 2);
    }
}
