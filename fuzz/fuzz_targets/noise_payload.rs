//! A peer's Noise handshake payload (the first bytes a stranger's handshake
//! reaches after decryption). Never panic; whatever decodes encodes to bytes
//! that decode to the same payload.
#![no_main]

use ledgermesh_protocol::noise::HandshakePayload;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = HandshakePayload::decode(data) {
        assert_eq!(HandshakePayload::decode(&p.encode()), Ok(p));
    }
});
