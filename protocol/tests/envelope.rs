//! Property tests of sealed envelopes: round trip, tampering, wrong recipient,
//! expiry, replay and forgery.

use ledgermesh_protocol::envelope::{seal, seal_with_nonce, OpenError, OpenPolicy, Opener};
use ledgermesh_protocol::{ServiceRequest, ServiceResponse, Signal, StreamInfo};
use libp2p_identity::Keypair;
use proptest::prelude::*;
use std::sync::OnceLock;

const NOW: u64 = 1_800_000_000_000;
const TTL: u64 = 60_000;

struct Keys {
    alice: Keypair,
    bob: Keypair,
    carol: Keypair,
}

fn keys() -> &'static Keys {
    static K: OnceLock<Keys> = OnceLock::new();
    K.get_or_init(|| Keys {
        alice: Keypair::generate_ed25519(),
        bob: Keypair::generate_ed25519(),
        carol: Keypair::generate_ed25519(),
    })
}

fn request(streams: Vec<String>, addr_port: u16) -> Signal {
    Signal::Request(ServiceRequest {
        addrs: vec![format!("/ip4/198.51.100.7/tcp/{addr_port}")
            .parse()
            .unwrap()],
        streams,
        hire_secs: u64::from(addr_port),
    })
}

fn opener(kp: &Keypair) -> Opener {
    Opener::new(kp, OpenPolicy::default()).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn round_trip_for_arbitrary_bodies(
        streams in proptest::collection::vec("[ -~]{0,40}", 0..8),
        port: u16,
        length in 1u64..u64::MAX,
    ) {
        let k = keys();
        let bob = k.bob.public().to_peer_id();
        for signal in [
            request(streams.clone(), port),
            Signal::Response(ServiceResponse {
                request_nonce: [9; 16],
                addrs: vec![],
                accepted: streams.iter().map(|s| StreamInfo { name: s.clone(), length: Some(length), sha256: None, live: None }).collect(),
                rejected: vec![],
                grant_expires_ms: (length > 0).then_some(length),
                price_per_mib: u128::from(length),
            }),
        ] {
            let sealed = seal(&k.alice, &bob, &signal, NOW, TTL, &mut rand::rng()).unwrap();
            let opened = opener(&k.bob).open(&sealed.bytes, NOW + 1).unwrap();
            prop_assert_eq!(opened.sender, k.alice.public().to_peer_id());
            prop_assert_eq!(opened.nonce, sealed.nonce);
            prop_assert_eq!(opened.signal, signal);
        }
    }

    #[test]
    fn any_flipped_bit_is_rejected(bit_seed: usize) {
        let k = keys();
        let bob = k.bob.public().to_peer_id();
        let sealed = seal(&k.alice, &bob, &request(vec!["s".into()], 1), NOW, TTL, &mut rand::rng()).unwrap();
        let mut bytes = sealed.bytes.clone();
        let bit = bit_seed % (bytes.len() * 8);
        bytes[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(opener(&k.bob).open(&bytes, NOW).is_err());
    }

    #[test]
    fn truncation_is_rejected(cut in 0usize..400) {
        let k = keys();
        let bob = k.bob.public().to_peer_id();
        let sealed = seal(&k.alice, &bob, &request(vec!["s".into()], 1), NOW, TTL, &mut rand::rng()).unwrap();
        let cut = cut % sealed.bytes.len();
        prop_assert!(opener(&k.bob).open(&sealed.bytes[..cut], NOW).is_err());
    }

    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        prop_assert!(opener(&keys().bob).open(&bytes, NOW).is_err());
    }
}

#[test]
fn wrong_recipient_is_rejected() {
    let k = keys();
    let sealed = seal(
        &k.alice,
        &k.bob.public().to_peer_id(),
        &request(vec![], 1),
        NOW,
        TTL,
        &mut rand::rng(),
    )
    .unwrap();
    assert_eq!(
        opener(&k.carol).open(&sealed.bytes, NOW),
        Err(OpenError::WrongRecipient)
    );
}

#[test]
fn expired_and_future_envelopes_are_rejected() {
    let k = keys();
    let bob = k.bob.public().to_peer_id();
    let sealed = seal(
        &k.alice,
        &bob,
        &request(vec![], 1),
        NOW,
        TTL,
        &mut rand::rng(),
    )
    .unwrap();
    assert!(matches!(
        opener(&k.bob).open(&sealed.bytes, NOW + TTL + 1),
        Err(OpenError::Expired { ago_ms: 1 })
    ));
    assert!(matches!(
        opener(&k.bob).open(&sealed.bytes, NOW - 61_000),
        Err(OpenError::NotYetValid { .. })
    ));
    let too_long = seal(
        &k.alice,
        &bob,
        &request(vec![], 1),
        NOW,
        24 * 3_600_000,
        &mut rand::rng(),
    )
    .unwrap();
    assert!(matches!(
        opener(&k.bob).open(&too_long.bytes, NOW),
        Err(OpenError::BadLifetime { .. })
    ));
}

#[test]
fn replay_is_rejected_but_a_fresh_nonce_passes() {
    let k = keys();
    let bob = k.bob.public().to_peer_id();
    let mut o = opener(&k.bob);
    let sealed = seal(
        &k.alice,
        &bob,
        &request(vec![], 1),
        NOW,
        TTL,
        &mut rand::rng(),
    )
    .unwrap();
    o.open(&sealed.bytes, NOW).unwrap();
    assert_eq!(o.open(&sealed.bytes, NOW + 5), Err(OpenError::Replayed));
    // The same nonce re-sealed (new ephemeral key, new ciphertext) is still a replay.
    let resealed = seal_with_nonce(
        &k.alice,
        &bob,
        &request(vec![], 1),
        NOW,
        TTL,
        sealed.nonce,
        &mut rand::rng(),
    )
    .unwrap();
    assert_eq!(o.open(&resealed.bytes, NOW + 5), Err(OpenError::Replayed));
    let fresh = seal(
        &k.alice,
        &bob,
        &request(vec![], 1),
        NOW,
        TTL,
        &mut rand::rng(),
    )
    .unwrap();
    o.open(&fresh.bytes, NOW + 5).unwrap();
}

#[test]
fn forged_signature_is_rejected() {
    use ledgermesh_proto::v1 as pb;
    use prost::Message;
    let k = keys();
    let bob = k.bob.public().to_peer_id();
    // Carol signs a body that claims to come from Alice, with Alice's public key attached.
    let body = pb::SignalBody {
        sender: k.alice.public().to_peer_id().to_bytes(),
        recipient: bob.to_bytes(),
        nonce: vec![1; 16],
        created_ms: NOW,
        expires_ms: NOW + TTL,
        kind: Some(pb::signal_body::Kind::Request(pb::ServiceRequest::default())),
    }
    .encode_to_vec();
    let mut to_sign = ledgermesh_protocol::envelope::SIGN_DOMAIN.to_vec();
    to_sign.extend_from_slice(&body);
    let signed = pb::SignedBody {
        sender_key: k.alice.public().encode_protobuf(),
        body: body.clone(),
        signature: k.carol.sign(&to_sign).unwrap(),
    };
    let sealed = seal_raw(&bob, &signed.encode_to_vec());
    assert_eq!(
        opener(&k.bob).open(&sealed, NOW),
        Err(OpenError::BadSignature)
    );

    // Carol's own key with Alice's PeerId as sender: signature is valid but the sender does not match.
    let signed = pb::SignedBody {
        sender_key: k.carol.public().encode_protobuf(),
        body,
        signature: k.carol.sign(&to_sign).unwrap(),
    };
    let sealed = seal_raw(&bob, &signed.encode_to_vec());
    assert_eq!(
        opener(&k.bob).open(&sealed, NOW),
        Err(OpenError::SenderMismatch)
    );
}

#[test]
fn body_signed_for_another_recipient_is_rejected() {
    use ledgermesh_proto::v1 as pb;
    use prost::Message;
    let k = keys();
    let bob = k.bob.public().to_peer_id();
    let carol = k.carol.public().to_peer_id();
    // Alice wrote to Carol; Carol re-seals Alice's signed body to Bob.
    let sealed = seal(
        &k.alice,
        &carol,
        &request(vec![], 1),
        NOW,
        TTL,
        &mut rand::rng(),
    )
    .unwrap();
    let env = pb::Envelope::decode(sealed.bytes.as_slice()).unwrap();
    let _ = env;
    let body = pb::SignalBody {
        sender: k.alice.public().to_peer_id().to_bytes(),
        recipient: carol.to_bytes(),
        nonce: vec![2; 16],
        created_ms: NOW,
        expires_ms: NOW + TTL,
        kind: Some(pb::signal_body::Kind::Request(pb::ServiceRequest::default())),
    }
    .encode_to_vec();
    let mut to_sign = ledgermesh_protocol::envelope::SIGN_DOMAIN.to_vec();
    to_sign.extend_from_slice(&body);
    let signed = pb::SignedBody {
        sender_key: k.alice.public().encode_protobuf(),
        body,
        signature: k.alice.sign(&to_sign).unwrap(),
    };
    let resealed = seal_raw(&bob, &signed.encode_to_vec());
    assert_eq!(
        opener(&k.bob).open(&resealed, NOW),
        Err(OpenError::RecipientMismatch)
    );
}

/// Seals arbitrary plaintext to `recipient` exactly as `seal` does, for building attacks.
fn seal_raw(recipient: &libp2p_identity::PeerId, plaintext: &[u8]) -> Vec<u8> {
    use hpke::{aead::ChaCha20Poly1305, kdf::HkdfSha256, OpModeS, Serializable};
    use ledgermesh_proto::v1 as pb;
    use ledgermesh_protocol::envelope::{ENVELOPE_VERSION, INFO_DOMAIN};
    use ledgermesh_protocol::keys::{x25519_public_of, EnvelopeKem};
    use prost::Message;
    let mut info = INFO_DOMAIN.to_vec();
    info.extend_from_slice(&ENVELOPE_VERSION.to_be_bytes());
    info.extend_from_slice(&recipient.to_bytes());
    let mut aad = ENVELOPE_VERSION.to_be_bytes().to_vec();
    aad.extend_from_slice(&recipient.to_bytes());
    let (enc, ciphertext) = hpke::single_shot_seal::<ChaCha20Poly1305, HkdfSha256, EnvelopeKem, _>(
        &OpModeS::Base,
        &x25519_public_of(recipient).unwrap(),
        &info,
        plaintext,
        &aad,
        &mut rand::rng(),
    )
    .unwrap();
    pb::Envelope {
        version: ENVELOPE_VERSION,
        recipient: recipient.to_bytes(),
        enc: enc.to_bytes().to_vec(),
        ciphertext,
    }
    .encode_to_vec()
}

#[test]
fn throwaway_keys_cannot_fill_the_replay_cache_against_a_genuine_sender() {
    let k = keys();
    let bob = k.bob.public().to_peer_id();
    let mut o = Opener::new(
        &k.bob,
        OpenPolicy {
            replay_capacity: 64,
            replay_quota_per_sender: 4,
            ..OpenPolicy::default()
        },
    )
    .unwrap();
    // A flood: valid envelopes, each from a fresh key, well past capacity.
    for i in 0..200u64 {
        let throwaway = Keypair::generate_ed25519();
        let env = seal(
            &throwaway,
            &bob,
            &request(vec![], 1),
            NOW + i,
            TTL,
            &mut rand::rng(),
        )
        .unwrap();
        o.open(&env.bytes, NOW + i)
            .expect("each flood envelope is itself valid");
    }
    // The genuine request still opens.
    let genuine = seal(
        &k.alice,
        &bob,
        &request(vec!["feed".into()], 1),
        NOW + 300,
        TTL,
        &mut rand::rng(),
    )
    .unwrap();
    o.open(&genuine.bytes, NOW + 300)
        .expect("a genuine envelope is accepted during a flood");
    // And one key alone stops at its quota (in a cache with room: a full one
    // would sooner evict the heaviest sender's oldest nonces).
    let mut o = Opener::new(
        &k.bob,
        OpenPolicy {
            replay_quota_per_sender: 4,
            ..OpenPolicy::default()
        },
    )
    .unwrap();
    o.open(&genuine.bytes, NOW + 300).unwrap();
    for i in 0..3u64 {
        let env = seal(
            &k.alice,
            &bob,
            &request(vec![], 2),
            NOW + 301 + i,
            TTL,
            &mut rand::rng(),
        )
        .unwrap();
        o.open(&env.bytes, NOW + 301 + i).unwrap();
    }
    let over = seal(
        &k.alice,
        &bob,
        &request(vec![], 3),
        NOW + 310,
        TTL,
        &mut rand::rng(),
    )
    .unwrap();
    assert_eq!(
        o.open(&over.bytes, NOW + 310),
        Err(OpenError::SenderOverQuota)
    );
}
