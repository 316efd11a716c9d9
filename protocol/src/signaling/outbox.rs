//! Requests posted and not yet answered, each with its deadlines in one
//! place: which nonce went to which peer, how long posting it may take, and
//! how long an answer is awaited once it is posted. A response counts only
//! when it answers a pending nonce and comes from the peer that nonce was
//! sent to; it may come before the post's own receipt (the peer read the
//! request from the pending pool).
//!
//! ```text
//!   register ──► Posting ──handle_posted──► Awaiting ──handle_response──► Settled(Answered)
//!                  │  └─handle_response (early)──────────────────────────► Settled(Answered)
//!                  ├─handle_post_failed──────────────────────────────────► Settled(PostFailed)
//!                  └─post_within passes─► Settled(TimedOut)   Awaiting: wait passes ─► TimedOut
//! ```

use libp2p_identity::PeerId;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Requests awaited at most at once.
pub const MAX_PENDING: usize = 4096;

/// Why a request cannot be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutboxError {
    /// Too many requests are awaited already.
    #[error("{MAX_PENDING} requests are already awaiting an answer")]
    Full,
    /// The nonce is in use (never happens with random nonces).
    #[error("nonce already pending")]
    Duplicate,
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// Its peer answered.
    Answered,
    /// Posting it failed (the driver has the error).
    PostFailed,
    /// Not posted within its allowance, or not answered within its wait
    /// after it was posted (`posted` says which).
    TimedOut {
        /// Whether it had been posted.
        posted: bool,
    },
}

/// What the outbox tells its driver: a request is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Done {
    /// The request.
    pub nonce: [u8; 16],
    /// Whom it went to.
    pub peer: PeerId,
    /// How it ended.
    pub how: Settled,
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    peer: PeerId,
    /// The wait for an answer, counted from the post's receipt.
    wait: Duration,
    posted: bool,
    deadline: Instant,
}

/// The pending requests.
#[derive(Debug, Default)]
pub struct Outbox {
    pending: HashMap<[u8; 16], Pending>,
    by_deadline: BTreeSet<(Instant, [u8; 16])>,
    done: VecDeque<Done>,
}

impl Outbox {
    /// An empty outbox.
    pub fn new() -> Self {
        Self::default()
    }

    /// A request with `nonce` to `peer` is about to be posted at `now`:
    /// posting may take up to `post_within`, and an answer is awaited for
    /// `wait` after it is posted.
    pub fn register(
        &mut self,
        nonce: [u8; 16],
        peer: PeerId,
        now: Instant,
        post_within: Duration,
        wait: Duration,
    ) -> Result<(), OutboxError> {
        if self.pending.contains_key(&nonce) {
            return Err(OutboxError::Duplicate);
        }
        if self.pending.len() >= MAX_PENDING {
            return Err(OutboxError::Full);
        }
        let deadline = now + post_within;
        let p = Pending {
            peer,
            wait,
            posted: false,
            deadline,
        };
        self.pending.insert(nonce, p);
        self.by_deadline.insert((deadline, nonce));
        Ok(())
    }

    /// The request `nonce` was posted (its receipt came) at `now`: the wait
    /// for its answer starts.
    pub fn handle_posted(&mut self, nonce: &[u8; 16], now: Instant) {
        if let Some(p) = self.pending.get_mut(nonce) {
            if !p.posted {
                self.by_deadline.remove(&(p.deadline, *nonce));
                p.posted = true;
                p.deadline = now + p.wait;
                self.by_deadline.insert((p.deadline, *nonce));
            }
        }
    }

    /// Posting `nonce` failed.
    pub fn handle_post_failed(&mut self, nonce: &[u8; 16]) {
        self.settle(nonce, Settled::PostFailed);
    }

    /// A response from `sender` answering `nonce` arrived at `now`: true
    /// (and the request is settled as answered) when it is the awaited
    /// answer; a stranger's, a replayed or a late one is not.
    pub fn handle_response(&mut self, now: Instant, sender: &PeerId, nonce: &[u8; 16]) -> bool {
        match self.pending.get(nonce) {
            Some(p) if p.peer == *sender && now < p.deadline => {
                self.settle(nonce, Settled::Answered);
                true
            }
            _ => false,
        }
    }

    /// Gives up on a request (its waiter went away); nothing is told.
    pub fn cancel(&mut self, nonce: &[u8; 16]) {
        if let Some(p) = self.pending.remove(nonce) {
            self.by_deadline.remove(&(p.deadline, *nonce));
        }
    }

    fn settle(&mut self, nonce: &[u8; 16], how: Settled) {
        if let Some(p) = self.pending.remove(nonce) {
            self.by_deadline.remove(&(p.deadline, *nonce));
            self.done.push_back(Done {
                nonce: *nonce,
                peer: p.peer,
                how,
            });
        }
    }

    /// Requests awaited.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether nothing is awaited.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

impl crate::Machine for Outbox {
    type Action = Done;

    fn poll_action(&mut self) -> Option<Done> {
        self.done.pop_front()
    }

    /// The earliest deadline.
    fn poll_timeout(&self) -> Option<Instant> {
        self.by_deadline.first().map(|(d, _)| *d)
    }

    /// Requests whose deadline passed are settled as timed out.
    fn handle_timeout(&mut self, now: Instant) {
        while self.by_deadline.first().is_some_and(|(d, _)| *d <= now) {
            let Some((_, nonce)) = self.by_deadline.pop_first() else {
                break;
            };
            let posted = self.pending.get(&nonce).is_some_and(|p| p.posted);
            self.settle(&nonce, Settled::TimedOut { posted });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::{Link, Pair};
    use crate::Machine;

    fn peer() -> PeerId {
        libp2p_identity::Keypair::generate_ed25519()
            .public()
            .to_peer_id()
    }

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn drain(o: &mut Outbox) -> Vec<Done> {
        std::iter::from_fn(|| o.poll_action()).collect()
    }

    #[test]
    fn only_the_asked_peer_answers_and_only_once_and_in_time() {
        let t0 = Instant::now();
        let mut o = Outbox::new();
        let (a, b) = (peer(), peer());
        o.register([1; 16], a, t0, s(60), s(1)).unwrap();
        o.register([2; 16], b, t0, s(60), s(2)).unwrap();
        o.handle_posted(&[1; 16], t0);
        o.handle_posted(&[2; 16], t0);
        let at = |ms| t0 + Duration::from_millis(ms);
        assert!(
            !o.handle_response(at(10), &b, &[1; 16]),
            "another peer cannot answer for a"
        );
        assert!(!o.handle_response(at(10), &a, &[9; 16]), "unknown nonce");
        assert!(o.handle_response(at(10), &a, &[1; 16]));
        assert!(
            !o.handle_response(at(11), &a, &[1; 16]),
            "a replayed answer is ignored"
        );
        assert_eq!(o.poll_timeout(), Some(at(2_000)));
        assert!(!o.handle_response(at(2_000), &b, &[2; 16]), "too late");
        o.handle_timeout(at(2_000));
        let done = drain(&mut o);
        assert_eq!(done.len(), 2);
        assert_eq!((done[0].nonce, done[0].how), ([1; 16], Settled::Answered));
        assert_eq!(done[1].how, Settled::TimedOut { posted: true });
        assert!(o.is_empty());
        assert_eq!(o.poll_timeout(), None);
    }

    #[test]
    fn posting_has_its_own_allowance_and_the_wait_starts_at_the_receipt() {
        let t0 = Instant::now();
        let mut o = Outbox::new();
        let p = peer();
        o.register([1; 16], p, t0, s(60), s(5)).unwrap();
        o.register([2; 16], p, t0, s(60), s(5)).unwrap();
        o.register([3; 16], p, t0, s(60), s(5)).unwrap();
        // A slow chain: the receipt after 50 s, the answer 4 s later.
        o.handle_posted(&[1; 16], t0 + s(50));
        assert_eq!(o.poll_timeout(), Some(t0 + s(55)));
        assert!(o.handle_response(t0 + s(54), &p, &[1; 16]));
        // Never posted: timed out when the allowance ends.
        o.handle_post_failed(&[2; 16]);
        o.handle_timeout(t0 + s(60));
        let done = drain(&mut o);
        let how: Vec<Settled> = done.iter().map(|d| d.how).collect();
        assert_eq!(
            how,
            vec![
                Settled::Answered,
                Settled::PostFailed,
                Settled::TimedOut { posted: false }
            ]
        );
    }

    #[test]
    fn pending_requests_are_bounded_and_a_cancel_tells_nothing() {
        let t0 = Instant::now();
        let mut o = Outbox::new();
        let p = peer();
        for i in 0..MAX_PENDING {
            let mut n = [0u8; 16];
            n[..8].copy_from_slice(&(i as u64).to_be_bytes());
            o.register(n, p, t0, s(5), s(5)).unwrap();
        }
        assert_eq!(
            o.register([0xff; 16], p, t0, s(5), s(5)),
            Err(OutboxError::Full)
        );
        assert_eq!(
            o.register([0; 16], p, t0, s(5), s(5)),
            Err(OutboxError::Duplicate)
        );
        o.cancel(&[0; 16]);
        assert_eq!(o.len(), MAX_PENDING - 1);
        o.handle_timeout(t0 + s(5));
        assert_eq!(drain(&mut o).len(), MAX_PENDING - 1);
    }

    /// The requester's outbox and the ledger with a provider behind it, on
    /// the harness: the post's receipt and the provider's answer come at
    /// the times a case gives, each taking the link's delay to arrive.
    struct Ledger {
        timers: Vec<(Instant, Event)>,
        out: VecDeque<Event>,
    }

    #[derive(Clone, Copy, Debug)]
    enum Event {
        Posted([u8; 16]),
        Answer([u8; 16], PeerId),
    }

    impl Machine for Ledger {
        type Action = Event;
        fn poll_action(&mut self) -> Option<Event> {
            self.out.pop_front()
        }
        fn poll_timeout(&self) -> Option<Instant> {
            self.timers.iter().map(|(t, _)| *t).min()
        }
        fn handle_timeout(&mut self, now: Instant) {
            let (due, later): (Vec<_>, Vec<_>) =
                self.timers.drain(..).partition(|(t, _)| *t <= now);
            self.timers = later;
            self.out.extend(due.into_iter().map(|(_, e)| e));
        }
    }

    /// Records how the request settled, and when.
    #[derive(Default)]
    struct Wire {
        settled: Option<(Settled, Instant)>,
    }

    impl Link for Wire {
        type A = Outbox;
        type B = Ledger;
        type AtoB = ();
        type BtoA = Event;
        fn a_sends(&mut self, d: Done, now: Instant) -> Option<()> {
            self.settled.get_or_insert((d.how, now));
            None
        }
        fn b_sends(&mut self, e: Event, _: Instant) -> Option<Event> {
            Some(e)
        }
        fn b_takes(&mut self, _: &mut Ledger, _: (), _: Instant) {}
        fn a_takes(&mut self, o: &mut Outbox, e: Event, now: Instant) {
            match e {
                Event::Posted(n) => o.handle_posted(&n, now),
                Event::Answer(n, from) => {
                    o.handle_response(now, &from, &n);
                }
            }
        }
    }

    /// Posts one request to `to` whose receipt comes after `post` and whose
    /// answer (from `from`) is sent after `read`; how it ended, and when.
    fn ask(post: Duration, read: Duration, to: PeerId, from: PeerId) -> (Settled, Duration) {
        let t0 = Instant::now();
        let mut outbox = Outbox::new();
        let wait = s(10);
        outbox
            .register([7; 16], to, t0, wait + s(60), wait)
            .unwrap();
        let ledger = Ledger {
            timers: vec![
                (t0 + post, Event::Posted([7; 16])),
                (t0 + read, Event::Answer([7; 16], from)),
            ],
            out: VecDeque::new(),
        };
        let mut pair = Pair::new(
            outbox,
            ledger,
            Wire::default(),
            Duration::from_millis(100),
            t0,
        );
        assert!(pair.run_until_done(s(600), |p| p.link.settled.is_some()));
        let (how, at) = pair.link.settled.expect("settled");
        (how, at - t0)
    }

    #[test]
    fn on_the_harness_an_early_answer_counts_and_a_stranger_times_the_request_out() {
        let provider = peer();
        // Read from the pending pool before the receipt: answered at once.
        let (how, at) = ask(s(12), s(2), provider, provider);
        assert_eq!(how, Settled::Answered);
        assert_eq!(at, s(2) + Duration::from_millis(100));
        // Answered 9 s after a 30 s post: inside the wait.
        let (how, _) = ask(s(30), s(39), provider, provider);
        assert_eq!(how, Settled::Answered);
        // Answered 11 s after the receipt: too late.
        let (how, at) = ask(s(30), s(41), provider, provider);
        assert_eq!(how, Settled::TimedOut { posted: true });
        assert_eq!(at, s(30) + Duration::from_millis(100) + s(10));
        // Somebody else answers: it never counts.
        let (how, _) = ask(s(1), s(2), provider, peer());
        assert_eq!(how, Settled::TimedOut { posted: true });
    }
}
