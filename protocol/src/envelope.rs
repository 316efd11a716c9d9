//! Sealed envelopes: how one peer sends a signed message to another through a
//! public ledger without revealing its content (addresses included).
//!
//! ```text
//!  SignalBody ──encode──► body ──sign(Ed25519, SIGN_DOMAIN‖body)──► SignedBody
//!  SignedBody ──HPKE seal to X25519(recipient PeerId), info, aad──► Envelope
//! ```
//!
//! HPKE (RFC 9180) base mode with DHKEM(X25519, HKDF-SHA256), HKDF-SHA256 and
//! ChaCha20-Poly1305. The `info` string binds the protocol version and the
//! recipient's PeerId; the clear header of the envelope is the AEAD's
//! associated data. Opening checks, in this order and each with its own error:
//! size, structure, version, recipient, decryption, signature, inner recipient,
//! freshness window, and finally the nonce against a bounded replay cache (only
//! for envelopes that passed every other check, so forgeries cannot fill it).

use crate::keys::{x25519_public_of, x25519_secret_of, EnvelopeKem, KeyError, X25519Secret};
use crate::replay::{ReplayCache, ReplayVerdict};
use crate::signal::Signal;
use hpke::rand_core::CryptoRng;
use hpke::{
    aead::ChaCha20Poly1305, kdf::HkdfSha256, Deserializable, OpModeR, OpModeS, Serializable,
};
use ledgermesh_proto::v1 as pb;
use libp2p_identity::{Keypair, PeerId, PublicKey};
use prost::Message;

/// Version of the sealing scheme carried in every envelope.
pub const ENVELOPE_VERSION: u32 = 1;
/// Prefix of the HPKE `info` string (followed by the version and recipient).
pub const INFO_DOMAIN: &[u8] = b"ledgermesh/envelope";
/// Prefix of the bytes the sender signs (followed by the encoded body).
pub const SIGN_DOMAIN: &[u8] = b"ledgermesh/signed-body/v1";

/// Limits applied when opening envelopes.
#[derive(Debug, Clone, Copy)]
pub struct OpenPolicy {
    /// Largest envelope accepted, in bytes.
    pub max_envelope_bytes: usize,
    /// How far in the future `created_ms` may lie (clock skew).
    pub max_clock_skew_ms: u64,
    /// Longest accepted lifetime (`expires_ms - created_ms`); bounds replay-cache residency.
    pub max_lifetime_ms: u64,
    /// Capacity of the replay cache.
    pub replay_capacity: usize,
    /// Live nonces one sender may hold in the replay cache.
    pub replay_quota_per_sender: usize,
}

impl Default for OpenPolicy {
    fn default() -> Self {
        Self {
            max_envelope_bytes: 4 * 1024,
            max_clock_skew_ms: 60_000,
            max_lifetime_ms: 10 * 60_000,
            replay_capacity: 65_536,
            replay_quota_per_sender: 64,
        }
    }
}

/// Why sealing failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The recipient's key cannot be derived from its PeerId.
    #[error("cannot seal to this recipient: {0}")]
    Recipient(#[from] KeyError),
    /// The sender's key cannot sign.
    #[error("sender key cannot sign: {0}")]
    Signing(String),
    /// HPKE failed (should not happen with valid keys).
    #[error("hpke seal failed: {0}")]
    Hpke(String),
}

/// Why an envelope was rejected. Each check has its own variant.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum OpenError {
    /// Larger than [`OpenPolicy::max_envelope_bytes`].
    #[error("envelope of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// Actual size.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// Not a protobuf `Envelope`.
    #[error("malformed envelope: {0}")]
    Malformed(String),
    /// A sealing scheme this node does not speak.
    #[error("unsupported envelope version {0} (this node speaks {ENVELOPE_VERSION})")]
    UnsupportedVersion(u32),
    /// Sealed to another peer.
    #[error("envelope is addressed to another peer")]
    WrongRecipient,
    /// HPKE authentication failed: tampered, truncated, or not sealed to our key.
    #[error("envelope does not decrypt (tampered or not sealed to this peer)")]
    Decrypt,
    /// The decrypted plaintext is not a well-formed signed body.
    #[error("malformed signed body: {0}")]
    MalformedBody(String),
    /// The sender key or PeerId is unusable, or they do not match.
    #[error("sender key does not match the claimed sender")]
    SenderMismatch,
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// Signed for another recipient and re-sealed to us.
    #[error("signed body names another recipient")]
    RecipientMismatch,
    /// Created too far in the future.
    #[error("envelope created {ahead_ms} ms in the future")]
    NotYetValid {
        /// How far ahead.
        ahead_ms: u64,
    },
    /// Past its expiry.
    #[error("envelope expired {ago_ms} ms ago")]
    Expired {
        /// How long ago.
        ago_ms: u64,
    },
    /// Lifetime longer than the policy allows, or expiry before creation.
    #[error("envelope lifetime {lifetime_ms} ms is invalid or exceeds the limit")]
    BadLifetime {
        /// Claimed lifetime.
        lifetime_ms: i128,
    },
    /// Nonce already seen from this sender.
    #[error("replayed envelope (nonce already seen)")]
    Replayed,
    /// Too many live nonces; try again later.
    #[error("replay cache full; envelope refused until entries expire")]
    ReplayCacheFull,
    /// The sender holds its quota of live nonces (a flood from one key).
    #[error("sender over its quota of live envelopes; refused until some expire")]
    SenderOverQuota,
}

impl OpenError {
    /// Short machine-readable reason, used in JSON events.
    pub fn reason(&self) -> &'static str {
        match self {
            OpenError::TooLarge { .. } => "too_large",
            OpenError::Malformed(_) => "malformed",
            OpenError::UnsupportedVersion(_) => "unsupported_version",
            OpenError::WrongRecipient => "wrong_recipient",
            OpenError::Decrypt => "decrypt",
            OpenError::MalformedBody(_) => "malformed_body",
            OpenError::SenderMismatch => "sender_mismatch",
            OpenError::BadSignature => "bad_signature",
            OpenError::RecipientMismatch => "recipient_mismatch",
            OpenError::NotYetValid { .. } => "not_yet_valid",
            OpenError::Expired { .. } => "expired",
            OpenError::BadLifetime { .. } => "bad_lifetime",
            OpenError::Replayed => "replayed",
            OpenError::ReplayCacheFull => "replay_cache_full",
            OpenError::SenderOverQuota => "sender_over_quota",
        }
    }
}

/// A successfully opened envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// Who sent it (verified by signature).
    pub sender: PeerId,
    /// The sender's nonce.
    pub nonce: [u8; 16],
    /// Creation time, unix ms.
    pub created_ms: u64,
    /// Expiry, unix ms.
    pub expires_ms: u64,
    /// The message.
    pub signal: Signal,
}

/// A sealed envelope ready to post, and its nonce (to match the answer).
#[derive(Debug, Clone)]
pub struct Sealed {
    /// Encoded `Envelope` bytes.
    pub bytes: Vec<u8>,
    /// Nonce of the body.
    pub nonce: [u8; 16],
}

fn info_for(recipient: &PeerId) -> Vec<u8> {
    let mut info = Vec::with_capacity(INFO_DOMAIN.len() + 4 + 40);
    info.extend_from_slice(INFO_DOMAIN);
    info.extend_from_slice(&ENVELOPE_VERSION.to_be_bytes());
    info.extend_from_slice(&recipient.to_bytes());
    info
}

fn aad_for(version: u32, recipient: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(4 + recipient.len());
    aad.extend_from_slice(&version.to_be_bytes());
    aad.extend_from_slice(recipient);
    aad
}

pub(crate) fn signed_message(body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(SIGN_DOMAIN.len() + body.len());
    m.extend_from_slice(SIGN_DOMAIN);
    m.extend_from_slice(body);
    m
}

/// Signs `signal` with `sender` and seals it to `recipient`, valid from
/// `now_ms` for `ttl_ms`.
pub fn seal<R: CryptoRng>(
    sender: &Keypair,
    recipient: &PeerId,
    signal: &Signal,
    now_ms: u64,
    ttl_ms: u64,
    rng: &mut R,
) -> Result<Sealed, SealError> {
    let mut nonce = [0u8; 16];
    rng.fill_bytes(&mut nonce);
    seal_with_nonce(sender, recipient, signal, now_ms, ttl_ms, nonce, rng)
}

/// [`seal`] with a caller-chosen nonce (tests use it to build replays).
pub fn seal_with_nonce<R: CryptoRng>(
    sender: &Keypair,
    recipient: &PeerId,
    signal: &Signal,
    now_ms: u64,
    ttl_ms: u64,
    nonce: [u8; 16],
    rng: &mut R,
) -> Result<Sealed, SealError> {
    let pk = x25519_public_of(recipient)?;
    let body = pb::SignalBody {
        sender: sender.public().to_peer_id().to_bytes(),
        recipient: recipient.to_bytes(),
        nonce: nonce.to_vec(),
        created_ms: now_ms,
        expires_ms: now_ms.saturating_add(ttl_ms),
        kind: Some(signal.to_pb()),
    }
    .encode_to_vec();
    let signature = sender
        .sign(&signed_message(&body))
        .map_err(|e| SealError::Signing(e.to_string()))?;
    let plaintext = pb::SignedBody {
        sender_key: sender.public().encode_protobuf(),
        body,
        signature,
    }
    .encode_to_vec();
    let recipient_bytes = recipient.to_bytes();
    let (enc, ciphertext) = hpke::single_shot_seal::<ChaCha20Poly1305, HkdfSha256, EnvelopeKem, _>(
        &OpModeS::Base,
        &pk,
        &info_for(recipient),
        &plaintext,
        &aad_for(ENVELOPE_VERSION, &recipient_bytes),
        rng,
    )
    .map_err(|e| SealError::Hpke(e.to_string()))?;
    let bytes = pb::Envelope {
        version: ENVELOPE_VERSION,
        recipient: recipient_bytes,
        enc: enc.to_bytes().to_vec(),
        ciphertext,
    }
    .encode_to_vec();
    Ok(Sealed { bytes, nonce })
}

/// Opens envelopes addressed to one peer and remembers their nonces.
pub struct Opener {
    me: PeerId,
    secret: X25519Secret,
    policy: OpenPolicy,
    replay: ReplayCache,
}

impl std::fmt::Debug for Opener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opener")
            .field("me", &self.me)
            .field("policy", &self.policy)
            .field("replay_entries", &self.replay.len())
            .finish_non_exhaustive()
    }
}

impl Opener {
    /// An opener for the identity `keypair` (must be Ed25519).
    pub fn new(keypair: &Keypair, policy: OpenPolicy) -> Result<Self, KeyError> {
        Ok(Self {
            me: keypair.public().to_peer_id(),
            secret: x25519_secret_of(keypair)?,
            replay: ReplayCache::new(policy.replay_capacity, policy.replay_quota_per_sender),
            policy,
        })
    }

    /// The peer this opener opens for.
    pub fn peer_id(&self) -> PeerId {
        self.me
    }

    /// Checks `bytes` fully and returns the message, or the first check that failed.
    pub fn open(&mut self, bytes: &[u8], now_ms: u64) -> Result<Opened, OpenError> {
        let opened = self.open_without_replay_check(bytes, now_ms)?;
        match self.replay.check_and_insert(
            &opened.sender.to_bytes(),
            opened.nonce,
            opened.expires_ms,
            now_ms,
        ) {
            ReplayVerdict::Fresh => Ok(opened),
            ReplayVerdict::Replayed => Err(OpenError::Replayed),
            ReplayVerdict::OverQuota => Err(OpenError::SenderOverQuota),
        }
    }

    /// Every check but the replay cache; does not record the nonce.
    pub fn open_without_replay_check(
        &self,
        bytes: &[u8],
        now_ms: u64,
    ) -> Result<Opened, OpenError> {
        if bytes.len() > self.policy.max_envelope_bytes {
            return Err(OpenError::TooLarge {
                len: bytes.len(),
                max: self.policy.max_envelope_bytes,
            });
        }
        let env = pb::Envelope::decode(bytes).map_err(|e| OpenError::Malformed(e.to_string()))?;
        if env.version != ENVELOPE_VERSION {
            return Err(OpenError::UnsupportedVersion(env.version));
        }
        if env.recipient != self.me.to_bytes() {
            return Err(OpenError::WrongRecipient);
        }
        let enc = <EnvelopeKem as hpke::Kem>::EncappedKey::from_bytes(&env.enc)
            .map_err(|_| OpenError::Malformed("bad encapsulated key".into()))?;
        let plaintext = hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, EnvelopeKem>(
            &OpModeR::Base,
            &self.secret,
            &enc,
            &info_for(&self.me),
            &env.ciphertext,
            &aad_for(env.version, &env.recipient),
        )
        .map_err(|_| OpenError::Decrypt)?;
        let signed = pb::SignedBody::decode(plaintext.as_slice())
            .map_err(|e| OpenError::MalformedBody(e.to_string()))?;
        let sender_key = PublicKey::try_decode_protobuf(&signed.sender_key)
            .map_err(|_| OpenError::SenderMismatch)?;
        if !sender_key.verify(&signed_message(&signed.body), &signed.signature) {
            return Err(OpenError::BadSignature);
        }
        let body = pb::SignalBody::decode(signed.body.as_slice())
            .map_err(|e| OpenError::MalformedBody(e.to_string()))?;
        let sender = PeerId::from_bytes(&body.sender).map_err(|_| OpenError::SenderMismatch)?;
        if sender != sender_key.to_peer_id() {
            return Err(OpenError::SenderMismatch);
        }
        if body.recipient != self.me.to_bytes() {
            return Err(OpenError::RecipientMismatch);
        }
        let lifetime = body.expires_ms as i128 - body.created_ms as i128;
        if lifetime <= 0 || lifetime > self.policy.max_lifetime_ms as i128 {
            return Err(OpenError::BadLifetime {
                lifetime_ms: lifetime,
            });
        }
        if body.created_ms > now_ms.saturating_add(self.policy.max_clock_skew_ms) {
            return Err(OpenError::NotYetValid {
                ahead_ms: body.created_ms - now_ms,
            });
        }
        if body.expires_ms < now_ms {
            return Err(OpenError::Expired {
                ago_ms: now_ms - body.expires_ms,
            });
        }
        let nonce: [u8; 16] = body
            .nonce
            .as_slice()
            .try_into()
            .map_err(|_| OpenError::MalformedBody("nonce must be 16 bytes".into()))?;
        let signal = signal_of(body.kind)?;
        Ok(Opened {
            sender,
            nonce,
            created_ms: body.created_ms,
            expires_ms: body.expires_ms,
            signal,
        })
    }
}

/// The message of a decoded body.
pub(crate) fn signal_of(kind: Option<pb::signal_body::Kind>) -> Result<Signal, OpenError> {
    kind.and_then(Signal::from_pb)
        .ok_or_else(|| OpenError::MalformedBody("missing or invalid message kind".into()))
}
