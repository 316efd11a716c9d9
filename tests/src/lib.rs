//! Harness for end-to-end tests: real libp2p swarms on loopback sockets in one
//! process, sharing one in-memory ledger. Every node's events are recorded so
//! tests can assert on paths, upgrades, refusals and digests.

pub mod natlab;
pub mod procs;

use ledgermesh_ledger::{Ledger, MemoryLedger};
use ledgermesh_node::consumer::{self, ConsumerConfig, StreamOutcome, Want};
use ledgermesh_node::events::{Emitter, Event, Record};
use ledgermesh_node::provider::{self, ProviderConfig};
use ledgermesh_node::source::Source;
use ledgermesh_node::swarm::{spawn, NodeConfig, NodeHandle, RelayLimits};
use libp2p::identity::Keypair;
use libp2p::Multiaddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

/// How long any single wait in a test may take before it fails.
pub const WAIT: Duration = Duration::from_secs(60);

/// Records a node's events from before it starts.
pub struct Recorder {
    rx: broadcast::Receiver<Record>,
    /// Every event seen so far, in order.
    pub seen: Vec<Record>,
}

impl Recorder {
    fn new(emitter: &Emitter) -> Self {
        Self {
            rx: emitter.subscribe(),
            seen: Vec::new(),
        }
    }

    /// Pulls in every event published so far.
    pub fn drain(&mut self) -> &[Record] {
        while let Ok(r) = self.rx.try_recv() {
            self.seen.push(r);
        }
        &self.seen
    }

    /// Waits until an event matching `pred` arrives (or was already seen).
    pub async fn wait_for(&mut self, what: &str, pred: impl Fn(&Event) -> bool) -> Event {
        self.drain();
        if let Some(r) = self.seen.iter().find(|r| pred(&r.event)) {
            return r.event.clone();
        }
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Ok(r)) => {
                    self.seen.push(r.clone());
                    if pred(&r.event) {
                        return r.event;
                    }
                }
                Ok(Err(broadcast::error::RecvError::Lagged(n))) => {
                    panic!("recorder lagged by {n} events")
                }
                Ok(Err(broadcast::error::RecvError::Closed)) => {
                    panic!("node stopped while waiting for {what}")
                }
                Err(_) => panic!(
                    "timed out waiting for {what}; saw: {:#?}",
                    self.seen.iter().map(|r| &r.event).collect::<Vec<_>>()
                ),
            }
        }
    }

    /// Events seen so far that match `pred`.
    pub fn matching(&mut self, pred: impl Fn(&Event) -> bool) -> Vec<Event> {
        self.drain();
        self.seen
            .iter()
            .filter(|r| pred(&r.event))
            .map(|r| r.event.clone())
            .collect()
    }
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A fresh directory under the system temp dir.
    pub fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!(
            "lm-e2e-{tag}-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&p).expect("create temp dir");
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A started node and its recorder.
pub struct TestNode {
    /// The node.
    pub handle: NodeHandle,
    /// Its events.
    pub events: Recorder,
}

/// A small network: one relay and a shared in-memory ledger.
pub struct Net {
    /// The shared board.
    pub board: MemoryLedger,
    /// The relay.
    pub relay: TestNode,
    /// A dialable relay address.
    pub relay_addr: Multiaddr,
    /// Scratch space.
    pub dir: TempDir,
}

fn config(name: &str, relays: Vec<Multiaddr>) -> (NodeConfig, Recorder) {
    let emitter = Emitter::new(name);
    let rec = Recorder::new(&emitter);
    let mut c = NodeConfig::new(name);
    c.relays = relays;
    c.emitter = Some(emitter);
    (c, rec)
}

impl Net {
    /// Starts the relay.
    pub async fn new(tag: &str) -> Self {
        let (mut c, events) = config("relay", vec![]);
        c.relay_server = Some(RelayLimits::default());
        let handle = spawn(c, Keypair::generate_ed25519())
            .await
            .expect("relay starts");
        let relay_addr = ledgermesh_node::relay::dial_addr(&handle)
            .await
            .expect("relay listens");
        Self {
            board: MemoryLedger::new(),
            relay: TestNode { handle, events },
            relay_addr,
            dir: TempDir::new(tag),
        }
    }

    /// A ledger handle posting as `node`.
    pub fn ledger_for(&self, node: &NodeHandle) -> Arc<dyn Ledger> {
        Arc::new(self.board.account(node.peer_id().to_string()))
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
        let (c, events) = config(
            name,
            relays.unwrap_or_else(|| vec![self.relay_addr.clone()]),
        );
        let handle = spawn(c, Keypair::generate_ed25519())
            .await
            .expect("provider starts");
        let ledger = self.ledger_for(&handle);
        let h = handle.clone();
        tokio::spawn(async move {
            if let Err(e) = provider::run(h.clone(), ledger, pc).await {
                h.emit(Event::error("provider", format!("{e:#}")));
            }
        });
        TestNode { handle, events }
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
        let (c, events) = config(name, vec![self.relay_addr.clone()]);
        let handle = spawn(c, Keypair::generate_ed25519())
            .await
            .expect("consumer starts");
        TestNode { handle, events }
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
        let run = consumer::run(
            consumer.handle.clone(),
            self.ledger_for(&consumer.handle),
            cc,
        );
        tokio::time::timeout(WAIT * 2, run)
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
