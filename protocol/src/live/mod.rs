//! Live streams without I/O: the signed chunk, the provider's ring of
//! recent chunks, and the consumer's check of what arrives.
//!
//! A live source is read once; each read becomes a [`Chunk`] at its absolute
//! offset, signed by the provider's identity, framed once and kept in a
//! [`Ring`] of bounded size that every buyer reads from at its own pace. A
//! buyer that falls behind the ring's start is cut (`too_slow`); one asking
//! for an offset that has left it is refused (`gone`), told the earliest
//! offset still held.
//!
//! ```text
//!  source ─► Chunk{offset, data, sig} ─► Ring (evicts the oldest past its cap)
//!                                          │ lookup(pos): Chunk | Wait | Gone{earliest} | End
//!                                          ▼
//!                              one writer per buyer ─► Follower::accept (verify, place)
//! ```

mod ring;
#[cfg(test)]
mod tests;

pub use ring::{Lookup, Ring};

use crate::framing::FrameError;
use ledgermesh_proto::v1 as pb;
use libp2p_identity::{Keypair, PublicKey};
use prost::Message;
use sha2::{Digest, Sha256};

/// Most data bytes in one chunk.
pub const MAX_CHUNK: usize = 64 * 1024;

/// Largest live frame body: a full chunk, its signature and field tags.
pub const MAX_LIVE_FRAME: usize = MAX_CHUNK + 256;

/// Domain separation of chunk signatures.
const DOMAIN: &[u8] = b"ledgermesh/live-chunk/1";

/// One signed piece of a live stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Absolute offset of `data[0]` since the source started.
    pub offset: u64,
    /// The bytes (at most [`MAX_CHUNK`]; empty for the end marker).
    pub data: Vec<u8>,
    /// The source ended at `offset` (nothing follows).
    pub end: bool,
    /// When the provider read it from its source (unix µs, its clock).
    pub ts_us: u64,
    /// Ed25519 signature over [`signing_bytes`].
    pub signature: Vec<u8>,
}

/// What the provider signs for a chunk: the stream's name and epoch, the
/// chunk's offset and time, whether it ends the stream, and the SHA-256 of
/// its data.
pub fn signing_bytes(stream: &str, epoch: u64, chunk: &Chunk) -> Vec<u8> {
    let Chunk {
        offset,
        data,
        end,
        ts_us,
        ..
    } = chunk;
    let mut out = Vec::with_capacity(DOMAIN.len() + 2 + stream.len() + 8 + 8 + 8 + 1 + 32);
    out.extend_from_slice(DOMAIN);
    out.extend_from_slice(&(stream.len() as u16).to_be_bytes());
    out.extend_from_slice(stream.as_bytes());
    out.extend_from_slice(&epoch.to_be_bytes());
    out.extend_from_slice(&offset.to_be_bytes());
    out.extend_from_slice(&ts_us.to_be_bytes());
    out.push(u8::from(*end));
    out.extend_from_slice(&Sha256::digest(data));
    out
}

/// Why a live frame or chunk is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChunkError {
    /// The frame is not a chunk.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The signature does not verify under the provider's key.
    #[error("chunk at offset {offset}: bad signature")]
    BadSignature {
        /// The chunk's offset.
        offset: u64,
    },
    /// The chunk does not continue where the last one ended.
    #[error("chunk at offset {offset}: expected offset {expected}")]
    OutOfOrder {
        /// The chunk's offset.
        offset: u64,
        /// Where the stream stands.
        expected: u64,
    },
    /// Data after the end marker, or an end marker with data.
    #[error("chunk at offset {offset}: data past the end of the stream")]
    PastEnd {
        /// The chunk's offset.
        offset: u64,
    },
}

impl ChunkError {
    /// The offset the error is about, for the report.
    pub fn offset(&self) -> Option<u64> {
        match self {
            ChunkError::Frame(_) => None,
            ChunkError::BadSignature { offset }
            | ChunkError::OutOfOrder { offset, .. }
            | ChunkError::PastEnd { offset } => Some(*offset),
        }
    }
}

impl Chunk {
    /// Signs `data` at `offset` of `stream` (epoch `epoch`), read at
    /// `ts_us`, with `key`.
    pub fn sign(
        key: &Keypair,
        stream: &str,
        epoch: u64,
        offset: u64,
        data: Vec<u8>,
        end: bool,
        ts_us: u64,
    ) -> Self {
        let mut chunk = Self {
            offset,
            data,
            end,
            ts_us,
            signature: Vec::new(),
        };
        chunk.signature = key
            .sign(&signing_bytes(stream, epoch, &chunk))
            .expect("ed25519 signing cannot fail");
        chunk
    }

    /// Whether the provider with `key` signed this chunk of `stream`/`epoch`.
    pub fn verify(&self, key: &PublicKey, stream: &str, epoch: u64) -> Result<(), ChunkError> {
        let msg = signing_bytes(stream, epoch, self);
        if key.verify(&msg, &self.signature) {
            Ok(())
        } else {
            Err(ChunkError::BadSignature {
                offset: self.offset,
            })
        }
    }

    /// The length-prefixed frame, as sent after a live stream's header.
    pub fn encode_frame(&self) -> Vec<u8> {
        let body = pb::LiveChunk {
            offset: self.offset,
            data: self.data.clone(),
            signature: self.signature.clone(),
            end: self.end,
            ts_us: self.ts_us,
        }
        .encode_to_vec();
        let mut out = Vec::with_capacity(4 + body.len());
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// Parses a frame body (see [`split_live_frame`]).
    pub fn decode(body: &[u8]) -> Result<Self, FrameError> {
        let p = pb::LiveChunk::decode(body).map_err(|e| FrameError::Malformed(e.to_string()))?;
        if p.data.len() > MAX_CHUNK {
            return Err(FrameError::TooLarge(p.data.len()));
        }
        if p.end && !p.data.is_empty() {
            return Err(FrameError::Malformed("an end marker with data".into()));
        }
        Ok(Self {
            offset: p.offset,
            data: p.data,
            end: p.end,
            ts_us: p.ts_us,
            signature: p.signature,
        })
    }

    /// A heartbeat at `offset`: no data, no signature. A provider sends one
    /// when its source has been quiet for a while, so a buyer can tell a
    /// silent feed from a dead path; it carries nothing to verify or write.
    pub fn heartbeat(offset: u64) -> Self {
        Self {
            offset,
            data: Vec::new(),
            end: false,
            ts_us: 0,
            signature: Vec::new(),
        }
    }

    /// Whether this is a heartbeat (see [`Chunk::heartbeat`]).
    pub fn is_heartbeat(&self) -> bool {
        self.data.is_empty() && !self.end
    }

    /// The offset just past this chunk.
    pub fn end_offset(&self) -> u64 {
        self.offset + self.data.len() as u64
    }
}

/// Splits one live frame off the front of `buf` (like
/// [`crate::framing::split_frame`], with the larger live limit).
pub fn split_live_frame(buf: &[u8]) -> Result<Option<(&[u8], usize)>, FrameError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > MAX_LIVE_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    if buf.len() < 4 + len {
        return Ok(None);
    }
    Ok(Some((&buf[4..4 + len], 4 + len)))
}

/// A live subscription's request was refused as behind (`gone`,
/// `too_slow`, or an offset past a restarted provider's edge): whether to
/// jump to the live edge, and the reason the `gap` reports. `None`: the
/// refusal stands. An offset asked for at the start (`first`) that is gone
/// stands; a buyer cut for being slow jumps only with `skip_ahead`.
pub fn on_behind(
    reason: crate::RejectReason,
    first: bool,
    skip_ahead: bool,
) -> Option<&'static str> {
    use crate::RejectReason::*;
    match reason {
        Gone => (!first).then_some("gone"),
        TooSlow => skip_ahead.then_some("too_slow"),
        BadOffset => (!first).then_some("restarted"),
        _ => None,
    }
}

/// What to do with a verified chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// Write `data[skip..]`: the bytes from the follower's offset on.
    Write {
        /// Leading bytes the follower already has (or never asked for).
        skip: usize,
    },
    /// The stream ended at the follower's offset.
    End,
    /// A heartbeat: the path is alive, nothing to write.
    Heartbeat,
}

/// The consumer's side of one live stream: checks that every chunk is the
/// provider's, for this stream and epoch, and continues exactly where the
/// last one ended; says which bytes to write.
#[derive(Debug, Clone)]
pub struct Follower {
    key: PublicKey,
    stream: String,
    epoch: u64,
    /// Next byte wanted.
    offset: u64,
    /// Whether any chunk was accepted on the current subscription (the first
    /// may start before `offset`: a join mid-chunk).
    started: bool,
    ended: bool,
}

impl Follower {
    /// Follows `stream` (epoch `epoch`) of the provider with `key` from `offset`.
    pub fn new(key: PublicKey, stream: &str, epoch: u64, offset: u64) -> Self {
        Self {
            key,
            stream: stream.into(),
            epoch,
            offset,
            started: false,
            ended: false,
        }
    }

    /// Next byte wanted.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The epoch followed.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Whether the end marker arrived.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// A new subscription (after a break) from `offset`, possibly a later
    /// one (a skip) or under a new epoch (the source restarted).
    pub fn resubscribe(&mut self, epoch: u64, offset: u64) {
        self.epoch = epoch;
        self.offset = offset;
        self.started = false;
    }

    /// Checks `chunk`; on success the follower has moved past it.
    pub fn accept(&mut self, chunk: &Chunk) -> Result<Accepted, ChunkError> {
        let offset = chunk.offset;
        if self.ended {
            return Err(ChunkError::PastEnd { offset });
        }
        if chunk.is_heartbeat() {
            // Unsigned and empty: it can only say the path is alive.
            return Ok(Accepted::Heartbeat);
        }
        // Placement first: a chunk that cannot be placed is refused whatever
        // its signature.
        let placed = if self.started {
            offset == self.offset
        } else {
            // The first chunk of a subscription holds the wanted offset
            // (an end marker sits exactly on it).
            offset <= self.offset
                && (chunk.end_offset() > self.offset || (chunk.end && offset == self.offset))
        };
        if !placed {
            return Err(ChunkError::OutOfOrder {
                offset,
                expected: self.offset,
            });
        }
        chunk.verify(&self.key, &self.stream, self.epoch)?;
        self.started = true;
        if chunk.end {
            self.ended = true;
            return Ok(Accepted::End);
        }
        let skip = (self.offset - offset) as usize;
        self.offset = chunk.end_offset();
        Ok(Accepted::Write { skip })
    }
}
