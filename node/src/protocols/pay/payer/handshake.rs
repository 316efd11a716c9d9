//! The start of a pay session: terms (checked against our caps and what
//! the payee offered before), then the attach, after which our machine
//! knows where we stand on the channel.

use super::{io, PayFailure, PayStream, PayerConfig, PayerState, StreamFault, HANDSHAKE, PAY};
use crate::net::CloseWatch;
use crate::protocols::pay::PayNet;
use ledgermesh_ledger::payments::{ChannelId, PayError, SignedVoucher};
use ledgermesh_protocol::payment::wire::{Offer, PayMsg, RefusalCode};
use ledgermesh_protocol::payment::{Caps, Wei};
use libp2p::PeerId;

/// Longest wait for the terms: the payee answers a hello from memory, so a
/// silence this long is a stream on a connection that went away under it
/// (a DCUtR upgrade closing the relayed one); a new stream is tried.
const TERMS_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

async fn answer_within(s: &mut PayStream, wait: std::time::Duration) -> Result<PayMsg, PayFailure> {
    match tokio::time::timeout(wait, s.recv()).await {
        Err(_) => Err(io(StreamFault::Silent)),
        Ok(Err(e)) => Err(io(e)),
        Ok(Ok(None)) => Err(io(StreamFault::Closed)),
        Ok(Ok(Some(PayMsg::Refuse { code, reason }))) => Err(PayFailure::Refused { code, reason }),
        Ok(Ok(Some(m))) => Ok(m),
    }
}

/// Resolves when a connection to the payee closes (never without a watch):
/// a stream on it may then wait for an answer that cannot come.
pub(super) async fn closed(w: &mut Option<CloseWatch>) {
    match w {
        Some(w) => w.closed().await,
        None => std::future::pending().await,
    }
}

/// Opens a pay stream and asks for terms; checks them against our caps and
/// what the payee offered before in this run.
pub(super) async fn hello(
    handle: &impl PayNet,
    peer: PeerId,
    caps: &Caps,
    before: Option<Offer>,
) -> Result<(PayStream, Offer), PayFailure> {
    let stream = (handle.stream_control())
        .open_stream(peer, PAY)
        .await
        .map_err(|e| match e {
            libp2p_stream::OpenStreamError::UnsupportedProtocol(_) => {
                PayFailure::Unsupported(e.to_string())
            }
            _ => io(e),
        })?;
    let mut s = PayStream::new(stream);
    s.send(&PayMsg::Hello).await.map_err(io)?;
    let offer = match answer_within(&mut s, TERMS_WAIT).await? {
        PayMsg::Terms(o) => o,
        other => {
            return Err(io(StreamFault::Unexpected {
                expected: "terms",
                got: format!("{other:?}"),
            }))
        }
    };
    if offer.terms.is_free() {
        return Ok((s, offer));
    }
    if let Err(e) = caps.check(
        &offer.terms,
        offer.payee,
        before.map(|o| (o.terms, o.payee)),
    ) {
        let refuse = PayMsg::Refuse {
            code: RefusalCode::Other,
            reason: e.to_string(),
        };
        let _ = s.send(&refuse).await;
        s.close().await;
        return Err(e.into());
    }
    Ok((s, offer))
}

/// Attaches `channel` on `s` and sets our machine to where we stand: what
/// the payee proves it holds (a voucher we signed), else what the chain
/// says was claimed or what we signed ourselves in this run.
pub(super) async fn attach(
    handle: &impl PayNet,
    s: &mut PayStream,
    cfg: &PayerConfig,
    channel: ChannelId,
    claimed: Wei,
    st: &mut PayerState,
    closes: &mut Option<CloseWatch>,
) -> Result<(), PayFailure> {
    let chans = &cfg.channels;
    let binding = chans.bind(channel, &handle.peer_id().to_bytes())?;
    s.send(&PayMsg::Attach { channel, binding })
        .await
        .map_err(io)?;
    let answer = tokio::select! {
        a = answer_within(s, HANDSHAKE) => a,
        () = closed(closes) => Err(io(StreamFault::ConnectionClosed)),
    };
    let (paid, owed, voucher) = match answer? {
        PayMsg::Ack {
            paid,
            owed,
            voucher,
            ..
        } => (paid, owed, voucher),
        other => {
            return Err(io(StreamFault::Unexpected {
                expected: "an ack",
                got: format!("{other:?}"),
            }))
        }
    };
    let me = chans.account().ok_or(PayError::NoAccount)?;
    let proven = voucher.is_some_and(|signature| {
        let v = SignedVoucher {
            channel,
            cumulative: paid,
            signature,
        };
        chans.verify(&v, me).is_ok()
    });
    let known = claimed.max(st.machine.signed());
    let start = if proven || paid <= known {
        paid
    } else {
        tracing::warn!(
            paid,
            known,
            "the payee says more was paid than it can show; counting from what we know"
        );
        known
    };
    // A debt from before we came back (served, not yet paid): at most the
    // credit the payee extends a newcomer, the most it could have let run.
    let debt = owed.saturating_sub(paid).min(st.offer.credit);
    st.machine.attached(start, debt);
    Ok(())
}

/// Tries an opening step again while it fails on the stream (its
/// connection closed under it: a DCUtR upgrade in the middle of it).
pub(super) const OPEN_TRIES: u32 = 4;

/// Whether a failure is the stream's, worth a new stream.
pub(super) fn on_the_stream(e: &PayFailure) -> bool {
    matches!(e, PayFailure::Io(_))
}
