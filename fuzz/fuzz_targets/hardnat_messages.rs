//! `/ledgermesh/hardnat/1` messages from a peer. Never panic; whatever
//! decodes encodes back to the same bytes.
#![no_main]

use ledgermesh_protocol::path::hardnat::Message;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Message::decode(data) {
        assert_eq!(m.encode(), data);
    }
});
