//! `consume --listen-local ADDR`: a received stream served to local TCP
//! clients, each from the moment it connects (any program can read it).

use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::sync::{broadcast, Semaphore};

/// Pieces a client may be behind before it is dropped.
const BACKLOG: usize = 1024;
/// Clients served at once; more are refused.
pub const MAX_CLIENTS: usize = 64;

/// The fan-out to local clients.
#[derive(Debug, Clone)]
pub struct Fanout {
    tx: broadcast::Sender<Arc<Vec<u8>>>,
    addr: SocketAddr,
    /// The accept loop stops when the last clone goes; each client's writer
    /// then sees the channel close and shuts its socket down.
    tasks: Arc<crate::tasks::StopOnDrop>,
}

impl PartialEq for Fanout {
    fn eq(&self, other: &Self) -> bool {
        self.addr == other.addr
    }
}

impl Eq for Fanout {}

impl Fanout {
    /// Listens on `addr` (loopback unless the user says otherwise) and
    /// serves every client from when it connects.
    pub async fn listen(addr: SocketAddr) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (tx, _) = broadcast::channel(BACKLOG);
        let tasks = Arc::new(crate::tasks::StopOnDrop::new());
        let clients = (**tasks).clone();
        let fanout = Self { tx, addr, tasks };
        let tx = fanout.tx.clone();
        let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
        fanout.tasks.spawn(async move {
            loop {
                let Ok((mut sock, peer)) = listener.accept().await else {
                    continue;
                };
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    tracing::info!(%peer, "local client refused: {MAX_CLIENTS} already served");
                    continue;
                };
                let mut rx = tx.subscribe();
                clients.spawn_tracked(async move {
                    let _permit = permit;
                    let _ = sock.set_nodelay(true);
                    loop {
                        match rx.recv().await {
                            Ok(piece) => {
                                if sock.write_all(&piece).await.is_err() {
                                    break;
                                }
                            }
                            Err(broadcast::error::RecvError::Lagged(n)) => {
                                tracing::info!(%peer, behind = n, "local client too slow; dropped");
                                break;
                            }
                            Err(broadcast::error::RecvError::Closed) => {
                                let _ = sock.shutdown().await;
                                break;
                            }
                        }
                    }
                });
            }
        });
        Ok(fanout)
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Hands `data` to every connected client.
    pub fn send(&self, data: &[u8]) {
        if !data.is_empty() && self.tx.receiver_count() > 0 {
            let _ = self.tx.send(Arc::new(data.to_vec()));
        }
    }
}
