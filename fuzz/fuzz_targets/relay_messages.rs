//! Circuit relay v2 messages a stranger sends our relay server: a length
//! prefix and a hop request, or a destination's stop answer. Never panic;
//! what splits off is never longer than the input or the 4 KiB limit.
#![no_main]

use ledgermesh_protocol::relay::wire;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((body, used))) = wire::split_frame(data) {
        assert!(used <= data.len() && body.len() <= wire::MAX_MESSAGE);
        let _ = wire::decode_hop_request(body);
        let _ = wire::decode_stop_status(body);
        let _ = wire::decode_hop_status(body);
    }
    let _ = wire::decode_hop_request(data);
});
