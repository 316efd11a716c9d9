//! `/ledgermesh/pay/1` frames from a stranger: a frame split off any bytes
//! decodes or is refused, never panics; what decodes encodes back to a
//! frame that decodes to the same message.
#![no_main]

use ledgermesh_protocol::framing::split_frame;
use ledgermesh_protocol::payment::wire::PayMsg;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let body = match split_frame(data) {
        Ok(Some((body, _))) => body,
        _ => data,
    };
    if let Ok(m) = PayMsg::decode(body) {
        let again = m.encode();
        let (b, _) = split_frame(&again).unwrap().unwrap();
        assert_eq!(PayMsg::decode(b).unwrap(), m);
    }
});
