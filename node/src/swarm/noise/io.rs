//! The Noise transport channel after the handshake: frames of a two-byte
//! big-endian length and a ChaCha20-Poly1305 (or, between two of our nodes
//! with AES instructions, AES-256-GCM) ciphertext of at most 65,535 bytes,
//! each sealed and opened in place.

use futures::{ready, AsyncRead, AsyncWrite};
use ledgermesh_protocol::noise::{
    TransportCipher, AESGCM_REKEY_EVERY, MAX_MESSAGE, MAX_PLAINTEXT, TAG_LEN,
};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, CHACHA20_POLY1305};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

/// A whole frame with its length prefix.
const MAX_FRAME: usize = 2 + MAX_MESSAGE;
/// The read buffer under load: a whole frame and half of the next, so one
/// `read(2)` usually ends past a frame boundary.
const READ_BUF: usize = MAX_FRAME + MAX_FRAME / 2;
/// The read buffer after an idle period, before it knows there is load.
const READ_BUF_SMALL: usize = 4 << 10;
/// A write at least this large starts a full-sized frame buffer at once.
const LARGE_WRITE: usize = 4 << 10;

/// One direction's key and message counter.
struct Cipher {
    key: LessSafeKey,
    kind: TransportCipher,
    nonce: u64,
    /// AESGCM rekeys before every message numbered a multiple of this.
    rekey_every: u64,
}

fn algorithm(kind: TransportCipher) -> &'static ring::aead::Algorithm {
    match kind {
        TransportCipher::ChaChaPoly => &CHACHA20_POLY1305,
        TransportCipher::AesGcm => &AES_256_GCM,
    }
}

impl Cipher {
    fn new(kind: TransportCipher, key: &[u8; 32]) -> Self {
        let key = UnboundKey::new(algorithm(kind), key).expect("a 32-byte key");
        Cipher {
            key: LessSafeKey::new(key),
            kind,
            nonce: 0,
            rekey_every: AESGCM_REKEY_EVERY,
        }
    }

    /// Noise's `REKEY`: the key becomes the first 32 bytes of
    /// ENCRYPT(k, 2^64 − 1, "", 32 zero bytes).
    fn rekey(&mut self) -> io::Result<()> {
        let mut next = zeroize::Zeroizing::new([0u8; 32]);
        let max = Nonce::assume_unique_for_key(self.kind.nonce(u64::MAX));
        // The tag is not part of the key.
        let _tag = self
            .key
            .seal_in_place_separate_tag(max, Aad::empty(), &mut next[..])
            .map_err(|_| io::Error::other("noise rekey failed"))?;
        let key = UnboundKey::new(algorithm(self.kind), &next[..]).expect("a 32-byte key");
        self.key = LessSafeKey::new(key);
        Ok(())
    }

    /// The next message's nonce. Noise reserves 2^64 − 1; a connection that
    /// gets there (never, in practice) fails rather than reuse a nonce.
    fn next_nonce(&mut self) -> io::Result<Nonce> {
        if self.nonce == u64::MAX {
            return Err(io::Error::other("noise nonce exhausted"));
        }
        if self.kind.rekeys_before(self.nonce, self.rekey_every) {
            self.rekey()?;
        }
        let nonce = Nonce::assume_unique_for_key(self.kind.nonce(self.nonce));
        self.nonce += 1;
        Ok(nonce)
    }
}

/// An encrypted, authenticated channel to a peer over `T`.
pub struct Output<T> {
    io: T,
    tx: Cipher,
    rx: Cipher,
    /// The outgoing frame: its length prefix, then plaintext while it is
    /// being filled; the whole sealed frame once `sealed`.
    wbuf: Vec<u8>,
    sealed: bool,
    /// Bytes of a sealed frame already written.
    written: usize,
    /// Bytes read from `io`: `lo..hi` not yet consumed.
    rbuf: Vec<u8>,
    lo: usize,
    hi: usize,
    /// The opened frame's plaintext being handed out (its tag follows it,
    /// and the next frame follows the tag).
    plain: std::ops::Range<usize>,
    /// A frame failed to open: the channel is broken for good.
    broken: bool,
}

impl<T> std::fmt::Debug for Output<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("noise::Output").finish_non_exhaustive()
    }
}

impl<T> Output<T> {
    pub(super) fn new(
        io: T,
        cipher: TransportCipher,
        send_key: &[u8; 32],
        recv_key: &[u8; 32],
    ) -> Self {
        Output {
            io,
            tx: Cipher::new(cipher, send_key),
            rx: Cipher::new(cipher, recv_key),
            wbuf: Vec::new(),
            sealed: false,
            written: 0,
            rbuf: Vec::new(),
            lo: 0,
            hi: 0,
            plain: 0..0,
            broken: false,
        }
    }

    /// The cipher the transport messages use.
    pub fn cipher(&self) -> TransportCipher {
        self.tx.kind
    }

    /// Rekeys every `every` messages instead (tests).
    #[cfg(test)]
    pub(super) fn set_rekey_every(&mut self, every: u64) {
        self.tx.rekey_every = every;
        self.rx.rekey_every = every;
    }

    /// Bytes of buffer memory this channel holds now (0 when idle).
    pub fn buffered_capacity(&self) -> usize {
        self.wbuf.capacity() + self.rbuf.capacity()
    }

    /// Seals the plaintext in `wbuf` in place and writes the length.
    fn seal(&mut self) -> io::Result<()> {
        let nonce = self.tx.next_nonce()?;
        let tag = self
            .tx
            .key
            .seal_in_place_separate_tag(nonce, Aad::empty(), &mut self.wbuf[2..])
            .map_err(|_| io::Error::other("noise seal failed"))?;
        self.wbuf.extend_from_slice(tag.as_ref());
        let len = (self.wbuf.len() - 2) as u16;
        self.wbuf[..2].copy_from_slice(&len.to_be_bytes());
        self.sealed = true;
        self.written = 0;
        Ok(())
    }

    /// Makes room for a frame of `needed` bytes (prefix included) at `lo`:
    /// grows a small buffer, moves a partial frame to the front.
    fn make_room(&mut self, needed: usize) {
        let filled = !self.rbuf.is_empty() && self.hi == self.rbuf.len();
        if self.rbuf.len() < READ_BUF && (self.lo + needed > self.rbuf.len() || filled) {
            let size = if self.rbuf.is_empty() && !filled {
                READ_BUF_SMALL.max(needed)
            } else {
                READ_BUF
            };
            let mut grown = vec![0u8; size];
            grown[..self.hi - self.lo].copy_from_slice(&self.rbuf[self.lo..self.hi]);
            self.rbuf = grown;
            self.hi -= self.lo;
            self.lo = 0;
        } else if self.lo + needed > self.rbuf.len() {
            self.rbuf.copy_within(self.lo..self.hi, 0);
            self.hi -= self.lo;
            self.lo = 0;
        }
    }
}

fn invalid(message: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

impl<T: AsyncWrite + Unpin> Output<T> {
    /// Writes out a sealed frame, if one is waiting.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.sealed {
            return Poll::Ready(Ok(()));
        }
        while self.written < self.wbuf.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.wbuf[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.wbuf.clear();
        self.sealed = false;
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Output<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        loop {
            ready!(this.poll_drain(cx))?;
            let filled = this.wbuf.len().saturating_sub(2);
            if filled == MAX_PLAINTEXT {
                this.seal()?;
                continue;
            }
            let n = buf.len().min(MAX_PLAINTEXT - filled);
            if this.wbuf.is_empty() {
                let frame = if n >= LARGE_WRITE {
                    MAX_FRAME
                } else {
                    2 + n + TAG_LEN
                };
                this.wbuf.reserve_exact(frame);
                this.wbuf.extend_from_slice(&[0, 0]);
            } else if this.wbuf.len() + n + TAG_LEN > this.wbuf.capacity() {
                // Small writes add up: go to full size once, not by doubling.
                this.wbuf.reserve_exact(MAX_FRAME - this.wbuf.len());
            }
            this.wbuf.extend_from_slice(&buf[..n]);
            return Poll::Ready(Ok(n));
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        if this.wbuf.len() > 2 {
            this.seal()?;
            ready!(this.poll_drain(cx))?;
        }
        // Everything is written: an idle connection holds no frame buffer.
        this.wbuf = Vec::new();
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.as_mut().poll_flush(cx))?;
        Pin::new(&mut self.get_mut().io).poll_close(cx)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Output<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        loop {
            if !this.plain.is_empty() {
                let n = buf.len().min(this.plain.len());
                let start = this.plain.start;
                buf[..n].copy_from_slice(&this.rbuf[start..start + n]);
                this.plain.start += n;
                if this.plain.is_empty() {
                    this.lo = this.plain.end + TAG_LEN;
                }
                return Poll::Ready(Ok(n));
            }
            if this.broken {
                return Poll::Ready(Err(invalid("noise frame failed to decrypt")));
            }
            // A whole frame buffered: open it where it lies.
            let available = this.hi - this.lo;
            let mut needed = 2;
            if available >= 2 {
                let len = usize::from(u16::from_be_bytes([
                    this.rbuf[this.lo],
                    this.rbuf[this.lo + 1],
                ]));
                if len < TAG_LEN {
                    this.broken = true;
                    return Poll::Ready(Err(invalid("noise frame shorter than its tag")));
                }
                needed = 2 + len;
                if available >= needed {
                    let (start, end) = (this.lo + 2, this.lo + needed);
                    let nonce = this.rx.next_nonce()?;
                    let opened = this
                        .rx
                        .key
                        .open_in_place(nonce, Aad::empty(), &mut this.rbuf[start..end])
                        .map(|plain| plain.len());
                    let Ok(plain_len) = opened else {
                        this.broken = true;
                        return Poll::Ready(Err(invalid("noise frame failed to decrypt")));
                    };
                    this.plain = start..start + plain_len;
                    if plain_len == 0 {
                        this.lo = end;
                    }
                    continue;
                }
            }
            if this.lo == this.hi {
                this.lo = 0;
                this.hi = 0;
            }
            this.make_room(needed);
            let hi = this.hi;
            match Pin::new(&mut this.io).poll_read(cx, &mut this.rbuf[hi..]) {
                Poll::Pending => {
                    if this.lo == this.hi {
                        // Nothing buffered: hold no memory while idle.
                        this.rbuf = Vec::new();
                        this.lo = 0;
                        this.hi = 0;
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Ok(0)) if this.lo == this.hi => return Poll::Ready(Ok(0)),
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed inside a noise frame",
                    )))
                }
                Poll::Ready(Ok(n)) => this.hi += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            }
        }
    }
}
