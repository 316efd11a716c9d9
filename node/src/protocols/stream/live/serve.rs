//! The provider's writer of one live subscription: chunks from the feed's
//! ring, in order, as fast as this buyer takes them; a buyer that falls a
//! whole ring behind is cut, and nobody else waits for it.

use super::{LiveFeed, Next};
use crate::protocols::pay::payee::{Budget, Room};
use crate::protocols::stream::StreamError;
use futures::AsyncWriteExt;
use ledgermesh_protocol::live::Chunk;
use std::time::Duration;

/// How a live subscription ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiveEnd {
    /// The source ended; the end marker was sent.
    Ended,
    /// A priced stream's buyer stopped paying.
    Unpaid,
    /// The buyer fell behind the ring; `earliest` is what it still holds.
    TooSlow {
        /// The oldest offset held when the buyer was cut.
        earliest: u64,
    },
}

/// Sends `feed` from `offset` on `stream` until the source ends, the buyer
/// falls a ring behind or stops paying, with a heartbeat whenever the
/// source is quiet for `heartbeat`; `sent` counts the data bytes from
/// `offset` on.
pub async fn send(
    stream: &mut (impl futures::AsyncRead + futures::AsyncWrite + Unpin),
    feed: &LiveFeed,
    offset: u64,
    budget: Option<&Budget>,
    stall: Duration,
    heartbeat: Duration,
    sent: &mut u64,
) -> Result<LiveEnd, StreamError> {
    let mut pos = offset;
    loop {
        let next = match tokio::time::timeout(heartbeat, feed.next(pos)).await {
            Ok(next) => next,
            Err(_) => {
                // A quiet source: tell the buyer the path is alive.
                write_chunk(stream, &Chunk::heartbeat(pos).encode_frame(), stall).await?;
                continue;
            }
        };
        let item = match next {
            Next::Chunk(item) => item,
            Next::Gone(earliest) => return Ok(LiveEnd::TooSlow { earliest }),
            Next::Ahead(edge) => {
                return Err(std::io::Error::other(format!(
                    "offset {pos} is past the live edge {edge}"
                ))
                .into())
            }
        };
        if let Some(b) = budget {
            // A chunk goes whole: any room at all lets it go (the credit
            // window is far larger than one chunk).
            match futures::future::poll_fn(|cx| b.poll_ready(cx)).await {
                Room::Bytes(n) if n > 0 => {}
                _ => return Ok(LiveEnd::Unpaid),
            }
        }
        // The write waits for this buyer only; if the ring moves past the
        // chunk meanwhile, the buyer is a whole ring behind: cut.
        let frame = feed.frame_for(&item);
        tokio::select! {
            r = write_chunk(stream, &frame, stall) => r?,
            earliest = feed.evicted(item.offset) => return Ok(LiveEnd::TooSlow { earliest }),
        }
        if item.end {
            return Ok(LiveEnd::Ended);
        }
        let new = (item.offset + item.len).saturating_sub(pos);
        if let Some(b) = budget {
            b.served(new);
        }
        *sent += new;
        pos = item.offset + item.len;
    }
}

/// Writes one frame and pushes it out (a live buyer wants it now, not when
/// a buffer fills), or fails if the buyer takes nothing for `stall`.
async fn write_chunk(
    stream: &mut (impl futures::AsyncRead + futures::AsyncWrite + Unpin),
    frame: &[u8],
    stall: Duration,
) -> Result<(), StreamError> {
    let write = async {
        stream.write_all(frame).await?;
        stream.flush().await
    };
    tokio::time::timeout(stall, write)
        .await
        .map_err(|_| StreamError::Stalled(stall))??;
    Ok(())
}
