//! Where live bytes come from: a command's stdout, a TCP connection, the
//! provider's stdin, a growing file. Each is read once, into its feed.

use super::exec::run_command;
use super::{LiveFeed, LiveOptions};
use crate::events::Event;
use futures::FutureExt;
use ledgermesh_protocol::live::MAX_CHUNK;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt};

/// A live source (`provide --stream NAME=SOURCE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiveSpec {
    /// `exec:COMMAND`: the stdout of `sh -c COMMAND`, restarted when it exits.
    Exec(String),
    /// `tcp:HOST:PORT`: bytes read from a connection the provider opens (reconnecting).
    Tcp(String),
    /// `stdin:`: the provider's own standard input.
    Stdin,
    /// `tail:PATH`: what is appended to a file, like `tail -f`.
    Tail(PathBuf),
}

/// A bad live source.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LiveSpecError(String);

impl LiveSpec {
    /// Parses the part after `NAME=`; `None` when it is no live source.
    pub fn parse(src: &str) -> Option<Result<Self, LiveSpecError>> {
        let bad = |why: &str| Some(Err(LiveSpecError(why.into())));
        if let Some(cmd) = src.strip_prefix("exec:") {
            if cmd.trim().is_empty() {
                return bad("exec: needs a command");
            }
            return Some(Ok(LiveSpec::Exec(cmd.into())));
        }
        if let Some(addr) = src.strip_prefix("tcp:") {
            let ok = addr
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
            if !ok {
                return bad("tcp: needs HOST:PORT");
            }
            return Some(Ok(LiveSpec::Tcp(addr.into())));
        }
        if src == "stdin:" || src == "stdin" {
            return Some(Ok(LiveSpec::Stdin));
        }
        if let Some(path) = src.strip_prefix("tail:") {
            if path.is_empty() {
                return bad("tail: needs a path");
            }
            return Some(Ok(LiveSpec::Tail(path.into())));
        }
        None
    }
}

/// First wait before restarting a command or reconnecting.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// Longest wait.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A source that ran this long starts its back-off afresh.
const HEALTHY_RUN: Duration = Duration::from_secs(30);
/// How often a tailed file is looked at when nothing new was read.
const TAIL_POLL: Duration = Duration::from_millis(100);

/// Reads `spec` into `feed` until the source ends for good (or its tasks
/// stop, which drops this: a command's process group is killed with it).
pub(super) async fn run(feed: Arc<LiveFeed>, spec: LiveSpec, opts: LiveOptions) {
    read_source(&feed, &spec, &opts).await
}

fn report(opts: &LiveOptions, feed: &LiveFeed, detail: String) {
    tracing::info!(stream = feed.name(), "{detail}");
    opts.emitter.emit(Event::Error {
        what: crate::events::ErrorPart::LiveSource,
        detail: format!("{}: {detail}", feed.name()),
        reason: None,
        peer_id: None,
    });
}

async fn read_source(feed: &Arc<LiveFeed>, spec: &LiveSpec, opts: &LiveOptions) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let started = Instant::now();
        let why = match spec {
            LiveSpec::Exec(cmd) => match run_command(feed, cmd).await {
                Ok(status) if opts.exec_once => {
                    report(
                        opts,
                        feed,
                        format!("the command exited ({status}); the stream ends (--exec-once)"),
                    );
                    feed.end();
                    return;
                }
                Ok(status) => format!("the command exited ({status})"),
                Err(e) if opts.exec_once => {
                    report(
                        opts,
                        feed,
                        format!("the command failed: {e}; the stream ends (--exec-once)"),
                    );
                    feed.end();
                    return;
                }
                Err(e) => format!("the command failed: {e}"),
            },
            LiveSpec::Tcp(addr) => match tokio::net::TcpStream::connect(addr.as_str()).await {
                Ok(mut s) => match pump(feed, &mut s).await {
                    Ok(()) => format!("tcp {addr}: the connection closed"),
                    Err(e) => format!("tcp {addr}: {e}"),
                },
                Err(e) => format!("tcp {addr}: cannot connect: {e}"),
            },
            LiveSpec::Stdin => {
                let r = pump(feed, &mut tokio::io::stdin()).await;
                let how = match r {
                    Ok(()) => "standard input closed".to_string(),
                    Err(e) => format!("reading standard input failed: {e}"),
                };
                report(opts, feed, format!("{how}; the stream ends"));
                feed.end();
                return;
            }
            LiveSpec::Tail(path) => match tail(feed, path).await {
                Ok(never) => match never {},
                Err(e) => format!("tail {}: {e}", path.display()),
            },
        };
        if started.elapsed() >= HEALTHY_RUN {
            backoff = FIRST_BACKOFF;
        }
        report(
            opts,
            feed,
            format!("{why}; again in {} ms", backoff.as_millis()),
        );
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Reads `r` into `feed` until it ends. Each chunk is what one read gave
/// plus whatever is ready at once (up to [`MAX_CHUNK`]): a chatty source
/// makes fewer, larger chunks (fewer signatures) without waiting for more.
pub(super) async fn pump<R: AsyncRead + Unpin>(feed: &LiveFeed, r: &mut R) -> io::Result<()> {
    let mut buf = vec![0u8; MAX_CHUNK];
    loop {
        let mut n = r.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        let mut eof = false;
        while n < buf.len() {
            match r.read(&mut buf[n..]).now_or_never() {
                Some(Ok(0)) => {
                    eof = true;
                    break;
                }
                Some(Ok(m)) => n += m,
                Some(Err(e)) => {
                    feed.push(buf[..n].to_vec());
                    return Err(e);
                }
                None => break,
            }
        }
        feed.push(buf[..n].to_vec());
        if eof {
            return Ok(());
        }
    }
}

/// Opens `path` to read, never through a symbolic link.
async fn open_nofollow(path: &std::path::Path) -> io::Result<tokio::fs::File> {
    tokio::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(path)
        .await
}

/// Follows `path` from its current end, forever: reopens it when it is
/// replaced (rotated) or truncated, waits while it does not exist.
async fn tail(feed: &LiveFeed, path: &std::path::Path) -> io::Result<std::convert::Infallible> {
    use std::os::unix::fs::MetadataExt;
    let mut file = loop {
        match open_nofollow(path).await {
            Ok(f) => break f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                tokio::time::sleep(TAIL_POLL * 5).await
            }
            Err(e) => return Err(e),
        }
    };
    let mut pos = file.seek(io::SeekFrom::End(0)).await?;
    let mut ino = file.metadata().await?.ino();
    let mut buf = vec![0u8; MAX_CHUNK];
    loop {
        let n = file.read(&mut buf).await?;
        if n > 0 {
            pos += n as u64;
            feed.push(buf[..n].to_vec());
            continue;
        }
        tokio::time::sleep(TAIL_POLL).await;
        match tokio::fs::metadata(path).await {
            Ok(m) if m.ino() != ino => {
                // Rotated: the new file from its start.
                if let Ok(f) = open_nofollow(path).await {
                    file = f;
                    ino = m.ino();
                    pos = 0;
                }
            }
            Ok(m) if m.len() < pos => {
                // Truncated in place: from its start again.
                pos = file.seek(io::SeekFrom::Start(0)).await?;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{LiveFeed, LiveOptions, Next};
    use super::*;
    use crate::tasks::StopOnDrop;

    fn opts(exec_once: bool) -> (LiveOptions, StopOnDrop) {
        let stop = StopOnDrop::new();
        let opts = LiveOptions {
            key: libp2p::identity::Keypair::generate_ed25519(),
            buffer: 1 << 20,
            exec_once,
            emitter: crate::events::Emitter::new("test"),
            tasks: (*stop).clone(),
            fault_flip: None,
        };
        (opts, stop)
    }

    /// Everything the feed holds from offset 0 until `want` bytes (or its end).
    async fn read_feed(feed: &LiveFeed, want: usize) -> (Vec<u8>, bool) {
        let mut out = Vec::new();
        let mut pos = 0;
        while out.len() < want {
            let next = tokio::time::timeout(Duration::from_secs(20), feed.next(pos))
                .await
                .expect("the feed moves");
            let Next::Chunk(item) = next else {
                panic!("{next:?}")
            };
            if item.end {
                return (out, true);
            }
            let chunk = ledgermesh_protocol::live::Chunk::decode(&item.frame[4..]).unwrap();
            out.extend_from_slice(&chunk.data[(pos - item.offset) as usize..]);
            pos = item.offset + item.len;
        }
        (out, false)
    }

    #[tokio::test]
    async fn an_exec_source_restarts_and_with_exec_once_ends() {
        let (o, stop) = opts(false);
        let feed = LiveFeed::start("t", LiveSpec::Exec("echo run".into()), &o);
        // Exits at once, restarted after the back-off: the line twice.
        let (got, ended) = read_feed(&feed, 8).await;
        assert_eq!(&got[..8], b"run\nrun\n");
        assert!(!ended);
        drop(stop);
        let (o, _stop) = opts(true);
        let feed = LiveFeed::start("t", LiveSpec::Exec("printf 'a\\nb\\n'".into()), &o);
        let (got, ended) = read_feed(&feed, 1 << 20).await;
        assert_eq!(got, b"a\nb\n");
        assert!(ended, "--exec-once: the command's exit ends the stream");
    }

    #[tokio::test]
    async fn a_tail_source_never_opens_through_a_symbolic_link() {
        let dir = crate::scratch::TempDir::new("lm-nofollow").unwrap();
        let real = dir.path().join("real.log");
        std::fs::write(&real, b"x").unwrap();
        let link = dir.path().join("link.log");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert!(open_nofollow(&real).await.is_ok());
        let e = open_nofollow(&link).await.unwrap_err();
        assert_eq!(e.raw_os_error(), Some(nix::libc::ELOOP), "{e}");
    }

    #[tokio::test]
    async fn an_exec_source_does_not_see_the_nodes_secrets() {
        // nextest runs each test in a process of its own.
        std::env::set_var("LEDGERMESH_API_TOKEN", "s3cret");
        std::env::set_var("OTHER_VAR_SEEN", "yes");
        let (o, _stop) = opts(true);
        let cmd = r#"printf '%s|%s' "$LEDGERMESH_API_TOKEN" "$OTHER_VAR_SEEN""#;
        let feed = LiveFeed::start("t", LiveSpec::Exec(cmd.into()), &o);
        let (got, ended) = read_feed(&feed, 1 << 20).await;
        assert_eq!(got, b"|yes", "{}", String::from_utf8_lossy(&got));
        assert!(ended);
    }

    #[tokio::test]
    async fn a_tail_source_follows_appends_and_truncation() {
        let dir = crate::scratch::TempDir::new("lm-tail").unwrap();
        let path = dir.0.join("log");
        std::fs::write(&path, b"old lines are not sent\n").unwrap();
        let (o, stop) = opts(false);
        let feed = LiveFeed::start("log", LiveSpec::Tail(path.clone()), &o);
        // The source opens the file at its end when its task first runs;
        // give it that moment (nothing to await: it says nothing until data).
        tokio::time::sleep(Duration::from_millis(300)).await;
        let append = |s: &[u8]| {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .unwrap();
            f.write_all(s).unwrap();
        };
        append(b"one\n");
        let (got, _) = read_feed(&feed, 4).await;
        assert_eq!(got, b"one\n");
        // Truncated in place (shorter than where it was): from its start again.
        std::fs::write(&path, b"").unwrap();
        append(b"two\n");
        let (got, _) = read_feed(&feed, 8).await;
        assert_eq!(got, b"one\ntwo\n");
        drop(stop);
    }

    #[tokio::test]
    async fn a_tcp_source_reads_and_reconnects() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for msg in [&b"first\n"[..], b"second\n"] {
                let (mut s, _) = listener.accept().await.unwrap();
                s.write_all(msg).await.unwrap();
                // Closing: the source reconnects after its back-off.
            }
        });
        let (o, stop) = opts(false);
        let feed = LiveFeed::start("q", LiveSpec::Tcp(addr.to_string()), &o);
        let (got, _) = read_feed(&feed, 13).await;
        assert_eq!(got, b"first\nsecond\n");
        drop(stop);
    }
}
