//! Streams in and out, counted as their bytes move: what an operator's
//! status and `/metrics` show. The counters sit in the stream itself (a
//! wrapper), so every way a stream is served or fetched is counted alike.

use libp2p::PeerId;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Streams tracked at once; past it a stream still flows, uncounted here.
const MAX_ACTIVE: usize = 8192;
/// Finished streams remembered for the status page.
const RECENT: usize = 64;
/// Distinct stream names with totals in `/metrics` (names come from what
/// the node sells or buys, never from a stranger's request alone).
const MAX_NAMES: usize = 1024;

/// Which way a stream's data goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Dir {
    /// We receive it (a consumer).
    In,
    /// We send it (a provider).
    Out,
}

impl Dir {
    /// `in` or `out`.
    pub fn as_str(self) -> &'static str {
        match self {
            Dir::In => "in",
            Dir::Out => "out",
        }
    }
}

/// Bytes read from and written to one stream.
#[derive(Debug, Default)]
pub struct Tally {
    read: Arc<AtomicU64>,
    written: Arc<AtomicU64>,
    /// Where the stream stands (the next offset), as its end reports it.
    position: AtomicU64,
    /// Its declared length plus one; 0 when unknown (a live stream).
    total: AtomicU64,
}

impl Tally {
    /// Bytes read so far.
    pub fn read(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }
    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }
    /// The stream's offset, as last reported.
    pub fn position(&self) -> u64 {
        self.position.load(Ordering::Relaxed)
    }
    /// Its declared length, when known.
    pub fn total(&self) -> Option<u64> {
        self.total.load(Ordering::Relaxed).checked_sub(1)
    }
}

#[derive(Debug)]
struct Active {
    dir: Dir,
    peer: PeerId,
    stream: String,
    started: Instant,
    started_ms: u64,
    tally: Arc<Tally>,
    /// The last rate sample: when, and the data bytes then.
    sample: (Instant, u64),
    rate: f64,
}

impl Active {
    /// The stream's data bytes: what was received in, or sent out.
    fn bytes(&self) -> u64 {
        match self.dir {
            Dir::In => self.tally.read(),
            Dir::Out => self.tally.written(),
        }
    }
}

/// One stream as the status shows it.
#[derive(Debug, Clone, Serialize)]
pub struct StreamView {
    /// `in` or `out`.
    pub direction: Dir,
    /// The other end.
    pub peer_id: String,
    /// The stream's name.
    pub stream: String,
    /// Data bytes so far (including framing).
    pub bytes: u64,
    /// Bytes per second over the last second or more (0 once finished).
    pub rate_bytes_s: f64,
    /// Where it stands: the next offset (a consumer's is its file's length).
    pub offset: u64,
    /// Its declared length, when it has one.
    pub length: Option<u64>,
    /// When it started, unix ms.
    pub started_ms: u64,
    /// How long it has run (or ran), ms.
    pub ms: u64,
}

#[derive(Debug, Default)]
struct Inner {
    next: u64,
    active: HashMap<u64, Active>,
    recent: VecDeque<StreamView>,
    /// Bytes of finished streams, by direction and name.
    finished: BTreeMap<(Dir, String), u64>,
}

/// The registry of streams; clones share it.
#[derive(Debug, Clone, Default)]
pub struct Traffic(Arc<Mutex<Inner>>);

impl Traffic {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Tracks stream `stream` with `peer`, going `dir`, until the returned
    /// guard is dropped; [`Tracked::wrap`] counts each attempt's bytes into it
    /// (a stream resumed on a new connection stays one stream).
    pub fn track(&self, dir: Dir, peer: PeerId, stream: &str) -> Tracked {
        let tally = Arc::new(Tally::default());
        let mut inner = self.lock();
        let id = if inner.active.len() < MAX_ACTIVE {
            inner.next += 1;
            let id = inner.next;
            let now = Instant::now();
            inner.active.insert(
                id,
                Active {
                    dir,
                    peer,
                    stream: stream.to_string(),
                    started: now,
                    started_ms: crate::clock::now_ms(),
                    tally: tally.clone(),
                    sample: (now, 0),
                    rate: 0.0,
                },
            );
            Some(id)
        } else {
            None
        };
        Tracked {
            tally,
            done: id.map(|id| (id, self.clone())),
        }
    }

    fn finish(&self, id: u64) {
        let mut inner = self.lock();
        let Some(a) = inner.active.remove(&id) else {
            return;
        };
        let view = view_of(&a, false);
        let key = (a.dir, a.stream.clone());
        if inner.finished.len() < MAX_NAMES || inner.finished.contains_key(&key) {
            *inner.finished.entry(key).or_default() += view.bytes;
        }
        if inner.recent.len() == RECENT {
            inner.recent.pop_front();
        }
        inner.recent.push_back(view);
    }

    /// The streams running now, with their rates (sampled at most once a
    /// second, whoever asks).
    pub fn active(&self) -> Vec<StreamView> {
        let mut inner = self.lock();
        let now = Instant::now();
        let mut out: Vec<StreamView> = inner
            .active
            .values_mut()
            .map(|a| {
                let dt = now.duration_since(a.sample.0).as_secs_f64();
                if dt >= 1.0 {
                    let bytes = a.bytes();
                    a.rate = bytes.saturating_sub(a.sample.1) as f64 / dt;
                    a.sample = (now, bytes);
                }
                view_of(a, true)
            })
            .collect();
        out.sort_by_key(|s| s.started_ms);
        out
    }

    /// The last streams that finished, oldest first.
    pub fn recent(&self) -> Vec<StreamView> {
        self.lock().recent.iter().cloned().collect()
    }

    /// Total bytes by direction and stream name, finished and running.
    pub fn totals(&self) -> BTreeMap<(Dir, String), u64> {
        let inner = self.lock();
        let mut t = inner.finished.clone();
        for a in inner.active.values() {
            let key = (a.dir, a.stream.clone());
            if t.len() < MAX_NAMES || t.contains_key(&key) {
                *t.entry(key).or_default() += a.bytes();
            }
        }
        t
    }

    /// Bytes in and out per peer, over the streams running now.
    pub fn by_peer(&self) -> HashMap<PeerId, (u64, u64, usize)> {
        let inner = self.lock();
        let mut m: HashMap<PeerId, (u64, u64, usize)> = HashMap::new();
        for a in inner.active.values() {
            let e = m.entry(a.peer).or_default();
            match a.dir {
                Dir::In => e.0 += a.bytes(),
                Dir::Out => e.1 += a.bytes(),
            }
            e.2 += 1;
        }
        m
    }
}

fn view_of(a: &Active, running: bool) -> StreamView {
    StreamView {
        direction: a.dir,
        peer_id: a.peer.to_string(),
        stream: a.stream.clone(),
        bytes: a.bytes(),
        rate_bytes_s: if running { a.rate } else { 0.0 },
        offset: a.tally.position(),
        length: a.tally.total(),
        started_ms: a.started_ms,
        ms: a.started.elapsed().as_millis() as u64,
    }
}

/// A stream being tracked; it leaves the registry when dropped.
#[derive(Debug)]
pub struct Tracked {
    tally: Arc<Tally>,
    done: Option<(u64, Traffic)>,
}

impl Tracked {
    /// `io`, counting its bytes into this stream.
    pub fn wrap<C>(&self, io: C) -> Counted<C> {
        Counted::split(io, self.tally.read.clone(), self.tally.written.clone())
    }

    /// The counters.
    pub fn tally(&self) -> &Arc<Tally> {
        &self.tally
    }

    /// Reports where the stream stands and its length (when known).
    pub fn progress(&self, offset: u64, length: Option<u64>) {
        self.tally.position.store(offset, Ordering::Relaxed);
        self.tally
            .total
            .store(length.map_or(0, |l| l.saturating_add(1)), Ordering::Relaxed);
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if let Some((id, traffic)) = self.done.take() {
            traffic.finish(id);
        }
    }
}

/// A connection's stream whose bytes count into a [`Tracked`] stream.
pub type Counted<C> = super::metered::Metered<C>;

#[cfg(test)]
mod tests {
    use super::*;
    use futures::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_counted_stream_is_active_while_it_lives_then_recent_and_totalled() {
        let traffic = Traffic::default();
        let peer = PeerId::random();
        let out = traffic.track(Dir::Out, peer, "feed");
        // Two attempts of one stream count as one.
        for _ in 0..2 {
            let mut w = out.wrap(futures::io::Cursor::new(Vec::new()));
            w.write_all(&[7u8; 500]).await.unwrap();
        }
        let inn = traffic.track(Dir::In, peer, "other");
        let mut r = inn.wrap(futures::io::Cursor::new(vec![1u8; 300]));
        let mut buf = Vec::new();
        r.read_to_end(&mut buf).await.unwrap();
        let active = traffic.active();
        assert_eq!(active.len(), 2);
        assert_eq!(traffic.by_peer()[&peer], (300, 1000, 2));
        drop(out);
        assert_eq!(traffic.active().len(), 1);
        let recent = traffic.recent();
        assert_eq!(recent.len(), 1);
        assert_eq!((recent[0].direction, recent[0].bytes), (Dir::Out, 1000));
        let totals = traffic.totals();
        assert_eq!(totals[&(Dir::Out, "feed".to_string())], 1000);
        assert_eq!(totals[&(Dir::In, "other".to_string())], 300);
    }
}
