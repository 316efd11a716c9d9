//! `/ledgermesh/observe/1` messages from a peer: both protobuf messages and
//! the address inside an answer. Never panic.
#![no_main]

use ledgermesh_proto::v1 as pb;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let _ = pb::ObserveRequest::decode(data);
    if let Ok(resp) = pb::ObserveResponse::decode(data) {
        let _ = multiaddr::Multiaddr::try_from(resp.observed);
        let _ = pb::DialBack::try_from(resp.dial_back);
        // What an observer tells beside: its QUIC addresses, our others.
        for a in resp.quic_listen.into_iter().chain(resp.also_observed) {
            let _ = multiaddr::Multiaddr::try_from(a);
        }
    }
});
