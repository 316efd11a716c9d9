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
//!   4242: transport_ciphers  varint  ours, not libp2p's: see below
//! ```
//!
//! **Transport cipher.** The libp2p specification fixes ChaCha20-Poly1305
//! for the handshake and for the transport messages after it. Our nodes add
//! field 4242, a bit set of the transport ciphers the sender can also run
//! (bit 0: Noise's `AESGCM`, AES-256-GCM, announced by a CPU with AES
//! instructions). When both payloads carry a bit, the transport after the
//! handshake uses that cipher with the same split keys; otherwise it stays
//! ChaCha20-Poly1305 ([`transport_cipher`]). The handshake itself does not
//! change, and the field sits inside the encrypted, authenticated payloads,
//! so nobody between the two can add or strip it. A stock peer reads past
//! an unknown field and never sends one: with it, nothing differs from
//! libp2p-noise.
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
    /// The transport ciphers the sender can run besides ChaCha20-Poly1305
    /// (field [`CIPHERS_FIELD`], a bit set of [`AESGCM`]…; 0 for a stock peer).
    pub transport_ciphers: u64,
}

/// Our payload field listing the extra transport ciphers (a varint).
pub const CIPHERS_FIELD: u64 = 4242;

/// The transport-cipher bit for Noise's `AESGCM` (AES-256-GCM).
pub const AESGCM: u64 = 1;

/// An AESGCM transport rekeys each direction (Noise's `REKEY`: the first 32
/// bytes of ENCRYPT(k, 2^64 − 1, "", 32 zero bytes)) before every message
/// whose number is a positive multiple of this, so one key seals at most
/// 2^20 messages (≤ 64 GiB): AES-GCM's bounds are in blocks per key (TLS 1.3
/// rekeys after 2^24.5 records), ChaCha20-Poly1305's are far off.
pub const AESGCM_REKEY_EVERY: u64 = 1 << 20;

/// The cipher a Noise channel's transport messages use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportCipher {
    /// `ChaChaPoly`: the libp2p default, with every peer.
    ChaChaPoly,
    /// `AESGCM` (AES-256-GCM): between two of our nodes that both announce it.
    AesGcm,
}

impl TransportCipher {
    /// Noise's name for it.
    pub fn name(self) -> &'static str {
        match self {
            TransportCipher::ChaChaPoly => "ChaChaPoly",
            TransportCipher::AesGcm => "AESGCM",
        }
    }

    /// Whether the key is replaced by its `REKEY` before message `n`.
    pub fn rekeys_before(self, n: u64, every: u64) -> bool {
        self == TransportCipher::AesGcm && n > 0 && n.is_multiple_of(every)
    }

    /// The 96-bit nonce of message number `n`: four zero bytes, then `n`,
    /// little-endian for ChaChaPoly and big-endian for AESGCM (the Noise
    /// specification's cipher functions).
    pub fn nonce(self, n: u64) -> [u8; 12] {
        match self {
            TransportCipher::ChaChaPoly => nonce_bytes(n),
            TransportCipher::AesGcm => {
                let mut nonce = [0u8; 12];
                nonce[4..].copy_from_slice(&n.to_be_bytes());
                nonce
            }
        }
    }
}

/// The transport cipher two payloads agree on: AESGCM if both announce it,
/// ChaChaPoly otherwise. Symmetric, so both ends reach the same answer.
pub fn transport_cipher(ours: u64, theirs: u64) -> TransportCipher {
    if ours & theirs & AESGCM != 0 {
        TransportCipher::AesGcm
    } else {
        TransportCipher::ChaChaPoly
    }
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
    /// The protobuf encoding (fields 1, 2 and [`CIPHERS_FIELD`], each only
    /// when not empty or zero, as proto3 does).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.identity_key.len() + self.identity_sig.len() + 16);
        for (field, value) in [(1u64, &self.identity_key), (2, &self.identity_sig)] {
            if value.is_empty() {
                continue;
            }
            put_varint(&mut out, (field << 3) | 2);
            put_varint(&mut out, value.len() as u64);
            out.extend_from_slice(value);
        }
        if self.transport_ciphers != 0 {
            put_varint(&mut out, CIPHERS_FIELD << 3);
            put_varint(&mut out, self.transport_ciphers);
        }
        out
    }

    /// Decodes a payload. Unknown fields and the extensions are read past;
    /// a repeated field keeps its last value (protobuf's rule). Field
    /// [`CIPHERS_FIELD`] with another wire type is read past too (it is not
    /// libp2p's number, so a stranger may use it for something else).
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
                    let value = take_varint(&mut bytes)?;
                    if field == CIPHERS_FIELD {
                        payload.transport_ciphers = value;
                        continue;
                    }
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
        let mut p = HandshakePayload {
            identity_key: vec![8, 1, 18, 32, 7, 7, 7],
            identity_sig: vec![0xAB; 64],
            transport_ciphers: 0,
        };
        let bytes = p.encode();
        // Field 1, length 7, then field 2, length 64: a stock payload.
        assert_eq!(&bytes[..2], &[0x0a, 7]);
        assert_eq!(&bytes[9..11], &[0x12, 64]);
        assert_eq!(bytes.len(), 11 + 64);
        assert_eq!(HandshakePayload::decode(&bytes).unwrap(), p);
        // The cipher field: key 4242 << 3 = 33936 (varint 0x90 0x89 0x02), value 1.
        p.transport_ciphers = AESGCM;
        let bytes = p.encode();
        assert_eq!(&bytes[75..], &[0x90, 0x89, 0x02, 0x01]);
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
            transport_ciphers: 0,
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
        // field 4242 as bytes (someone else's use of the number): read past
        bytes.extend_from_slice(&[0x92, 0x89, 0x02, 2, 0xAA, 0xBB]);
        let p = HandshakePayload::decode(&bytes).unwrap();
        assert_eq!(p.identity_key, vec![1, 2, 3]);
        assert_eq!(p.identity_sig, vec![4]);
        assert_eq!(p.transport_ciphers, 0);
    }

    #[test]
    fn aesgcm_only_when_both_announce_it() {
        use TransportCipher::*;
        assert_eq!(transport_cipher(AESGCM, AESGCM), AesGcm);
        assert_eq!(transport_cipher(AESGCM | 6, AESGCM | 8), AesGcm);
        assert_eq!(transport_cipher(AESGCM, 0), ChaChaPoly);
        assert_eq!(transport_cipher(0, AESGCM), ChaChaPoly);
        assert_eq!(transport_cipher(2, 2), ChaChaPoly);
        assert_eq!(ChaChaPoly.nonce(0x0102), nonce_bytes(0x0102));
        assert_eq!(AesGcm.nonce(0x0102), [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2]);
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
