//! Circuit relay v2 messages on the wire, without I/O: each is an
//! unsigned-varint length and a protobuf body of at most [`MAX_MESSAGE`]
//! bytes. The relay server reads one hop request per stream, answers one
//! status, and asks the destination with one stop `CONNECT`.

use super::{CircuitLimit, Status};
use ledgermesh_proto::circuit_v2 as pb;
use libp2p_identity::PeerId;
use prost::Message;

/// Largest message body, in bytes (the spec's 4 KiB).
pub const MAX_MESSAGE: usize = 4096;

/// A peer broke the relay protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// Announced length over [`MAX_MESSAGE`].
    #[error("message of {0} bytes exceeds the {MAX_MESSAGE}-byte limit")]
    TooLarge(u64),
    /// The length prefix is not a valid varint.
    #[error("bad length prefix")]
    BadLength,
    /// The body does not decode.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// A message of a type that is not expected here.
    #[error("unexpected message: {0}")]
    Unexpected(&'static str),
}

/// Reads the length prefix at the front of `buf`: `Ok(None)` when more
/// bytes are needed, else the body's length and the prefix's.
pub fn frame_len(buf: &[u8]) -> Result<Option<(usize, usize)>, WireError> {
    let mut len: u64 = 0;
    for (i, b) in buf.iter().enumerate() {
        len |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            if len > MAX_MESSAGE as u64 {
                return Err(WireError::TooLarge(len));
            }
            return Ok(Some((len as usize, i + 1)));
        }
        // A length under 4 KiB never needs a third byte.
        if i >= 1 {
            return Err(WireError::BadLength);
        }
    }
    Ok(None)
}

/// Splits one message body off the front of `buf`: `Ok(None)` when more
/// bytes are needed, else the body and the number of bytes consumed.
pub fn split_frame(buf: &[u8]) -> Result<Option<(&[u8], usize)>, WireError> {
    let Some((len, prefix)) = frame_len(buf)? else {
        return Ok(None);
    };
    let end = prefix + len;
    Ok((buf.len() >= end).then(|| (&buf[prefix..end], end)))
}

/// The framed bytes of `msg`.
pub fn frame(msg: &impl Message) -> Vec<u8> {
    let body = msg.encode_to_vec();
    let mut out = Vec::with_capacity(body.len() + 2);
    let mut n = body.len() as u64;
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            break;
        }
        out.push(b | 0x80);
    }
    out.extend_from_slice(&body);
    out
}

/// What a peer asks the relay on a hop stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HopRequest {
    /// Reserve (or renew) a slot: the sender wants to be reachable through us.
    Reserve,
    /// Open a circuit to this peer.
    Connect(PeerId),
}

/// Decodes the first message of a hop stream.
pub fn decode_hop_request(body: &[u8]) -> Result<HopRequest, WireError> {
    let msg = pb::HopMessage::decode(body).map_err(|e| WireError::Malformed(e.to_string()))?;
    match pb::hop_message::Type::try_from(msg.r#type) {
        Ok(pb::hop_message::Type::Reserve) => Ok(HopRequest::Reserve),
        Ok(pb::hop_message::Type::Connect) => {
            let peer = msg
                .peer
                .ok_or(WireError::Malformed("CONNECT without a peer".into()))?;
            PeerId::from_bytes(&peer.id)
                .map(HopRequest::Connect)
                .map_err(|e| WireError::Malformed(format!("peer id: {e}")))
        }
        Ok(pb::hop_message::Type::Status) => Err(WireError::Unexpected("STATUS on a hop request")),
        Err(_) => Err(WireError::Malformed(format!("type {}", msg.r#type))),
    }
}

fn limit(l: &CircuitLimit) -> pb::Limit {
    pb::Limit {
        duration: Some(u32::try_from(l.duration.as_secs()).unwrap_or(u32::MAX)),
        data: Some(l.bytes),
    }
}

/// A granted reservation, as the reserving peer is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservationGrant {
    /// End of the reservation, in seconds since the Unix epoch.
    pub expire_unix_s: u64,
    /// The relay's addresses (binary multiaddrs, each ending in `/p2p/<relay>`).
    pub addrs: Vec<Vec<u8>>,
    /// The limits of circuits to the peer.
    pub limit: CircuitLimit,
}

/// The framed answer to a reservation: granted, or refused with `status`.
pub fn reserve_answer(answer: Result<&ReservationGrant, Status>) -> Vec<u8> {
    let (status, reservation, lim) = match answer {
        Ok(g) => (
            Status::Ok,
            Some(pb::Reservation {
                expire: g.expire_unix_s,
                addrs: g.addrs.clone(),
                voucher: None,
            }),
            Some(limit(&g.limit)),
        ),
        Err(s) => (s, None, None),
    };
    frame(&pb::HopMessage {
        r#type: pb::hop_message::Type::Status as i32,
        peer: None,
        reservation,
        limit: lim,
        status: Some(status.code()),
    })
}

/// The framed answer to a circuit request: open with `limit`, or refused.
pub fn connect_answer(answer: Result<&CircuitLimit, Status>) -> Vec<u8> {
    let (status, lim) = match answer {
        Ok(l) => (Status::Ok, Some(limit(l))),
        Err(s) => (s, None),
    };
    frame(&pb::HopMessage {
        r#type: pb::hop_message::Type::Status as i32,
        peer: None,
        reservation: None,
        limit: lim,
        status: Some(status.code()),
    })
}

/// The framed stop `CONNECT` that tells the destination `src` is calling.
pub fn stop_connect(src: &PeerId, l: &CircuitLimit) -> Vec<u8> {
    frame(&pb::StopMessage {
        r#type: pb::stop_message::Type::Connect as i32,
        peer: Some(pb::Peer {
            id: src.to_bytes(),
            addrs: vec![],
        }),
        limit: Some(limit(l)),
        status: None,
    })
}

/// The destination's answer to a stop `CONNECT`: its status code.
pub fn decode_stop_status(body: &[u8]) -> Result<i32, WireError> {
    let msg = pb::StopMessage::decode(body).map_err(|e| WireError::Malformed(e.to_string()))?;
    match pb::stop_message::Type::try_from(msg.r#type) {
        Ok(pb::stop_message::Type::Status) => msg
            .status
            .ok_or(WireError::Malformed("STATUS without a status".into())),
        Ok(pb::stop_message::Type::Connect) => {
            Err(WireError::Unexpected("CONNECT on a stop reply"))
        }
        Err(_) => Err(WireError::Malformed(format!("type {}", msg.r#type))),
    }
}

/// A client's side, for tests and tools: the framed hop requests.
pub fn hop_request(req: &HopRequest) -> Vec<u8> {
    let (t, peer) = match req {
        HopRequest::Reserve => (pb::hop_message::Type::Reserve, None),
        HopRequest::Connect(p) => (
            pb::hop_message::Type::Connect,
            Some(pb::Peer {
                id: p.to_bytes(),
                addrs: vec![],
            }),
        ),
    };
    frame(&pb::HopMessage {
        r#type: t as i32,
        peer,
        reservation: None,
        limit: None,
        status: None,
    })
}

/// A client's side: the status code and limit of a hop answer.
pub fn decode_hop_status(body: &[u8]) -> Result<(i32, Option<CircuitLimit>), WireError> {
    let msg = pb::HopMessage::decode(body).map_err(|e| WireError::Malformed(e.to_string()))?;
    if msg.r#type != pb::hop_message::Type::Status as i32 {
        return Err(WireError::Unexpected("a request where a status was due"));
    }
    let status = msg
        .status
        .ok_or(WireError::Malformed("STATUS without a status".into()))?;
    let lim = msg.limit.map(|l| CircuitLimit {
        duration: std::time::Duration::from_secs(l.duration.unwrap_or(0).into()),
        bytes: l.data.unwrap_or(0),
    });
    Ok((status, lim))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_back_whole_and_partial() {
        let peer = PeerId::random();
        let bytes = hop_request(&HopRequest::Connect(peer));
        for cut in 0..bytes.len() {
            assert_eq!(split_frame(&bytes[..cut]), Ok(None), "cut at {cut}");
        }
        let (body, used) = split_frame(&bytes).unwrap().unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!(decode_hop_request(body), Ok(HopRequest::Connect(peer)));
        // RESERVE is type 0: proto2 still puts it on the wire.
        let reserve = hop_request(&HopRequest::Reserve);
        assert_eq!(reserve, vec![2, 0x08, 0x00]);
        let (body, _) = split_frame(&reserve).unwrap().unwrap();
        assert_eq!(decode_hop_request(body), Ok(HopRequest::Reserve));
    }

    #[test]
    fn oversized_and_garbled_frames_are_errors() {
        // 4097 as a varint.
        assert_eq!(split_frame(&[0x81, 0x20]), Err(WireError::TooLarge(4097)));
        assert_eq!(split_frame(&[0x80, 0x80, 0x01]), Err(WireError::BadLength));
        assert!(matches!(
            decode_hop_request(&[0xff, 0xff]),
            Err(WireError::Malformed(_))
        ));
        let status = connect_answer(Err(Status::NoReservation));
        let (body, _) = split_frame(&status).unwrap().unwrap();
        assert_eq!(
            decode_hop_request(body),
            Err(WireError::Unexpected("STATUS on a hop request"))
        );
        assert_eq!(decode_hop_status(body), Ok((204, None)));
    }

    #[test]
    fn a_grant_carries_its_expiry_addresses_and_limit() {
        let grant = ReservationGrant {
            expire_unix_s: 1_800_000_000,
            addrs: vec![vec![4, 127, 0, 0, 1]],
            limit: CircuitLimit {
                duration: std::time::Duration::from_secs(120),
                bytes: 128 << 10,
            },
        };
        let bytes = reserve_answer(Ok(&grant));
        let (body, _) = split_frame(&bytes).unwrap().unwrap();
        let msg = pb::HopMessage::decode(body).unwrap();
        assert_eq!(msg.status, Some(100));
        let r = msg.reservation.unwrap();
        assert_eq!((r.expire, r.addrs), (grant.expire_unix_s, grant.addrs));
        assert_eq!(decode_hop_status(body).unwrap().1, Some(grant.limit));
    }
}
