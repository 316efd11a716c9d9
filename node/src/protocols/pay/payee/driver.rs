//! The book's actions carried out: messages to payers' pay streams,
//! service woken, channels read and claims made (each a task of the
//! payees' own), and the book's events reported.

use super::*;

impl Payees {
    /// Runs `f` on the book, then carries out what it asked for (claims in
    /// tasks of their own).
    pub(super) fn with_book<T>(&self, f: impl FnOnce(&mut Book) -> T) -> T {
        let (out, claims) = self.step(f);
        self.spawn_claims(claims);
        out
    }

    /// Each claim in a task of its own (they wait in line for the chain).
    pub(super) fn spawn_claims(&self, claims: Vec<(ChannelId, Voucher)>) {
        for (channel, voucher) in claims {
            let me = self.clone();
            // A claim runs to its end (its voucher stays on disk until then).
            (self.inner.tasks).spawn_tracked(async move { me.claim(channel, voucher).await });
        }
    }

    /// Runs `f` on the book and carries out what it asked for, but the
    /// claims, which it returns.
    pub(super) fn step<T>(&self, f: impl FnOnce(&mut Book) -> T) -> (T, Vec<(ChannelId, Voucher)>) {
        let (out, actions) = {
            let mut st = self.lock();
            let out = f(&mut st.book);
            let actions: Vec<BookAction> = std::iter::from_fn(|| st.book.poll_action()).collect();
            (out, actions)
        };
        (out, self.carry_out(actions))
    }

    fn carry_out(&self, actions: Vec<BookAction>) -> Vec<(ChannelId, Voucher)> {
        let mut claims = vec![];
        for act in actions {
            match act {
                BookAction::Send { peer, msg } => {
                    let tx = self.lock().tx.get(&peer).cloned();
                    if let Some(tx) = tx {
                        let _ = tx.try_send(msg);
                    }
                }
                BookAction::Wake { channel } => {
                    let wakers = self.lock().wakers.remove(&channel).unwrap_or_default();
                    wakers.into_iter().for_each(Waker::wake);
                    self.inner.attached.notify_waiters();
                }
                BookAction::Claim { channel, voucher } => claims.push((channel, voucher)),
                BookAction::ReadChannel { channel } => {
                    let me = self.clone();
                    (self.inner.tasks).spawn(async move { me.read_channel(channel).await });
                }
                BookAction::Event(e) => self.emit_event(e),
            }
        }
        claims
    }

    fn emit_event(&self, e: BookEvent) {
        let ev = match e {
            BookEvent::Cut {
                channel,
                peers,
                why,
            } => {
                tracing::info!(channel = %crate::protocols::pay::hex_id(&channel), why, "payers cut");
                for p in peers {
                    self.inner.emitter.emit(Event::PaymentRefused {
                        peer_id: p.to_string(),
                        reason: RefusalCode::Unpaid.as_str(),
                        detail: format!("{why}: service cut"),
                    });
                }
                return;
            }
            BookEvent::ClaimFailed { channel, reason } => Event::ClaimFailed {
                channel: crate::protocols::pay::hex_id(&channel),
                reason: reason.as_str().into(),
                detail: format!("{reason:?}"),
            },
            BookEvent::VoucherLost { channel, amount } => Event::VoucherLost {
                channel: crate::protocols::pay::hex_id(&channel),
                amount: amount.to_string(),
            },
        };
        self.inner.emitter.emit(ev);
    }
}
