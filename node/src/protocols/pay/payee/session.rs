//! One pay stream from a payer: terms, attach, vouchers. The checks that
//! need the chain or a signature happen here; what they mean for the
//! account is the book's decision.

use super::super::{hex_id, PayStream, PAY};
use super::chain::view;
use super::{refusal, Payees};
use crate::events::Event;
use futures::StreamExt;
use ledgermesh_ledger::payments::SignedVoucher;
use ledgermesh_protocol::payment::book::{AttachRefusal, Voucher};
use ledgermesh_protocol::payment::wire::{PayMsg, RefusalCode};
use ledgermesh_protocol::payment::{VoucherRefusal, Wei};
use ledgermesh_protocol::Machine;
use libp2p::PeerId;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Pay streams served at once.
const MAX_STREAMS: usize = 1_024;

/// A pay stream that has not attached a channel by then is closed.
const ATTACH_WITHIN: Duration = Duration::from_secs(10);

fn attach_code(e: &AttachRefusal) -> RefusalCode {
    match e {
        AttachRefusal::DepositTooLow { .. } => RefusalCode::DepositTooLow,
        AttachRefusal::Closing => RefusalCode::NoChannel,
        _ => RefusalCode::Other,
    }
}

fn voucher_code(e: &VoucherRefusal) -> RefusalCode {
    match e {
        VoucherRefusal::NotIncreasing { .. } => RefusalCode::NotIncreasing,
        VoucherRefusal::OverDeposit { .. } => RefusalCode::OverDeposit,
        VoucherRefusal::Cut => RefusalCode::Unpaid,
        _ => RefusalCode::BadVoucher,
    }
}

impl Payees {
    /// Serves pay streams until the node stops.
    pub async fn serve(self, mut control: libp2p_stream::Control) {
        let mut incoming = match control.accept(PAY) {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(error = %e, "pay protocol already served");
                return;
            }
        };
        let permits = Arc::new(tokio::sync::Semaphore::new(MAX_STREAMS));
        let mut ticks = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                next = incoming.next() => {
                    let Some((peer, stream)) = next else { break };
                    let Ok(permit) = permits.clone().try_acquire_owned() else {
                        tracing::debug!(%peer, "too many pay streams; dropped");
                        continue;
                    };
                    let mut s = PayStream::new(stream);
                    if !self.lock().book.stream_opened(peer, Instant::now()) {
                        tracing::debug!(%peer, "too many pay streams from one peer; closed");
                        self.inner.tasks.spawn(async move {
                            let m = refusal(RefusalCode::Other, "too many pay streams");
                            let _ = s.send(&m).await;
                            s.close().await;
                        });
                        continue;
                    }
                    let me = self.clone();
                    self.inner.tasks.spawn(async move {
                        let _permit = permit;
                        me.session(peer, s).await;
                    });
                }
                _ = ticks.tick() => {
                    let due = self.lock().book.poll_timeout().is_some_and(|t| t <= Instant::now());
                    if due {
                        self.with_book(|b| b.handle_timeout(Instant::now()));
                    }
                }
            }
        }
    }

    async fn session(&self, peer: PeerId, mut s: PayStream) {
        let (tx, mut rx) = mpsc::channel::<PayMsg>(16);
        self.lock().tx.insert(peer, tx.clone());
        let attach_by = tokio::time::Instant::now() + ATTACH_WITHIN;
        let mut attached = false;
        loop {
            let msg = tokio::select! {
                out = rx.recv() => {
                    let Some(out) = out else { break };
                    if s.send(&out).await.is_err() {
                        break;
                    }
                    continue;
                }
                _ = tokio::time::sleep_until(attach_by), if !attached => {
                    let m = refusal(RefusalCode::NoChannel, "no channel attached within 10 s");
                    let _ = s.send(&m).await;
                    break;
                }
                m = s.recv() => m,
            };
            let msg = match msg {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(e) => {
                    let _ = s
                        .send(&refusal(RefusalCode::Malformed, &e.to_string()))
                        .await;
                    break;
                }
            };
            let answer = self.answer(peer, msg, &mut attached).await;
            if let Some(a) = answer {
                if let PayMsg::Refuse { code, reason } = &a {
                    self.inner.emitter.emit(Event::PaymentRefused {
                        peer_id: peer.to_string(),
                        reason: code.as_str(),
                        detail: reason.clone(),
                    });
                }
                if s.send(&a).await.is_err() {
                    break;
                }
            }
        }
        {
            let mut st = self.lock();
            st.book.stream_closed(&peer);
            if st.tx.get(&peer).is_some_and(|t| t.same_channel(&tx)) {
                st.tx.remove(&peer);
            }
        }
        s.close().await;
    }

    /// What a payer's message is answered with (`None`: nothing);
    /// `attached` once a channel is.
    async fn answer(&self, peer: PeerId, msg: PayMsg, attached: &mut bool) -> Option<PayMsg> {
        match msg {
            PayMsg::Hello => Some(PayMsg::Terms(self.inner.offer)),
            PayMsg::Attach { channel, binding } => {
                let a = self.attach(peer, channel, binding).await;
                *attached |= matches!(a, PayMsg::Ack { .. });
                Some(a)
            }
            PayMsg::Voucher {
                channel,
                cumulative,
                signature,
            } => Some(self.voucher(peer, channel, cumulative, signature).await),
            PayMsg::Consent {
                replace,
                any,
                peers,
            } => {
                let taken = self.lock().book.consent(&peer, replace, any, &peers);
                (!taken).then(|| refusal(RefusalCode::NoChannel, "attach a channel first"))
            }
            PayMsg::Refuse { code, reason } => {
                self.inner.emitter.emit(Event::PaymentRefused {
                    peer_id: peer.to_string(),
                    reason: code.as_str(),
                    detail: format!("the payer refused: {reason}"),
                });
                None
            }
            other => Some(refusal(
                RefusalCode::Malformed,
                &format!("unexpected {other:?} from a payer"),
            )),
        }
    }

    async fn attach(&self, peer: PeerId, channel: [u8; 32], binding: [u8; 65]) -> PayMsg {
        let chans = &self.inner.cfg.channels;
        let me = chans.account().expect("checked in new");
        if !self.lock().book.may_attach(peer, Instant::now()) {
            let e = ledgermesh_protocol::payment::book::AttachRefusal::TooOften;
            return refusal(RefusalCode::Other, &e.to_string());
        }
        let state = match chans.channel(channel).await {
            Ok(Some(c)) => c,
            Ok(None) => return refusal(RefusalCode::NoChannel, "no such channel on the ledger"),
            Err(e) => return refusal(RefusalCode::Unavailable, &e.to_string()),
        };
        if state.payee != me {
            return refusal(RefusalCode::NoChannel, "the channel pays someone else");
        }
        let bound = ledgermesh_ledger::payments::voucher::verify_binding(
            &chans.domain(),
            channel,
            &peer.to_bytes(),
            &binding,
            state.payer,
        );
        if let Err(e) = bound {
            return refusal(RefusalCode::BadBinding, &e.to_string());
        }
        let held = self.kept(&channel).map(|v| Voucher {
            cumulative: v.cumulative,
            signature: v.signature,
        });
        let (v, chain_now) = (view(&state), chans.chain_now());
        match self.with_book(|b| b.attach(peer, channel, v, held, chain_now, Instant::now())) {
            Ok(ack) => {
                self.inner.attached.notify_waiters();
                PayMsg::Ack {
                    paid: ack.paid,
                    window: ack.window,
                    owed: ack.owed,
                    voucher: ack.voucher,
                }
            }
            Err(e) => refusal(attach_code(&e), &e.to_string()),
        }
    }

    async fn voucher(
        &self,
        peer: PeerId,
        channel: [u8; 32],
        cumulative: Wei,
        signature: [u8; 65],
    ) -> PayMsg {
        let payer = {
            let st = self.lock();
            (st.book.channel_of(&peer) == Some(channel))
                .then(|| st.book.payer_of(&channel))
                .flatten()
        };
        let Some(payer) = payer else {
            return refusal(RefusalCode::NoChannel, "attach this channel first");
        };
        let v = SignedVoucher {
            channel,
            cumulative,
            signature,
        };
        if let Err(e) = self.inner.cfg.channels.verify(&v, payer.into()) {
            return refusal(RefusalCode::BadVoucher, &e.to_string());
        }
        let ours = Voucher {
            cumulative,
            signature,
        };
        let mut r = self.with_book(|b| b.voucher(&peer, channel, ours, Instant::now()));
        let stale = matches!(r, Err(VoucherRefusal::OverDeposit { .. }))
            && self.lock().book.may_read(&channel, Instant::now());
        if stale {
            // A top-up the book has not seen yet: read the channel, try again.
            self.read_channel(channel).await;
            r = self.with_book(|b| b.voucher(&peer, channel, ours, Instant::now()));
        }
        match r {
            Ok((paid, window)) => {
                // Money owed to us: on disk before the payer hears it landed.
                self.persist(peer, v).await;
                let bytes = (self.lock().book.machine(&channel)).map_or(0, |m| m.bytes());
                self.inner.emitter.emit(Event::VoucherReceived {
                    payer: peer.to_string(),
                    channel: hex_id(&channel),
                    cumulative: cumulative.to_string(),
                    bytes,
                });
                PayMsg::Ack {
                    paid,
                    window,
                    owed: paid,
                    voucher: None,
                }
            }
            Err(e) => refusal(voucher_code(&e), &e.to_string()),
        }
    }

    async fn persist(&self, peer: PeerId, v: SignedVoucher) {
        let store = (self.inner.store.lock().unwrap_or_else(|p| p.into_inner())).clone();
        if let Some(store) = store {
            let written = tokio::task::spawn_blocking(move || store.append(&peer, &v)).await;
            if let Err(e) = written.map_err(std::io::Error::other).and_then(|r| r) {
                self.inner.emitter.emit(Event::error(
                    crate::events::ErrorPart::Vouchers,
                    format!("cannot keep a voucher: {e}"),
                ));
            }
        }
    }
}
