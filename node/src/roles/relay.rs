//! The relay role: a public node that relays circuits for peers that cannot
//! reach each other directly, and helps them hole-punch (it is the DCUtR
//! coordination channel).

use crate::swarm::{spawn, NodeConfig, NodeError, NodeHandle, RelayLimits};
use libp2p::identity::Keypair;
use libp2p::Multiaddr;

/// Starts a relay listening on `listen`. Its listen addresses are announced as
/// external (a relay must be publicly reachable), plus any `external` ones.
pub async fn start(
    name: &str,
    keypair: Keypair,
    listen: Vec<Multiaddr>,
    external: Vec<Multiaddr>,
    limits: RelayLimits,
) -> Result<NodeHandle, NodeError> {
    let mut config = NodeConfig::new(name);
    config.listen = listen;
    config.external = external;
    config.relay_server = Some(limits);
    config.idle_timeout = std::time::Duration::from_secs(300);
    let handle = spawn(config, keypair).await?;
    Ok(handle)
}

/// A dialable address of the relay (`…/p2p/<id>`), preferring TCP, once it listens.
pub async fn dial_addr(handle: &NodeHandle) -> Result<Multiaddr, NodeError> {
    let snap = handle.wait_listening().await?;
    let pick = snap
        .direct_addrs
        .iter()
        .find(|a| crate::addr::is_tcp(a))
        .or_else(|| snap.direct_addrs.first())
        .cloned()
        .ok_or(NodeError::Stopped)?;
    Ok(pick.with(libp2p::multiaddr::Protocol::P2p(handle.peer_id())))
}

/// Re-reads the relay's allowlist when the file changes from what `seen`
/// (taken when it was first read) says (checked every second), as one of
/// `tasks`; a bad file is reported and the old list stays.
pub fn watch_allowlist(
    tasks: &crate::tasks::Tasks,
    path: std::path::PathBuf,
    acl: std::sync::Arc<std::sync::RwLock<ledgermesh_protocol::access::Acl>>,
    seen: crate::access::acl_file::Fingerprint,
) {
    use crate::access::acl_file::{fingerprint, load};
    tasks.spawn(async move {
        let mut seen = seen;
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            tick.tick().await;
            let now = fingerprint(&path);
            if now == seen {
                continue;
            }
            seen = now;
            match load(&path) {
                Ok(new) => {
                    *acl.write().unwrap_or_else(|p| p.into_inner()) = new;
                    tracing::info!(path = %path.display(), "relay allowlist reloaded");
                }
                Err(e) => tracing::warn!(error = %e, "relay allowlist rejected; the old one stays"),
            }
        }
    });
}
