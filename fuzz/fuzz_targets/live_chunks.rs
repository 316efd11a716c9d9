//! Live-stream chunk frames from a provider (or anything between): framing,
//! decoding and the follower's checks. Never panic; what decodes re-encodes
//! to the same chunk; nothing unsigned is ever accepted.
#![no_main]

use ledgermesh_protocol::live::{split_live_frame, Accepted, Chunk, Follower};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn key() -> &'static libp2p_identity::Keypair {
    static KEY: OnceLock<libp2p_identity::Keypair> = OnceLock::new();
    KEY.get_or_init(|| libp2p_identity::Keypair::ed25519_from_bytes([7u8; 32]).unwrap())
}

fuzz_target!(|data: &[u8]| {
    let mut framed = (data.len() as u32).to_be_bytes().to_vec();
    framed.extend_from_slice(data);
    for input in [data, &framed[..]] {
        let Ok(Some((body, used))) = split_live_frame(input) else {
            continue;
        };
        assert!(used <= input.len());
        let Ok(chunk) = Chunk::decode(body) else {
            continue;
        };
        let again = chunk.encode_frame();
        let (b, _) = split_live_frame(&again).unwrap().unwrap();
        assert_eq!(Chunk::decode(b).unwrap(), chunk);
        // Whatever the offset asked for, a chunk nobody signed is refused;
        // a heartbeat (empty, unsigned) is let through and moves nothing.
        for from in [0, chunk.offset, chunk.end_offset().saturating_sub(1)] {
            let mut f = Follower::new(key().public(), "ticks", 1, from);
            match f.accept(&chunk) {
                Ok(Accepted::Heartbeat) => assert!(chunk.is_heartbeat()),
                Ok(other) => panic!("accepted an unsigned chunk: {other:?}"),
                Err(_) => {}
            }
            assert_eq!(f.offset(), from);
        }
    }
});
