//! One QUIC connection as a libp2p stream muxer: each substream is one
//! bidirectional QUIC stream.
//!
//! The remote may open [`FIRST_STREAMS`] streams at once at first, and twice
//! as many (up to the configured ceiling) each time three quarters of its
//! allowance are open. quinn keeps state for every stream the remote may
//! open, so a ceiling of 256 from the start cost an idle connection ~21 KiB
//! (measured with heaptrack on the bench's 1,000 idle QUIC connections).
//!
//! A QUIC close discards whatever is still unsent, unlike a TCP FIN. So
//! closing the connection first waits, at most [`LINGER`], until the remote
//! has acknowledged every stream we finished (or dropped): a provider that
//! shuts down delivers what it wrote and a clean end of each stream.

use super::QuicError;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::task::AtomicWaker;
use futures::{AsyncRead, AsyncWrite, FutureExt, StreamExt};
use libp2p::core::muxing::{StreamMuxer, StreamMuxerEvent};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

/// Streams the remote may have open at once, at first.
pub(super) const FIRST_STREAMS: u32 = 32;

/// The longest a close waits for the remote to acknowledge our streams.
pub(super) const LINGER: Duration = Duration::from_millis(1500);

/// Our finished send streams whose data the remote has not acknowledged
/// yet. It holds one small future per such stream; quinn already keeps
/// their unacknowledged bytes until then, so it grows no further than
/// quinn's own stream state. The connection's `poll` prunes it.
#[derive(Default)]
struct Unacked {
    acks: Mutex<FuturesUnordered<BoxFuture<'static, ()>>>,
    waker: AtomicWaker,
}

impl Unacked {
    /// Remembers `send` until the remote has all of it (or stops it).
    fn watch(&self, send: &quinn::SendStream) {
        let acked = send.stopped();
        let acks = self.acks.lock().unwrap_or_else(|e| e.into_inner());
        acks.push(async move { drop(acked.await) }.boxed());
        drop(acks);
        self.waker.wake();
    }

    /// Ready once every watched stream is acknowledged.
    fn poll_all_acked(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.waker.register(cx.waker());
        let mut acks = self.acks.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(()) = ready!(acks.poll_next_unpin(cx)) {}
        Poll::Ready(())
    }
}

type Opening =
    BoxFuture<'static, Result<(quinn::SendStream, quinn::RecvStream), quinn::ConnectionError>>;

/// An established QUIC connection.
pub struct Connection {
    conn: quinn::Connection,
    accepting: Option<Opening>,
    opening: Option<Opening>,
    closing: Option<BoxFuture<'static, quinn::ConnectionError>>,
    /// Ends the wait for acknowledgements when closing.
    linger: Option<Pin<Box<tokio::time::Sleep>>>,
    unacked: Arc<Unacked>,
    /// The remote's streams open now (each [`Stream`] it opened counts
    /// itself out when dropped).
    pub(super) inbound: Arc<AtomicU32>,
    /// What the remote may have open at once now, and at most.
    pub(super) allowed: u32,
    ceiling: u32,
}

impl Connection {
    /// `conn` starts with `min(FIRST_STREAMS, ceiling)` remote streams.
    pub(super) fn new(conn: quinn::Connection, ceiling: u32) -> Connection {
        Connection {
            conn,
            accepting: None,
            opening: None,
            closing: None,
            linger: None,
            unacked: Arc::default(),
            inbound: Arc::default(),
            allowed: FIRST_STREAMS.min(ceiling),
            ceiling,
        }
    }

    /// The largest UDP payload this side sends on the path now (what MTU
    /// discovery has confirmed).
    pub fn path_mtu(&self) -> u16 {
        self.conn.stats().path.current_mtu
    }

    /// Counts a remote stream in; raises the remote's allowance when three
    /// quarters of it are open.
    fn counted_in(&mut self) -> Arc<AtomicU32> {
        let open = self.inbound.fetch_add(1, Ordering::Relaxed) + 1;
        if open * 4 >= self.allowed * 3 && self.allowed < self.ceiling {
            self.allowed = (self.allowed * 2).min(self.ceiling);
            self.conn.set_max_concurrent_bi_streams(self.allowed.into());
        }
        self.inbound.clone()
    }
}

impl StreamMuxer for Connection {
    type Substream = Stream;
    type Error = QuicError;

    fn poll_inbound(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<Stream, QuicError>> {
        let this = self.get_mut();
        let conn = &this.conn;
        let f = this.accepting.get_or_insert_with(|| {
            let conn = conn.clone();
            async move { conn.accept_bi().await }.boxed()
        });
        let r = ready!(f.poll_unpin(cx));
        this.accepting = None;
        let (send, recv) = r?;
        let mut stream = Stream::new(send, recv, this.unacked.clone());
        stream.inbound = Some(this.counted_in());
        Poll::Ready(Ok(stream))
    }

    fn poll_outbound(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Stream, QuicError>> {
        let this = self.get_mut();
        let conn = &this.conn;
        let f = this.opening.get_or_insert_with(|| {
            let conn = conn.clone();
            async move { conn.open_bi().await }.boxed()
        });
        let r = ready!(f.poll_unpin(cx));
        this.opening = None;
        let unacked = &this.unacked;
        Poll::Ready(
            r.map(|(s, r)| Stream::new(s, r, unacked.clone()))
                .map_err(QuicError::from),
        )
    }

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<StreamMuxerEvent, QuicError>> {
        // Forgets the streams acknowledged since last time.
        let _ = self.unacked.poll_all_acked(cx);
        // Migration is off (server side), so the address never changes.
        Poll::Pending
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), QuicError>> {
        let this = self.get_mut();
        if this.closing.is_none() {
            let linger = this
                .linger
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(LINGER)));
            if this.unacked.poll_all_acked(cx).is_pending() && linger.poll_unpin(cx).is_pending() {
                return Poll::Pending;
            }
        }
        let conn = &this.conn;
        let f = this.closing.get_or_insert_with(|| {
            conn.close(0u32.into(), b"");
            let conn = conn.clone();
            async move { conn.closed().await }.boxed()
        });
        match ready!(f.poll_unpin(cx)) {
            quinn::ConnectionError::LocallyClosed => Poll::Ready(Ok(())),
            e => Poll::Ready(Err(e.into())),
        }
    }
}

/// One bidirectional QUIC stream.
pub struct Stream {
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    /// How the first close ended (a second close answers the same).
    closed: Option<Result<(), io::ErrorKind>>,
    /// The remote's open streams, when it opened this one.
    inbound: Option<Arc<AtomicU32>>,
    /// Where the send half waits for its acknowledgement once finished.
    unacked: Arc<Unacked>,
}

impl Stream {
    fn new(send: quinn::SendStream, recv: quinn::RecvStream, unacked: Arc<Unacked>) -> Stream {
        Stream {
            send,
            recv,
            closed: None,
            inbound: None,
            unacked,
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        // Dropping an unfinished send half finishes it (quinn), so its bytes
        // are owed an acknowledgement too. A finished one is watched already.
        if self.closed.is_none() {
            self.unacked.watch(&self.send);
        }
        if let Some(open) = &self.inbound {
            open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.recv).poll_read(cx, buf)
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        AsyncWrite::poll_write(Pin::new(&mut self.send), cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        AsyncWrite::poll_flush(Pin::new(&mut self.send), cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(done) = self.closed {
            return Poll::Ready(done.map_err(io::Error::from));
        }
        let r = ready!(AsyncWrite::poll_close(Pin::new(&mut self.send), cx));
        self.closed = Some(r.as_ref().map(|_| ()).map_err(|e| e.kind()));
        if r.is_ok() {
            self.unacked.watch(&self.send);
        }
        Poll::Ready(r)
    }
}
