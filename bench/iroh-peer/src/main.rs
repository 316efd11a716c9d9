//! `ledgermesh-iroh-peer`: iroh's direct QUIC between two endpoints on
//! loopback (no relay, no address lookup), for `ledgermesh bench --only
//! peers`. Built only for the benchmark, in its own workspace:
//!
//! ```sh
//! cargo build --release --manifest-path bench/iroh-peer/Cargo.toml
//! ```
//!
//! It binds both endpoints and connects them once, then answers each line
//! `round` on stdin with one transfer of `--bytes` bytes over a fresh
//! unidirectional stream (256 KiB writes, one reader into a 256 KiB buffer,
//! like the other peers in the benchmark) and one JSON line on stdout:
//! `{"mib_s": F, "cores": F, "bytes": N}`, where `cores` is this process's
//! CPU time over the transfer's wall time (both endpoints live here, as
//! both nodes live in the benchmark's process for its own figures). It
//! exits at the end of stdin. Only loopback is ever used. With
//! `LMBENCH_CPUS=0,1,…` (set by `bench --cpus`) it runs on those cores.

use iroh::endpoint::Connection;
use iroh::{Endpoint, EndpointAddr};
use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

const ALPN: &[u8] = b"/ledgermesh-bench/iroh-perf/1";
const WRITE: usize = 256 << 10;

fn cpu_time() -> Duration {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we own.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// Pins every thread to the cores `LMBENCH_CPUS` names (`0,1,2`), when the
/// benchmark gives it cores of its own.
fn pin_from_env() {
    let Ok(list) = std::env::var("LMBENCH_CPUS") else {
        return;
    };
    // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET and
    // sched_setaffinity only touch the set we own.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for c in list.split(',').filter_map(|c| c.parse::<usize>().ok()) {
            libc::CPU_SET(c, &mut set);
        }
        for t in std::fs::read_dir("/proc/self/task")
            .into_iter()
            .flatten()
            .flatten()
        {
            if let Some(tid) = t.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) {
                libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set);
            }
        }
    }
}

async fn endpoint(accept: bool) -> Result<Endpoint, Box<dyn std::error::Error>> {
    let mut b =
        iroh::endpoint::Builder::new(iroh::endpoint::presets::Minimal).bind_addr("127.0.0.1:0")?;
    if accept {
        b = b.alpns(vec![ALPN.to_vec()]);
    }
    Ok(b.bind().await?)
}

/// One transfer: `bytes` from `tx` to `rx`'s end of a fresh stream.
async fn transfer(
    tx: &Connection,
    rx: &Connection,
    bytes: u64,
) -> Result<(u64, Duration), Box<dyn std::error::Error>> {
    let start = Instant::now();
    let send = async {
        let mut s = tx.open_uni().await?;
        let buf = vec![0x5au8; WRITE];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(WRITE as u64) as usize;
            s.write_all(&buf[..n]).await?;
            left -= n as u64;
        }
        s.finish()?;
        Ok::<_, Box<dyn std::error::Error>>(())
    };
    let recv = async {
        // Read into a buffer, as libp2p streams are read (no zero-copy chunks).
        let mut r = rx.accept_uni().await?;
        let mut buf = vec![0u8; WRITE];
        let mut got = 0u64;
        while let Some(n) = r.read(&mut buf).await? {
            got += n as u64;
        }
        Ok::<_, Box<dyn std::error::Error>>(got)
    };
    let (sent, got) = tokio::join!(send, recv);
    sent?;
    Ok((got?, start.elapsed()))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    pin_from_env();
    let mut bytes: u64 = 512 << 20;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--bytes" => bytes = args.next().ok_or("--bytes N")?.parse()?,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let server = endpoint(true).await?;
    let client = endpoint(false).await?;
    let at = *server.bound_sockets().first().ok_or("no socket")?;
    let addr = EndpointAddr::new(server.id()).with_ip_addr(at);
    let (dialed, accepted) = tokio::join!(client.connect(addr, ALPN), async {
        let incoming = server.accept().await.ok_or("endpoint closed")?;
        Ok::<_, Box<dyn std::error::Error>>(incoming.accept()?.await?)
    });
    let (tx, rx) = (dialed?, accepted?);
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    for line in stdin.lock().lines() {
        if line?.trim() != "round" {
            continue;
        }
        let cpu0 = cpu_time();
        let (got, d) = transfer(&tx, &rx, bytes).await?;
        let cores = (cpu_time() - cpu0).as_secs_f64() / d.as_secs_f64().max(1e-9);
        let mib_s = got as f64 / (1 << 20) as f64 / d.as_secs_f64().max(1e-9);
        writeln!(
            out,
            "{{\"mib_s\": {mib_s:.3}, \"cores\": {cores:.3}, \"bytes\": {got}}}"
        )?;
        out.flush()?;
    }
    tx.close(0u32.into(), b"done");
    client.close().await;
    server.close().await;
    Ok(())
}
