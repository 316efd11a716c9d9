use super::*;
use futures::{AsyncReadExt, AsyncWriteExt, FutureExt};
use libp2p::core::upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade};
use rand::{Rng, RngCore, SeedableRng};
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};

type Pipe = Compat<tokio::io::DuplexStream>;

fn pipe() -> (Pipe, Pipe) {
    let (a, b) = tokio::io::duplex(256 << 10);
    (a.compat(), b.compat())
}

/// Our config, as a `libp2p-noise` peer would see it (AESGCM announced, as
/// on a CPU with AES instructions; ring runs it in software elsewhere).
fn ours(key: &Keypair) -> Config {
    Config::with_aesgcm(key, true).unwrap()
}

/// Our config announcing ChaChaPoly only.
fn ours_chacha(key: &Keypair) -> Config {
    Config::with_aesgcm(key, false).unwrap()
}

/// Writes `data` in chunks of random size (1 byte – 100 KiB), flushing now
/// and then, and closes.
async fn send_all<W: AsyncWrite + Unpin>(mut w: W, data: Vec<u8>, seed: u64) -> W {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut at = 0;
    while at < data.len() {
        let n = rng.random_range(1..=100_000).min(data.len() - at);
        w.write_all(&data[at..at + n]).await.unwrap();
        if rng.random_bool(0.3) {
            w.flush().await.unwrap();
        }
        at += n;
    }
    w.flush().await.unwrap();
    w
}

/// Reads until end of stream, in reads of random size.
async fn recv_all<R: AsyncRead + Unpin>(mut r: R, seed: u64) -> (Vec<u8>, R) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::new();
    let mut buf = vec![0u8; 200_000];
    loop {
        let want = rng.random_range(1..=buf.len());
        let n = r.read(&mut buf[..want]).await.unwrap();
        if n == 0 {
            return (out, r);
        }
        out.extend_from_slice(&buf[..n]);
    }
}

fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut data = vec![0u8; len];
    rand_chacha::ChaCha8Rng::seed_from_u64(seed).fill_bytes(&mut data);
    data
}

/// Both directions at once over an established pair; every byte arrives,
/// hash for hash.
async fn exchange<A, B>(a: A, b: B)
where
    A: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    B: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (ar, aw) = a.split();
    let (br, bw) = b.split();
    let a_data = random_bytes(3 << 20, 1);
    let b_data = random_bytes((2 << 20) + 12_345, 2);
    let (a_sum, b_sum) = (Sha256::digest(&a_data), Sha256::digest(&b_data));
    let a_send = tokio::spawn(async move { send_all(aw, a_data, 3).await.close().await });
    let b_send = tokio::spawn(async move { send_all(bw, b_data, 4).await.close().await });
    let at_b = tokio::spawn(recv_all(br, 5));
    let at_a = tokio::spawn(recv_all(ar, 6));
    a_send.await.unwrap().unwrap();
    b_send.await.unwrap().unwrap();
    assert_eq!(Sha256::digest(at_b.await.unwrap().0), a_sum);
    assert_eq!(Sha256::digest(at_a.await.unwrap().0), b_sum);
}

#[tokio::test]
async fn our_channel_to_our_channel_moves_bytes_both_ways() {
    let (ka, kb) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
    let (a, b) = pipe();
    let (out, inb) = tokio::join!(
        ours(&ka).upgrade_outbound(a, PROTOCOL),
        ours(&kb).upgrade_inbound(b, PROTOCOL)
    );
    let ((peer_b, a), (peer_a, b)) = (out.unwrap(), inb.unwrap());
    assert_eq!(peer_b, kb.public().to_peer_id());
    assert_eq!(peer_a, ka.public().to_peer_id());
    assert_eq!(
        (a.cipher(), b.cipher()),
        (TransportCipher::AesGcm, TransportCipher::AesGcm)
    );
    exchange(a, b).await;
}

#[tokio::test]
async fn each_side_logs_the_cipher_it_agreed_and_the_log_is_bounded() {
    let (ka, kb) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
    let (la, lb) = (Handshakes::default(), Handshakes::default());
    let (a, b) = pipe();
    let (out, inb) = tokio::join!(
        ours(&ka)
            .with_handshakes(la.clone())
            .upgrade_outbound(a, PROTOCOL),
        ours_chacha(&kb)
            .with_handshakes(lb.clone())
            .upgrade_inbound(b, PROTOCOL)
    );
    let ((peer_b, _), (peer_a, _)) = (out.unwrap(), inb.unwrap());
    assert_eq!(la.take(&peer_b), Some(TransportCipher::ChaChaPoly));
    assert_eq!(lb.take(&peer_a), Some(TransportCipher::ChaChaPoly));
    assert_eq!(la.take(&peer_b), None, "taken once");
    // Handshakes nobody takes (denied connections) do not pile up.
    let log = Handshakes::default();
    let first = PeerId::random();
    log.record(first, TransportCipher::AesGcm);
    for _ in 0..HANDSHAKES_KEPT + 10 {
        log.record(PeerId::random(), TransportCipher::AesGcm);
    }
    assert_eq!(log.len(), HANDSHAKES_KEPT);
    assert_eq!(log.take(&first), None, "the oldest went first");
    // A peer's newer handshake replaces its older one.
    let again = PeerId::random();
    log.record(again, TransportCipher::ChaChaPoly);
    log.record(again, TransportCipher::AesGcm);
    assert_eq!(log.take(&again), Some(TransportCipher::AesGcm));
    assert_eq!(log.take(&again), None);
}

#[tokio::test]
async fn aesgcm_only_when_both_ends_announce_it_in_either_role() {
    let (ka, kb) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
    for (dialer, listener) in [(true, false), (false, true), (false, false)] {
        let config = |k: &Keypair, aes: bool| if aes { ours(k) } else { ours_chacha(k) };
        let (a, b) = pipe();
        let (out, inb) = tokio::join!(
            config(&ka, dialer).upgrade_outbound(a, PROTOCOL),
            config(&kb, listener).upgrade_inbound(b, PROTOCOL)
        );
        let ((_, a), (_, b)) = (out.unwrap(), inb.unwrap());
        assert_eq!(
            a.cipher(),
            TransportCipher::ChaChaPoly,
            "{dialer} {listener}"
        );
        assert_eq!(
            b.cipher(),
            TransportCipher::ChaChaPoly,
            "{dialer} {listener}"
        );
        exchange(a, b).await;
    }
}

#[tokio::test]
async fn libp2p_noise_peers_interoperate_in_both_roles() {
    let (ka, kb) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
    let stock = |k: &Keypair| libp2p::noise::Config::new(k).unwrap();

    // We dial a stock responder.
    let (a, b) = pipe();
    let (out, inb) = tokio::join!(
        ours(&ka).upgrade_outbound(a, PROTOCOL),
        stock(&kb).upgrade_inbound(b, PROTOCOL)
    );
    let ((peer_b, a), (peer_a, b)) = (out.unwrap(), inb.unwrap());
    assert_eq!(
        (peer_a, peer_b),
        (ka.public().to_peer_id(), kb.public().to_peer_id())
    );
    // We announced AESGCM; a stock peer reads past it and stays on ChaChaPoly.
    assert_eq!(a.cipher(), TransportCipher::ChaChaPoly);
    exchange(a, b).await;

    // A stock initiator dials us.
    let (a, b) = pipe();
    let (out, inb) = tokio::join!(
        stock(&ka).upgrade_outbound(a, PROTOCOL),
        ours(&kb).upgrade_inbound(b, PROTOCOL)
    );
    let ((peer_b, a), (peer_a, b)) = (out.unwrap(), inb.unwrap());
    assert_eq!(
        (peer_a, peer_b),
        (ka.public().to_peer_id(), kb.public().to_peer_id())
    );
    assert_eq!(b.cipher(), TransportCipher::ChaChaPoly);
    exchange(a, b).await;
}

/// A config whose signature covers some other static key: a peer that
/// claims an identity without proving the Noise key is its own.
fn forged(identity: &Keypair) -> Config {
    let honest = ours(identity);
    let other_static = builder().generate_keypair().unwrap();
    let payload = HandshakePayload {
        identity_key: identity.public().encode_protobuf(),
        identity_sig: identity
            .sign(&signed_static_key(&other_static.public))
            .unwrap(),
        transport_ciphers: AESGCM,
    }
    .encode();
    Config {
        inner: Arc::new(Inner {
            handshakes: None,
            static_secret: honest.inner.static_secret.clone(),
            payload,
            ciphers: AESGCM,
        }),
    }
}

#[tokio::test]
async fn a_signature_over_another_static_key_is_refused_in_either_role() {
    let (ka, kb) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
    // A forging responder: the initiator refuses before revealing itself.
    let (a, b) = pipe();
    let (out, _inb) = tokio::join!(
        ours(&ka).upgrade_outbound(a, PROTOCOL),
        forged(&kb)
            .upgrade_inbound(b, PROTOCOL)
            .map(|r| r.map(|_| ()))
    );
    assert!(matches!(out, Err(NoiseError::BadSignature)), "{out:?}");

    // A forging initiator: the responder refuses.
    let (a, b) = pipe();
    let (_out, inb) = tokio::join!(
        forged(&ka)
            .upgrade_outbound(a, PROTOCOL)
            .map(|r| r.map(|_| ())),
        ours(&kb).upgrade_inbound(b, PROTOCOL)
    );
    assert!(matches!(inb, Err(NoiseError::BadSignature)), "{inb:?}");
}

#[tokio::test]
async fn garbage_instead_of_a_handshake_is_refused() {
    let kb = Keypair::generate_ed25519();
    let (mut a, b) = pipe();
    let responder = tokio::spawn(ours(&kb).upgrade_inbound(b, PROTOCOL));
    // A 32-byte "ephemeral key" message with a payload the initiator may not send.
    a.write_all(&[0, 40]).await.unwrap();
    a.write_all(&[7u8; 40]).await.unwrap();
    a.flush().await.unwrap();
    let result = responder.await.unwrap();
    assert!(
        matches!(result, Err(NoiseError::EarlyPayload)),
        "{result:?}"
    );

    // A stranger who closes mid-message.
    let (mut a, b) = pipe();
    let responder = tokio::spawn(ours(&kb).upgrade_inbound(b, PROTOCOL));
    a.write_all(&[0, 32, 1, 2, 3]).await.unwrap();
    a.close().await.unwrap();
    drop(a);
    let result = responder.await.unwrap();
    assert!(matches!(result, Err(NoiseError::Io(_))), "{result:?}");
}

/// Flips one byte of what it reads once armed: the fifth one after arming.
struct FlipOnce<T> {
    io: T,
    armed: Arc<AtomicBool>,
    seen: AtomicUsize,
}

impl<T: AsyncRead + Unpin> AsyncRead for FlipOnce<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let n = futures::ready!(std::pin::Pin::new(&mut self.io).poll_read(cx, buf))?;
        if self.armed.load(Ordering::SeqCst) {
            let before = self.seen.fetch_add(n, Ordering::SeqCst);
            if before <= 4 && before + n > 4 {
                buf[4 - before] ^= 0x01;
            }
        }
        std::task::Poll::Ready(Ok(n))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for FlipOnce<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_close(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_close(cx)
    }
}

#[tokio::test]
async fn a_tampered_frame_breaks_the_channel_for_good() {
    let (ka, kb) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
    let (a, b) = pipe();
    let armed = Arc::new(AtomicBool::new(false));
    let b = FlipOnce {
        io: b,
        armed: armed.clone(),
        seen: AtomicUsize::new(0),
    };
    let (out, inb) = tokio::join!(
        ours(&ka).upgrade_outbound(a, PROTOCOL),
        ours(&kb).upgrade_inbound(b, PROTOCOL)
    );
    let ((_, mut a), (_, mut b)) = (out.unwrap(), inb.unwrap());
    armed.store(true, Ordering::SeqCst);
    a.write_all(b"pay 1 wei to the seller").await.unwrap();
    a.flush().await.unwrap();
    let mut buf = [0u8; 64];
    let err = b.read(&mut buf).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    assert!(err.to_string().contains("decrypt"), "{err}");
    // Later frames, even intact ones, are not trusted either.
    a.write_all(b"more").await.unwrap();
    a.flush().await.unwrap();
    assert!(b.read(&mut buf).await.is_err());
}

/// A ChaChaPoly channel with known keys against the raw pipe, to write
/// frames by hand.
fn raw_pair() -> (Output<Pipe>, Pipe, LessSafeKeyPair) {
    raw_pair_with(TransportCipher::ChaChaPoly)
}

fn raw_pair_with(cipher: TransportCipher) -> (Output<Pipe>, Pipe, LessSafeKeyPair) {
    let (a, b) = pipe();
    let key = [9u8; 32];
    (
        Output::new(a, cipher, &key, &key),
        b,
        LessSafeKeyPair(key, cipher),
    )
}

struct LessSafeKeyPair([u8; 32], TransportCipher);

/// Noise's default REKEY, written out from the specification: the first 32
/// bytes of ENCRYPT(k, 2^64 − 1, "", 32 zero bytes).
fn spec_rekey(key: [u8; 32]) -> [u8; 32] {
    use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
    let k = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &key).unwrap());
    let mut out = [0u8; 32];
    let _tag = k
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key([
                0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            ]),
            Aad::empty(),
            &mut out,
        )
        .unwrap();
    out
}

impl LessSafeKeyPair {
    /// The key of message `n` when an AESGCM key is rekeyed before every
    /// message numbered a multiple of `every`.
    fn rekeyed(&self, n: u64, every: u64) -> LessSafeKeyPair {
        let mut key = self.0;
        for _ in 0..n / every {
            key = spec_rekey(key);
        }
        LessSafeKeyPair(key, self.1)
    }

    /// A frame as a Noise peer would seal message number `n`: ChaChaPoly
    /// with a little-endian counter, AESGCM (AES-256) with a big-endian one.
    fn frame(&self, n: u64, plaintext: &[u8]) -> Vec<u8> {
        use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, CHACHA20_POLY1305};
        let (algorithm, nonce) = match self.1 {
            TransportCipher::ChaChaPoly => {
                let mut nonce = [0u8; 12];
                nonce[4..].copy_from_slice(&n.to_le_bytes());
                (&CHACHA20_POLY1305, nonce)
            }
            TransportCipher::AesGcm => {
                let mut nonce = [0u8; 12];
                nonce[4..].copy_from_slice(&n.to_be_bytes());
                (&AES_256_GCM, nonce)
            }
        };
        let key = LessSafeKey::new(UnboundKey::new(algorithm, &self.0).unwrap());
        let mut body = plaintext.to_vec();
        key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut body)
            .unwrap();
        let mut frame = (body.len() as u16).to_be_bytes().to_vec();
        frame.extend_from_slice(&body);
        frame
    }
}

#[tokio::test]
async fn frames_split_anywhere_and_empty_frames_are_read_past() {
    for cipher in [TransportCipher::ChaChaPoly, TransportCipher::AesGcm] {
        frames_split_anywhere_with(cipher).await;
    }
}

/// Frames sealed by hand as the specification says (the cipher's own nonce
/// layout; a byte-order slip fails to open from the second frame on).
async fn frames_split_anywhere_with(cipher: TransportCipher) {
    let (mut ours, mut raw, keys) = raw_pair_with(cipher);
    let mut wire = keys.frame(0, b"hello ");
    wire.extend(keys.frame(1, b""));
    // The largest frame a peer may send (we send at most 64,511 bytes).
    wire.extend(keys.frame(2, &[5u8; 70_000][..65_519]));
    wire.extend(keys.frame(3, b"world"));
    let writer = tokio::spawn(async move {
        // One byte, then odd chunks: frames and prefixes split every way.
        for chunk in wire.chunks(1).take(1).chain(wire[1..].chunks(4_093)) {
            raw.write_all(chunk).await.unwrap();
            raw.flush().await.unwrap();
        }
        raw.close().await.unwrap();
    });
    let mut got = Vec::new();
    ours.read_to_end(&mut got).await.unwrap();
    writer.await.unwrap();
    assert_eq!(&got[..6], b"hello ");
    assert_eq!(&got[6..6 + 65_519], &[5u8; 65_519][..]);
    assert_eq!(&got[6 + 65_519..], b"world");
}

#[tokio::test]
async fn aesgcm_rekeys_each_direction_as_noise_specifies() {
    let every = 3;
    let (mut ours, mut raw, keys) = raw_pair_with(TransportCipher::AesGcm);
    ours.set_rekey_every(every);
    // Theirs to ours: ten frames, the key replaced before frames 3, 6 and 9.
    let mut wire = Vec::new();
    for n in 0..10u64 {
        wire.extend(keys.rekeyed(n, every).frame(n, format!("m{n};").as_bytes()));
    }
    raw.write_all(&wire).await.unwrap();
    raw.flush().await.unwrap();
    let mut got = vec![0u8; 30];
    ours.read_exact(&mut got).await.unwrap();
    assert_eq!(got, b"m0;m1;m2;m3;m4;m5;m6;m7;m8;m9;");
    // Ours to theirs: each frame opens with the key the specification gives.
    for n in 0..10u64 {
        ours.write_all(format!("r{n};").as_bytes()).await.unwrap();
        ours.flush().await.unwrap();
    }
    let mut wire = vec![0u8; 10 * (2 + 3 + 16)];
    raw.read_exact(&mut wire).await.unwrap();
    for (n, frame) in wire.chunks(2 + 3 + 16).enumerate() {
        let n = n as u64;
        let expected = keys.rekeyed(n, every).frame(n, format!("r{n};").as_bytes());
        assert_eq!(frame, &expected[..], "frame {n}");
    }
    // A frame sealed with the old key past the rekey point is refused.
    let (mut ours2, mut raw2, keys2) = raw_pair_with(TransportCipher::AesGcm);
    ours2.set_rekey_every(every);
    let mut wire = Vec::new();
    for n in 0..3u64 {
        wire.extend(keys2.frame(n, b"x"));
    }
    wire.extend(keys2.frame(3, b"not rekeyed"));
    raw2.write_all(&wire).await.unwrap();
    let mut buf = [0u8; 3];
    ours2.read_exact(&mut buf).await.unwrap();
    assert!(ours2.read(&mut [0u8; 16]).await.is_err());
}

#[tokio::test]
async fn malformed_frames_get_clear_errors() {
    // Shorter than a tag.
    let (mut ours, mut raw, _) = raw_pair();
    raw.write_all(&[0, 15]).await.unwrap();
    raw.write_all(&[0u8; 15]).await.unwrap();
    let err = ours.read(&mut [0u8; 16]).await.unwrap_err();
    assert!(err.to_string().contains("shorter than its tag"), "{err}");

    // Closed inside a frame.
    let (mut ours, mut raw, keys) = raw_pair();
    let frame = keys.frame(0, b"cut short");
    raw.write_all(&frame[..frame.len() - 3]).await.unwrap();
    raw.close().await.unwrap();
    drop(raw);
    let err = ours.read(&mut [0u8; 16]).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);

    // A replayed frame (its nonce was used): refused.
    let (mut ours, mut raw, keys) = raw_pair();
    let frame = keys.frame(0, b"once");
    raw.write_all(&frame).await.unwrap();
    raw.write_all(&frame).await.unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(ours.read(&mut buf).await.unwrap(), 4);
    assert!(ours.read(&mut buf).await.is_err());
}

#[tokio::test]
async fn an_idle_channel_holds_no_buffers() {
    let (mut ours, mut raw, keys) = raw_pair();
    // Under load the channel holds a full frame buffer each way ...
    ours.write_all(&[1u8; 200_000]).await.unwrap();
    assert!(ours.buffered_capacity() >= 65_000);
    let reader = tokio::spawn(async move {
        let mut sink = vec![0u8; 300_000];
        let mut total = 0;
        while total < 200_000 + 4 * (2 + 16) {
            total += raw.read(&mut sink).await.unwrap();
        }
        raw.write_all(&keys.frame(0, &[2u8; 50_000])).await.unwrap();
        raw.flush().await.unwrap();
        raw
    });
    ours.flush().await.unwrap();
    let mut got = vec![0u8; 50_000];
    ours.read_exact(&mut got).await.unwrap();
    assert_eq!(got, vec![2u8; 50_000]);
    let _raw = reader.await.unwrap();
    // ... and once everything is written and a read finds nothing, none.
    let mut buf = [0u8; 16];
    assert!(ours.read(&mut buf).now_or_never().is_none());
    assert_eq!(ours.buffered_capacity(), 0);
}
