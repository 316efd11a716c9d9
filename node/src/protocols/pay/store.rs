//! A payee's vouchers on disk: the highest voucher of each channel is money
//! owed to it until claimed, so it is written and synced before the payer
//! is told it was accepted. After a crash the vouchers are read back and
//! claimed, and an attach on the same channel counts from the highest one.
//! Only a voucher above the one held is written; the file is rewritten
//! with one line per channel whenever it holds more than twice that.
//!
//! ```text
//!   DATA_DIR/vouchers.jsonl   {"payer","channel","cumulative","signature"} per accepted voucher
//! ```

use ledgermesh_ledger::payments::SignedVoucher;
use libp2p::PeerId;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

#[derive(Serialize, Deserialize)]
struct Line {
    payer: String,
    channel: String,
    cumulative: String,
    signature: String,
}

fn parse(l: Line) -> Option<(PeerId, SignedVoucher)> {
    Some((
        l.payer.parse().ok()?,
        SignedVoucher {
            channel: hex::decode(l.channel).ok()?.try_into().ok()?,
            cumulative: l.cumulative.parse().ok()?,
            signature: hex::decode(l.signature).ok()?.try_into().ok()?,
        },
    ))
}

fn line(payer: &PeerId, v: &SignedVoucher) -> Line {
    Line {
        payer: payer.to_string(),
        channel: hex::encode(v.channel),
        cumulative: v.cumulative.to_string(),
        signature: hex::encode(v.signature),
    }
}

/// The voucher file of one payee, and the highest voucher of each channel.
#[derive(Debug)]
pub struct VoucherStore {
    path: PathBuf,
    inner: Mutex<Kept>,
}

#[derive(Debug)]
struct Kept {
    file: std::fs::File,
    highest: HashMap<[u8; 32], (PeerId, SignedVoucher)>,
    lines: usize,
}

/// Lines beyond twice the channels held before the file is rewritten.
const SLACK_LINES: usize = 64;

impl VoucherStore {
    /// Opens `dir/vouchers.jsonl`; returns it and the latest voucher of
    /// each channel found there (a torn last line is skipped).
    pub fn open(dir: &Path) -> std::io::Result<(Self, Vec<(PeerId, SignedVoucher)>)> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("vouchers.jsonl");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e),
        };
        let mut highest: HashMap<[u8; 32], (PeerId, SignedVoucher)> = HashMap::new();
        let mut lines = 0;
        for l in text.lines().filter(|l| !l.trim().is_empty()) {
            lines += 1;
            let Some((payer, v)) = serde_json::from_str::<Line>(l).ok().and_then(parse) else {
                tracing::warn!(path = %path.display(), "unreadable voucher line skipped");
                continue;
            };
            let keep = highest
                .get(&v.channel)
                .is_none_or(|(_, old)| old.cumulative < v.cumulative);
            if keep {
                highest.insert(v.channel, (payer, v));
            }
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        let found = highest.values().cloned().collect();
        let store = Self {
            path,
            inner: Mutex::new(Kept {
                file,
                highest,
                lines,
            }),
        };
        Ok((store, found))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The highest voucher held for `channel`.
    pub fn highest(&self, channel: &[u8; 32]) -> Option<SignedVoucher> {
        self.lock().highest.get(channel).map(|(_, v)| v.clone())
    }

    /// The highest voucher of every channel.
    pub fn all(&self) -> Vec<SignedVoucher> {
        self.lock()
            .highest
            .values()
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Keeps `v` from `payer` if it is above the one held, synced before
    /// it returns; rewrites the file when it has grown.
    pub fn append(&self, payer: &PeerId, v: &SignedVoucher) -> std::io::Result<()> {
        let mut k = self.lock();
        let above =
            (k.highest.get(&v.channel)).is_none_or(|(_, old)| old.cumulative < v.cumulative);
        if !above {
            return Ok(());
        }
        let mut buf = serde_json::to_vec(&line(payer, v))?;
        buf.push(b'\n');
        k.file.write_all(&buf)?;
        k.file.sync_data()?;
        k.highest.insert(v.channel, (*payer, v.clone()));
        k.lines += 1;
        if k.lines > 2 * k.highest.len() + SLACK_LINES {
            self.rewrite(&mut k)?;
        }
        Ok(())
    }

    /// Rewrites the file with `keep` only (the vouchers not yet claimed).
    pub fn compact(&self, keep: &[(PeerId, SignedVoucher)]) -> std::io::Result<()> {
        let mut k = self.lock();
        k.highest = keep
            .iter()
            .map(|(p, v)| (v.channel, (*p, v.clone())))
            .collect();
        self.rewrite(&mut k)
    }

    fn rewrite(&self, k: &mut Kept) -> std::io::Result<()> {
        let tmp = self.path.with_extension("jsonl.tmp");
        {
            let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
            for (p, v) in k.highest.values() {
                serde_json::to_writer(&mut f, &line(p, v))?;
                f.write_all(b"\n")?;
            }
            f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        k.file = std::fs::OpenOptions::new().append(true).open(&self.path)?;
        k.lines = k.highest.len();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_voucher_of_each_channel_survives_a_reopen() {
        let dir = crate::scratch::TempDir::new("lm-vouchers").unwrap();
        let payer = PeerId::random();
        let v = |channel: u8, cumulative: u128| SignedVoucher {
            channel: [channel; 32],
            cumulative,
            signature: [7; 65],
        };
        let (store, found) = VoucherStore::open(dir.path()).unwrap();
        assert!(found.is_empty());
        for x in [v(1, 10), v(1, 30), v(2, 5), v(1, 20)] {
            store.append(&payer, &x).unwrap();
        }
        let (store, mut found) = VoucherStore::open(dir.path()).unwrap();
        found.sort_by_key(|(_, v)| v.channel);
        assert_eq!(found, vec![(payer, v(1, 30)), (payer, v(2, 5))]);
        assert_eq!(store.highest(&[1; 32]), Some(v(1, 30)));
        store.compact(&[(payer, v(2, 5))]).unwrap();
        let (_, found) = VoucherStore::open(dir.path()).unwrap();
        assert_eq!(found, vec![(payer, v(2, 5))]);
    }

    #[test]
    fn only_higher_vouchers_are_written_and_the_file_stays_one_line_per_channel() {
        let dir = crate::scratch::TempDir::new("lm-vouchers-compact").unwrap();
        let payer = PeerId::random();
        let (store, _) = VoucherStore::open(dir.path()).unwrap();
        for c in 1..=1_000u128 {
            let x = SignedVoucher {
                channel: [1; 32],
                cumulative: c,
                signature: [7; 65],
            };
            store.append(&payer, &x).unwrap();
            store.append(&payer, &x).unwrap();
        }
        let text = std::fs::read_to_string(dir.path().join("vouchers.jsonl")).unwrap();
        assert!(
            text.lines().count() <= 2 + SLACK_LINES,
            "{} lines",
            text.lines().count()
        );
        assert_eq!(store.highest(&[1; 32]).unwrap().cumulative, 1_000);
        let (_, found) = VoucherStore::open(dir.path()).unwrap();
        assert_eq!(found.len(), 1, "the highest, kept for the record");
    }
}
