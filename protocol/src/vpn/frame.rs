//! Packets on a stream: each frame is the packet's length (2 bytes, big
//! endian) and the packet. A writer puts several frames in one write (a
//! batch); a [`Decoder`] takes them apart from whatever chunks the stream
//! yields. An empty frame, or one longer than the tunnel's MTU, cannot be
//! stepped over (the next length would be read from inside it), so it is a
//! [`FrameError`] that ends the stream; a well-framed but malformed packet
//! is the router's to drop, and the stream goes on.

use thiserror::Error;

/// Bytes before each packet.
pub const HEADER: usize = 2;

/// A frame that ends the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum FrameError {
    /// A frame of length 0.
    #[error("an empty frame")]
    Empty,
    /// A frame longer than the tunnel carries.
    #[error("a frame of {len} bytes, over the tunnel's {max}")]
    TooBig {
        /// Its length.
        len: usize,
        /// The most a frame may hold.
        max: usize,
    },
}

/// Appends `packet` as one frame to `out`; a packet over `max` bytes (or
/// over what two bytes can say) is refused.
pub fn encode(packet: &[u8], max: usize, out: &mut Vec<u8>) -> Result<(), FrameError> {
    let max = max.min(usize::from(u16::MAX));
    if packet.is_empty() {
        return Err(FrameError::Empty);
    }
    let len = u16::try_from(packet.len())
        .ok()
        .filter(|l| usize::from(*l) <= max)
        .ok_or(FrameError::TooBig {
            len: packet.len(),
            max,
        })?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(packet);
    Ok(())
}

/// Takes frames apart (see the module docs). It holds at most one partial
/// frame beyond what its caller has not yet taken.
#[derive(Debug)]
pub struct Decoder {
    buf: Vec<u8>,
    at: usize,
    max: usize,
    failed: bool,
}

impl Decoder {
    /// Frames of at most `max` bytes.
    pub fn new(max: usize) -> Self {
        Self {
            buf: Vec::new(),
            at: 0,
            max: max.min(usize::from(u16::MAX)),
            failed: false,
        }
    }

    /// Bytes read from the stream. Take the frames out with
    /// [`Decoder::next_packet`] before pushing more; after an error, bytes
    /// are no longer kept.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.failed {
            return;
        }
        if self.at > 0 && self.at * 2 >= self.buf.len() {
            self.buf.drain(..self.at);
            self.at = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole packet, `None` until more bytes come; after an error
    /// nothing more (the stream is to be closed).
    pub fn next_packet(&mut self) -> Option<Result<&[u8], FrameError>> {
        if self.failed {
            return None;
        }
        let rest = &self.buf[self.at..];
        let len = usize::from(u16::from_be_bytes([*rest.first()?, *rest.get(1)?]));
        let error = match len {
            0 => Some(FrameError::Empty),
            len if len > self.max => Some(FrameError::TooBig { len, max: self.max }),
            _ => None,
        };
        if let Some(e) = error {
            self.failed = true;
            self.buf = Vec::new();
            self.at = 0;
            return Some(Err(e));
        }
        if rest.len() < HEADER + len {
            return None;
        }
        let start = self.at + HEADER;
        self.at = start + len;
        Some(Ok(&self.buf[start..start + len]))
    }

    /// Bytes held (a partial frame, and frames not yet taken).
    pub fn held(&self) -> usize {
        self.buf.len() - self.at
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn take_all(d: &mut Decoder) -> Result<Vec<Vec<u8>>, FrameError> {
        let mut out = vec![];
        while let Some(p) = d.next_packet() {
            out.push(p?.to_vec());
        }
        Ok(out)
    }

    #[test]
    fn a_batch_comes_apart_in_any_chunks() {
        let packets: Vec<Vec<u8>> = (1..=40u8).map(|n| vec![n; usize::from(n) * 30]).collect();
        let mut wire = vec![];
        for p in &packets {
            encode(p, 1280, &mut wire).unwrap();
        }
        for chunk in [1, 2, 3, 7, 1000, wire.len()] {
            let mut d = Decoder::new(1280);
            let mut got = vec![];
            for c in wire.chunks(chunk) {
                d.push(c);
                got.extend(take_all(&mut d).unwrap());
                assert!(d.held() <= HEADER + 1280 + chunk, "bounded");
            }
            assert_eq!(got, packets, "chunks of {chunk}");
            assert_eq!(d.held(), 0);
        }
    }

    #[test]
    fn an_empty_or_oversized_frame_ends_the_stream() {
        let mut d = Decoder::new(1280);
        d.push(&[0, 0, 9, 9]);
        assert_eq!(d.next_packet(), Some(Err(FrameError::Empty)));
        assert_eq!(d.next_packet(), None, "nothing after an error");
        let mut d = Decoder::new(1280);
        d.push(&1281u16.to_be_bytes());
        assert_eq!(
            d.next_packet(),
            Some(Err(FrameError::TooBig {
                len: 1281,
                max: 1280
            }))
        );
        let mut out = vec![];
        assert_eq!(
            encode(&[0; 1281], 1280, &mut out),
            Err(FrameError::TooBig {
                len: 1281,
                max: 1280
            })
        );
        assert_eq!(encode(&[], 1280, &mut out), Err(FrameError::Empty));
        assert!(out.is_empty(), "nothing written for a refused packet");
    }

    proptest! {
        #[test]
        fn any_bytes_never_panic_and_stay_bounded(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..40),
        ) {
            let mut d = Decoder::new(200);
            for c in &chunks {
                d.push(c);
                while let Some(p) = d.next_packet() {
                    match p {
                        Ok(p) => prop_assert!(!p.is_empty() && p.len() <= 200),
                        Err(_) => break,
                    }
                }
                prop_assert!(d.held() <= HEADER + 200 + c.len());
            }
        }
    }
}
