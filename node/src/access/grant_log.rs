//! The provider's grants on disk, so a restart honours what it sold:
//!
//! ```text
//!   DATA_DIR/grants.jsonl   one line per grant or renewal: {"peer","stream","until_ms"}
//! ```
//! A grant's line is written and synced before the answer announcing it
//! is posted. On opening, the file is read (the latest end per peer and
//! stream wins, ended grants are dropped) and rewritten with the live ones;
//! the same compaction runs hourly, so the file holds at most an hour of
//! answers beyond the live grants.

use libp2p::PeerId;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// One grant: who may fetch what, until when (Unix ms).
pub type Grant = (PeerId, String, u64);

#[derive(Serialize, Deserialize)]
struct Line {
    peer: String,
    stream: String,
    until_ms: u64,
}

/// The grant file of one provider; clones share it.
#[derive(Debug, Clone)]
pub struct GrantLog {
    path: PathBuf,
    file: Arc<Mutex<std::fs::File>>,
}

impl GrantLog {
    /// Opens `data_dir/grants.jsonl`; returns it and the grants live at
    /// `now_ms` (the file is compacted to them). Bad lines are skipped
    /// with a warning: a damaged file loses those grants, nothing else.
    pub fn open(data_dir: &Path, now_ms: u64) -> std::io::Result<(Self, Vec<Grant>)> {
        std::fs::create_dir_all(data_dir)?;
        let path = data_dir.join("grants.jsonl");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e),
        };
        let mut latest: HashMap<(PeerId, String), u64> = HashMap::new();
        let mut bad = 0usize;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let parsed = serde_json::from_str::<Line>(line)
                .ok()
                .and_then(|l| Some((l.peer.parse::<PeerId>().ok()?, l.stream, l.until_ms)));
            match parsed {
                Some((peer, stream, until)) => {
                    let e = latest.entry((peer, stream)).or_default();
                    *e = (*e).max(until);
                }
                None => bad += 1,
            }
        }
        if bad > 0 {
            tracing::warn!(bad, path = %path.display(), "unreadable grant lines skipped");
        }
        let live: Vec<Grant> = (latest.into_iter())
            .filter(|(_, until)| *until > now_ms)
            .map(|((peer, stream), until)| (peer, stream, until))
            .collect();
        let file = rewrite(&path, &live)?;
        let log = Self {
            path,
            file: Arc::new(Mutex::new(file)),
        };
        Ok((log, live))
    }

    /// Appends `grants` and syncs them to disk.
    pub fn append(&self, grants: &[Grant]) -> std::io::Result<()> {
        if grants.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::new();
        for g in grants {
            serde_json::to_writer(&mut buf, &line(g))?;
            buf.push(b'\n');
        }
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        f.write_all(&buf)?;
        f.sync_data()
    }

    /// Rewrites the file with `live` only (atomically: write, sync, rename).
    pub fn compact(&self, live: &[Grant]) -> std::io::Result<()> {
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        *f = rewrite(&self.path, live)?;
        Ok(())
    }
}

fn line(g: &Grant) -> Line {
    Line {
        peer: g.0.to_string(),
        stream: g.1.clone(),
        until_ms: g.2,
    }
}

/// Writes `live` to a fresh file in `path`'s place; returns it opened for appends.
fn rewrite(path: &Path, live: &[Grant]) -> std::io::Result<std::fs::File> {
    let tmp = path.with_extension("jsonl.tmp");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        for g in live {
            serde_json::to_writer(&mut f, &line(g))?;
            f.write_all(b"\n")?;
        }
        f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    std::fs::OpenOptions::new().append(true).open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_survive_a_reopen_latest_end_wins_and_ended_ones_go() {
        let dir = crate::scratch::TempDir::new("lm-grants").unwrap();
        let (p, q) = (PeerId::random(), PeerId::random());
        let (log, live) = GrantLog::open(dir.path(), 1_000).unwrap();
        assert!(live.is_empty());
        log.append(&[(p, "feed".into(), 5_000), (q, "logs".into(), 2_000)])
            .unwrap();
        log.append(&[(p, "feed".into(), 9_000)]).unwrap();
        // A torn last line (a crash mid-write) is skipped.
        std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join("grants.jsonl"))
            .unwrap()
            .write_all(b"{\"peer\":")
            .unwrap();
        let (again, mut live) = GrantLog::open(dir.path(), 3_000).unwrap();
        live.sort();
        assert_eq!(live, vec![(p, "feed".to_string(), 9_000)]);
        // Compacted on opening: one line left, and appends go on.
        let text = std::fs::read_to_string(dir.path().join("grants.jsonl")).unwrap();
        assert_eq!(text.lines().count(), 1);
        again.append(&[(q, "logs".into(), 10_000)]).unwrap();
        let (_, live) = GrantLog::open(dir.path(), 3_000).unwrap();
        assert_eq!(live.len(), 2);
    }
}
