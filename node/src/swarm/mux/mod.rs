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

#[cfg(test)]
mod tests;

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

/// Streams per connection (yamux's default).
const MAX_STREAMS: usize = 512;

/// The largest frame body yamux accepts (its own, fixed limit).
const MAX_FRAME_BODY: usize = 1 << 20;

/// yamux's initial (and minimum) window per stream.
const STREAM_WINDOW: usize = 256 << 10;

/// The connection's receive window: every stream's guaranteed minimum,
/// plus just enough for one stream to auto-tune up to the largest frame we
/// accept. Granting more would let a peer that sends one frame per window
/// (some implementations do) send a frame we then refuse, resetting the
/// whole connection; with this budget no stream's window passes 1 MiB.
const CONNECTION_WINDOW: usize = MAX_STREAMS * STREAM_WINDOW + (MAX_FRAME_BODY - STREAM_WINDOW);

/// The yamux configuration: defaults, with the receive window bounded as above.
fn yamux_config() -> yamux::Config {
    let mut c = yamux::Config::default();
    c.set_max_num_streams(MAX_STREAMS);
    c.set_max_connection_receive_window(Some(CONNECTION_WINDOW));
    c
}

/// The yamux upgrade (yamux's defaults, receive windows bounded) with flush
/// coalescing.
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
                yamux_config(),
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
