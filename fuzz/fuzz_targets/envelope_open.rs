//! Any bytes as a ledger payload on our `stdin` topic: opening never
//! panics, and what opens once is a replay the second time.
#![no_main]

use ledgermesh_protocol::envelope::{OpenPolicy, Opener};
use libfuzzer_sys::fuzz_target;
use libp2p_identity::Keypair;
use std::sync::{Mutex, OnceLock};

const NOW: u64 = 1_800_000_000_000;

fn opener() -> &'static Mutex<Opener> {
    static O: OnceLock<Mutex<Opener>> = OnceLock::new();
    O.get_or_init(|| {
        let me = Keypair::ed25519_from_bytes([7u8; 32]).expect("a key");
        Mutex::new(Opener::new(&me, OpenPolicy::default()).expect("an opener"))
    })
}

fuzz_target!(|data: &[u8]| {
    let mut o = opener().lock().unwrap();
    if o.open(data, NOW).is_ok() {
        assert!(o.open(data, NOW).is_err(), "a second open is a replay");
    }
});
