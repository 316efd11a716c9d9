//! `/ledgermesh/pay/1`: a payer and a payee agree on terms, attach a
//! channel, and trade invoices for vouchers over one long-lived stream.
//! The decisions are the protocol crate's `payment` machines; the money
//! is a [`PaymentChannels`](ledgermesh_ledger::payments::PaymentChannels).
//!
//! ```text
//!   payer (provider behind a relay, consumer)        payee (relay, provider)
//!     ── Hello ─────────────────────────────────────►
//!     ◄───────────────────────────────────── Terms ──
//!     ── Attach(channel, binding to our PeerId) ────►  checks the channel on the ledger
//!     ◄──────────────────────────────── Ack|Refuse ──
//!     ◄────────────── Invoice(owed) at half the credit window (Budget, metered)
//!     ── Voucher(cumulative) if our meter agrees ───►  Payee machine: grow, resume
//! ```

pub mod payee;
pub mod payer;
pub mod store;

use futures::{AsyncReadExt, AsyncWriteExt};
use ledgermesh_protocol::framing::{split_frame, FrameError, MAX_FRAME};
use ledgermesh_protocol::payment::wire::PayMsg;
use libp2p::{Stream, StreamProtocol};

pub use payee::{Budget, CircuitPay, PayeeConfig, Payees};
pub use payer::{pay, terms, PayerConfig, Paying};

/// What the payment protocol asks of the node beyond [`crate::net::Net`]:
/// our account with each payee, kept across its pay sessions (a payer that
/// reconnects goes on from what it measured and signed).
pub trait PayNet: crate::net::Net {
    /// Our account with payee `peer`.
    fn payer_state(
        &self,
        peer: libp2p::PeerId,
    ) -> std::sync::Arc<tokio::sync::Mutex<Option<payer::PayerState>>>;
}

/// The payment protocol.
pub const PAY: StreamProtocol = StreamProtocol::new("/ledgermesh/pay/1");

/// Longest wait for the other side's answer in the handshake.
pub const HANDSHAKE: std::time::Duration = std::time::Duration::from_secs(15);

/// What a claim is worth waiting for at least, whatever the price: a
/// hundred claims' gas (about 50,000 each) at 1 gwei, so claims cost at most
/// 1 % of what they bring in at that gas price (0.005 ETH).
pub const CLAIM_FLOOR: ledgermesh_protocol::payment::Wei = 100 * 50_000 * 1_000_000_000;

/// The default `--claim-at`: 64 MiB worth at `price_per_mib`, and never
/// below [`CLAIM_FLOOR`]. (A payee also claims at once from a closing
/// channel, and everything on shutdown.)
pub fn default_claim_threshold(
    price_per_mib: ledgermesh_protocol::payment::Wei,
) -> ledgermesh_protocol::payment::Wei {
    price_per_mib.saturating_mul(64).max(CLAIM_FLOOR)
}

/// A pay stream: whole messages in, whole messages out.
pub(crate) struct PayStream {
    s: Stream,
    buf: Vec<u8>,
}

/// A pay stream failed.
#[derive(Debug, thiserror::Error)]
pub enum PayIoError {
    /// The transport.
    #[error("pay stream: {}", super::plain_io(.0))]
    Io(#[from] std::io::Error),
    /// The peer broke the protocol.
    #[error("pay stream: {0}")]
    Frame(#[from] FrameError),
}

impl PayStream {
    pub(crate) fn new(s: Stream) -> Self {
        Self {
            s,
            buf: Vec::with_capacity(512),
        }
    }

    /// The next message; `Ok(None)` at a clean end.
    pub(crate) async fn recv(&mut self) -> Result<Option<PayMsg>, PayIoError> {
        let mut tmp = [0u8; 1024];
        loop {
            if let Some((body, used)) = split_frame(&self.buf)? {
                let msg = PayMsg::decode(body)?;
                self.buf.drain(..used);
                return Ok(Some(msg));
            }
            if self.buf.len() > MAX_FRAME + 4 {
                return Err(FrameError::TooLarge(self.buf.len()).into());
            }
            let n = self.s.read(&mut tmp).await?;
            if n == 0 {
                return Ok(None);
            }
            self.buf.extend_from_slice(&tmp[..n]);
        }
    }

    pub(crate) async fn send(&mut self, m: &PayMsg) -> std::io::Result<()> {
        self.s.write_all(&m.encode()).await?;
        self.s.flush().await
    }

    pub(crate) async fn close(&mut self) {
        let _ = self.s.close().await;
    }
}

/// A channel id as hex, for events.
pub(crate) fn hex_id(id: &[u8; 32]) -> String {
    format!("0x{}", hex::encode(id))
}

/// Why an [`exchange`] of pay messages failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExchangeError {
    /// The pay stream could not be opened.
    #[error("cannot open a pay stream: {0}")]
    Open(String),
    /// Sending failed.
    #[error("pay stream: {}", super::plain_io(.0))]
    Send(#[from] std::io::Error),
    /// Reading failed.
    #[error(transparent)]
    Recv(#[from] PayIoError),
    /// No answer in time.
    #[error("no answer in time")]
    NoAnswer,
    /// The payee closed the stream.
    #[error("the stream ended")]
    Ended,
}

/// Sends `msgs` to `peer` on a fresh pay stream, one at a time, and
/// returns the answer to each (for tests and tools).
pub async fn exchange(
    handle: &impl crate::net::Net,
    peer: libp2p::PeerId,
    msgs: Vec<PayMsg>,
) -> Result<Vec<PayMsg>, ExchangeError> {
    let stream = (handle.stream_control().open_stream(peer, PAY).await)
        .map_err(|e| ExchangeError::Open(e.to_string()))?;
    exchange_on(stream, msgs).await
}

/// [`exchange`] on a pay stream already open (from any swarm: tests drive
/// throwaway identities this way).
pub async fn exchange_on(stream: Stream, msgs: Vec<PayMsg>) -> Result<Vec<PayMsg>, ExchangeError> {
    let mut s = PayStream::new(stream);
    let mut out = vec![];
    for m in msgs {
        s.send(&m).await?;
        let answer = tokio::time::timeout(HANDSHAKE, s.recv())
            .await
            .map_err(|_| ExchangeError::NoAnswer)??
            .ok_or(ExchangeError::Ended)?;
        out.push(answer);
    }
    s.close().await;
    Ok(out)
}
