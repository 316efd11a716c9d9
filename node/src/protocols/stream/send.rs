//! `nc --send` / `consume --send`: standard input to a provider's inbound
//! stream (an echo), and what comes back to the output.

use super::client::{open, FetchPolicy, Fetched, Output, Sink};
use super::{read_frame, StreamError};
use crate::events::Event;
use crate::protocols::stream::StreamNet;
use futures::{AsyncReadExt, AsyncWriteExt};
use ledgermesh_protocol::framing::{StreamHeader, StreamRequest};
use libp2p::PeerId;
use sha2::{Digest, Sha256};
use std::time::Instant;
use tokio::io::AsyncReadExt as _;

/// Sends stdin to stream `name` of `peer` and writes what comes back to
/// `out`, until both directions are done.
pub async fn exchange(
    handle: &impl StreamNet,
    peer: PeerId,
    name: &str,
    out: &Output,
    policy: &FetchPolicy,
) -> Result<Fetched, StreamError> {
    let started = Instant::now();
    let mut control = handle.stream_control();
    let mut stream = open(&mut control, peer, policy.stall).await?;
    handle.emit(Event::StreamOpened {
        peer_id: peer.to_string(),
        stream: name.into(),
        offset: 0,
    });
    let req = StreamRequest {
        name: name.into(),
        offset: 0,
        live_edge: false,
        send: true,
    };
    stream.write_all(&req.encode()).await?;
    let (body, rest) = tokio::time::timeout(policy.stall, read_frame(&mut stream))
        .await
        .map_err(|_| StreamError::Timeout)??;
    if let StreamHeader::Rejected(r) = StreamHeader::decode(&body)? {
        return Err(StreamError::Rejected(r));
    }
    let mut sink = Sink::open(out, false).await?;
    let (rd, wr) = stream.split();
    let mut back = Back {
        hasher: Sha256::new(),
        first_byte_ts_ms: None,
    };
    let down = back.take(rd, rest, &mut sink);
    let (sent, got) = futures::future::try_join(send_stdin(wr), down).await?;
    sink.sync().await?;
    tracing::info!(%peer, stream = name, sent, got, "exchange done");
    Ok(Fetched {
        bytes: got,
        sha256: back.hasher.finalize().into(),
        // Nothing to check what comes back against.
        verified: false,
        elapsed: started.elapsed(),
        resumes: 0,
        path: out.path(),
        first_byte_ts_ms: back.first_byte_ts_ms,
        live: None,
    })
}

/// Standard input up the stream, then our side closed (the echo then
/// finishes and closes its side); the bytes sent.
async fn send_stdin(mut wr: impl futures::AsyncWrite + Unpin) -> Result<u64, StreamError> {
    let mut stdin = tokio::io::stdin();
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = stdin.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        wr.write_all(&buf[..n]).await?;
        wr.flush().await?;
        total += n as u64;
    }
    wr.close().await?;
    Ok(total)
}

/// What comes back.
struct Back {
    hasher: Sha256,
    first_byte_ts_ms: Option<u64>,
}

impl Back {
    /// Writes what comes back (`rest` first) to `sink` until the far side
    /// closes; the bytes received.
    async fn take(
        &mut self,
        mut rd: impl futures::AsyncRead + Unpin,
        rest: Vec<u8>,
        sink: &mut Sink,
    ) -> Result<u64, StreamError> {
        let mut got = 0u64;
        let mut pending = rest;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if !pending.is_empty() {
                self.first_byte_ts_ms
                    .get_or_insert_with(crate::clock::now_ms);
                sink.write(&pending).await?;
                sink.flush().await?;
                self.hasher.update(&pending);
                got += pending.len() as u64;
                pending.clear();
            }
            let n = rd.read(&mut buf).await?;
            if n == 0 {
                return Ok(got);
            }
            pending.extend_from_slice(&buf[..n]);
        }
    }
}
