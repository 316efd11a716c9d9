//! The one writer of JSON lines to stdout: a thread fed by a bounded queue.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Lines waiting for the writer.
pub(super) const QUEUE: usize = 8_192;

enum Item {
    Line(String),
    Flush(SyncSender<()>),
}

/// A writer thread behind a bounded queue of lines.
pub(super) struct Writer {
    tx: SyncSender<Item>,
    pub(super) dropped: Arc<AtomicU64>,
}

impl Writer {
    /// Starts a writer of at most `queue` waiting lines into `sink`.
    pub(super) fn start(queue: usize, sink: impl Write + Send + 'static) -> Self {
        let (tx, rx) = sync_channel(queue);
        let dropped = Arc::new(AtomicU64::new(0));
        let counter = dropped.clone();
        std::thread::Builder::new()
            .name("json-stdout".into())
            .spawn(move || write_all(rx, sink, &counter))
            .expect("spawning the stdout writer");
        Self { tx, dropped }
    }

    /// Queues a line without waiting; counts it as dropped when full.
    pub(super) fn offer(&self, line: String) {
        if let Err(TrySendError::Full(_)) = self.tx.try_send(Item::Line(line)) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Queues a line, waiting for room.
    pub(super) fn send(&self, line: String) {
        let _ = self.tx.send(Item::Line(line));
    }

    /// Waits (up to `timeout`) until everything queued so far is written.
    pub(super) fn flush(&self, timeout: Duration) {
        let (done, wait) = sync_channel(1);
        if self.tx.send(Item::Flush(done)).is_ok() {
            let _ = wait.recv_timeout(timeout);
        }
    }
}

fn write_all(rx: Receiver<Item>, sink: impl Write, dropped: &AtomicU64) {
    let mut out = std::io::BufWriter::new(sink);
    let mut reported = 0u64;
    while let Ok(item) = rx.recv() {
        let now = dropped.load(Ordering::Relaxed);
        if now > reported {
            let _ = writeln!(
                out,
                "{{\"ts_ms\":{},\"node\":\"stdout\",\"event\":\"events_dropped\",\"count\":{}}}",
                super::now_ms(),
                now - reported
            );
            reported = now;
        }
        match item {
            Item::Line(line) => {
                let _ = writeln!(out, "{line}");
                // One line, one flush: a reader sees each event at once.
                let _ = out.flush();
            }
            Item::Flush(done) => {
                let _ = out.flush();
                let _ = done.send(());
            }
        }
    }
    let _ = out.flush();
}

static WRITER: OnceLock<Writer> = OnceLock::new();

/// The process's writer of JSON lines: stdout, unless [`to_file`] chose a file.
pub(super) fn global() -> &'static Writer {
    WRITER.get_or_init(|| Writer::start(QUEUE, std::io::stdout()))
}

/// Sends the JSON lines to `path` (appending) instead of stdout; only
/// before the first line.
pub(super) fn to_file(path: &std::path::Path) -> std::io::Result<()> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    WRITER
        .set(Writer::start(QUEUE, file))
        .map_err(|_| std::io::Error::other("the JSON writer is already started"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Condvar, Mutex};

    /// A sink that blocks every write until released, like a full pipe.
    /// Whether the gate is open, and what went through it.
    type GateState = Mutex<(bool, Vec<u8>)>;

    #[derive(Clone, Default)]
    struct Gate(Arc<(GateState, Condvar)>);

    impl Write for Gate {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let (lock, cv) = &*self.0;
            let mut st = cv
                .wait_while(lock.lock().unwrap(), |(open, _)| !*open)
                .unwrap();
            st.1.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_blocked_sink_never_blocks_the_emitter_and_drops_are_reported() {
        let gate = Gate::default();
        let w = Writer::start(2, gate.clone());
        // The sink is shut: these return at once whatever happens.
        for i in 0..50 {
            w.offer(format!("{{\"n\":{i}}}"));
        }
        let dropped = w.dropped.load(Ordering::Relaxed);
        assert!(dropped >= 45, "most were dropped, none waited: {dropped}");
        {
            let (lock, cv) = &*gate.0;
            lock.lock().unwrap().0 = true;
            cv.notify_all();
        }
        w.send("{\"n\":\"last\"}".into());
        w.flush(Duration::from_secs(5));
        let text = String::from_utf8(gate.0 .0.lock().unwrap().1.clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let report = lines
            .iter()
            .find(|l| l.contains("events_dropped"))
            .expect("a drop report");
        assert!(report.contains(&format!("\"count\":{dropped}")), "{report}");
        let kept: Vec<&&str> = lines.iter().filter(|l| l.starts_with("{\"n\":")).collect();
        assert_eq!(
            kept.len() as u64 + dropped,
            51,
            "every line written or counted"
        );
        assert_eq!(kept.first(), Some(&&"{\"n\":0}"), "in order");
        assert_eq!(kept.last(), Some(&&"{\"n\":\"last\"}"));
    }
}
