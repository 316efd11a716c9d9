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

/// A peer that, like some other yamux implementations, sends each DATA frame
/// as large as the whole window it was granted, and answers pings (so our
/// side measures a round trip and auto-tunes its window).
async fn window_sized_sender(
    io: tokio::io::DuplexStream,
    total: usize,
    done: tokio::sync::oneshot::Sender<(usize, usize)>,
) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    const DATA: u8 = 0;
    const WINDOW_UPDATE: u8 = 1;
    const PING: u8 = 2;
    const SYN: u16 = 1;
    const ACK: u16 = 2;
    const FIN: u16 = 4;
    fn header(kind: u8, flags: u16, stream: u32, len: u32) -> Vec<u8> {
        let mut h = vec![0, kind];
        h.extend_from_slice(&flags.to_be_bytes());
        h.extend_from_slice(&stream.to_be_bytes());
        h.extend_from_slice(&len.to_be_bytes());
        h
    }
    let (mut rd, mut wr) = tokio::io::split(io);
    let mut window = 256usize << 10;
    let (mut sent, mut largest) = (0usize, 0usize);
    let mut flags = SYN;
    while sent < total {
        if window > 0 {
            let n = window.min(total - sent);
            wr.write_all(&header(DATA, flags, 1, n as u32))
                .await
                .unwrap();
            wr.write_all(&vec![7u8; n]).await.unwrap();
            flags = 0;
            (sent, window, largest) = (sent + n, window - n, largest.max(n));
            continue;
        }
        let mut h = [0u8; 12];
        rd.read_exact(&mut h).await.unwrap();
        let flags_in = u16::from_be_bytes([h[2], h[3]]);
        let stream = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
        let len = u32::from_be_bytes([h[8], h[9], h[10], h[11]]);
        match h[1] {
            WINDOW_UPDATE if stream == 1 => window += len as usize,
            PING if flags_in & SYN != 0 => {
                wr.write_all(&header(PING, ACK, 0, len)).await.unwrap();
            }
            DATA => {
                let mut body = vec![0u8; len as usize];
                rd.read_exact(&mut body).await.unwrap();
            }
            _ => {}
        }
    }
    wr.write_all(&header(DATA, FIN, 1, 0)).await.unwrap();
    let _ = done.send((sent, largest));
    // Keep answering pings while the connection lives.
    let mut h = [0u8; 12];
    while rd.read_exact(&mut h).await.is_ok() {
        let len = u32::from_be_bytes([h[8], h[9], h[10], h[11]]);
        if h[1] == PING && u16::from_be_bytes([h[2], h[3]]) & SYN != 0 {
            let _ = wr.write_all(&header(PING, ACK, 0, len)).await;
        }
    }
}

#[tokio::test]
async fn a_peer_sending_window_sized_frames_is_never_refused() {
    let (ours, theirs) = tokio::io::duplex(8 << 20);
    let muxer = Config::new().muxer(ours.compat(), yamux::Mode::Server);
    let (mut inbound, _open) = drive(muxer);
    const TOTAL: usize = 48 << 20;
    let (done, report) = tokio::sync::oneshot::channel();
    tokio::spawn(window_sized_sender(theirs, TOTAL, done));
    let mut stream = inbound.next().await.expect("the peer's stream");
    let mut got = 0usize;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = stream
            .read(&mut buf)
            .await
            .expect("never reset by a frame too large");
        if n == 0 {
            break;
        }
        got += n;
    }
    assert_eq!(got, TOTAL, "every byte arrived");
    let (sent, largest) = report.await.expect("the sender finished");
    assert_eq!(sent, TOTAL);
    assert!(
        largest <= 1 << 20,
        "a frame of {largest} bytes: past what yamux accepts"
    );
    assert!(
        largest > 256 << 10,
        "the window did grow ({largest}): the test exercised auto-tuning"
    );
}
