//! Framing of the data-stream protocol, without I/O.
//!
//! Each control message is a 4-byte big-endian length followed by a protobuf
//! body of at most [`MAX_FRAME`] bytes. The consumer sends one
//! [`StreamRequest`]; the provider answers one [`StreamHeader`] and, when it
//! accepts, raw bytes from the requested offset until the end of the stream.
//! [`parse_frame`] works on whatever bytes have arrived so far, so the caller
//! decides how to read.

use crate::signal::{StreamInfo, StreamRejection};
use ledgermesh_proto::v1 as pb;
use prost::Message;

/// Largest control frame body, in bytes.
pub const MAX_FRAME: usize = 4096;

/// A framing error: the peer is violating the protocol.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// Announced length over [`MAX_FRAME`].
    #[error("frame of {0} bytes exceeds the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    /// The body is not the expected message.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// The header neither accepts nor rejects.
    #[error("stream header carries neither info nor rejection")]
    EmptyHeader,
}

/// What a consumer asks for on a fresh stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamRequest {
    /// Stream name.
    pub name: String,
    /// First byte wanted.
    pub offset: u64,
    /// A live stream: start at the live edge instead of `offset`.
    pub live_edge: bool,
    /// The consumer sends bytes (to an inbound stream) and reads the answer.
    pub send: bool,
}

/// The provider's first frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamHeader {
    /// Bytes from `offset` follow.
    Accepted {
        /// The stream.
        info: StreamInfo,
        /// Offset of the first byte that follows.
        offset: u64,
    },
    /// Refused; nothing follows.
    Rejected(StreamRejection),
}

fn frame(body: Vec<u8>) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// Splits one frame body off the front of `buf`: `Ok(None)` when more bytes
/// are needed, else the body and the number of bytes consumed.
pub fn split_frame(buf: &[u8]) -> Result<Option<(&[u8], usize)>, FrameError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    if buf.len() < 4 + len {
        return Ok(None);
    }
    Ok(Some((&buf[4..4 + len], 4 + len)))
}

impl StreamRequest {
    /// The framed bytes.
    pub fn encode(&self) -> Vec<u8> {
        frame(
            pb::StreamRequest {
                name: self.name.clone(),
                offset: self.offset,
                live_edge: self.live_edge,
                send: self.send,
            }
            .encode_to_vec(),
        )
    }

    /// Parses a frame body.
    pub fn decode(body: &[u8]) -> Result<Self, FrameError> {
        let p =
            pb::StreamRequest::decode(body).map_err(|e| FrameError::Malformed(e.to_string()))?;
        Ok(StreamRequest {
            name: p.name,
            offset: p.offset,
            live_edge: p.live_edge,
            send: p.send,
        })
    }
}

impl StreamHeader {
    /// The framed bytes.
    pub fn encode(&self) -> Vec<u8> {
        let p = match self {
            StreamHeader::Accepted { info, offset } => pb::StreamHeader {
                rejection: None,
                info: Some(info.to_pb()),
                offset: *offset,
            },
            StreamHeader::Rejected(r) => pb::StreamHeader {
                rejection: Some(r.to_pb()),
                info: None,
                offset: 0,
            },
        };
        frame(p.encode_to_vec())
    }

    /// Parses a frame body.
    pub fn decode(body: &[u8]) -> Result<Self, FrameError> {
        let p = pb::StreamHeader::decode(body).map_err(|e| FrameError::Malformed(e.to_string()))?;
        match (p.rejection, p.info) {
            (Some(r), _) => Ok(StreamHeader::Rejected(StreamRejection::from_pb(r))),
            (None, Some(info)) => Ok(StreamHeader::Accepted {
                info: StreamInfo::from_pb(info),
                offset: p.offset,
            }),
            (None, None) => Err(FrameError::EmptyHeader),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signal::RejectReason;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn request_round_trips_through_any_split(name in "[a-z0-9._-]{0,64}", offset: u64, cut in 0usize..80) {
            let req = StreamRequest { name, offset, live_edge: false, send: false };
            let bytes = req.encode();
            let cut = cut.min(bytes.len());
            if cut < bytes.len() {
                prop_assert_eq!(split_frame(&bytes[..cut]).unwrap(), None);
            }
            let (body, used) = split_frame(&bytes).unwrap().unwrap();
            prop_assert_eq!(used, bytes.len());
            prop_assert_eq!(StreamRequest::decode(body).unwrap(), req);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(Some((body, _))) = split_frame(&bytes) {
                let _ = StreamHeader::decode(body);
                let _ = StreamRequest::decode(body);
            }
        }

        /// Arbitrary bodies behind a valid length prefix: every input
        /// reaches the decoders (random bytes alone almost never carry a
        /// valid prefix), and none panics or yields an oversized frame.
        #[test]
        fn arbitrary_bodies_reach_the_decoders_and_never_panic(
            body in proptest::collection::vec(any::<u8>(), 0..300),
            trailing in proptest::collection::vec(any::<u8>(), 0..8),
        ) {
            let mut framed = (body.len() as u32).to_be_bytes().to_vec();
            framed.extend_from_slice(&body);
            framed.extend_from_slice(&trailing);
            let (got, used) = split_frame(&framed).unwrap().expect("a whole frame");
            prop_assert_eq!(got, &body[..]);
            prop_assert_eq!(used, 4 + body.len());
            if let Ok(h) = StreamHeader::decode(got) {
                // What decodes re-encodes to a frame that decodes the same.
                let again = h.encode();
                let (b2, _) = split_frame(&again).unwrap().unwrap();
                prop_assert_eq!(StreamHeader::decode(b2).unwrap(), h);
            }
            if let Ok(r) = StreamRequest::decode(got) {
                let again = r.encode();
                let (b2, _) = split_frame(&again).unwrap().unwrap();
                prop_assert_eq!(StreamRequest::decode(b2).unwrap(), r);
            }
        }
    }

    #[test]
    fn header_round_trips() {
        for h in [
            StreamHeader::Accepted {
                info: StreamInfo {
                    name: "a".into(),
                    length: Some(9),
                    sha256: Some([7; 32]),
                    live: None,
                },
                offset: 3,
            },
            StreamHeader::Rejected(StreamRejection {
                name: "b".into(),
                reason: RejectReason::UnknownStream,
                detail: "no such stream".into(),
                earliest: None,
            }),
        ] {
            let bytes = h.encode();
            let (body, _) = split_frame(&bytes).unwrap().unwrap();
            assert_eq!(StreamHeader::decode(body).unwrap(), h);
        }
    }

    #[test]
    fn oversized_frame_is_refused_before_buffering() {
        let bytes = ((MAX_FRAME + 1) as u32).to_be_bytes();
        assert_eq!(
            split_frame(&bytes),
            Err(FrameError::TooLarge(MAX_FRAME + 1))
        );
    }
}
