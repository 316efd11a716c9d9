//! Criterion micro-benchmark of sealing and opening one service request
//! (`cargo bench -p ledgermesh-protocol`). `ledgermesh bench` reports the same
//! figures (seal/open per second) next to its other measurements.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ledgermesh_protocol::envelope::{seal, OpenPolicy, Opener};
use ledgermesh_protocol::{ServiceRequest, Signal};
use libp2p_identity::Keypair;

fn request() -> Signal {
    Signal::Request(ServiceRequest {
        addrs: vec![
            "/ip4/203.0.113.7/tcp/40123".parse().unwrap(),
            "/ip4/203.0.113.7/udp/40123/quic-v1".parse().unwrap(),
        ],
        streams: vec!["feed".into()],
        hire_secs: 3600,
    })
}

fn envelopes(c: &mut Criterion) {
    let alice = Keypair::generate_ed25519();
    let bob = Keypair::generate_ed25519();
    let bob_id = bob.public().to_peer_id();
    let now = 1_800_000_000_000;
    let signal = request();
    let mut g = c.benchmark_group("envelope");
    g.throughput(Throughput::Elements(1));
    g.bench_function("seal", |b| {
        let mut rng = rand::rng();
        b.iter(|| seal(&alice, &bob_id, &signal, now, 60_000, &mut rng).unwrap())
    });
    let sealed: Vec<Vec<u8>> = (0..4096)
        .map(|_| {
            seal(&alice, &bob_id, &signal, now, 60_000, &mut rand::rng())
                .unwrap()
                .bytes
        })
        .collect();
    g.bench_function("open", |b| {
        // Without the replay cache, so the same envelopes can be opened again.
        let opener = Opener::new(&bob, OpenPolicy::default()).unwrap();
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % sealed.len();
            opener.open_without_replay_check(&sealed[i], now).unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, envelopes);
criterion_main!(benches);
