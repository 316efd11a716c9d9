//! Live streams: a source read once (`exec:`, `tcp:`, `stdin:`, `tail:`),
//! cut into signed chunks kept in a bounded ring, and fanned out to every
//! buyer at its own pace (`serve`); the buyer's side verifies each chunk and
//! stays subscribed (`fetch`). The decisions (ring, signatures, placement)
//! are `ledgermesh_protocol::live`.

mod exec;
pub mod fetch;
pub mod serve;
pub mod sources;
mod stats;
mod subscription;

pub use sources::{LiveSpec, LiveSpecError};

use crate::events::Emitter;
use ledgermesh_protocol::live::{Chunk, Lookup, Ring};
use libp2p::identity::Keypair;
use libp2p::PeerId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The default ring size of each live stream (`--live-buffer`).
pub const DEFAULT_BUFFER: u64 = 16 << 20;

/// One chunk as kept in the ring: its place and its frame, encoded once
/// for every buyer.
#[derive(Debug)]
pub struct Item {
    /// Offset of the chunk's first byte.
    pub offset: u64,
    /// Data bytes.
    pub len: u64,
    /// The end marker.
    pub end: bool,
    /// The length-prefixed `LiveChunk` frame.
    pub frame: Vec<u8>,
}

/// How a provider runs its live sources.
#[derive(Clone)]
pub struct LiveOptions {
    /// Signs every chunk: the node's identity.
    pub key: Keypair,
    /// Ring size per stream, in data bytes.
    pub buffer: u64,
    /// An `exec:` command that exits ends its stream instead of restarting.
    pub exec_once: bool,
    /// Where source troubles are reported.
    pub emitter: Emitter,
    /// Where the sources run: they stop when these do (the node's tasks).
    pub tasks: crate::tasks::Tasks,
    /// Tests only: the first chunk sent that holds this offset goes out
    /// with that byte flipped after signing (what a tampering forwarder
    /// would do), once per feed.
    pub fault_flip: Option<u64>,
}

/// Buyers cut for falling behind, remembered so that their next request
/// hears `too_slow` rather than `gone`.
const SLOW_MEMORY: Duration = Duration::from_secs(600);
/// Most buyers remembered as cut per stream.
const MAX_SLOW: usize = 1024;

/// What a reader at some offset gets next.
#[derive(Debug)]
pub enum Next {
    /// The chunk holding the offset.
    Chunk(Arc<Item>),
    /// The offset left the ring; the earliest one held.
    Gone(u64),
    /// The offset is past the live edge.
    Ahead(u64),
}

/// One live stream: its ring, and a signal for every change.
pub struct LiveFeed {
    name: String,
    epoch: u64,
    key: Keypair,
    ring: Mutex<Ring<Arc<Item>>>,
    /// Bumped at every push (new chunks, evictions, the end).
    changed: watch::Sender<u64>,
    slow: Mutex<HashMap<PeerId, Instant>>,
    /// See [`LiveOptions::fault_flip`]; taken when it fires.
    fault_flip: Mutex<Option<u64>>,
}

impl std::fmt::Debug for LiveFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveFeed")
            .field("name", &self.name)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl LiveFeed {
    /// An empty feed for stream `name`, holding `buffer` bytes.
    pub fn new(name: &str, key: Keypair, buffer: u64) -> Arc<Self> {
        Arc::new(Self {
            name: name.into(),
            epoch: rand::random::<u64>() | 1,
            key,
            ring: Mutex::new(Ring::new(buffer, 0)),
            changed: watch::channel(0).0,
            slow: Mutex::new(HashMap::new()),
            fault_flip: Mutex::new(None),
        })
    }

    /// Starts reading `spec` into a new feed.
    pub fn start(name: &str, spec: LiveSpec, opts: &LiveOptions) -> Arc<Self> {
        let feed = Self::new(name, opts.key.clone(), opts.buffer);
        *feed.fault_flip.lock().unwrap_or_else(|p| p.into_inner()) = opts.fault_flip;
        (opts.tasks).spawn(sources::run(feed.clone(), spec, opts.clone()));
        feed
    }

    /// The stream's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// This run's epoch (signed into every chunk).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    fn ring(&self) -> std::sync::MutexGuard<'_, Ring<Arc<Item>>> {
        self.ring.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Signs `data` as the next chunk and appends it. One source task
    /// pushes, so the edge cannot move between reading it and pushing (the
    /// signing happens outside the lock).
    pub fn push(&self, data: Vec<u8>) {
        let offset = {
            let ring = self.ring();
            if data.is_empty() || ring.ended() {
                return;
            }
            ring.edge()
        };
        let len = data.len() as u64;
        let chunk = Chunk::sign(
            &self.key,
            &self.name,
            self.epoch,
            offset,
            data,
            false,
            crate::clock::now_us(),
        );
        let item = Item {
            offset,
            len,
            end: false,
            frame: chunk.encode_frame(),
        };
        let pushed_at = self.ring().push(len, Arc::new(item));
        debug_assert_eq!(pushed_at, offset, "one pusher per feed");
        self.changed.send_modify(|v| *v += 1);
    }

    /// The source ended: readers get the signed end marker.
    pub fn end(&self) {
        let mut ring = self.ring();
        let offset = ring.edge();
        let chunk = Chunk::sign(
            &self.key,
            &self.name,
            self.epoch,
            offset,
            vec![],
            true,
            crate::clock::now_us(),
        );
        ring.end(Arc::new(Item {
            offset,
            len: 0,
            end: true,
            frame: chunk.encode_frame(),
        }));
        drop(ring);
        self.changed.send_modify(|v| *v += 1);
    }

    /// Where the next chunk will start.
    pub fn edge(&self) -> u64 {
        self.ring().edge()
    }

    /// The oldest offset held.
    pub fn earliest(&self) -> u64 {
        self.ring().earliest()
    }

    /// The chunk holding `offset`, waiting at the live edge for it.
    pub async fn next(&self, offset: u64) -> Next {
        let mut rx = self.changed.subscribe();
        loop {
            rx.borrow_and_update();
            match self.ring().lookup(offset) {
                Lookup::Chunk(item) => return Next::Chunk(item.clone()),
                Lookup::Gone { earliest } => return Next::Gone(earliest),
                Lookup::Ahead { edge } => return Next::Ahead(edge),
                // The end marker is kept as a chunk; an end without one
                // cannot happen, and waiting is the safe answer.
                Lookup::Wait | Lookup::End => {}
            }
            if rx.changed().await.is_err() {
                // The feed is being dropped.
                std::future::pending::<()>().await;
            }
        }
    }

    /// Resolves once `offset` has left the ring: a buyer still busy with it
    /// is a whole buffer behind.
    pub async fn evicted(&self, offset: u64) -> u64 {
        let mut rx = self.changed.subscribe();
        loop {
            rx.borrow_and_update();
            let earliest = self.earliest();
            if earliest > offset {
                return earliest;
            }
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// The frame to send for `item`: its own, or once, with the fault
    /// injected (see [`LiveOptions::fault_flip`]).
    pub fn frame_for<'a>(&self, item: &'a Item) -> std::borrow::Cow<'a, [u8]> {
        let mut fault = self.fault_flip.lock().unwrap_or_else(|p| p.into_inner());
        match *fault {
            Some(at) if item.offset <= at && at < item.offset + item.len => {
                *fault = None;
                let body = &item.frame[4..];
                let Ok(mut chunk) = Chunk::decode(body) else {
                    return item.frame.as_slice().into();
                };
                chunk.data[(at - item.offset) as usize] ^= 0x40;
                tracing::warn!(stream = %self.name, offset = at, "fault injected: a byte flipped after signing");
                chunk.encode_frame().into()
            }
            _ => item.frame.as_slice().into(),
        }
    }

    /// Remembers that `peer` was cut for falling behind.
    pub fn cut_slow(&self, peer: PeerId) {
        let mut slow = self.slow.lock().unwrap_or_else(|p| p.into_inner());
        if slow.len() >= MAX_SLOW {
            slow.retain(|_, at| at.elapsed() < SLOW_MEMORY);
        }
        if slow.len() < MAX_SLOW {
            slow.insert(peer, Instant::now());
        }
    }

    /// Whether `peer` was cut for falling behind lately (forgets it).
    pub fn was_cut_slow(&self, peer: &PeerId) -> bool {
        let mut slow = self.slow.lock().unwrap_or_else(|p| p.into_inner());
        slow.remove(peer)
            .is_some_and(|at| at.elapsed() < SLOW_MEMORY)
    }
}
