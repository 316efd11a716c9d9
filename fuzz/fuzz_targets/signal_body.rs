//! The decoders behind the signature check: a signed body and the message
//! inside it. Never panic.
#![no_main]

use ledgermesh_protocol::fuzzing;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = fuzzing::signed_body(data);
    let _ = fuzzing::signal_body(data);
});
