//! Our Noise secure channel (`/noise`): the libp2p Noise specification's XX
//! handshake, with a transport framing of our own.
//!
//! With a stock peer nothing differs on the wire from `libp2p-noise` (any
//! libp2p peer, ours or not, sees `/noise`: `Noise_XX_25519_ChaChaPoly_SHA256`,
//! two-byte length prefixes, the signed handshake payload; our payload's one
//! extra field is read past). What differs is how the bytes are handled, which `libp2p-noise`'s general framing does at a cost that showed
//! in profiles and in the idle benchmark:
//!
//! - **Sealing in place.** A write is copied once into the frame being built;
//!   a full frame, or a flush, seals it in place (ring's ChaCha20-Poly1305)
//!   and writes it out. `libp2p-noise` zero-fills a send buffer, encrypts into a
//!   second zero-filled buffer and copies the result into a third.
//! - **Opening in place.** Frames are opened where they were read, in one
//!   reused buffer, and copied once into the reader's buffer; there is no
//!   zero-filled allocation per frame.
//! - **Nothing held while idle.** A connection with nothing in flight holds no
//!   frame buffers: the write buffer goes when a flush has written everything,
//!   the read buffer when a read finds the socket empty with no partial frame,
//!   and reading starts small again (4 KiB) and grows to full size only under
//!   load. `libp2p-noise` keeps two 8 KiB codec buffers (and the largest frame
//!   it ever sent) for the connection's lifetime.
//!
//! - **AES-GCM between our nodes.** Where both ends have AES instructions and
//!   say so in their handshake payloads, the transport messages use Noise's
//!   AESGCM (AES-256-GCM, about four times ChaCha20-Poly1305's speed on such
//!   CPUs) instead of ChaChaPoly; with any other peer, ChaChaPoly as the
//!   specification fixes ([`ledgermesh_protocol::noise`] has the rule).
//!
//! The handshake itself runs on `snow`, the Noise implementation
//! `libp2p-noise` also uses; only its raw split keys are taken out of it, to
//! drive ring's AEAD directly. The handshake payload codec is in
//! [`ledgermesh_protocol::noise`] (fuzzed there).

mod io;
#[cfg(test)]
mod tests;

pub use io::Output;
pub use ledgermesh_protocol::noise::TransportCipher;

use futures::future::BoxFuture;
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use ledgermesh_protocol::noise::{
    signed_static_key, transport_cipher, HandshakePayload, PayloadError, AESGCM, MAX_MESSAGE,
    NOISE_PARAMS,
};
use libp2p::core::upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade, UpgradeInfo};
use libp2p::identity::{Keypair, PublicKey};
use libp2p::PeerId;
use snow::resolvers::{DefaultResolver, FallbackResolver, RingResolver};
use snow::HandshakeState;
use std::sync::Arc;
use zeroize::Zeroizing;

/// The protocol name multistream-select negotiates.
pub const PROTOCOL: &str = "/noise";

/// Why a Noise handshake (or the channel after it) failed.
#[derive(Debug, thiserror::Error)]
pub enum NoiseError {
    /// The connection failed or closed during the handshake.
    #[error("noise i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A handshake message did not decrypt or was malformed.
    #[error("noise handshake: {0}")]
    Handshake(#[from] snow::Error),
    /// The remote's handshake payload did not decode.
    #[error("noise handshake payload: {0}")]
    Payload(#[from] PayloadError),
    /// The remote's identity key is not a libp2p public key we can read.
    #[error("noise: the remote's identity key does not decode")]
    IdentityKey,
    /// The remote's identity key did not sign its static Noise key.
    #[error("noise: the remote's signature over its static key is invalid")]
    BadSignature,
    /// The initiator's first message carried a payload (the spec forbids it).
    #[error("noise: the first handshake message carried a payload")]
    EarlyPayload,
    /// Signing our own static key failed (a key that cannot sign).
    #[error("noise: cannot sign the static key: {0}")]
    Sign(String),
}

/// The `/noise` upgrade: one static X25519 key per node, signed once by its
/// identity key (as `libp2p-noise` does), used for every handshake.
#[derive(Clone)]
pub struct Config {
    inner: Arc<Inner>,
}

struct Inner {
    /// Where each finished handshake's cipher is told (the operator's view).
    handshakes: Option<Handshakes>,
    static_secret: Zeroizing<Vec<u8>>,
    /// Our encoded handshake payload (identity key, signature, ciphers).
    payload: Vec<u8>,
    /// The transport ciphers we announce besides ChaChaPoly.
    ciphers: u64,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("noise::Config").finish_non_exhaustive()
    }
}

fn builder() -> snow::Builder<'static> {
    let params = NOISE_PARAMS.parse().expect("a valid Noise protocol name");
    snow::Builder::with_resolver(
        params,
        Box::new(FallbackResolver::new(
            Box::new(RingResolver),
            Box::new(DefaultResolver),
        )),
    )
}

impl Config {
    /// A fresh static key, signed by `identity`; AESGCM announced where this
    /// CPU has AES instructions.
    pub fn new(identity: &Keypair) -> Result<Self, NoiseError> {
        Self::with_aesgcm(identity, super::aes_in_hardware())
    }

    /// As [`Config::new`], announcing AESGCM or not as `aesgcm` says
    /// (ChaChaPoly alone is what a stock libp2p peer runs).
    pub fn with_aesgcm(identity: &Keypair, aesgcm: bool) -> Result<Self, NoiseError> {
        let ciphers = if aesgcm { AESGCM } else { 0 };
        let keys = builder().generate_keypair()?;
        let signature = identity
            .sign(&signed_static_key(&keys.public))
            .map_err(|e| NoiseError::Sign(e.to_string()))?;
        let payload = HandshakePayload {
            identity_key: identity.public().encode_protobuf(),
            identity_sig: signature,
            transport_ciphers: ciphers,
        }
        .encode();
        Ok(Config {
            inner: Arc::new(Inner {
                handshakes: None,
                static_secret: Zeroizing::new(keys.private),
                payload,
                ciphers,
            }),
        })
    }

    /// Tells `handshakes` the cipher of every handshake that completes.
    pub fn with_handshakes(self, handshakes: Handshakes) -> Self {
        let inner = &self.inner;
        Config {
            inner: Arc::new(Inner {
                handshakes: Some(handshakes),
                static_secret: inner.static_secret.clone(),
                payload: inner.payload.clone(),
                ciphers: inner.ciphers,
            }),
        }
    }

    /// The agreed cipher, told to the handshake log.
    fn agree(&self, peer: PeerId, theirs: u64) -> TransportCipher {
        let cipher = transport_cipher(self.inner.ciphers, theirs);
        tracing::debug!(%peer, cipher = cipher.name(), "noise handshake done");
        if let Some(log) = &self.inner.handshakes {
            log.record(peer, cipher);
        }
        cipher
    }

    fn handshake_state(&self, initiator: bool) -> Result<HandshakeState, NoiseError> {
        let builder = builder().local_private_key(&self.inner.static_secret)?;
        Ok(if initiator {
            builder.build_initiator()?
        } else {
            builder.build_responder()?
        })
    }

    /// XX as the initiator: → e; ← e, ee, s, es (their identity);
    /// → s, se (ours). The responder is verified before we reveal ourselves.
    async fn initiate<T>(self, mut io: T) -> Result<(PeerId, Output<T>), NoiseError>
    where
        T: AsyncRead + AsyncWrite + Unpin,
    {
        let mut hs = self.handshake_state(true)?;
        send(&mut io, &mut hs, &[]).await?;
        let payload = recv(&mut io, &mut hs).await?;
        let (peer, theirs) = verify(&hs, &payload)?;
        send(&mut io, &mut hs, &self.inner.payload).await?;
        let (to_responder, to_initiator) = split(&mut hs);
        let cipher = self.agree(peer, theirs);
        Ok((peer, Output::new(io, cipher, &to_responder, &to_initiator)))
    }

    /// XX as the responder: ← e; → e, ee, s, es (ours); ← s, se (theirs).
    async fn respond<T>(self, mut io: T) -> Result<(PeerId, Output<T>), NoiseError>
    where
        T: AsyncRead + AsyncWrite + Unpin,
    {
        let mut hs = self.handshake_state(false)?;
        if !recv(&mut io, &mut hs).await?.is_empty() {
            return Err(NoiseError::EarlyPayload);
        }
        send(&mut io, &mut hs, &self.inner.payload).await?;
        let payload = recv(&mut io, &mut hs).await?;
        let (peer, theirs) = verify(&hs, &payload)?;
        let (to_responder, to_initiator) = split(&mut hs);
        let cipher = self.agree(peer, theirs);
        Ok((peer, Output::new(io, cipher, &to_initiator, &to_responder)))
    }
}

/// Handshakes not yet taken by the node are remembered up to this many.
const HANDSHAKES_KEPT: usize = 1024;

type HandshakeLog = std::collections::VecDeque<(PeerId, TransportCipher)>;

/// The cipher of each peer's latest Noise handshake, until the node takes it
/// when the connection is established: what `/api/v1/status` reports. At most
/// [`HANDSHAKES_KEPT`] untaken (a handshake whose connection was then denied
/// is never taken; the oldest such go first).
#[derive(Clone, Default)]
pub struct Handshakes(Arc<std::sync::Mutex<HandshakeLog>>);

impl std::fmt::Debug for Handshakes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("noise::Handshakes").finish_non_exhaustive()
    }
}

impl Handshakes {
    fn lock(&self) -> std::sync::MutexGuard<'_, HandshakeLog> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn record(&self, peer: PeerId, cipher: TransportCipher) {
        let mut log = self.lock();
        log.retain(|(p, _)| *p != peer);
        if log.len() >= HANDSHAKES_KEPT {
            log.pop_front();
        }
        log.push_back((peer, cipher));
    }

    /// The cipher of `peer`'s latest untaken handshake, taken.
    pub fn take(&self, peer: &PeerId) -> Option<TransportCipher> {
        let mut log = self.lock();
        let at = log.iter().position(|(p, _)| p == peer)?;
        log.remove(at).map(|(_, c)| c)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

/// The split keys (initiator → responder, responder → initiator), wiped
/// when dropped.
fn split(hs: &mut HandshakeState) -> (Zeroizing<[u8; 32]>, Zeroizing<[u8; 32]>) {
    let (a, b) = hs.dangerously_get_raw_split();
    (Zeroizing::new(a), Zeroizing::new(b))
}

/// Checks the remote's payload against the static key the handshake
/// authenticated: its identity key must have signed that key. Returns the
/// peer and the transport ciphers it announced.
fn verify(hs: &HandshakeState, payload: &[u8]) -> Result<(PeerId, u64), NoiseError> {
    let payload = HandshakePayload::decode(payload)?;
    let key = PublicKey::try_decode_protobuf(&payload.identity_key)
        .map_err(|_| NoiseError::IdentityKey)?;
    let static_key = hs
        .get_remote_static()
        .ok_or(NoiseError::Handshake(snow::Error::Input))?;
    if !key.verify(&signed_static_key(static_key), &payload.identity_sig) {
        return Err(NoiseError::BadSignature);
    }
    Ok((key.to_peer_id(), payload.transport_ciphers))
}

/// Writes one handshake message carrying `payload`, length-prefixed.
async fn send<T: AsyncWrite + Unpin>(
    io: &mut T,
    hs: &mut HandshakeState,
    payload: &[u8],
) -> Result<(), NoiseError> {
    // Two ephemeral/static keys, two tags and the payload at most.
    let mut message = vec![0u8; (2 + payload.len() + 128).min(2 + MAX_MESSAGE)];
    let n = hs.write_message(payload, &mut message[2..])?;
    message[..2].copy_from_slice(&(n as u16).to_be_bytes());
    io.write_all(&message[..2 + n]).await?;
    io.flush().await?;
    Ok(())
}

/// Reads one length-prefixed handshake message; returns its payload.
async fn recv<T: AsyncRead + Unpin>(
    io: &mut T,
    hs: &mut HandshakeState,
) -> Result<Vec<u8>, NoiseError> {
    let mut len = [0u8; 2];
    io.read_exact(&mut len).await?;
    let mut message = vec![0u8; usize::from(u16::from_be_bytes(len))];
    io.read_exact(&mut message).await?;
    let mut payload = vec![0u8; message.len()];
    let n = hs.read_message(&message, &mut payload)?;
    payload.truncate(n);
    Ok(payload)
}

impl UpgradeInfo for Config {
    type Info = &'static str;
    type InfoIter = std::iter::Once<Self::Info>;

    fn protocol_info(&self) -> Self::InfoIter {
        std::iter::once(PROTOCOL)
    }
}

impl<T> InboundConnectionUpgrade<T> for Config
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Output = (PeerId, Output<T>);
    type Error = NoiseError;
    type Future = BoxFuture<'static, Result<Self::Output, NoiseError>>;

    fn upgrade_inbound(self, io: T, _: Self::Info) -> Self::Future {
        Box::pin(self.respond(io))
    }
}

impl<T> OutboundConnectionUpgrade<T> for Config
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Output = (PeerId, Output<T>);
    type Error = NoiseError;
    type Future = BoxFuture<'static, Result<Self::Output, NoiseError>>;

    fn upgrade_outbound(self, io: T, _: Self::Info) -> Self::Future {
        Box::pin(self.initiate(io))
    }
}
