//! Bytes through each relay, counted on our side of its circuits: the raw
//! circuit bytes (under our Noise and yamux), which is what a relay meters
//! and bills. A payer checks a relay's invoices against these counters.

use futures::{AsyncRead, AsyncWrite};
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

/// Relays counted apart; circuits through others share one counter.
const MAX_RELAYS: usize = 256;

/// The byte counters, one per relay; clones share them.
#[derive(Debug, Clone, Default)]
pub struct RelayMeters {
    by_relay: Arc<Mutex<HashMap<PeerId, Arc<AtomicU64>>>>,
    others: Arc<AtomicU64>,
}

impl RelayMeters {
    /// The counter of circuits through `relay`.
    pub fn of(&self, relay: PeerId) -> Arc<AtomicU64> {
        let mut m = self.by_relay.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() >= MAX_RELAYS && !m.contains_key(&relay) {
            return self.others.clone();
        }
        m.entry(relay).or_default().clone()
    }

    /// The counter for a circuit at `addr` (`…/p2p/<relay>/p2p-circuit…`).
    pub(crate) fn for_addr(&self, addr: &Multiaddr) -> Arc<AtomicU64> {
        match relay_of(addr) {
            Some(r) => self.of(r),
            None => self.others.clone(),
        }
    }
}

/// The relay of a circuit address: the last `/p2p` before `/p2p-circuit`.
pub fn relay_of(addr: &Multiaddr) -> Option<PeerId> {
    let mut last = None;
    for p in addr.iter() {
        match p {
            Protocol::P2p(id) => last = Some(id),
            Protocol::P2pCircuit => return last,
            _ => {}
        }
    }
    None
}

/// A connection (or stream) that counts the bytes it moves: what it reads
/// into one counter, what it writes into another (the same one for a
/// relay's bill, two for a stream's status).
pub struct Metered<C> {
    inner: C,
    read: Arc<AtomicU64>,
    written: Arc<AtomicU64>,
}

impl<C> Metered<C> {
    /// Counts both directions into `count`.
    pub(crate) fn new(inner: C, count: Arc<AtomicU64>) -> Self {
        Self::split(inner, count.clone(), count)
    }

    /// Counts reads into `read` and writes into `written`.
    pub fn split(inner: C, read: Arc<AtomicU64>, written: Arc<AtomicU64>) -> Self {
        Self {
            inner,
            read,
            written,
        }
    }
}

impl<C: AsyncRead + Unpin> AsyncRead for Metered<C> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.read.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }
}

impl<C: AsyncWrite + Unpin> AsyncWrite for Metered<C> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.written.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_relay_of_a_circuit_address() {
        let r = PeerId::random();
        let d = PeerId::random();
        let a: Multiaddr = format!("/ip4/192.0.2.1/tcp/4001/p2p/{r}/p2p-circuit/p2p/{d}")
            .parse()
            .unwrap();
        assert_eq!(relay_of(&a), Some(r));
        let direct: Multiaddr = format!("/ip4/192.0.2.1/tcp/4001/p2p/{r}").parse().unwrap();
        assert_eq!(relay_of(&direct), None);
        let meters = RelayMeters::default();
        meters.for_addr(&a).fetch_add(5, Ordering::Relaxed);
        assert_eq!(meters.of(r).load(Ordering::Relaxed), 5);
    }
}
