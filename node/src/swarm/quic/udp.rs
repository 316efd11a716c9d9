//! quinn's tokio runtime with one fix on the send path: a GSO batch is cut
//! into sends the kernel takes.
//!
//! quinn batches up to ten datagrams of the path's MTU into one `sendmsg`
//! (UDP GSO). The kernel refuses a send whose UDP payload is over 65,535
//! bytes in all with `EMSGSIZE`, and quinn-udp drops a send refused that
//! way without a word (it expects `EMSGSIZE` only for MTU probes). With the
//! 1,452-byte ceiling quinn ships with, ten datagrams fit; once MTU
//! discovery finds a larger path (loopback, jumbo frames) every batch would
//! be lost, black-hole detection would drop the MTU to 1,200, and the
//! connection would run slower than before. So a batch larger than the
//! kernel's limit goes out as several sends of whole datagrams.
//!
//! Sockets are made larger too: see [`BUFFER_BYTES`].

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncTimer, AsyncUdpSocket, Runtime, UdpPoller};
use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

/// The most UDP payload one send may carry: an IPv4 datagram's 65,535
/// bytes less its 20-byte header and UDP's 8 (IPv6's limit is larger, so
/// this serves both).
pub(super) const MAX_SEND: usize = 65_535 - 20 - 8;

/// The send and receive buffer each QUIC socket asks for (the kernel caps
/// it at `net.core.{r,w}mem_max`). At the default ~208 KiB a bulk stream
/// lost 0.5–2.7 % of its datagrams on loopback to receive-buffer overflow,
/// each loss a congestion-window cut; with 4 MiB none were lost.
pub(super) const BUFFER_BYTES: usize = 4 << 20;

/// Asks for [`BUFFER_BYTES`] both ways (best effort: the kernel caps both
/// at its `net.core.{r,w}mem_max`). A receive buffer left smaller is said
/// once per process, with the setting that fixes it: many distributions
/// ship a 208 KiB maximum, where bulk QUIC transfers lose datagrams.
pub(super) fn enlarge_buffers(s: &socket2::Socket) {
    static SAID: std::sync::Once = std::sync::Once::new();
    let want = BUFFER_BYTES;
    for set in [
        socket2::Socket::set_recv_buffer_size,
        socket2::Socket::set_send_buffer_size,
    ] {
        if let Err(e) = set(s, want) {
            tracing::debug!("QUIC socket buffer left at the kernel's default: {e}");
        }
    }
    // Linux reports twice what it grants (the other half is its overhead).
    let reported = if cfg!(target_os = "linux") { 2 } else { 1 };
    let granted = s.recv_buffer_size().map(|b| b / reported).unwrap_or(0);
    if granted < want {
        SAID.call_once(|| {
            tracing::warn!(
                granted,
                want,
                "QUIC sockets get a smaller receive buffer than asked for, so bulk transfers \
                 may lose datagrams; raise the limit: sysctl -w net.core.rmem_max={}",
                2 * want
            )
        });
    }
}

/// [`quinn::TokioRuntime`] whose sockets split oversized GSO batches.
///
/// A `lean` runtime is for the sockets of a hard-NAT spray: hundreds at
/// once, each carrying one handshake (and one winner a connection), so each
/// receives one datagram at a time (no GRO batches). quinn sizes an
/// endpoint's receive buffer as the payload ceiling × the socket's receive
/// segments × 32; at 8,952 bytes and GRO's 64 segments that is 18 MiB,
/// zeroed, per socket: a spray of 4 × 256 sockets spent seconds of both
/// cores zeroing 18 GiB and left the node's own sockets unread meanwhile
/// (its relay connection timed out).
#[derive(Debug)]
pub(super) struct Runtime64k {
    lean: bool,
}

impl Runtime64k {
    /// For listeners and port-reusing dials.
    pub(super) const FULL: Runtime64k = Runtime64k { lean: false };
    /// For a spray's fresh sockets.
    pub(super) const LEAN: Runtime64k = Runtime64k { lean: true };
}

impl Runtime for Runtime64k {
    fn new_timer(&self, at: Instant) -> Pin<Box<dyn AsyncTimer>> {
        quinn::TokioRuntime.new_timer(at)
    }

    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) {
        quinn::TokioRuntime.spawn(future)
    }

    fn wrap_udp_socket(&self, socket: std::net::UdpSocket) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        if !self.lean {
            let inner = quinn::TokioRuntime.wrap_udp_socket(socket)?;
            return Ok(Arc::new(Split { inner, lean: false }));
        }
        // quinn-udp switches GRO on as it wraps the socket; off again, the
        // kernel hands over one datagram per receive, which is what the
        // one-segment buffers hold (a merged batch would be cut short).
        let same = socket.try_clone()?;
        let inner = quinn::TokioRuntime.wrap_udp_socket(socket)?;
        #[cfg(target_os = "linux")]
        {
            use nix::sys::socket::{setsockopt, sockopt::UdpGroSegment};
            // Where the kernel has no GRO, quinn-udp could not switch it on either.
            if let Err(e) = setsockopt(&same, UdpGroSegment, &false) {
                tracing::trace!(error = %e, "UDP GRO not switched off");
            }
        }
        drop(same);
        Ok(Arc::new(Split { inner, lean: true }))
    }

    fn now(&self) -> Instant {
        quinn::TokioRuntime.now()
    }
}

#[derive(Debug)]
struct Split {
    inner: Arc<dyn AsyncUdpSocket>,
    /// One datagram per receive (see [`Runtime64k`]).
    lean: bool,
}

/// The pieces `t` goes out as: itself when the kernel takes it in one
/// send, else runs of whole segments of at most [`MAX_SEND`] bytes.
pub(super) fn pieces<'a>(t: &Transmit<'a>) -> impl Iterator<Item = Transmit<'a>> + 'a {
    let per_send = match t.segment_size {
        Some(s) if s > 0 && t.contents.len() > MAX_SEND => (MAX_SEND / s).max(1) * s,
        _ => t.contents.len().max(1),
    };
    let (destination, ecn, src_ip, segment) = (t.destination, t.ecn, t.src_ip, t.segment_size);
    t.contents.chunks(per_send).map(move |contents| Transmit {
        destination,
        ecn,
        contents,
        // A piece of one datagram goes out without GSO.
        segment_size: segment.filter(|&s| contents.len() > s),
        src_ip,
    })
}

impl AsyncUdpSocket for Split {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        if transmit.contents.len() <= MAX_SEND {
            return self.inner.try_send(transmit);
        }
        // A piece that would block after others went out fails the whole
        // transmit; quinn sends it again when writable, and the receiver
        // drops the packets it already has by their numbers.
        pieces(transmit).try_for_each(|piece| self.inner.try_send(&piece))
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        self.inner.poll_recv(cx, bufs, meta)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        if self.lean {
            1
        } else {
            self.inner.max_receive_segments()
        }
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transmit(contents: &[u8], segment_size: Option<usize>) -> Transmit<'_> {
        Transmit {
            destination: "127.0.0.1:1".parse().unwrap(),
            ecn: None,
            contents,
            segment_size,
            src_ip: None,
        }
    }

    fn cut(t: &Transmit<'_>) -> Vec<(usize, Option<usize>)> {
        pieces(t)
            .map(|p| (p.contents.len(), p.segment_size))
            .collect()
    }

    #[test]
    fn a_batch_the_kernel_takes_goes_out_whole() {
        let bytes = vec![7u8; 10 * 1452];
        assert_eq!(cut(&transmit(&bytes, Some(1452))), [(14_520, Some(1452))]);
        assert_eq!(cut(&transmit(&bytes[..900], None)), [(900, None)]);
        let big = vec![1u8; 65_495];
        assert_eq!(cut(&transmit(&big, None)), [(65_495, None)]);
    }

    #[test]
    fn a_batch_over_the_limit_is_cut_at_whole_datagrams() {
        // Ten 8,952-byte datagrams (a 9,000-byte MTU) and a short last one.
        let mut bytes: Vec<u8> = (0..9 * 8952).map(|i| (i / 8952) as u8).collect();
        bytes.extend(std::iter::repeat_n(9u8, 100));
        let t = transmit(&bytes, Some(8952));
        assert_eq!(
            cut(&t),
            [(7 * 8952, Some(8952)), (2 * 8952 + 100, Some(8952))]
        );
        // Every datagram starts where it did, in order.
        let rejoined: Vec<u8> = pieces(&t).flat_map(|p| p.contents.to_vec()).collect();
        assert_eq!(rejoined, bytes);
        for p in pieces(&t) {
            assert!(p.contents.len() <= MAX_SEND);
            assert_eq!(
                p.contents[0] as usize % 7,
                0,
                "each piece starts a datagram"
            );
        }
        // Two datagrams of nearly 64 KiB each go one by one, as single sends.
        let two = vec![0u8; 2 * 40_000];
        assert_eq!(
            cut(&transmit(&two, Some(40_000))),
            [(40_000, None), (40_000, None)]
        );
    }

    #[tokio::test]
    async fn a_large_batch_arrives_as_every_datagram() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = Runtime64k::FULL.wrap_udp_socket(tx).unwrap();
        if tx.max_transmit_segments() < 10 {
            eprintln!("skipped: this kernel has no UDP GSO");
            return;
        }
        let segment = 8952;
        let bytes: Vec<u8> = (0..10 * segment).map(|i| (i / segment) as u8).collect();
        let t = Transmit {
            destination: rx.local_addr().unwrap(),
            ecn: None,
            contents: &bytes,
            segment_size: Some(segment),
            src_ip: None,
        };
        let mut poller = tx.clone().create_io_poller();
        std::future::poll_fn(|cx| loop {
            match tx.try_send(&t) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::task::ready!(poller.as_mut().poll_writable(cx))?
                }
                r => return Poll::Ready(r),
            }
        })
        .await
        .unwrap();
        let mut buf = vec![0u8; 65_536];
        for i in 0..10u8 {
            let n = rx.recv(&mut buf).expect("datagram {i} arrives");
            assert_eq!(n, segment);
            assert!(buf[..n].iter().all(|b| *b == i), "datagram {i} in order");
        }
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_spray_socket_takes_one_datagram_per_receive() {
        use nix::sys::socket::{getsockopt, sockopt::UdpGroSegment};
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_nonblocking(true).unwrap();
        let same = socket.try_clone().unwrap();
        let full = Runtime64k::FULL
            .wrap_udp_socket(socket.try_clone().unwrap())
            .unwrap();
        let gro_on = getsockopt(&same, UdpGroSegment).unwrap_or(false);
        let lean = Runtime64k::LEAN.wrap_udp_socket(socket).unwrap();
        assert!(
            !getsockopt(&same, UdpGroSegment).unwrap_or(false),
            "GRO off"
        );
        assert_eq!(lean.max_receive_segments(), 1);
        if gro_on {
            assert!(
                full.max_receive_segments() > 1,
                "the full runtime keeps GRO"
            );
        }
    }
}
