//! Service billed to one payer: asks the book for room before carrying
//! bytes and reports what it carried.

use super::{Payees, Room};
use libp2p::PeerId;
use std::task::{Context, Poll};
use std::time::Instant;

/// Metered service billed to one peer (its channel's account).
#[derive(Clone)]
pub struct Budget {
    payees: Payees,
    peer: PeerId,
}

impl Budget {
    pub(super) fn new(payees: Payees, peer: PeerId) -> Self {
        Self { payees, peer }
    }

    /// The room left; registers `cx` to be woken when a paused payer pays.
    pub fn poll_room(&self, cx: &mut Context<'_>) -> Room {
        let mut st = self.payees.lock();
        let room = st.book.room(&self.peer);
        if room == Room::Paused {
            if let Some(ch) = st.book.channel_of(&self.peer) {
                let w = st.wakers.entry(ch).or_default();
                if !w.iter().any(|w| w.will_wake(cx.waker())) {
                    w.push(cx.waker().clone());
                }
            }
        }
        room
    }

    /// `bytes` were carried.
    pub fn served(&self, bytes: u64) {
        let peer = self.peer;
        self.payees
            .with_book(|b| b.served(&peer, bytes, Instant::now()));
    }

    /// The room left as a poll: pending while paused (woken on payment).
    pub fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<Room> {
        match self.poll_room(cx) {
            Room::Paused => Poll::Pending,
            r => Poll::Ready(r),
        }
    }
}
