//! Records one node's events from before it starts, for assertions and
//! timings.

use ledgermesh_node::events::{Emitter, Event, Record};
use std::time::Duration;
use tokio::sync::broadcast;

/// A node's events, in order.
#[derive(Debug)]
pub struct Recorder {
    rx: broadcast::Receiver<Record>,
    /// Every event pulled in so far, in order.
    pub seen: Vec<Record>,
    wait: Duration,
}

impl Recorder {
    /// Records what `emitter` publishes from now on.
    pub fn new(emitter: &Emitter) -> Self {
        Self {
            rx: emitter.subscribe(),
            seen: Vec::new(),
            wait: Duration::from_secs(60),
        }
    }

    /// How long [`Recorder::wait_for`] waits (60 s unless set).
    pub fn with_wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// Pulls in every event published so far.
    pub fn drain(&mut self) -> &[Record] {
        while let Ok(r) = self.rx.try_recv() {
            self.seen.push(r);
        }
        &self.seen
    }

    /// Waits for an event matching `pred` (or one already seen). Panics with
    /// everything seen on timeout, lag or stop: this is for tests.
    pub async fn wait_for(&mut self, what: &str, pred: impl Fn(&Event) -> bool) -> Event {
        self.drain();
        if let Some(r) = self.seen.iter().find(|r| pred(&r.event)) {
            return r.event.clone();
        }
        let deadline = tokio::time::Instant::now() + self.wait;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Ok(r)) => {
                    self.seen.push(r.clone());
                    if pred(&r.event) {
                        return r.event;
                    }
                }
                Ok(Err(broadcast::error::RecvError::Lagged(n))) => {
                    panic!("recorder lagged by {n} events")
                }
                Ok(Err(broadcast::error::RecvError::Closed)) => {
                    panic!("node stopped while waiting for {what}")
                }
                Err(_) => panic!(
                    "timed out waiting for {what}; saw: {:#?}",
                    self.seen.iter().map(|r| &r.event).collect::<Vec<_>>()
                ),
            }
        }
    }

    /// Events seen so far that match `pred`.
    pub fn matching(&mut self, pred: impl Fn(&Event) -> bool) -> Vec<Event> {
        self.drain();
        self.seen
            .iter()
            .filter(|r| pred(&r.event))
            .map(|r| r.event.clone())
            .collect()
    }
}
