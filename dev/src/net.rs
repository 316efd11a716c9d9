//! The one in-process network builder: nodes on loopback sockets in this
//! process, an optional relay, and a shared in-memory ledger. The demo, the
//! benchmark and the end-to-end tests all build their networks with it.
//!
//! ```text
//!   DevNet ── board: MemoryLedger (one account per node)
//!     ├── relay (optional; every node reserves on it by default)
//!     ├── config(name) ─► NodeConfig with the factory's emitter ─► spawn()
//!     ├── provide(node, ledger, ProviderConfig)   provider role as a task
//!     └── consume(node, ConsumerConfig)           consumer role, awaited
//! ```

use ledgermesh_ledger::{Ledger, MemoryLedger};
use ledgermesh_node::consumer::{self, ConsumerConfig, StreamOutcome};
use ledgermesh_node::events::{Emitter, Event};
use ledgermesh_node::provider::{self, ProviderConfig};
use ledgermesh_node::swarm::{spawn, NodeConfig, NodeError, NodeHandle, RelayLimits};
use libp2p::identity::Keypair;
use libp2p::Multiaddr;
use std::sync::Arc;

/// Makes the emitter of the node named by its argument (the demo prints and
/// collects, tests and the benchmark record).
pub type EmitterFactory = Arc<dyn Fn(&str) -> Emitter + Send + Sync>;

/// An in-process network.
pub struct DevNet {
    /// The shared in-memory ledger.
    pub board: MemoryLedger,
    relay: Option<(NodeHandle, Multiaddr)>,
    emitters: EmitterFactory,
}

impl std::fmt::Debug for DevNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevNet")
            .field("relay", &self.relay.as_ref().map(|(_, a)| a))
            .finish_non_exhaustive()
    }
}

impl DevNet {
    /// A network without a relay; node emitters come from `emitters`.
    pub fn new(emitters: EmitterFactory) -> Self {
        Self {
            board: MemoryLedger::new(),
            relay: None,
            emitters,
        }
    }

    /// Plain emitters named after the node.
    pub fn plain() -> EmitterFactory {
        Arc::new(|name: &str| Emitter::new(name))
    }

    /// Starts a relay node named `relay` with `limits`; nodes configured
    /// after this reserve on it.
    pub async fn with_relay(mut self, limits: RelayLimits) -> anyhow::Result<Self> {
        let mut c = self.config("relay");
        c.relay_server = Some(limits);
        let relay = self.spawn(c).await?;
        let addr = ledgermesh_node::relay::dial_addr(&relay).await?;
        self.relay = Some((relay, addr));
        Ok(self)
    }

    /// The relay, when there is one.
    pub fn relay(&self) -> Option<&NodeHandle> {
        self.relay.as_ref().map(|(h, _)| h)
    }

    /// The relay's dialable address, when there is one.
    pub fn relay_addr(&self) -> Option<&Multiaddr> {
        self.relay.as_ref().map(|(_, a)| a)
    }

    /// A node configuration named `name`: the factory's emitter (subscribe
    /// to it before spawning to miss nothing), a reservation on the relay.
    pub fn config(&self, name: &str) -> NodeConfig {
        let mut c = NodeConfig::new(name);
        c.emitter = Some((self.emitters)(name));
        c.relays = self.relay_addr().cloned().into_iter().collect();
        c.allow_private_addrs = true; // everything here is on loopback
        c
    }

    /// Starts a node with a fresh identity.
    pub async fn spawn(&self, config: NodeConfig) -> Result<NodeHandle, NodeError> {
        spawn(config, Keypair::generate_ed25519()).await
    }

    /// The ledger account of `node` on the shared board.
    pub fn ledger_for(&self, node: &NodeHandle) -> Arc<dyn Ledger> {
        Arc::new(self.board.account(node.peer_id().to_string()))
    }

    /// Runs the provider role on `node` as a task (on the shared board unless
    /// `ledger` says otherwise); a failure becomes an `error` event.
    pub fn provide(
        &self,
        node: &NodeHandle,
        ledger: Option<Arc<dyn Ledger>>,
        pc: ProviderConfig,
    ) -> tokio::task::JoinHandle<Option<()>> {
        let ledger = ledger.unwrap_or_else(|| self.ledger_for(node));
        let h = node.clone();
        node.spawn(async move {
            if let Err(e) = provider::run(h.clone(), ledger, pc).await {
                h.emit(Event::error(
                    ledgermesh_node::events::ErrorPart::Provider,
                    format!("{e:#}"),
                ));
            }
        })
    }

    /// Runs the consumer role on `node` over the shared board.
    pub async fn consume(
        &self,
        node: &NodeHandle,
        cc: ConsumerConfig,
    ) -> anyhow::Result<Vec<StreamOutcome>> {
        Ok(consumer::run(node.clone(), self.ledger_for(node), cc).await?)
    }
}
