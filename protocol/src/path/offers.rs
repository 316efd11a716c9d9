//! The hard side's sequence of one hard-NAT attempt: wait for one of our
//! attempt slots, offer, and offer again when the offer was lost before
//! any socket opened or the peer was busy. Which moves are made and when;
//! the driver opens the streams and the sockets.
//!
//! ```text
//!   TakeSlot ──busy──► (every 250 ms, for up to an attempt's length) TakeSlot
//!      │  └─cooldown──► Done(Quiet)        other refusal ──► Done(Declined)
//!      ▼
//!    Offer ──direct──► Done(Direct)
//!      ├──lost before the sockets opened──► (250 ms) Offer   } at most
//!      ├──the peer is busy──────────────────► (1 s) Offer     } 3 offers
//!      └──anything else, or out of offers──► Done(Ended)
//! ```

use super::hardnat::{Decline, ATTEMPT};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Offers made in all, at most.
pub const OFFER_TRIES: u32 = 3;
/// Between a lost offer and the next, and between two looks for a slot.
pub const RETRY_AFTER: Duration = Duration::from_millis(250);
/// After the peer said it is busy (it runs as many attempts as it may).
pub const BUSY_AFTER: Duration = Duration::from_millis(1_000);

/// What the driver does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Take one of our attempt slots; report with [`Offers::handle_slot`].
    TakeSlot,
    /// Offer an attempt; report with [`Offers::handle_offer`].
    Offer,
    /// The attempt is over.
    Done(Finish),
}

/// How the attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// A direct connection came up.
    Direct,
    /// Nothing to tell: an attempt with this peer ran too recently.
    Quiet,
    /// No slot, or the peer declined (the reason); told as `declined`.
    Declined(Decline),
    /// The last offer ended without a direct path; the driver tells how.
    Ended,
}

/// How one offer went, as the driver saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offered {
    /// A direct connection came up.
    Direct,
    /// The stream broke before any socket opened (the relayed connection
    /// it went over was replaced, say): worth offering again.
    LostEarly,
    /// The peer declined as busy: worth asking again a little later.
    PeerBusy,
    /// Anything else: declined for good, or failed after the sockets opened.
    Ended,
}

/// One attempt's sequence on the hard side.
#[derive(Debug)]
pub struct Offers {
    started: Instant,
    offers: u32,
    holding: bool,
    next: Option<(Instant, Step)>,
    out: VecDeque<Step>,
    done: bool,
}

impl Offers {
    /// An attempt starting at `now`: its first move is to take a slot.
    pub fn new(now: Instant) -> Self {
        Self {
            started: now,
            offers: 0,
            holding: false,
            next: None,
            out: VecDeque::from([Step::TakeSlot]),
            done: false,
        }
    }

    /// Whether a slot was taken (the driver gives it back when done).
    pub fn holds_slot(&self) -> bool {
        self.holding
    }

    /// Offers made so far.
    pub fn offers(&self) -> u32 {
        self.offers
    }

    fn finish(&mut self, f: Finish) {
        self.done = true;
        self.next = None;
        self.out.push_back(Step::Done(f));
    }

    fn offer(&mut self) {
        self.offers += 1;
        self.out.push_back(Step::Offer);
    }

    /// The slot we asked for: taken, or refused.
    pub fn handle_slot(&mut self, taken: Result<(), Decline>, now: Instant) {
        if self.done {
            return;
        }
        let give_up = self.started + ATTEMPT;
        match taken {
            Ok(()) => {
                self.holding = true;
                self.offer();
            }
            // Attempts end within their length: wait for one to end.
            Err(Decline::Busy) if now + RETRY_AFTER <= give_up => {
                self.next = Some((now + RETRY_AFTER, Step::TakeSlot))
            }
            Err(Decline::Cooldown) => self.finish(Finish::Quiet),
            Err(d) => self.finish(Finish::Declined(d)),
        }
    }

    /// How the last offer went.
    pub fn handle_offer(&mut self, how: Offered, now: Instant) {
        if self.done {
            return;
        }
        let again = self.offers < OFFER_TRIES;
        match how {
            Offered::Direct => self.finish(Finish::Direct),
            Offered::LostEarly if again => self.next = Some((now + RETRY_AFTER, Step::Offer)),
            Offered::PeerBusy if again => self.next = Some((now + BUSY_AFTER, Step::Offer)),
            _ => self.finish(Finish::Ended),
        }
    }
}

impl crate::Machine for Offers {
    type Action = Step;

    fn poll_action(&mut self) -> Option<Step> {
        self.out.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.next.map(|(at, _)| at)
    }

    fn handle_timeout(&mut self, now: Instant) {
        match self.next {
            Some((at, step)) if at <= now => {
                self.next = None;
                match step {
                    Step::Offer => self.offer(),
                    other => self.out.push_back(other),
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::{Link, Pair};
    use crate::Machine;

    /// Our slots and the peer, as the hard side meets them: slots busy
    /// until `slots_free_at`; the peer busy for its first `busy` offers,
    /// the stream lost on the next `lost`, then `last`.
    struct World {
        slots_free_at: Instant,
        cooldown: bool,
        busy: u32,
        lost: u32,
        last: Offered,
        out: VecDeque<Answer>,
    }

    #[derive(Debug, Clone, Copy)]
    enum Answer {
        Slot(Result<(), Decline>),
        Offer(Offered),
    }

    impl Machine for World {
        type Action = Answer;
        fn poll_action(&mut self) -> Option<Answer> {
            self.out.pop_front()
        }
        fn poll_timeout(&self) -> Option<Instant> {
            None
        }
        fn handle_timeout(&mut self, _: Instant) {}
    }

    #[derive(Default)]
    struct Wire {
        steps: Vec<(Step, Duration)>,
        t0: Option<Instant>,
    }

    impl Link for Wire {
        type A = Offers;
        type B = World;
        type AtoB = Step;
        type BtoA = Answer;
        fn a_sends(&mut self, s: Step, now: Instant) -> Option<Step> {
            let t0 = *self.t0.get_or_insert(now);
            self.steps.push((s, now - t0));
            (!matches!(s, Step::Done(_))).then_some(s)
        }
        fn b_sends(&mut self, a: Answer, _: Instant) -> Option<Answer> {
            Some(a)
        }
        fn b_takes(&mut self, w: &mut World, s: Step, now: Instant) {
            let answer = match s {
                Step::TakeSlot if w.cooldown => Answer::Slot(Err(Decline::Cooldown)),
                Step::TakeSlot if now < w.slots_free_at => Answer::Slot(Err(Decline::Busy)),
                Step::TakeSlot => Answer::Slot(Ok(())),
                Step::Offer if w.busy > 0 => {
                    w.busy -= 1;
                    Answer::Offer(Offered::PeerBusy)
                }
                Step::Offer if w.lost > 0 => {
                    w.lost -= 1;
                    Answer::Offer(Offered::LostEarly)
                }
                Step::Offer => Answer::Offer(w.last),
                Step::Done(_) => return,
            };
            w.out.push_back(answer);
        }
        fn a_takes(&mut self, o: &mut Offers, a: Answer, now: Instant) {
            match a {
                Answer::Slot(r) => o.handle_slot(r, now),
                Answer::Offer(how) => o.handle_offer(how, now),
            }
        }
    }

    fn run(slots_busy_for: Duration, busy: u32, lost: u32, last: Offered) -> Wire {
        let t0 = Instant::now();
        let world = World {
            slots_free_at: t0 + slots_busy_for,
            cooldown: false,
            busy,
            lost,
            last,
            out: VecDeque::new(),
        };
        let mut p = Pair::new(Offers::new(t0), world, Wire::default(), Duration::ZERO, t0);
        assert!(p.run_for(Duration::from_secs(60)), "the attempt ends");
        p.link
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_busy_peer_is_asked_again_a_second_later_and_a_lost_offer_at_once() {
        let w = run(Duration::ZERO, 1, 1, Offered::Direct);
        let offers: Vec<Duration> = (w.steps.iter())
            .filter(|(s, _)| *s == Step::Offer)
            .map(|(_, at)| *at)
            .collect();
        assert_eq!(offers, vec![ms(0), ms(1_000), ms(1_250)]);
        assert_eq!(
            w.steps.last(),
            Some(&(Step::Done(Finish::Direct), ms(1_250)))
        );
    }

    #[test]
    fn three_offers_at_most_then_the_attempt_ends() {
        let w = run(Duration::ZERO, 5, 0, Offered::Direct);
        let offers = w.steps.iter().filter(|(s, _)| *s == Step::Offer).count();
        assert_eq!(offers, OFFER_TRIES as usize);
        assert_eq!(
            w.steps.last().map(|(s, _)| *s),
            Some(Step::Done(Finish::Ended))
        );
    }

    #[test]
    fn a_slot_is_waited_for_up_to_an_attempts_length() {
        // Our four slots free after 2.1 s: taken at the next look, 2.25 s.
        let w = run(ms(2_100), 0, 0, Offered::Direct);
        let first_offer = w.steps.iter().find(|(s, _)| *s == Step::Offer);
        assert_eq!(first_offer.map(|(_, at)| *at), Some(ms(2_250)));
        // Never free: declined as busy once an attempt's length has passed.
        let w = run(Duration::from_secs(3600), 0, 0, Offered::Direct);
        let (last, at) = *w.steps.last().unwrap();
        assert_eq!(last, Step::Done(Finish::Declined(Decline::Busy)));
        assert!(at <= ATTEMPT && at + RETRY_AFTER > ATTEMPT, "{at:?}");
    }

    #[test]
    fn a_peer_tried_recently_ends_quietly_and_a_failure_after_the_sockets_is_final() {
        let t0 = Instant::now();
        let mut o = Offers::new(t0);
        assert_eq!(o.poll_action(), Some(Step::TakeSlot));
        o.handle_slot(Err(Decline::Cooldown), t0);
        assert_eq!(o.poll_action(), Some(Step::Done(Finish::Quiet)));
        assert!(!o.holds_slot());
        let w = run(Duration::ZERO, 0, 0, Offered::Ended);
        let offers = w.steps.iter().filter(|(s, _)| *s == Step::Offer).count();
        assert_eq!(
            offers, 1,
            "failed after the sockets opened: not offered again"
        );
    }
}
