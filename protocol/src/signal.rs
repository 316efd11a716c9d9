//! Domain types of the signaling messages, converted to and from protobuf at
//! this edge so the rest of the code never touches generated structs.

use ledgermesh_proto::v1 as pb;
use multiaddr::Multiaddr;

/// Why a provider refuses a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// The provider has no stream of that name.
    UnknownStream,
    /// The ACL does not allow this consumer.
    NotAllowed,
    /// The offset lies past the end of the stream.
    BadOffset,
    /// The provider is at its limit of concurrent streams.
    Busy,
    /// The peer's grant for the stream ran out (a new request renews it).
    GrantExpired,
    /// A priced stream, and no paid-up payment channel.
    Unpaid,
    /// A live stream's offset has left the provider's buffer.
    Gone,
    /// This buyer fell behind the live buffer and was cut.
    TooSlow,
    /// The stream does not go that way (sending to a stream that only
    /// sends, or reading an echo without sending).
    Direction,
    /// A reason this version does not know.
    Other,
}

impl RejectReason {
    /// Short machine-readable name, used in JSON events.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::UnknownStream => "unknown_stream",
            RejectReason::NotAllowed => "not_allowed",
            RejectReason::BadOffset => "bad_offset",
            RejectReason::Busy => "busy",
            RejectReason::GrantExpired => "grant_expired",
            RejectReason::Unpaid => "unpaid",
            RejectReason::Gone => "gone",
            RejectReason::TooSlow => "too_slow",
            RejectReason::Direction => "direction",
            RejectReason::Other => "other",
        }
    }

    fn to_pb(self) -> i32 {
        (match self {
            RejectReason::UnknownStream => pb::RejectReason::UnknownStream,
            RejectReason::NotAllowed => pb::RejectReason::NotAllowed,
            RejectReason::BadOffset => pb::RejectReason::BadOffset,
            RejectReason::Busy => pb::RejectReason::Busy,
            RejectReason::GrantExpired => pb::RejectReason::GrantExpired,
            RejectReason::Unpaid => pb::RejectReason::Unpaid,
            RejectReason::Gone => pb::RejectReason::Gone,
            RejectReason::TooSlow => pb::RejectReason::TooSlow,
            RejectReason::Direction => pb::RejectReason::Direction,
            RejectReason::Other => pb::RejectReason::Unspecified,
        }) as i32
    }

    fn from_pb(v: i32) -> Self {
        match pb::RejectReason::try_from(v) {
            Ok(pb::RejectReason::UnknownStream) => RejectReason::UnknownStream,
            Ok(pb::RejectReason::NotAllowed) => RejectReason::NotAllowed,
            Ok(pb::RejectReason::BadOffset) => RejectReason::BadOffset,
            Ok(pb::RejectReason::Busy) => RejectReason::Busy,
            Ok(pb::RejectReason::GrantExpired) => RejectReason::GrantExpired,
            Ok(pb::RejectReason::Unpaid) => RejectReason::Unpaid,
            Ok(pb::RejectReason::Gone) => RejectReason::Gone,
            Ok(pb::RejectReason::TooSlow) => RejectReason::TooSlow,
            Ok(pb::RejectReason::Direction) => RejectReason::Direction,
            _ => RejectReason::Other,
        }
    }
}

/// Description of a stream a provider offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamInfo {
    /// Stream name.
    pub name: String,
    /// Total length in bytes, `None` for a live stream of unknown length.
    pub length: Option<u64>,
    /// SHA-256 of the whole stream, when known.
    pub sha256: Option<[u8; 32]>,
    /// A live stream's epoch (drawn each time its source starts); `None`
    /// for a finite stream.
    pub live: Option<u64>,
}

/// A refused stream and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamRejection {
    /// Stream name as asked.
    pub name: String,
    /// Why.
    pub reason: RejectReason,
    /// Human-readable detail.
    pub detail: String,
    /// For [`RejectReason::Gone`] and [`RejectReason::TooSlow`]: the
    /// earliest offset the provider still holds.
    pub earliest: Option<u64>,
}

/// A consumer asks a provider for streams.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceRequest {
    /// Where the consumer can be reached.
    pub addrs: Vec<Multiaddr>,
    /// Names of the wanted streams.
    pub streams: Vec<String>,
    /// Seconds of access asked for (the provider caps it); 0: the provider's default.
    pub hire_secs: u64,
}

/// A provider's answer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceResponse {
    /// Nonce of the request this answers.
    pub request_nonce: [u8; 16],
    /// Where the provider can be reached.
    pub addrs: Vec<Multiaddr>,
    /// Streams the provider will serve.
    pub accepted: Vec<StreamInfo>,
    /// Streams it refuses, with reasons.
    pub rejected: Vec<StreamRejection>,
    /// Unix ms until which the accepted streams may be fetched; `None` when
    /// nothing was granted (or the provider predates grants).
    pub grant_expires_ms: Option<u64>,
    /// Wei per MiB the provider charges for the accepted streams (0: free).
    pub price_per_mib: u128,
}

/// What an envelope carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    /// A service request.
    Request(ServiceRequest),
    /// A service response.
    Response(ServiceResponse),
}

impl Signal {
    /// Short name, used in JSON events (`kind`).
    pub fn kind(&self) -> &'static str {
        match self {
            Signal::Request(_) => "service_request",
            Signal::Response(_) => "service_response",
        }
    }
}

/// Addresses that do not parse are dropped: they come from strangers.
fn addrs_from_pb(raw: Vec<Vec<u8>>) -> Vec<Multiaddr> {
    raw.into_iter()
        .filter_map(|b| Multiaddr::try_from(b).ok())
        .collect()
}

fn addrs_to_pb(addrs: &[Multiaddr]) -> Vec<Vec<u8>> {
    addrs.iter().map(|a| a.to_vec()).collect()
}

impl StreamInfo {
    pub(crate) fn to_pb(&self) -> pb::StreamInfo {
        pb::StreamInfo {
            name: self.name.clone(),
            length: self.length.unwrap_or(0),
            sha256: self.sha256.map(|h| h.to_vec()).unwrap_or_default(),
            live: self.live.is_some(),
            epoch: self.live.unwrap_or(0),
        }
    }

    pub(crate) fn from_pb(p: pb::StreamInfo) -> Self {
        StreamInfo {
            name: p.name,
            length: (p.length > 0).then_some(p.length),
            sha256: p.sha256.as_slice().try_into().ok(),
            live: p.live.then_some(p.epoch),
        }
    }
}

impl StreamRejection {
    pub(crate) fn to_pb(&self) -> pb::StreamRejection {
        pb::StreamRejection {
            name: self.name.clone(),
            reason: self.reason.to_pb(),
            detail: self.detail.clone(),
            earliest: self.earliest.unwrap_or(0),
        }
    }

    pub(crate) fn from_pb(p: pb::StreamRejection) -> Self {
        StreamRejection {
            name: p.name,
            reason: RejectReason::from_pb(p.reason),
            detail: p.detail,
            earliest: matches!(
                RejectReason::from_pb(p.reason),
                RejectReason::Gone | RejectReason::TooSlow
            )
            .then_some(p.earliest),
        }
    }
}

impl Signal {
    pub(crate) fn to_pb(&self) -> pb::signal_body::Kind {
        match self {
            Signal::Request(r) => pb::signal_body::Kind::Request(pb::ServiceRequest {
                addrs: addrs_to_pb(&r.addrs),
                streams: r.streams.clone(),
                hire_secs: r.hire_secs,
            }),
            Signal::Response(r) => pb::signal_body::Kind::Response(pb::ServiceResponse {
                request_nonce: r.request_nonce.to_vec(),
                addrs: addrs_to_pb(&r.addrs),
                accepted: r.accepted.iter().map(StreamInfo::to_pb).collect(),
                rejected: r.rejected.iter().map(StreamRejection::to_pb).collect(),
                grant_expires_ms: r.grant_expires_ms.unwrap_or(0),
                price_per_mib: match r.price_per_mib {
                    0 => String::new(),
                    p => p.to_string(),
                },
            }),
        }
    }

    pub(crate) fn from_pb(k: pb::signal_body::Kind) -> Option<Self> {
        Some(match k {
            pb::signal_body::Kind::Request(r) => Signal::Request(ServiceRequest {
                addrs: addrs_from_pb(r.addrs),
                streams: r.streams,
                hire_secs: r.hire_secs,
            }),
            pb::signal_body::Kind::Response(r) => Signal::Response(ServiceResponse {
                request_nonce: r.request_nonce.as_slice().try_into().ok()?,
                addrs: addrs_from_pb(r.addrs),
                accepted: r.accepted.into_iter().map(StreamInfo::from_pb).collect(),
                rejected: r
                    .rejected
                    .into_iter()
                    .map(StreamRejection::from_pb)
                    .collect(),
                grant_expires_ms: (r.grant_expires_ms > 0).then_some(r.grant_expires_ms),
                price_per_mib: match r.price_per_mib.as_str() {
                    "" => 0,
                    p if p.len() <= 39 && p.bytes().all(|b| b.is_ascii_digit()) => {
                        p.parse().ok()?
                    }
                    _ => return None,
                },
            }),
        })
    }
}
