//! Our yamux multiplexer upgrade: `libp2p-yamux` with coalesced flushes.
//!
//! yamux's connection loop flushes the socket after every frame it sends
//! (16 KiB of data at most). Under Noise a flush seals whatever is buffered,
//! so every yamux frame became its own Noise frame: an AEAD seal, a length
//! prefix, usually its own `write(2)` and a wake-up on the other side. A relay
//! forwards circuits through an 8 KiB copy buffer, so its frames, and so its
//! Noise frames, were 8 KiB.
//!
//! [`Config`] speaks the same `/yamux/1.0.0` (peers see no difference) but
//! puts [`Coalesce`] between yamux and the secure channel: a flush right after
//! a write is held until yamux has handed down everything it has ready in this
//! poll, then done in one go, so back-to-back frames share Noise frames (up to
//! 64 KiB) and system calls. Nothing waits for a timer: the held flush happens
//! before the connection's poll returns.
//!
//! Measured with `ledgermesh bench --only throughput` (see the README): CPU
//! per relayed MiB fell by about a tenth. Larger yamux frames (64 KiB) were
//! tried and stalled relayed streams now and then (four frames fill the
//! 256 KiB initial stream window), so the split size stays yamux's default.

use futures::{ready, AsyncRead, AsyncWrite};
use libp2p::core::muxing::{StreamMuxer, StreamMuxerEvent};
use libp2p::core::upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade, UpgradeInfo};
use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

/// Consecutive flushes deferred at most, so a connection that always has
/// more to write still flushes within a bounded amount of data.
const MAX_DEFERRED_FLUSHES: u32 = 16;
/// Inbound streams held while the swarm is not asking for them; further ones
/// are dropped (yamux's own ack backlog is 256, so well-behaved peers stop
/// before that).
const MAX_BUFFERED_INBOUND: usize = 256;

/// The yamux upgrade (yamux's defaults) with flush coalescing.
#[derive(Debug, Clone, Default)]
pub struct Config;

impl Config {
    /// The upgrade; a function so it can be handed to the swarm builder.
    pub fn new() -> Self {
        Config
    }

    fn muxer<C>(self, io: C, mode: yamux::Mode) -> Muxer<Coalesce<C>>
    where
        C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let flush_due = Arc::new(AtomicBool::new(false));
        Muxer {
            connection: yamux::Connection::new(
                Coalesce::new(io, flush_due.clone()),
                yamux::Config::default(),
                mode,
            ),
            flush_due,
            inbound: VecDeque::new(),
            inbound_waker: None,
        }
    }
}

impl UpgradeInfo for Config {
    type Info = &'static str;
    type InfoIter = std::iter::Once<Self::Info>;

    fn protocol_info(&self) -> Self::InfoIter {
        std::iter::once("/yamux/1.0.0")
    }
}

impl<C> InboundConnectionUpgrade<C> for Config
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Output = Muxer<Coalesce<C>>;
    type Error = io::Error;
    type Future = futures::future::Ready<Result<Self::Output, io::Error>>;

    fn upgrade_inbound(self, io: C, _: Self::Info) -> Self::Future {
        futures::future::ready(Ok(self.muxer(io, yamux::Mode::Server)))
    }
}

impl<C> OutboundConnectionUpgrade<C> for Config
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Output = Muxer<Coalesce<C>>;
    type Error = io::Error;
    type Future = futures::future::Ready<Result<Self::Output, io::Error>>;

    fn upgrade_outbound(self, io: C, _: Self::Info) -> Self::Future {
        futures::future::ready(Ok(self.muxer(io, yamux::Mode::Client)))
    }
}

/// A yamux connection as a libp2p [`StreamMuxer`].
pub struct Muxer<C> {
    connection: yamux::Connection<C>,
    /// Set by [`Coalesce`] when it deferred a flush: the connection gets
    /// one more pass before this poll returns, and that pass flushes.
    flush_due: Arc<AtomicBool>,
    /// Inbound streams that arrived while the swarm polled `poll` rather than
    /// `poll_inbound` (yamux only makes progress through
    /// `poll_next_inbound`, which also yields new streams).
    inbound: VecDeque<yamux::Stream>,
    inbound_waker: Option<Waker>,
}

impl<C> std::fmt::Debug for Muxer<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Muxer")
            .field("buffered_inbound", &self.inbound.len())
            .finish_non_exhaustive()
    }
}

/// A connection-level yamux failure.
#[derive(Debug, thiserror::Error)]
#[error("yamux: {0}")]
pub struct MuxError(#[from] yamux::ConnectionError);

fn closed() -> MuxError {
    MuxError(yamux::ConnectionError::Closed)
}

impl<C> Muxer<C>
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    /// Drives the connection until it has nothing more to do, then once
    /// more if a flush was deferred (that pass finds nothing newly written
    /// and flushes for real).
    fn poll_next_inbound(&mut self, cx: &mut Context<'_>) -> Poll<Result<yamux::Stream, MuxError>> {
        loop {
            let r = self.connection.poll_next_inbound(cx);
            let due = self.flush_due.swap(false, Ordering::Relaxed);
            match r {
                Poll::Pending if due => continue,
                Poll::Pending => return Poll::Pending,
                Poll::Ready(r) => {
                    if due {
                        // Not flushed yet: come back for it.
                        self.flush_due.store(true, Ordering::Relaxed);
                        cx.waker().wake_by_ref();
                    }
                    return Poll::Ready(match r {
                        Some(r) => r.map_err(MuxError),
                        None => Err(closed()),
                    });
                }
            }
        }
    }
}

impl<C> StreamMuxer for Muxer<C>
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    type Substream = yamux::Stream;
    type Error = MuxError;

    fn poll_inbound(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        let this = self.get_mut();
        if let Some(s) = this.inbound.pop_front() {
            return Poll::Ready(Ok(s));
        }
        if let Poll::Ready(r) = this.poll_next_inbound(cx) {
            return Poll::Ready(r);
        }
        this.inbound_waker = Some(cx.waker().clone());
        Poll::Pending
    }

    fn poll_outbound(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        self.get_mut()
            .connection
            .poll_new_outbound(cx)
            .map_err(MuxError)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.get_mut().connection.poll_close(cx).map_err(MuxError)
    }

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<StreamMuxerEvent, Self::Error>> {
        let this = self.get_mut();
        let stream = ready!(this.poll_next_inbound(cx))?;
        if this.inbound.len() >= MAX_BUFFERED_INBOUND {
            tracing::warn!(stream = %stream, "dropping inbound stream: buffer full");
        } else {
            this.inbound.push_back(stream);
            if let Some(w) = this.inbound_waker.take() {
                w.wake();
            }
        }
        // Come back at once: the connection may have more to do.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// Defers a flush that directly follows writes until yamux has handed down
/// everything it has in this poll.
///
/// yamux calls `poll_flush` after every frame. Answering such a call with
/// "done" lets yamux move its next frames into the same buffer; the flag it
/// raises makes [`Muxer`] run the connection once more before returning, and
/// the flush in that pass, finding nothing newly written, flushes for real.
/// After [`MAX_DEFERRED_FLUSHES`] deferrals in a row a flush is never
/// deferred, so the buffer cannot grow without bound.
#[derive(Debug)]
pub struct Coalesce<C> {
    io: C,
    written: bool,
    deferred: u32,
    flush_due: Arc<AtomicBool>,
}

impl<C> Coalesce<C> {
    fn new(io: C, flush_due: Arc<AtomicBool>) -> Self {
        Coalesce {
            io,
            written: false,
            deferred: 0,
            flush_due,
        }
    }
}

impl<C: AsyncRead + Unpin> AsyncRead for Coalesce<C> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<C: AsyncWrite + Unpin> AsyncWrite for Coalesce<C> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = ready!(Pin::new(&mut this.io).poll_write(cx, buf))?;
        this.written |= n > 0;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.written && this.deferred < MAX_DEFERRED_FLUSHES {
            this.written = false;
            this.deferred += 1;
            this.flush_due.store(true, Ordering::Relaxed);
            return Poll::Ready(Ok(()));
        }
        ready!(Pin::new(&mut this.io).poll_flush(cx))?;
        this.written = false;
        this.deferred = 0;
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.written = false;
        Pin::new(&mut this.io).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
    use libp2p::core::muxing::StreamMuxerExt;
    use tokio_util::compat::TokioAsyncReadCompatExt;

    /// Records what reaches the socket: bytes written and real flushes.
    #[derive(Default)]
    struct Recorder {
        written: usize,
        flushes: usize,
    }

    impl AsyncRead for Recorder {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            Poll::Ready(Ok(0))
        }
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.get_mut().written += buf.len();
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.get_mut().flushes += 1;
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.poll_flush(cx)
        }
    }

    #[test]
    fn flush_after_writes_is_held_until_a_flush_with_nothing_new() {
        futures::executor::block_on(async {
            let due = Arc::new(AtomicBool::new(false));
            let mut c = Coalesce::new(Recorder::default(), due.clone());
            for _ in 0..3 {
                c.write_all(&[1; 100]).await.unwrap();
                c.flush().await.unwrap();
                assert!(
                    due.swap(false, Ordering::Relaxed),
                    "a held flush raises the flag"
                );
            }
            assert_eq!((c.io.written, c.io.flushes), (300, 0));
            // Nothing newly written: this one reaches the socket.
            c.flush().await.unwrap();
            assert_eq!(c.io.flushes, 1);
            assert!(!due.load(Ordering::Relaxed));
        });
    }

    #[test]
    fn holding_is_bounded() {
        futures::executor::block_on(async {
            let due = Arc::new(AtomicBool::new(false));
            let mut c = Coalesce::new(Recorder::default(), due);
            for _ in 0..MAX_DEFERRED_FLUSHES + 1 {
                c.write_all(&[1; 10]).await.unwrap();
                c.flush().await.unwrap();
            }
            assert_eq!(
                c.io.flushes,
                1,
                "the {}th flush in a row is real",
                MAX_DEFERRED_FLUSHES + 1
            );
        });
    }

    #[test]
    fn close_flushes() {
        futures::executor::block_on(async {
            let mut c = Coalesce::new(Recorder::default(), Arc::new(AtomicBool::new(false)));
            c.write_all(&[1; 10]).await.unwrap();
            c.flush().await.unwrap();
            c.close().await.unwrap();
            assert_eq!(c.io.flushes, 1);
        });
    }

    /// Drives a muxer (`poll`) in the background and hands out its streams.
    fn drive<M>(
        mut m: M,
    ) -> (
        futures::channel::mpsc::Receiver<M::Substream>,
        tokio::sync::mpsc::Sender<()>,
    )
    where
        M: StreamMuxer + Unpin + Send + 'static,
        M::Substream: Send + 'static,
        M::Error: std::fmt::Debug,
    {
        let (mut tx, rx) = futures::channel::mpsc::channel(8);
        let (open_tx, mut open_rx) = tokio::sync::mpsc::channel::<()>(8);
        tokio::spawn(async move {
            let mut opening = 0usize;
            std::future::poll_fn(move |cx| {
                while let Poll::Ready(Some(())) = open_rx.poll_recv(cx) {
                    opening += 1;
                }
                loop {
                    let mut progressed = false;
                    if opening > 0 {
                        if let Poll::Ready(s) = m.poll_outbound_unpin(cx) {
                            opening -= 1;
                            let _ = tx.try_send(s.expect("outbound"));
                            progressed = true;
                        }
                    }
                    if let Poll::Ready(s) = m.poll_inbound_unpin(cx) {
                        match s {
                            Ok(s) => {
                                let _ = tx.try_send(s);
                                progressed = true;
                            }
                            Err(_) => return Poll::Ready(()),
                        }
                    }
                    if let Poll::Ready(Err(_)) = m.poll_unpin(cx) {
                        return Poll::Ready(());
                    }
                    if !progressed {
                        return Poll::Pending;
                    }
                }
            })
            .await
        });
        (rx, open_tx)
    }

    /// Our muxer on one side, stock libp2p-yamux on the other, over TCP:
    /// streams both ways carry their bytes intact.
    #[tokio::test]
    async fn speaks_yamux_to_stock_libp2p_yamux() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (a, b) = tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
        let (a, (b, _)) = (a.unwrap(), b.unwrap());
        let ours =
            OutboundConnectionUpgrade::upgrade_outbound(Config::new(), a.compat(), "/yamux/1.0.0")
                .await
                .unwrap();
        let stock = InboundConnectionUpgrade::upgrade_inbound(
            libp2p::yamux::Config::default(),
            b.compat(),
            "/yamux/1.0.0",
        )
        .await
        .unwrap();
        let (mut ours_streams, ours_open) = drive(ours);
        let (mut stock_streams, stock_open) = drive(stock);

        // Ours opens, stock accepts: 3 MiB one way, echoed back.
        let data: Vec<u8> = (0..3 << 20).map(|i: u32| (i % 251) as u8).collect();
        // (yamux announces a stream with its first frame: write before the
        // other side can accept.)
        ours_open.send(()).await.unwrap();
        let s1 = ours_streams.next().await.unwrap();
        let (mut s1_read, mut s1_write) = AsyncReadExt::split(s1);
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            s1_write.write_all(&sent).await.unwrap();
            s1_write.close().await.unwrap();
        });
        let reader = tokio::spawn(async move {
            let mut back = Vec::new();
            s1_read.read_to_end(&mut back).await.unwrap();
            back
        });
        let mut r1 = stock_streams.next().await.unwrap();
        let mut got = Vec::new();
        r1.read_to_end(&mut got).await.unwrap();
        assert!(got == data, "stock side received the bytes intact");
        r1.write_all(&got).await.unwrap();
        r1.close().await.unwrap();
        let back = reader.await.unwrap();
        writer.await.unwrap();
        assert!(back == data, "our side got its bytes back");

        // Stock opens, ours accepts: a small message and an orderly close.
        stock_open.send(()).await.unwrap();
        let mut s2 = stock_streams.next().await.unwrap();
        s2.write_all(b"hello from stock").await.unwrap();
        s2.close().await.unwrap();
        let mut r2 = ours_streams.next().await.unwrap();
        let mut msg = Vec::new();
        r2.read_to_end(&mut msg).await.unwrap();
        assert_eq!(msg, b"hello from stock");
    }
}
