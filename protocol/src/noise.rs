//! The parts of libp2p's Noise handshake (`/noise`) that are pure data: the
//! handshake payload each side sends with its static key, and what that
//! payload's signature covers. The node's secure channel
//! (`node/src/swarm/noise`) runs the XX handshake and the transport framing
//! around them.
//!
//! The payload is the protobuf message the libp2p Noise specification names
//! `NoiseHandshakePayload`:
//!
//! ```text
//!   1: identity_key  bytes   the libp2p public key, protobuf-encoded
//!   2: identity_sig  bytes   its signature over STATIC_KEY_DOMAIN ‖ static DH key
//!   4: extensions    message (WebTransport cert hashes, muxers): read past
//! ```
//!
//! It is decoded by hand (a few dozen lines, no generated code): it is the
//! first thing a stranger's bytes reach after decryption, so the decoder is
//! small, bounded by its input, and fuzzed (`fuzz/fuzz_targets/noise_payload.rs`).

use thiserror::Error;

/// What a peer's identity key signs, followed by its static X25519 key.
pub const STATIC_KEY_DOMAIN: &[u8] = b"noise-libp2p-static-key:";

/// The Noise protocol this handshake runs.
pub const NOISE_PARAMS: &str = "Noise_XX_25519_ChaChaPoly_SHA256";

/// The largest Noise message (handshake or transport), without its
/// two-byte length prefix.
pub const MAX_MESSAGE: usize = 65_535;

/// The AEAD tag every encrypted message carries.
pub const TAG_LEN: usize = 16;

/// The most plaintext one transport message carries: 1 KiB under the
/// largest message, as `libp2p-noise` does, so a stream costs the same bytes
/// on the wire as with a stock peer (a relay that cuts a circuit at 128 KiB
/// passes two whole frames and the connection's overhead, not one).
pub const MAX_PLAINTEXT: usize = MAX_MESSAGE - 1024;

/// The handshake payload: who the sender is, and its proof that the static
/// Noise key is its own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HandshakePayload {
    /// The sender's libp2p public key, protobuf-encoded.
    pub identity_key: Vec<u8>,
    /// The sender's signature over [`STATIC_KEY_DOMAIN`] ‖ its static DH key.
    pub identity_sig: Vec<u8>,
}

/// Why a handshake payload was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PayloadError {
    /// The bytes end inside a field.
    #[error("handshake payload is truncated")]
    Truncated,
    /// A varint longer than ten bytes.
    #[error("handshake payload has an overlong varint")]
    Varint,
    /// Field number 0, or a wire type protobuf does not define (or groups).
    #[error("handshake payload has an invalid field (key {0})")]
    Field(u64),
    /// A known field with the wrong wire type.
    #[error("handshake payload field {0} has the wrong wire type")]
    WireType(u64),
}

impl HandshakePayload {
    /// The protobuf encoding (fields 1 and 2, each only when non-empty, as
    /// proto3 does).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.identity_key.len() + self.identity_sig.len() + 8);
        for (field, value) in [(1u64, &self.identity_key), (2, &self.identity_sig)] {
            if value.is_empty() {
                continue;
            }
            put_varint(&mut out, (field << 3) | 2);
            put_varint(&mut out, value.len() as u64);
            out.extend_from_slice(value);
        }
        out
    }

    /// Decodes a payload. Unknown fields and the extensions are read past;
    /// a repeated field keeps its last value (protobuf's rule).
    pub fn decode(mut bytes: &[u8]) -> Result<Self, PayloadError> {
        let mut payload = HandshakePayload::default();
        while !bytes.is_empty() {
            let key = take_varint(&mut bytes)?;
            let (field, wire) = (key >> 3, key & 7);
            if field == 0 {
                return Err(PayloadError::Field(key));
            }
            match wire {
                0 => {
                    take_varint(&mut bytes)?;
                }
                1 => take(&mut bytes, 8).map(drop)?,
                5 => take(&mut bytes, 4).map(drop)?,
                2 => {
                    let len = take_varint(&mut bytes)?;
                    let len = usize::try_from(len).map_err(|_| PayloadError::Truncated)?;
                    let value = take(&mut bytes, len)?;
                    match field {
                        1 => payload.identity_key = value.to_vec(),
                        2 => payload.identity_sig = value.to_vec(),
                        _ => {}
                    }
                    continue;
                }
                _ => return Err(PayloadError::Field(key)),
            }
            if field == 1 || field == 2 || field == 4 {
                return Err(PayloadError::WireType(field));
            }
        }
        Ok(payload)
    }
}

/// What the sender's identity key signs: the domain, then the static key.
pub fn signed_static_key(static_key: &[u8]) -> Vec<u8> {
    [STATIC_KEY_DOMAIN, static_key].concat()
}

/// The 96-bit ChaChaPoly nonce Noise uses for message number `n`: four zero
/// bytes, then `n` little-endian.
pub fn nonce_bytes(n: u64) -> [u8; 12] {
    let mut nonce = [0u8; 12];
    nonce[4..].copy_from_slice(&n.to_le_bytes());
    nonce
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn take_varint(bytes: &mut &[u8]) -> Result<u64, PayloadError> {
    let mut value = 0u64;
    for i in 0..10 {
        let (&b, rest) = bytes.split_first().ok_or(PayloadError::Truncated)?;
        *bytes = rest;
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(PayloadError::Varint)
}

fn take<'a>(bytes: &mut &'a [u8], len: usize) -> Result<&'a [u8], PayloadError> {
    if bytes.len() < len {
        return Err(PayloadError::Truncated);
    }
    let (value, rest) = bytes.split_at(len);
    *bytes = rest;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_round_trip() {
        let p = HandshakePayload {
            identity_key: vec![8, 1, 18, 32, 7, 7, 7],
            identity_sig: vec![0xAB; 64],
        };
        let bytes = p.encode();
        // Field 1, length 7, then field 2, length 64.
        assert_eq!(&bytes[..2], &[0x0a, 7]);
        assert_eq!(&bytes[9..11], &[0x12, 64]);
        assert_eq!(HandshakePayload::decode(&bytes).unwrap(), p);
        assert_eq!(HandshakePayload::default().encode(), Vec::<u8>::new());
        assert_eq!(
            HandshakePayload::decode(&[]).unwrap(),
            HandshakePayload::default()
        );
    }

    #[test]
    fn extensions_and_unknown_fields_are_read_past() {
        let mut bytes = HandshakePayload {
            identity_key: vec![1, 2, 3],
            identity_sig: vec![4],
        }
        .encode();
        // extensions { stream_muxers: "/yamux/1.0.0" }
        let muxer = b"/yamux/1.0.0";
        let mut ext = vec![0x12, muxer.len() as u8];
        ext.extend_from_slice(muxer);
        bytes.push(0x22);
        bytes.push(ext.len() as u8);
        bytes.extend_from_slice(&ext);
        // field 9 varint, field 10 fixed64, field 11 fixed32
        bytes.extend_from_slice(&[0x48, 0x96, 0x01]);
        bytes.extend_from_slice(&[0x51, 1, 2, 3, 4, 5, 6, 7, 8]);
        bytes.extend_from_slice(&[0x5d, 1, 2, 3, 4]);
        let p = HandshakePayload::decode(&bytes).unwrap();
        assert_eq!(p.identity_key, vec![1, 2, 3]);
        assert_eq!(p.identity_sig, vec![4]);
    }

    #[test]
    fn malformed_payloads_are_refused() {
        assert_eq!(
            HandshakePayload::decode(&[0x0a, 5, 1, 2]),
            Err(PayloadError::Truncated)
        );
        assert_eq!(
            HandshakePayload::decode(&[0x0a]),
            Err(PayloadError::Truncated)
        );
        assert_eq!(
            HandshakePayload::decode(&[0x02, 0]),
            Err(PayloadError::Field(2))
        );
        assert_eq!(
            HandshakePayload::decode(&[0x0b]),
            Err(PayloadError::Field(0x0b))
        );
        assert_eq!(
            HandshakePayload::decode(&[0x08, 1]),
            Err(PayloadError::WireType(1))
        );
        assert_eq!(
            HandshakePayload::decode(&[0xff; 11]),
            Err(PayloadError::Varint)
        );
        // A length that does not fit the rest, even near u64::MAX.
        let mut huge = vec![0x0a];
        huge.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
        assert_eq!(
            HandshakePayload::decode(&huge),
            Err(PayloadError::Truncated)
        );
    }

    #[test]
    fn the_last_value_of_a_repeated_field_wins() {
        let bytes = [0x0a, 1, 9, 0x0a, 2, 7, 8];
        assert_eq!(
            HandshakePayload::decode(&bytes).unwrap().identity_key,
            vec![7, 8]
        );
    }

    #[test]
    fn nonce_layout() {
        assert_eq!(nonce_bytes(0), [0; 12]);
        assert_eq!(nonce_bytes(0x0102), [0, 0, 0, 0, 2, 1, 0, 0, 0, 0, 0, 0]);
    }
}
