//! The data-stream protocol `/ledgermesh/stream/1` over `libp2p-stream`.
//!
//! One libp2p (yamux or QUIC) stream per data stream: the consumer sends a
//! [`StreamRequest`] (name, offset), the provider answers a [`StreamHeader`]
//! and the bytes from that offset to the end, then closes. A consumer whose
//! stream breaks (the relayed connection was replaced by a direct one, or a
//! path died) opens a new stream from the offset it has: no byte is lost and
//! none is written twice.

pub mod catalog;
pub mod client;
pub mod fair;
pub mod live;
pub mod local;
pub mod send;
pub mod server;
pub mod source;

pub use catalog::Catalog;
pub use client::{fetch, fetch_to, fetch_with, output_path, FetchPolicy, Fetched, Output, Renew};
pub use server::{serve, ServeLimits, Shop};

/// What the stream protocol asks of the node beyond [`Net`]: the share of
/// its receiving, the bytes each seller sent it, and its inbound streams.
pub trait StreamNet: Net {
    /// The share of this node's receiving between the streams it fetches.
    fn fair_in(&self) -> &std::sync::Arc<fair::FairGate>;
    /// Stream bytes received from `peer` (what a priced provider bills).
    fn stream_meter(&self, peer: libp2p::PeerId) -> std::sync::Arc<std::sync::atomic::AtomicU64>;
    /// The node's inbound data streams, for its one stream server (`None`
    /// when already taken).
    fn take_stream_inbox(&self) -> Option<crate::net::StreamInbox>;
}

use crate::net::Net;
use futures::AsyncReadExt;
use ledgermesh_protocol::framing::{split_frame, FrameError, MAX_FRAME};
use ledgermesh_protocol::StreamRejection;
use libp2p::StreamProtocol;
use std::time::Duration;

/// The protocol name.
pub const STREAM_PROTOCOL: StreamProtocol = StreamProtocol::new("/ledgermesh/stream/1");

/// Size of the copy buffer on both sides.
pub const CHUNK: usize = 256 * 1024;

/// How long a provider waits for a request on a fresh stream.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors while serving or fetching one stream.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// The remote broke the protocol.
    #[error("protocol violation: {0}")]
    Protocol(#[from] FrameError),
    /// The provider refused the stream.
    #[error("refused: {} ({})", .0.detail, .0.reason.as_str())]
    Rejected(StreamRejection),
    /// Transport or file I/O failed.
    #[error("i/o: {}", super::plain_io(.0))]
    Io(#[from] std::io::Error),
    /// The remote does not speak the stream protocol.
    #[error("peer does not support {STREAM_PROTOCOL}")]
    Unsupported,
    /// The buyer took no data for this long.
    #[error("the buyer took nothing for {0:?}")]
    Stalled(Duration),
    /// No request arrived in time.
    #[error("no request within {REQUEST_TIMEOUT:?}")]
    Timeout,
    /// A live stream: fetched by `live::fetch::fetch_live`, not here.
    #[error("a live stream")]
    Live,
    /// A connection to the peer closed under the stream (a relayed one once
    /// the direct one is up, or a lost one): resumed on the remaining path.
    #[error("a connection to the peer closed; resuming on the remaining path")]
    PathClosed,
    /// Our own output went away (standard output into a closed pipe, as
    /// `| head` does): nobody reads what follows, so the fetch ends.
    #[error("the output was closed (nothing reads it any more)")]
    OutputClosed,
    /// Retries exhausted.
    #[error("gave up after {attempts} attempts at offset {offset}: {last}")]
    GaveUp {
        /// Attempts made.
        attempts: u32,
        /// Bytes received.
        offset: u64,
        /// Last error.
        last: String,
    },
}

/// Reads one control frame; returns its body and any bytes read past it.
pub async fn read_frame<S: futures::AsyncRead + Unpin>(
    s: &mut S,
) -> Result<(Vec<u8>, Vec<u8>), StreamError> {
    let mut buf = Vec::with_capacity(512);
    let mut tmp = [0u8; 4096];
    loop {
        if let Some((body, used)) = split_frame(&buf)? {
            let body = body.to_vec();
            return Ok((body, buf[used..].to_vec()));
        }
        let n = s.read(&mut tmp).await?;
        if n == 0 {
            return Err(StreamError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        buf.extend_from_slice(&tmp[..n]);
        if buf.len() > MAX_FRAME + 4 + CHUNK {
            return Err(FrameError::TooLarge(buf.len()).into());
        }
    }
}
