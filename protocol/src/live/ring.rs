//! The provider's bounded window of a live stream's recent chunks.

use std::collections::VecDeque;

/// Recent chunks of one live stream, at most `cap` data bytes (always at
/// least the newest chunk), oldest evicted first. `T` is whatever the node
/// keeps per chunk (its encoded frame); the ring only knows offsets.
#[derive(Debug)]
pub struct Ring<T> {
    /// (offset, length, item), in offset order, contiguous.
    chunks: VecDeque<(u64, u64, T)>,
    cap: u64,
    held: u64,
    /// Offset just past the newest chunk: where the next one starts.
    edge: u64,
    /// The source ended at `edge`.
    ended: bool,
}

/// Where a reader at some offset stands.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup<'a, T> {
    /// The chunk holding the offset (it may start before it).
    Chunk(&'a T),
    /// The offset is the live edge: wait for the next chunk.
    Wait,
    /// The offset has left the ring; `earliest` is the oldest still held.
    Gone {
        /// Oldest offset held.
        earliest: u64,
    },
    /// The source ended and everything up to the offset was read.
    End,
    /// The offset lies past the live edge.
    Ahead {
        /// The live edge.
        edge: u64,
    },
}

impl<T> Ring<T> {
    /// An empty ring holding up to `cap` bytes, for a source whose first
    /// byte will be at `start`.
    pub fn new(cap: u64, start: u64) -> Self {
        Self {
            chunks: VecDeque::new(),
            cap: cap.max(1),
            held: 0,
            edge: start,
            ended: false,
        }
    }

    /// Appends the next `len` bytes (as `item`) at the edge; returns the
    /// offset they start at. Evicts the oldest chunks past the cap.
    pub fn push(&mut self, len: u64, item: T) -> u64 {
        let offset = self.edge;
        self.chunks.push_back((offset, len, item));
        self.held += len;
        self.edge += len;
        while self.held > self.cap && self.chunks.len() > 1 {
            if let Some((_, l, _)) = self.chunks.pop_front() {
                self.held -= l;
            }
        }
        offset
    }

    /// The source ended at the edge; `marker` is what a reader at the edge
    /// gets (the signed end marker), kept as the last entry of length 0.
    pub fn end(&mut self, marker: T) {
        if !self.ended {
            self.chunks.push_back((self.edge, 0, marker));
            self.ended = true;
        }
    }

    /// Where a reader wanting `offset` stands.
    pub fn lookup(&self, offset: u64) -> Lookup<'_, T> {
        if offset > self.edge {
            return Lookup::Ahead { edge: self.edge };
        }
        let earliest = self.earliest();
        if offset < earliest {
            return Lookup::Gone { earliest };
        }
        if offset == self.edge {
            return match (self.ended, self.chunks.back()) {
                (true, Some((_, 0, marker))) => Lookup::Chunk(marker),
                (true, _) => Lookup::End,
                (false, _) => Lookup::Wait,
            };
        }
        // The last chunk starting at or before `offset` holds it.
        let i = self.chunks.partition_point(|(o, _, _)| *o <= offset);
        match i.checked_sub(1).and_then(|i| self.chunks.get(i)) {
            // An end marker (length 0) shares its offset with nothing else.
            Some((o, l, item)) if offset < o + l => Lookup::Chunk(item),
            _ => Lookup::Gone { earliest },
        }
    }

    /// The oldest offset held (the edge when empty).
    pub fn earliest(&self) -> u64 {
        self.chunks.front().map_or(self.edge, |(o, _, _)| *o)
    }

    /// Where the next chunk will start.
    pub fn edge(&self) -> u64 {
        self.edge
    }

    /// Whether the source ended.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// Data bytes held.
    pub fn held(&self) -> u64 {
        self.held
    }
}
