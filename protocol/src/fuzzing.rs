//! Entry points for the fuzz targets in `fuzz/` (built only with
//! `--cfg fuzzing`): the decoders behind the signature check, which random
//! bytes through `Opener::open` cannot reach.

use crate::envelope::{signal_of, signed_message};
use crate::Signal;
use ledgermesh_proto::v1 as pb;
use libp2p_identity::{PeerId, PublicKey};
use prost::Message;

/// Decodes a signed body's inner `SignalBody` and its message.
pub fn signal_body(bytes: &[u8]) -> Option<Signal> {
    let body = pb::SignalBody::decode(bytes).ok()?;
    let _ = PeerId::from_bytes(&body.sender);
    signal_of(body.kind).ok()
}

/// Decodes a decrypted plaintext as far as the signature check.
pub fn signed_body(bytes: &[u8]) -> bool {
    let Ok(signed) = pb::SignedBody::decode(bytes) else {
        return false;
    };
    let Ok(key) = PublicKey::try_decode_protobuf(&signed.sender_key) else {
        return false;
    };
    key.verify(&signed_message(&signed.body), &signed.signature)
}
