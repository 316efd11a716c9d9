//! Where a fetched stream's bytes go: a file, standard output, or local
//! TCP clients.

use crate::protocols::stream::StreamError;
use libp2p::PeerId;
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt as _;

/// Where a stream's bytes go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// A file (created, or appended to for a live stream).
    File(PathBuf),
    /// Standard output, raw (`--out -`).
    Stdout,
    /// Local TCP clients (`--listen-local`).
    Local(crate::protocols::stream::local::Fanout),
}

impl Output {
    /// Stream `name` of `peer` under `out_dir`, or stdout when `out_dir` is `-`.
    pub fn for_stream(out_dir: &Path, peer: &PeerId, name: &str) -> Self {
        if out_dir == Path::new("-") {
            Output::Stdout
        } else {
            Output::File(output_path(out_dir, peer, name))
        }
    }

    /// The path reported in events (`-` for stdout).
    pub fn path(&self) -> PathBuf {
        match self {
            Output::File(p) => p.clone(),
            Output::Stdout => PathBuf::from("-"),
            Output::Local(f) => PathBuf::from(format!("tcp://{}", f.addr())),
        }
    }
}

/// An open [`Output`].
pub(crate) enum Sink {
    File(tokio::fs::File),
    Stdout(tokio::io::Stdout),
    Local(crate::protocols::stream::local::Fanout),
}

impl Sink {
    /// Opens `out`: a file is created (truncated), or appended to with `append`.
    pub(crate) async fn open(out: &Output, append: bool) -> std::io::Result<Self> {
        Ok(match out {
            Output::File(path) => {
                if let Some(parent) = path.parent() {
                    tokio::fs::create_dir_all(parent).await?;
                }
                let f = tokio::fs::OpenOptions::new()
                    .create(true)
                    .write(true)
                    .append(append)
                    .truncate(!append)
                    .open(path)
                    .await?;
                Sink::File(f)
            }
            Output::Stdout => Sink::Stdout(tokio::io::stdout()),
            Output::Local(f) => Sink::Local(f.clone()),
        })
    }

    pub(crate) async fn write(&mut self, data: &[u8]) -> Result<(), StreamError> {
        match self {
            Sink::File(f) => Ok(f.write_all(data).await?),
            Sink::Stdout(s) => s.write_all(data).await.map_err(closed_pipe),
            Sink::Local(f) => {
                f.send(data);
                Ok(())
            }
        }
    }

    pub(crate) async fn flush(&mut self) -> Result<(), StreamError> {
        match self {
            Sink::File(f) => Ok(f.flush().await?),
            Sink::Stdout(s) => s.flush().await.map_err(closed_pipe),
            Sink::Local(_) => Ok(()),
        }
    }

    /// Flushes, and for a file waits until it is on disk.
    pub(crate) async fn sync(&mut self) -> Result<(), StreamError> {
        self.flush().await?;
        match self {
            Sink::File(f) => Ok(f.sync_all().await?),
            Sink::Stdout(_) | Sink::Local(_) => Ok(()),
        }
    }
}

/// Standard output into a pipe whose reader left is the end of the fetch,
/// not a broken stream to resume.
fn closed_pipe(e: std::io::Error) -> StreamError {
    match e.kind() {
        std::io::ErrorKind::BrokenPipe => StreamError::OutputClosed,
        _ => StreamError::Io(e),
    }
}

/// Where stream `name` of `peer` is written under `out_dir`.
pub fn output_path(out_dir: &Path, peer: &PeerId, name: &str) -> PathBuf {
    out_dir.join(peer.to_string()).join(name)
}
