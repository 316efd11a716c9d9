//! The streams that take bytes from the buyer: `echo:` sends them back,
//! `inbox:PATH` appends them to a file.

use super::write_or_stall;
use crate::protocols::stream::StreamError;
use futures::AsyncWriteExt;
use std::time::Duration;

/// Most bytes one echo stream carries.
pub const ECHO_MAX_BYTES: u64 = 64 << 20;

/// Reads what a sender sends next, at most `buf.len()`: 0 when it closed
/// its side; an error when it fell silent for `stall` or would pass
/// [`ECHO_MAX_BYTES`] in all (`taken` so far).
async fn take_some(
    stream: &mut (impl futures::AsyncRead + futures::AsyncWrite + Unpin),
    buf: &mut [u8],
    stall: Duration,
    taken: u64,
) -> Result<usize, StreamError> {
    use futures::AsyncReadExt;
    let n = tokio::time::timeout(stall, stream.read(buf))
        .await
        .map_err(|_| StreamError::Stalled(stall))??;
    if taken + n as u64 > ECHO_MAX_BYTES {
        return Err(std::io::Error::other(format!(
            "an inbound stream takes at most {ECHO_MAX_BYTES} bytes"
        ))
        .into());
    }
    Ok(n)
}

/// Sends back what arrives, until the sender closes its side (then closes
/// ours), falls silent for `stall`, or passes [`ECHO_MAX_BYTES`].
pub(super) async fn echo(
    stream: &mut (impl futures::AsyncRead + futures::AsyncWrite + Unpin),
    stall: Duration,
    sent: &mut u64,
) -> Result<(), StreamError> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = take_some(stream, &mut buf, stall, *sent).await?;
        if n == 0 {
            return Ok(());
        }
        write_or_stall(stream, &buf[..n], stall).await?;
        stream.flush().await?;
        *sent += n as u64;
    }
}

/// Appends what arrives to `path` until the sender closes its side (then
/// closes ours), falls silent for `stall`, or passes [`ECHO_MAX_BYTES`].
pub(super) async fn inbox(
    stream: &mut (impl futures::AsyncRead + futures::AsyncWrite + Unpin),
    path: &std::path::Path,
    stall: Duration,
    max: u64,
    got: &mut u64,
) -> Result<(), StreamError> {
    use tokio::io::AsyncWriteExt as _;
    // Never through a symbolic link someone put in the inbox's place.
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(path)
        .await?;
    let mut held = file.metadata().await?.len();
    let full = || {
        std::io::Error::other(format!(
            "the inbox is full ({max} bytes, --inbox-max-bytes)"
        ))
    };
    if held >= max {
        return Err(full().into());
    }
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match take_some(stream, &mut buf, stall, *got).await {
            Ok(n) => n,
            Err(e) => {
                file.sync_all().await?;
                return Err(e);
            }
        };
        if n == 0 {
            file.sync_all().await?;
            stream.close().await?;
            return Ok(());
        }
        if held + n as u64 > max {
            file.sync_all().await?;
            return Err(full().into());
        }
        file.write_all(&buf[..n]).await?;
        held += n as u64;
        *got += n as u64;
    }
}
