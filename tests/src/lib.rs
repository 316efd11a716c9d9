//! Harness for end-to-end tests: real libp2p swarms on loopback sockets in one
//! process, sharing one in-memory ledger. Every node's events are recorded so
//! tests can assert on paths, upgrades, refusals and digests.

pub mod chain;
pub mod liar;
pub mod natlab;
pub mod procs;
pub mod throwaway;

use ledgermesh_dev::{DevNet, EmitterFactory};
use ledgermesh_ledger::{Ledger, MemoryLedger};
use ledgermesh_node::consumer::{ConsumerConfig, StreamOutcome, Want};
use ledgermesh_node::events::Emitter;
use ledgermesh_node::provider::ProviderConfig;
use ledgermesh_node::source::Source;
use ledgermesh_node::swarm::{NodeHandle, RelayLimits};
use libp2p::Multiaddr;
use std::sync::Arc;
use std::time::Duration;

/// How long any single wait in a test may take before it fails.
pub const WAIT: Duration = Duration::from_secs(60);

pub use ledgermesh_dev::{keep_tmp, Recorder, TempDir};

/// A fresh scratch directory `lm-e2e-<tag>-…`, removed on drop.
pub fn temp_dir(tag: &str) -> TempDir {
    TempDir::new(&format!("lm-e2e-{tag}")).expect("create temp dir")
}

/// A started node and its recorder.
pub struct TestNode {
    /// The node.
    pub handle: NodeHandle,
    /// Its events.
    pub events: Recorder,
}

/// A small network: one relay and a shared in-memory ledger, built with the
/// node's own [`DevNet`] (the demo and the benchmark use the same builder).
pub struct Net {
    /// The network.
    pub dev: DevNet,
    /// The shared board.
    pub board: MemoryLedger,
    /// The relay.
    pub relay: TestNode,
    /// A dialable relay address.
    pub relay_addr: Multiaddr,
    /// Scratch space.
    pub dir: TempDir,
}

impl Net {
    /// Starts the relay.
    pub async fn new(tag: &str) -> Self {
        // The relay's recorder must subscribe before it starts: hand the
        // relay's emitter over from the factory.
        let relay_emitter = Emitter::new("relay");
        let events = Recorder::new(&relay_emitter);
        let first = std::sync::Mutex::new(Some(relay_emitter));
        let emitters: EmitterFactory = Arc::new(move |name: &str| {
            let taken = (name == "relay")
                .then(|| first.lock().ok().and_then(|mut f| f.take()))
                .flatten();
            taken.unwrap_or_else(|| Emitter::new(name))
        });
        let dev = DevNet::new(emitters)
            .with_relay(RelayLimits::lifted())
            .await
            .expect("relay starts");
        let handle = dev.relay().expect("relay").clone();
        let relay_addr = dev.relay_addr().expect("relay listens").clone();
        Self {
            board: dev.board.clone(),
            dev,
            relay: TestNode { handle, events },
            relay_addr,
            dir: temp_dir(tag),
        }
    }

    /// A ledger handle posting as `node`.
    pub fn ledger_for(&self, node: &NodeHandle) -> Arc<dyn Ledger> {
        self.dev.ledger_for(node)
    }

    /// A recorded node named `name`, reserving on `relays`.
    async fn node(&self, name: &str, relays: Vec<Multiaddr>) -> TestNode {
        let mut c = self.dev.config(name);
        let events = Recorder::new(c.emitter.as_ref().expect("the net sets an emitter"));
        c.relays = relays;
        let handle = self.dev.spawn(c).await.expect("node starts");
        TestNode { handle, events }
    }

    /// Starts a provider of `streams` with reservations on `relays` (the net's relay when `None`).
    pub async fn provider_with(
        &self,
        name: &str,
        streams: Vec<(String, Source)>,
        relay_only: bool,
        relays: Option<Vec<Multiaddr>>,
    ) -> TestNode {
        let mut pc = ProviderConfig::new(streams);
        pc.relay_only = relay_only;
        self.provider_config(name, pc, relays).await
    }

    /// Starts a provider run by `pc`, with reservations on `relays` (the net's relay when `None`).
    pub async fn provider_config(
        &self,
        name: &str,
        pc: ProviderConfig,
        relays: Option<Vec<Multiaddr>>,
    ) -> TestNode {
        let relays = relays.unwrap_or_else(|| vec![self.relay_addr.clone()]);
        let node = self.node(name, relays).await;
        self.dev.provide(&node.handle, None, pc);
        node
    }

    /// Starts a provider of one random stream `feed` of `len` bytes.
    pub async fn provider(&self, name: &str, len: u64, seed: u64, relay_only: bool) -> TestNode {
        self.provider_with(
            name,
            vec![("feed".into(), Source::Random { len, seed })],
            relay_only,
            None,
        )
        .await
    }

    /// Starts a consumer node (it buys with [`Net::consume`]).
    pub async fn consumer(&self, name: &str) -> TestNode {
        self.node(name, vec![self.relay_addr.clone()]).await
    }

    /// Buys `wants` with `consumer`, writing under the net's directory.
    pub async fn consume(&self, consumer: &TestNode, wants: Vec<Want>) -> Vec<StreamOutcome> {
        self.consume_with(consumer, wants, |_| {}).await
    }

    /// [`Net::consume`] with the consumer's configuration adjusted by `tweak`.
    pub async fn consume_with(
        &self,
        consumer: &TestNode,
        wants: Vec<Want>,
        tweak: impl FnOnce(&mut ConsumerConfig),
    ) -> Vec<StreamOutcome> {
        let out = self.dir.0.join(consumer.handle.peer_id().to_string());
        let mut cc = ConsumerConfig::new(wants, out);
        cc.response_timeout = Duration::from_secs(30);
        tweak(&mut cc);
        tokio::time::timeout(WAIT * 2, self.dev.consume(&consumer.handle, cc))
            .await
            .expect("consumer finishes in time")
            .expect("consumer runs")
    }
}

/// `peer/stream` as a [`Want`].
pub fn want(node: &TestNode, stream: &str) -> Want {
    Want {
        peer: node.handle.peer_id(),
        stream: stream.into(),
    }
}

/// SHA-256 of a source, computed independently of any node.
pub async fn truth(src: &Source) -> [u8; 32] {
    src.digest().await.expect("source readable").1
}

/// SHA-256 of a file on disk.
pub fn file_sha256(path: &std::path::Path) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(std::fs::read(path).expect("output file exists")).into()
}

/// Asserts an outcome is complete and its bytes on disk hash to `expected`.
pub fn assert_delivered(o: &StreamOutcome, expected: [u8; 32], len: u64) {
    let f = o
        .result
        .as_ref()
        .unwrap_or_else(|e| panic!("{}/{} failed: {e}", o.peer, o.stream));
    assert_eq!(f.bytes, len, "{}/{}: byte count", o.peer, o.stream);
    assert_eq!(
        f.sha256, expected,
        "{}/{}: sha256 of received bytes",
        o.peer, o.stream
    );
    assert_eq!(
        file_sha256(&f.path),
        expected,
        "{}/{}: sha256 of the file on disk",
        o.peer,
        o.stream
    );
    assert!(
        f.verified,
        "{}/{}: node did not verify it",
        o.peer, o.stream
    );
}

/// An ACL file under `dir` allowing everyone every stream (open data).
pub fn open_acl(dir: &std::path::Path) -> std::path::PathBuf {
    let acl = dir.join("acl-open.toml");
    std::fs::write(&acl, "[[allow]]\npeer = \"*\"\nstreams = [\"*\"]\n").unwrap();
    acl
}

/// Starts a provider of `src` as `feed`, reachable only through `relay`
/// and taking no part in hole punching (every byte crosses the relay), open
/// to everyone; with identity `key` (fresh when `None`). `tweak` adjusts
/// its configs first. Returns it and its recorder (subscribed before start).
pub async fn provider_behind(
    net: &Net,
    name: &str,
    relay: &Multiaddr,
    src: Source,
    key: Option<libp2p::identity::Keypair>,
    tweak: impl FnOnce(&mut ledgermesh_node::swarm::NodeConfig, &mut ProviderConfig),
) -> (NodeHandle, Recorder) {
    let mut c = net.dev.config(name);
    c.relays = vec![relay.clone()];
    c.hole_punching = false;
    let events = Recorder::new(c.emitter.as_ref().expect("the net sets an emitter"));
    let mut pc = ProviderConfig::new(vec![("feed".into(), src)]);
    pc.relay_only = true;
    pc.acl = Some(open_acl(&net.dir.0));
    tweak(&mut c, &mut pc);
    let h = match key {
        Some(k) => ledgermesh_node::swarm::spawn(c, k)
            .await
            .expect("node starts"),
        None => net.dev.spawn(c).await.expect("node starts"),
    };
    net.dev.provide(&h, None, pc);
    (h, events)
}

/// A buyer on `net` with no relay of its own and no hole punching fetches
/// `feed` from `provider` over its relay circuits only.
pub async fn fetch_over_circuits(
    net: &Net,
    provider: &NodeHandle,
) -> Result<ledgermesh_node::streams::Fetched, ledgermesh_node::streams::StreamError> {
    let circuits = provider.snapshot().await.expect("snapshot").circuit_addrs;
    assert!(!circuits.is_empty(), "the provider holds a reservation");
    let mut c = net.dev.config("buyer");
    c.relays.clear();
    c.hole_punching = false;
    let buyer = net.dev.spawn(c).await.expect("buyer starts");
    let policy = ledgermesh_node::streams::FetchPolicy::default();
    ledgermesh_node::streams::fetch(
        &buyer,
        provider.peer_id(),
        &circuits,
        "feed",
        &net.dir.0,
        &policy,
    )
    .await
}
