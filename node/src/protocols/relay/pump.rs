//! One direction of a circuit: bytes read from one stream are written to
//! the other, counted, and stopped at the circuit's per-direction limit.
//! Writes are flushed whenever the reader has nothing more at once, so a
//! small message is never held back waiting for a full buffer.

use crate::protocols::pay::payee::{Budget, Room};
use futures::{AsyncRead, AsyncWrite};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

/// Bytes read at once.
const BUF: usize = 64 << 10;

/// Why a direction stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum End {
    /// The sender finished; the receiver's write side was closed.
    Eof,
    /// The direction carried its limit.
    Limit,
    /// The payer it is billed to was cut for not paying.
    Unpaid,
}

/// Copies `from` into `to`, at most `cap` bytes, counting into `moved`.
pub(super) struct Pump<R, W> {
    from: R,
    to: W,
    buf: Box<[u8]>,
    pos: usize,
    filled: usize,
    cap: u64,
    moved: Arc<AtomicU64>,
    eof: bool,
    /// The payer's budget, when the circuit is billed.
    budget: Option<Budget>,
}

impl<R, W> Pump<R, W> {
    pub(super) fn new(from: R, to: W, cap: u64, moved: Arc<AtomicU64>) -> Self {
        Self {
            from,
            to,
            buf: vec![0; BUF].into_boxed_slice(),
            pos: 0,
            filled: 0,
            cap,
            moved,
            eof: false,
            budget: None,
        }
    }

    /// Bills what it carries to `budget`, and waits while it is paused.
    pub(super) fn billed(mut self, budget: Option<Budget>) -> Self {
        self.budget = budget;
        self
    }
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Future for Pump<R, W> {
    type Output = io::Result<End>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            while this.pos < this.filled {
                let n = ready!(
                    Pin::new(&mut this.to).poll_write(cx, &this.buf[this.pos..this.filled])
                )?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                this.pos += n;
                this.moved.fetch_add(n as u64, Ordering::Relaxed);
            }
            if this.eof {
                ready!(Pin::new(&mut this.to).poll_close(cx))?;
                return Poll::Ready(Ok(End::Eof));
            }
            let room = this.cap.saturating_sub(this.moved.load(Ordering::Relaxed));
            if room == 0 {
                ready!(Pin::new(&mut this.to).poll_flush(cx))?;
                return Poll::Ready(Ok(End::Limit));
            }
            let mut want = (this.buf.len()).min(usize::try_from(room).unwrap_or(usize::MAX));
            if let Some(b) = &this.budget {
                match b.poll_room(cx) {
                    Room::Bytes(n) => want = want.min(usize::try_from(n).unwrap_or(usize::MAX)),
                    Room::Paused => {
                        // Unpaid: hold the bytes until a voucher arrives.
                        ready!(Pin::new(&mut this.to).poll_flush(cx))?;
                        return Poll::Pending;
                    }
                    Room::Cut => return Poll::Ready(Ok(End::Unpaid)),
                }
            }
            match Pin::new(&mut this.from).poll_read(cx, &mut this.buf[..want]) {
                Poll::Pending => {
                    // Nothing more for now: push out what was written.
                    ready!(Pin::new(&mut this.to).poll_flush(cx))?;
                    return Poll::Pending;
                }
                Poll::Ready(Ok(0)) => this.eof = true,
                Poll::Ready(Ok(n)) => {
                    (this.pos, this.filled) = (0, n);
                    if let Some(b) = &this.budget {
                        b.served(n as u64);
                    }
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::io::Cursor;

    #[tokio::test]
    async fn copies_everything_then_closes() {
        let data: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        let moved = Arc::new(AtomicU64::new(0));
        let mut out = Cursor::new(Vec::new());
        let end = Pump::new(Cursor::new(data.clone()), &mut out, u64::MAX, moved.clone())
            .await
            .unwrap();
        assert_eq!(end, End::Eof);
        assert_eq!(out.into_inner(), data);
        assert_eq!(moved.load(Ordering::Relaxed), 200_000);
    }

    #[tokio::test]
    async fn stops_at_the_cap_exactly() {
        let data = vec![7u8; 300_000];
        let moved = Arc::new(AtomicU64::new(0));
        let mut out = Cursor::new(Vec::new());
        let end = Pump::new(Cursor::new(data), &mut out, 131_072, moved.clone())
            .await
            .unwrap();
        assert_eq!(end, End::Limit);
        assert_eq!(out.into_inner().len(), 131_072);
        assert_eq!(moved.load(Ordering::Relaxed), 131_072);
    }
}
