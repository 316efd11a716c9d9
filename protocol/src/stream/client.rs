//! What a consumer does when one attempt at a stream ends: finish, resume
//! from its offset after a back-off, renew its grant, or give up.

use crate::signal::{RejectReason, StreamRejection};

/// How hard a fetch tries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts (first one included) before giving up.
    pub max_attempts: u32,
    /// First back-off, ms; doubles up to `max_backoff_ms`.
    pub backoff_ms: u64,
    /// Largest back-off, ms.
    pub max_backoff_ms: u64,
    /// Grant renewals allowed (0: an expired grant ends the fetch).
    pub max_renewals: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 12,
            backoff_ms: 100,
            max_backoff_ms: 3_000,
            max_renewals: 0,
        }
    }
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptEnd {
    /// Every byte arrived.
    Complete,
    /// A stream of unknown length (a live feed) closed cleanly. That is its
    /// end, or a cut (an expired grant or a revoked ACL closes it too): a
    /// re-request from the offset tells them apart, and an attempt that
    /// closes cleanly without a byte confirms the end.
    ClosedWithoutLength,
    /// The stream closed, or the path broke, before the end.
    Broken(String),
    /// A connection to the peer closed under the stream: a relayed one
    /// closed once the direct one is up, or one of several lost. The path
    /// changed; the provider did not fail.
    PathClosed(String),
    /// The provider refused.
    Refused(StreamRejection),
    /// The provider broke the protocol or does not speak it: retrying cannot help.
    Fatal(String),
}

/// What to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// The stream is complete.
    Done,
    /// Open a new stream from the current offset after `after_ms`.
    Retry {
        /// Back-off, ms.
        after_ms: u64,
    },
    /// A stream of unknown length closed: ask again from the offset at once,
    /// to tell its end from a cut.
    Confirm,
    /// Refused for this reason (the grant ran out, or a priced stream is
    /// unpaid): renew (a new service request, or pay up), then retry at once.
    Renew(RejectReason),
    /// Stop.
    Fail(Failure),
}

/// Why a fetch stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Refused by the provider (`grant_expired` included, when not renewing).
    Refused(StreamRejection),
    /// Broken beyond repair.
    Fatal(String),
    /// Attempts exhausted; the last error.
    GaveUp {
        /// Attempts made.
        attempts: u32,
        /// Last error.
        last: String,
    },
}

/// The state of one fetch across attempts.
#[derive(Debug, Clone)]
pub struct FetchState {
    policy: RetryPolicy,
    attempts: u32,
    renewals: u32,
    backoff_ms: u64,
}

impl FetchState {
    /// A fresh fetch.
    pub fn new(policy: RetryPolicy) -> Self {
        let backoff_ms = policy.backoff_ms;
        Self {
            policy,
            attempts: 0,
            renewals: 0,
            backoff_ms,
        }
    }

    /// An attempt begins.
    pub fn start_attempt(&mut self) {
        self.attempts += 1;
    }

    /// A live subscription delivered again: a run of breaks is counted
    /// afresh (a consumer that stays subscribed for days sees many, each
    /// mended).
    pub fn delivered(&mut self) {
        self.attempts = 0;
        self.backoff_ms = self.policy.backoff_ms;
    }

    /// Attempts made so far.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Renewals made so far.
    pub fn renewals(&self) -> u32 {
        self.renewals
    }

    /// An attempt ended; `progressed` says whether it delivered any byte.
    /// A break after progress is retried at once and resets the back-off:
    /// it is a path change (a relayed connection closed once the direct one
    /// is up, a connection lost while another remains), not a failure
    /// streak, and waiting would only stall the stream. `max_attempts`
    /// still bounds a peer that breaks every attempt after a byte.
    pub fn end_attempt(&mut self, end: AttemptEnd, progressed: bool) -> Next {
        let path_changed = matches!(end, AttemptEnd::PathClosed(_));
        match end {
            AttemptEnd::Complete => Next::Done,
            AttemptEnd::ClosedWithoutLength if !progressed => Next::Done,
            AttemptEnd::ClosedWithoutLength => {
                // A confirming re-request is not a failed attempt.
                self.attempts = self.attempts.saturating_sub(1);
                Next::Confirm
            }
            AttemptEnd::Fatal(e) => Next::Fail(Failure::Fatal(e)),
            AttemptEnd::Refused(r)
                if matches!(r.reason, RejectReason::GrantExpired | RejectReason::Unpaid) =>
            {
                if self.renewals < self.policy.max_renewals {
                    self.renewals += 1;
                    // A renewal (a new grant, or paying up) is not a failed attempt.
                    self.attempts = self.attempts.saturating_sub(1);
                    Next::Renew(r.reason)
                } else {
                    Next::Fail(Failure::Refused(r))
                }
            }
            AttemptEnd::Refused(r) => Next::Fail(Failure::Refused(r)),
            AttemptEnd::Broken(last) | AttemptEnd::PathClosed(last) => {
                if self.attempts >= self.policy.max_attempts {
                    return Next::Fail(Failure::GaveUp {
                        attempts: self.attempts,
                        last,
                    });
                }
                if progressed {
                    self.backoff_ms = self.policy.backoff_ms;
                    return Next::Retry { after_ms: 0 };
                }
                if path_changed {
                    // Before any byte on it: resume on the remaining path
                    // at once, keeping the back-off for real failures.
                    return Next::Retry { after_ms: 0 };
                }
                let after_ms = self.backoff_ms;
                self.backoff_ms = (self.backoff_ms * 2).min(self.policy.max_backoff_ms);
                Next::Retry { after_ms }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejection(reason: RejectReason) -> StreamRejection {
        StreamRejection {
            name: "feed".into(),
            reason,
            detail: String::new(),
            earliest: None,
        }
    }

    #[test]
    fn broken_attempts_back_off_and_give_up() {
        let mut f = FetchState::new(RetryPolicy {
            max_attempts: 4,
            ..Default::default()
        });
        let mut waits = vec![];
        loop {
            f.start_attempt();
            match f.end_attempt(AttemptEnd::Broken("reset".into()), false) {
                Next::Retry { after_ms } => waits.push(after_ms),
                Next::Fail(Failure::GaveUp { attempts, last }) => {
                    assert_eq!((attempts, last.as_str()), (4, "reset"));
                    break;
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(waits, [100, 200, 400]);
    }

    #[test]
    fn progress_resets_the_backoff() {
        let mut f = FetchState::new(RetryPolicy::default());
        f.start_attempt();
        f.end_attempt(AttemptEnd::Broken("x".into()), false);
        f.start_attempt();
        assert_eq!(
            f.end_attempt(AttemptEnd::Broken("x".into()), false),
            Next::Retry { after_ms: 200 }
        );
        f.start_attempt();
        assert_eq!(
            f.end_attempt(AttemptEnd::Broken("x".into()), true),
            Next::Retry { after_ms: 0 },
            "a path change is resumed at once"
        );
        f.start_attempt();
        assert_eq!(
            f.end_attempt(AttemptEnd::Broken("x".into()), false),
            Next::Retry { after_ms: 100 },
            "and the back-off starts over"
        );
    }

    #[test]
    fn a_peer_that_breaks_after_every_byte_is_still_given_up_on() {
        let mut f = FetchState::new(RetryPolicy {
            max_attempts: 5,
            ..Default::default()
        });
        let mut retries = 0;
        loop {
            f.start_attempt();
            match f.end_attempt(AttemptEnd::Broken("reset".into()), true) {
                Next::Retry { after_ms: 0 } => retries += 1,
                Next::Fail(Failure::GaveUp { attempts: 5, .. }) => break,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(retries, 4);
    }

    #[test]
    fn a_path_change_is_resumed_at_once_even_before_a_byte() {
        let mut f = FetchState::new(RetryPolicy {
            max_attempts: 3,
            ..Default::default()
        });
        let closed = || AttemptEnd::PathClosed("a connection closed".into());
        f.start_attempt();
        assert_eq!(f.end_attempt(closed(), false), Next::Retry { after_ms: 0 });
        // A real failure after it still backs off from the start.
        f.start_attempt();
        assert_eq!(
            f.end_attempt(AttemptEnd::Broken("reset".into()), false),
            Next::Retry { after_ms: 100 }
        );
        // And path changes count as attempts: they cannot go on for ever.
        f.start_attempt();
        assert!(matches!(
            f.end_attempt(closed(), false),
            Next::Fail(Failure::GaveUp { attempts: 3, .. })
        ));
    }

    #[test]
    fn an_expired_grant_is_renewed_only_when_allowed() {
        let mut f = FetchState::new(RetryPolicy::default());
        f.start_attempt();
        let expired = AttemptEnd::Refused(rejection(RejectReason::GrantExpired));
        assert_eq!(
            f.end_attempt(expired.clone(), true),
            Next::Fail(Failure::Refused(rejection(RejectReason::GrantExpired)))
        );
        let mut f = FetchState::new(RetryPolicy {
            max_renewals: 1,
            ..Default::default()
        });
        f.start_attempt();
        assert_eq!(
            f.end_attempt(expired.clone(), true),
            Next::Renew(RejectReason::GrantExpired)
        );
        assert_eq!(f.attempts(), 0, "a renewal costs no attempt");
        f.start_attempt();
        assert!(matches!(f.end_attempt(expired, false), Next::Fail(_)));
        assert_eq!(f.renewals(), 1);
    }

    #[test]
    fn a_live_stream_that_closes_is_re_asked_until_a_clean_empty_close_confirms_the_end() {
        let mut f = FetchState::new(RetryPolicy {
            max_attempts: 2,
            max_renewals: 1,
            ..Default::default()
        });
        // Bytes, then a clean close: maybe the end, maybe a cut. Ask again, at once.
        for _ in 0..5 {
            f.start_attempt();
            assert_eq!(
                f.end_attempt(AttemptEnd::ClosedWithoutLength, true),
                Next::Confirm
            );
        }
        assert_eq!(f.attempts(), 0, "confirmations cost no attempt");
        // The confirming request finds the grant expired: the cut shows.
        f.start_attempt();
        let expired = AttemptEnd::Refused(rejection(RejectReason::GrantExpired));
        assert_eq!(
            f.end_attempt(expired, false),
            Next::Renew(RejectReason::GrantExpired)
        );
        // Renewed; more bytes, a close, and a confirming request with none.
        f.start_attempt();
        assert_eq!(
            f.end_attempt(AttemptEnd::ClosedWithoutLength, true),
            Next::Confirm
        );
        f.start_attempt();
        assert_eq!(
            f.end_attempt(AttemptEnd::ClosedWithoutLength, false),
            Next::Done
        );
    }

    #[test]
    fn other_refusals_and_protocol_errors_stop_at_once() {
        let mut f = FetchState::new(RetryPolicy::default());
        f.start_attempt();
        assert!(matches!(
            f.end_attempt(
                AttemptEnd::Refused(rejection(RejectReason::NotAllowed)),
                false
            ),
            Next::Fail(Failure::Refused(_))
        ));
        f.start_attempt();
        assert!(matches!(
            f.end_attempt(AttemptEnd::Fatal("bad frame".into()), false),
            Next::Fail(Failure::Fatal(_))
        ));
        f.start_attempt();
        assert_eq!(f.end_attempt(AttemptEnd::Complete, true), Next::Done);
    }
}
