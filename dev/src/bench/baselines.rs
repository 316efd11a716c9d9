//! Baselines measured in the same run: raw loopback TCP, single-core
//! ChaCha20-Poly1305 (ring and RustCrypto), and the process's CPU and memory.

use super::mib_s;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Raw TCP over loopback between two tokio sockets: the ceiling.
pub(super) async fn tcp_baseline(bytes: u64) -> anyhow::Result<f64> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let reader = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut got = 0u64;
        let start = Instant::now();
        while got < bytes {
            let n = s.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            got += n as u64;
        }
        anyhow::Ok((got, start.elapsed()))
    });
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let buf = vec![7u8; 256 * 1024];
    let mut sent = 0u64;
    while sent < bytes {
        s.write_all(&buf).await?;
        sent += buf.len() as u64;
    }
    s.shutdown().await?;
    let (got, d) = reader.await??;
    Ok(mib_s(got, d))
}

/// Single-core ChaCha20-Poly1305 sealing of 64 KiB records with ring, the
/// implementation libp2p-noise uses for the transport.
pub(super) fn chacha_ring_baseline(time: Duration) -> f64 {
    ring_seal_baseline(&ring::aead::CHACHA20_POLY1305, 64 * 1024, time)
}

/// Single-core sealing with ring's `alg` of `record`-byte records: the
/// cipher ceiling of a transport that seals records of that size (64 KiB:
/// Noise frames; ~1,450 bytes: QUIC packets).
pub(super) fn ring_seal_baseline(
    alg: &'static ring::aead::Algorithm,
    record: usize,
    time: Duration,
) -> f64 {
    use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey};
    let key_bytes = vec![9u8; alg.key_len()];
    let key = LessSafeKey::new(UnboundKey::new(alg, &key_bytes).expect("key"));
    let mut buf = vec![1u8; record];
    let start = Instant::now();
    let mut bytes = 0u64;
    let mut n = 0u64;
    while start.elapsed() < time {
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(&n.to_le_bytes());
        let tag = key
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut buf)
            .expect("seal");
        let _ = std::hint::black_box(tag);
        bytes += buf.len() as u64;
        n += 1;
    }
    mib_s(bytes, start.elapsed())
}

/// Single-core ChaCha20-Poly1305 sealing of 64 KiB records with the RustCrypto
/// crate the envelopes' HPKE uses.
pub(super) fn chacha_baseline(time: Duration) -> f64 {
    use chacha20poly1305::aead::{AeadInPlace, KeyInit};
    use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
    let cipher = ChaCha20Poly1305::new(Key::from_slice(&[9u8; 32]));
    let mut buf = vec![1u8; 64 * 1024];
    let start = Instant::now();
    let mut bytes = 0u64;
    let mut n = 0u64;
    while start.elapsed() < time {
        let mut nonce = [0u8; 12];
        nonce[..8].copy_from_slice(&n.to_le_bytes());
        let tag = cipher
            .encrypt_in_place_detached(Nonce::from_slice(&nonce), b"", &mut buf)
            .expect("encrypt");
        std::hint::black_box(tag);
        bytes += buf.len() as u64;
        n += 1;
    }
    mib_s(bytes, start.elapsed())
}

/// CPU time (user + system) this process has used so far.
pub(super) fn cpu_time() -> Duration {
    use nix::sys::resource::{getrusage, UsageWho};
    getrusage(UsageWho::RUSAGE_SELF)
        .map(|u| {
            let t = |tv: nix::sys::time::TimeVal| {
                Duration::new(tv.tv_sec() as u64, tv.tv_usec() as u32 * 1000)
            };
            t(u.user_time()) + t(u.system_time())
        })
        .unwrap_or_default()
}

/// This process's resident memory, KiB.
pub(super) fn rss_kib() -> u64 {
    rss_kib_of("self").unwrap_or(0)
}

/// A process's resident memory, KiB (`pid` a number, or `self`), from /proc.
pub(super) fn rss_kib_of(pid: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}
