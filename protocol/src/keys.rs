//! Deriving the X25519 keys used by HPKE from a peer's Ed25519 identity.
//!
//! An Ed25519 PeerId embeds its public key, so anyone who knows a PeerId can
//! encrypt to it: the public point is mapped from the Edwards curve to its
//! Montgomery form (the birational map of RFC 7748), and the recipient's X25519
//! secret scalar is the first half of SHA-512 of the Ed25519 seed, exactly the
//! scalar Ed25519 itself signs with.

use curve25519_dalek::edwards::CompressedEdwardsY;
use hpke::{kem::X25519HkdfSha256, Deserializable, Kem};
use libp2p_identity::{ed25519, Keypair, PeerId, PublicKey};
use sha2::{Digest, Sha512};
use zeroize::Zeroizing;

/// The HPKE KEM used for envelopes.
pub type EnvelopeKem = X25519HkdfSha256;
/// An X25519 public key for HPKE.
pub type X25519Public = <EnvelopeKem as Kem>::PublicKey;
/// An X25519 private key for HPKE.
pub type X25519Secret = <EnvelopeKem as Kem>::PrivateKey;

/// Why a key could not be derived.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    /// The PeerId does not embed its public key (it is a hash of a large key).
    #[error("peer id does not embed its public key; only Ed25519 peer ids can receive envelopes")]
    NotInlined,
    /// The embedded key is not Ed25519.
    #[error("peer id embeds a non-Ed25519 key")]
    NotEd25519,
    /// The Ed25519 point does not decompress.
    #[error("peer id embeds an invalid Ed25519 point")]
    InvalidPoint,
}

/// The public key embedded in an identity-multihash PeerId.
pub fn public_key_of(peer: &PeerId) -> Result<PublicKey, KeyError> {
    let mh = peer.as_ref();
    if mh.code() != 0x00 {
        return Err(KeyError::NotInlined);
    }
    PublicKey::try_decode_protobuf(mh.digest()).map_err(|_| KeyError::NotInlined)
}

/// The X25519 public key a peer receives envelopes at.
pub fn x25519_public_of(peer: &PeerId) -> Result<X25519Public, KeyError> {
    let ed = public_key_of(peer)?
        .try_into_ed25519()
        .map_err(|_| KeyError::NotEd25519)?;
    ed25519_to_x25519_public(&ed)
}

/// Maps an Ed25519 public key to its X25519 (Montgomery) form.
pub fn ed25519_to_x25519_public(ed: &ed25519::PublicKey) -> Result<X25519Public, KeyError> {
    let point = CompressedEdwardsY(ed.to_bytes())
        .decompress()
        .ok_or(KeyError::InvalidPoint)?;
    let mont = point.to_montgomery().to_bytes();
    X25519Public::from_bytes(&mont).map_err(|_| KeyError::InvalidPoint)
}

/// The X25519 secret matching [`x25519_public_of`] for this keypair.
pub fn x25519_secret_of(keypair: &Keypair) -> Result<X25519Secret, KeyError> {
    let ed = keypair
        .clone()
        .try_into_ed25519()
        .map_err(|_| KeyError::NotEd25519)?;
    let seed = Zeroizing::new(ed.secret().as_ref().to_vec());
    let mut digest = Zeroizing::new([0u8; 64]);
    digest.copy_from_slice(&Sha512::digest(&seed[..]));
    let mut scalar = Zeroizing::new([0u8; 32]);
    scalar.copy_from_slice(&digest[..32]);
    X25519Secret::from_bytes(&scalar[..]).map_err(|_| KeyError::InvalidPoint)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hpke::Serializable;

    #[test]
    fn derived_secret_matches_public_from_peer_id() {
        for _ in 0..16 {
            let kp = Keypair::generate_ed25519();
            let secret = x25519_secret_of(&kp).unwrap();
            let from_secret = EnvelopeKem::sk_to_pk(&secret);
            let from_peer = x25519_public_of(&kp.public().to_peer_id()).unwrap();
            assert_eq!(from_secret.to_bytes(), from_peer.to_bytes());
        }
    }

    #[test]
    fn hashed_peer_ids_are_refused() {
        let random = PeerId::random();
        // PeerId::random() uses an identity hash of random bytes that are not a key.
        assert!(x25519_public_of(&random).is_err());
    }
}
