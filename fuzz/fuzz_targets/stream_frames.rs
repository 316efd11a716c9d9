//! `/ledgermesh/stream/1` control frames from a peer: framing and both
//! messages. Never panic; what decodes re-encodes to the same message.
#![no_main]

use ledgermesh_protocol::framing::{split_frame, StreamHeader, StreamRequest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Raw bytes as they arrive, and the same bytes behind a valid prefix.
    let mut framed = (data.len() as u32).to_be_bytes().to_vec();
    framed.extend_from_slice(data);
    for input in [data, &framed[..]] {
        if let Ok(Some((body, used))) = split_frame(input) {
            assert!(used <= input.len());
            if let Ok(h) = StreamHeader::decode(body) {
                let again = h.encode();
                let (b, _) = split_frame(&again).unwrap().unwrap();
                assert_eq!(StreamHeader::decode(b).unwrap(), h);
            }
            if let Ok(r) = StreamRequest::decode(body) {
                let again = r.encode();
                let (b, _) = split_frame(&again).unwrap().unwrap();
                assert_eq!(StreamRequest::decode(b).unwrap(), r);
            }
        }
    }
});
