//! The one owner of the node's tasks: nothing in this library calls
//! `tokio::spawn` but [`Tasks`] (`node/tests/layers.rs` checks it).
//!
//! A [`Tasks`] is a set of tasks with one stop signal (the mini-redis
//! shape): [`Tasks::spawn`] runs a task until it ends or the set stops
//! (dropped at its next await), [`Tasks::spawn_tracked`] runs one to its end
//! (it watches [`Tasks::stopping`] to finish cleanly), and [`Tasks::stop`]
//! signals, then waits for both kinds, up to a grace. Clones are the same
//! set. A set that belongs to a value rather than to the node (a payee's
//! book, a local fan-out, an access store) is held through a
//! [`StopOnDrop`], which stops it when the value goes.

use std::future::Future;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A set of tasks with one stop signal; clones are the same set.
#[derive(Clone, Debug, Default)]
pub struct Tasks {
    tracker: TaskTracker,
    cancel: CancellationToken,
}

impl Tasks {
    /// A new, running set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `task` until it ends or the set stops (then it is dropped at its
    /// next await and the handle resolves to `None`).
    pub fn spawn<F>(&self, task: F) -> JoinHandle<Option<F::Output>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let cancel = self.cancel.clone();
        self.tracker
            .spawn(async move { cancel.run_until_cancelled(task).await })
    }

    /// Runs `task` to its end: a stop waits for it (up to its grace), and
    /// the task should end by itself once [`Tasks::stopping`] resolves.
    pub fn spawn_tracked<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn(task)
    }

    /// Resolves when the set starts stopping.
    pub async fn stopping(&self) {
        self.cancel.cancelled().await
    }

    /// Whether the set has been told to stop.
    pub fn is_stopping(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Tells every task to stop, without waiting.
    pub fn signal_stop(&self) {
        self.cancel.cancel();
        self.tracker.close();
    }

    /// Tells every task to stop and waits up to `grace` for them all to
    /// end; returns how many were still running then.
    pub async fn stop(&self, grace: Duration) -> usize {
        self.signal_stop();
        match tokio::time::timeout(grace, self.tracker.wait()).await {
            Ok(()) => 0,
            Err(_) => self.tracker.len(),
        }
    }

    /// Tasks still running.
    pub fn len(&self) -> usize {
        self.tracker.len()
    }

    /// Whether no task is running.
    pub fn is_empty(&self) -> bool {
        self.tracker.is_empty()
    }
}

/// A set of tasks that stops when this (its owner's hold on it) is dropped.
/// Tasks must not keep a `StopOnDrop` themselves, only [`Tasks`] clones.
#[derive(Debug, Default)]
pub struct StopOnDrop(Tasks);

impl StopOnDrop {
    /// A new, running set, owned by the value that keeps this.
    pub fn new() -> Self {
        Self::default()
    }
}

impl std::ops::Deref for StopOnDrop {
    type Target = Tasks;
    fn deref(&self) -> &Tasks {
        &self.0
    }
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.signal_stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stop_cancels_spawned_tasks_and_waits_for_tracked_ones() {
        let tasks = Tasks::new();
        let cancelled = tasks.spawn(std::future::pending::<()>());
        let t = tasks.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let tracked = tasks.spawn_tracked(async move {
            t.stopping().await;
            tokio::task::yield_now().await;
            let _ = tx.send(());
            7
        });
        assert_eq!(tasks.len(), 2);
        assert_eq!(tasks.stop(Duration::from_secs(5)).await, 0);
        assert_eq!(cancelled.await.unwrap(), None);
        assert_eq!(tracked.await.unwrap(), 7);
        rx.await.expect("the tracked task finished cleanly");
        assert!(tasks.is_stopping() && tasks.is_empty());
    }

    #[tokio::test]
    async fn a_stop_reports_tasks_that_outlive_the_grace() {
        let tasks = Tasks::new();
        let _stuck = tasks.spawn_tracked(std::future::pending::<()>());
        assert_eq!(tasks.stop(Duration::from_millis(20)).await, 1);
    }

    #[tokio::test]
    async fn dropping_the_owner_stops_its_tasks() {
        let owner = StopOnDrop::new();
        let running = owner.spawn(std::future::pending::<()>());
        let tasks = owner.clone();
        drop(owner);
        assert_eq!(running.await.unwrap(), None);
        assert!(tasks.is_stopping());
    }
}
