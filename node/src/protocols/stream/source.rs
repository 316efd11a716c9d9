//! Stream sources a provider can sell: a file, or deterministic random bytes.

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt, ReadBuf};

/// Where a stream's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The contents of a file (its length when the provider started).
    File(PathBuf),
    /// `len` pseudo-random bytes from ChaCha8 seeded with `seed`; seekable.
    Random {
        /// Length in bytes.
        len: u64,
        /// Seed.
        seed: u64,
    },
    /// Like `Random`, but served at no more than `rate` bytes per second: a
    /// live feed (a sensor, a log) that trickles rather than bursts.
    Paced {
        /// Length in bytes.
        len: u64,
        /// Bytes per second.
        rate: u64,
        /// Seed.
        seed: u64,
    },
    /// `len` zero bytes: a source that costs nothing, for throughput tests.
    Zeros {
        /// Length in bytes.
        len: u64,
    },
    /// A live source, read once and fanned out (see [`super::live`]).
    Live(super::live::LiveSpec),
    /// `echo:`: what a granted peer sends on the stream comes back to it
    /// (for testing paths end to end; `ledgermesh echo`).
    Echo,
    /// `inbox:PATH`: what a granted peer sends on the stream (`nc --send`)
    /// is appended to PATH, one sender at a time.
    Inbox(PathBuf),
}

/// A bad `--stream` argument.
#[derive(Debug, thiserror::Error)]
#[error("bad stream spec {spec:?}: {why} (expected NAME=file:PATH, NAME=random:BYTES[:SEED], NAME=paced:BYTES:RATE[:SEED], NAME=zero:BYTES, or a live NAME=exec:COMMAND, NAME=tcp:HOST:PORT, NAME=stdin:, NAME=tail:PATH; or NAME=echo:, NAME=inbox:PATH)")]
pub struct SourceSpecError {
    spec: String,
    why: String,
}

/// Stream names are path components on the consumer side: keep them tame.
pub fn valid_stream_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Parses `NAME=file:PATH` or `NAME=random:BYTES[:SEED]`.
pub fn parse_stream_spec(spec: &str) -> Result<(String, Source), SourceSpecError> {
    let err = |why: &str| SourceSpecError {
        spec: spec.into(),
        why: why.into(),
    };
    let (name, src) = spec.split_once('=').ok_or_else(|| err("missing '='"))?;
    if !valid_stream_name(name) {
        return Err(err("stream names are 1-128 characters of [A-Za-z0-9._-]"));
    }
    let source = if let Some(live) = super::live::LiveSpec::parse(src) {
        Source::Live(live.map_err(|e| err(&e.to_string()))?)
    } else if src == "echo:" || src == "echo" {
        Source::Echo
    } else if let Some(path) = src.strip_prefix("inbox:") {
        if path.is_empty() {
            return Err(err("inbox: needs a path"));
        }
        Source::Inbox(PathBuf::from(path))
    } else if let Some(path) = src.strip_prefix("file:") {
        Source::File(PathBuf::from(path))
    } else if let Some(rest) = src.strip_prefix("random:") {
        let mut parts = rest.splitn(2, ':');
        let len = parse_size(parts.next().unwrap_or("")).ok_or_else(|| err("bad BYTES"))?;
        let seed = match parts.next() {
            Some(s) => s.parse().map_err(|_| err("bad SEED"))?,
            None => rand::random(),
        };
        Source::Random { len, seed }
    } else if let Some(rest) = src.strip_prefix("paced:") {
        let mut parts = rest.splitn(3, ':');
        let len = parse_size(parts.next().unwrap_or("")).ok_or_else(|| err("bad BYTES"))?;
        let rate = parse_size(parts.next().unwrap_or(""))
            .filter(|r| *r > 0)
            .ok_or_else(|| err("bad RATE (bytes per second, e.g. 64K)"))?;
        let seed = match parts.next() {
            Some(s) => s.parse().map_err(|_| err("bad SEED"))?,
            None => rand::random(),
        };
        Source::Paced { len, rate, seed }
    } else if let Some(len) = src.strip_prefix("zero:") {
        Source::Zeros {
            len: parse_size(len).ok_or_else(|| err("bad BYTES"))?,
        }
    } else {
        return Err(err("unknown source kind"));
    };
    Ok((name.to_string(), source))
}

/// Parses a byte count with an optional K/M/G (binary) suffix.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = match s.chars().last()? {
        'k' | 'K' => (&s[..s.len() - 1], 1u64 << 10),
        'm' | 'M' => (&s[..s.len() - 1], 1 << 20),
        'g' | 'G' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mult)
}

fn not_finite() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "a live source has no length and is read once",
    )
}

/// A reader over a source from some offset.
pub type SourceReader = Pin<Box<dyn AsyncRead + Send>>;

impl Source {
    /// Whether the stream takes bytes from the buyer (`echo:`, `inbox:`).
    pub fn is_inbound(&self) -> bool {
        matches!(self, Source::Echo | Source::Inbox(_))
    }

    /// Whether the source is live (read once, fanned out).
    pub fn is_live(&self) -> bool {
        matches!(self, Source::Live(_))
    }

    /// The pacing rate in bytes per second, for paced sources.
    pub fn rate(&self) -> Option<u64> {
        match self {
            Source::Paced { rate, .. } => Some(*rate),
            _ => None,
        }
    }

    /// Length in bytes (a file's errors name the file).
    pub async fn len(&self) -> io::Result<u64> {
        match self {
            Source::File(p) => Ok(tokio::fs::metadata(p).await.map_err(at(p))?.len()),
            Source::Random { len, .. } | Source::Paced { len, .. } | Source::Zeros { len } => {
                Ok(*len)
            }
            Source::Live(_) | Source::Echo | Source::Inbox(_) => Err(not_finite()),
        }
    }

    /// Reads the whole source once and returns its length and SHA-256.
    pub async fn digest(&self) -> io::Result<(u64, [u8; 32])> {
        let len = self.len().await?;
        let mut reader = self.open_at(0, len).await?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0u64;
        loop {
            let n = reader.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            total += n as u64;
        }
        if total != len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "source changed while hashing",
            ));
        }
        Ok((len, hasher.finalize().into()))
    }

    /// A reader of bytes `offset..len`.
    pub async fn open_at(&self, offset: u64, len: u64) -> io::Result<SourceReader> {
        match self {
            Source::File(p) => {
                let mut f = tokio::fs::File::open(p).await.map_err(at(p))?;
                f.seek(io::SeekFrom::Start(offset)).await?;
                Ok(Box::pin(f.take(len.saturating_sub(offset))))
            }
            Source::Random { seed, len: total }
            | Source::Paced {
                seed, len: total, ..
            } => {
                let end = len.min(*total);
                Ok(Box::pin(RandomReader::new(*seed, offset, end)))
            }
            Source::Zeros { len: total } => {
                let n = len.min(*total).saturating_sub(offset);
                Ok(Box::pin(tokio::io::repeat(0).take(n)))
            }
            Source::Live(_) | Source::Echo | Source::Inbox(_) => Err(not_finite()),
        }
    }
}

/// Deterministic random bytes, seekable. The byte at offset `i` is byte
/// `i % 64` of ChaCha8 block `i / 64`, so the content never depends on how
/// it is read (the RNG itself discards partial words between calls).
struct RandomReader {
    rng: ChaCha8Rng,
    block: [u8; 64],
    /// Next unread byte of `block` (64 = exhausted).
    index: usize,
    pos: u64,
    end: u64,
}

impl RandomReader {
    fn new(seed: u64, offset: u64, end: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        // 16 words of 32 bits per 64-byte block.
        rng.set_word_pos(u128::from(offset / 64) * 16);
        let mut block = [0u8; 64];
        rng.fill_bytes(&mut block);
        Self {
            rng,
            block,
            index: (offset % 64) as usize,
            pos: offset,
            end,
        }
    }

    fn fill(&mut self, dst: &mut [u8]) {
        let mut done = 0;
        while done < dst.len() {
            if self.index == 64 {
                let whole = (dst.len() - done) / 64 * 64;
                if whole > 0 {
                    // Whole blocks straight into the output: same bytes, no copy.
                    self.rng.fill_bytes(&mut dst[done..done + whole]);
                    done += whole;
                    continue;
                }
                self.rng.fill_bytes(&mut self.block);
                self.index = 0;
            }
            let n = (64 - self.index).min(dst.len() - done);
            dst[done..done + n].copy_from_slice(&self.block[self.index..self.index + n]);
            self.index += n;
            done += n;
        }
    }
}

impl AsyncRead for RandomReader {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let left = this.end.saturating_sub(this.pos);
        let n = (buf.remaining() as u64).min(left) as usize;
        if n > 0 {
            let dst = buf.initialize_unfilled_to(n);
            this.fill(dst);
            buf.advance(n);
            this.pos += n as u64;
        }
        Poll::Ready(Ok(()))
    }
}

/// An I/O error on `path`, saying which file (the kind kept).
fn at(path: &std::path::Path) -> impl FnOnce(io::Error) -> io::Error + '_ {
    move |e| io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_file_is_named_in_the_error() {
        let src = Source::File("/nonexistent/sensor.log".into());
        let e = src.digest().await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(
            e.to_string().starts_with("/nonexistent/sensor.log: "),
            "{e}"
        );
        let e = src.open_at(0, 1).await.err().expect("no such file");
        assert!(e.to_string().contains("/nonexistent/sensor.log"), "{e}");
    }

    #[tokio::test]
    async fn random_source_is_the_same_for_any_offset_and_read_size() {
        let len = 5000u64;
        let src = Source::Random { len, seed: 7 };
        let mut whole = Vec::new();
        src.open_at(0, len)
            .await
            .unwrap()
            .read_to_end(&mut whole)
            .await
            .unwrap();
        assert_eq!(whole.len() as u64, len);
        for off in [1u64, 2, 3, 4, 5, 63, 64, 65, 333, 4999, 5000] {
            for chunk in [1usize, 3, 7, 64, 100, 4096] {
                let mut reader = src.open_at(off, len).await.unwrap();
                let mut part = Vec::new();
                let mut buf = vec![0u8; chunk];
                loop {
                    let n = reader.read(&mut buf).await.unwrap();
                    if n == 0 {
                        break;
                    }
                    part.extend_from_slice(&buf[..n]);
                }
                assert_eq!(
                    part,
                    whole[off as usize..],
                    "offset {off}, reads of {chunk}"
                );
            }
        }
    }

    #[test]
    fn specs_parse_and_bad_ones_explain() {
        assert_eq!(
            parse_stream_spec("a=random:4M:9").unwrap(),
            (
                "a".into(),
                Source::Random {
                    len: 4 << 20,
                    seed: 9
                }
            )
        );
        assert_eq!(
            parse_stream_spec("log=file:/tmp/x").unwrap().1,
            Source::File("/tmp/x".into())
        );
        assert_eq!(
            parse_stream_spec("ticks=exec:seq 1 10").unwrap().1,
            Source::Live(super::super::live::LiveSpec::Exec("seq 1 10".into()))
        );
        assert!(parse_stream_spec("in=stdin:").unwrap().1.is_live());
        assert!(parse_stream_spec("log=tail:/var/log/x")
            .unwrap()
            .1
            .is_live());
        assert!(parse_stream_spec("t=tcp:127.0.0.1:9000")
            .unwrap()
            .1
            .is_live());
        for bad in [
            "t=tcp:127.0.0.1",
            "t=tcp::80",
            "t=exec:",
            "t=tail:",
            "nope",
            "=random:1",
            "../x=random:1",
            "a=random:xx",
            "a=ftp:x",
        ] {
            assert!(parse_stream_spec(bad).is_err(), "{bad}");
        }
    }
}
