//! A payee's vouchers on disk: the latest voucher of each channel is money
//! owed to it until claimed, so it is written and synced before the payer
//! is told it was accepted. After a crash the vouchers are read back and
//! claimed.
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

/// The voucher file of one payee.
#[derive(Debug)]
pub struct VoucherStore {
    path: PathBuf,
    file: Mutex<std::fs::File>,
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
        let mut latest: HashMap<[u8; 32], (PeerId, SignedVoucher)> = HashMap::new();
        for l in text.lines().filter(|l| !l.trim().is_empty()) {
            let Some((payer, v)) = serde_json::from_str::<Line>(l).ok().and_then(parse) else {
                tracing::warn!(path = %path.display(), "unreadable voucher line skipped");
                continue;
            };
            let keep = latest
                .get(&v.channel)
                .is_none_or(|(_, old)| old.cumulative < v.cumulative);
            if keep {
                latest.insert(v.channel, (payer, v));
            }
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        let store = Self {
            path,
            file: Mutex::new(file),
        };
        Ok((store, latest.into_values().collect()))
    }

    /// Appends `v` from `payer` and syncs it.
    pub fn append(&self, payer: &PeerId, v: &SignedVoucher) -> std::io::Result<()> {
        let mut buf = serde_json::to_vec(&line(payer, v))?;
        buf.push(b'\n');
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        f.write_all(&buf)?;
        f.sync_data()
    }

    /// Rewrites the file with `keep` only (the vouchers not yet claimed).
    pub fn compact(&self, keep: &[(PeerId, SignedVoucher)]) -> std::io::Result<()> {
        let tmp = self.path.with_extension("jsonl.tmp");
        {
            let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
            for (p, v) in keep {
                serde_json::to_writer(&mut f, &line(p, v))?;
                f.write_all(b"\n")?;
            }
            f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        let file = std::fs::OpenOptions::new().append(true).open(&self.path)?;
        *self.file.lock().unwrap_or_else(|p| p.into_inner()) = file;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_voucher_of_each_channel_survives_a_reopen() {
        let dir = crate::dev::TempDir::new("lm-vouchers").unwrap();
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
        store.compact(&[(payer, v(2, 5))]).unwrap();
        let (_, found) = VoucherStore::open(dir.path()).unwrap();
        assert_eq!(found, vec![(payer, v(2, 5))]);
    }
}
