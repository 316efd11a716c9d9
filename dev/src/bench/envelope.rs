//! The cost of sealing and opening ledger envelopes.

use super::round;
use anyhow::Context;
use ledgermesh_node::clock::now_ms;
use libp2p::identity::Keypair;
use libp2p::Multiaddr;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

pub(super) fn envelope_cost(time: Duration) -> anyhow::Result<Value> {
    use ledgermesh_protocol::envelope::{seal, OpenPolicy, Opener};
    use ledgermesh_protocol::{ServiceRequest, ServiceResponse, Signal, StreamInfo};
    let alice = Keypair::generate_ed25519();
    let bob = Keypair::generate_ed25519();
    let bob_id = bob.public().to_peer_id();
    let relay = Keypair::generate_ed25519().public().to_peer_id();
    let me = alice.public().to_peer_id();
    let addrs: Vec<Multiaddr> = vec![
        "/ip4/203.0.113.7/tcp/40123".parse()?,
        "/ip4/203.0.113.7/udp/40123/quic-v1".parse()?,
        format!("/ip4/198.51.100.1/tcp/4001/p2p/{relay}/p2p-circuit/p2p/{me}").parse()?,
    ];
    let request = Signal::Request(ServiceRequest {
        addrs: addrs.clone(),
        streams: vec!["feed".into()],
        hire_secs: 3600,
    });
    let response = Signal::Response(ServiceResponse {
        request_nonce: [1; 16],
        addrs,
        accepted: vec![StreamInfo {
            name: "feed".into(),
            length: Some(1 << 30),
            sha256: Some([3; 32]),
            live: None,
        }],
        rejected: vec![],
        grant_expires_ms: Some(1_800_000_000_000),
        price_per_mib: 0,
    });
    let now = now_ms();
    let mut rng = rand::rng();
    let req_bytes = seal(&alice, &bob_id, &request, now, 60_000, &mut rng)?
        .bytes
        .len();
    let resp_bytes = seal(&alice, &bob_id, &response, now, 60_000, &mut rng)?
        .bytes
        .len();
    let start = Instant::now();
    let mut sealed = vec![];
    while start.elapsed() < time {
        sealed.push(seal(&alice, &bob_id, &request, now, 60_000, &mut rng)?.bytes);
    }
    let seal_per_s = sealed.len() as f64 / start.elapsed().as_secs_f64();
    let mut opener = Opener::new(
        &bob,
        OpenPolicy {
            replay_capacity: sealed.len() + 1,
            replay_quota_per_sender: sealed.len() + 1,
            ..Default::default()
        },
    )?;
    let start = Instant::now();
    for s in &sealed {
        opener.open(s, now).context("open")?;
    }
    let open_per_s = sealed.len() as f64 / start.elapsed().as_secs_f64();
    Ok(json!({
        "seal_per_s": round(seal_per_s, 0),
        "open_per_s": round(open_per_s, 0),
        "request_bytes": req_bytes,
        "response_bytes": resp_bytes,
    }))
}
