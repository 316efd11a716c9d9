//! The provider's answer journal: each sealed response is written to disk
//! *before* it is posted, and marked once posted. After a crash at any
//! point, a request read again is answered with the very same bytes (the
//! requester's replay cache drops a second copy) or not at all (it was
//! posted and marked), so every request is answered exactly once as the
//! requester sees it.
//!
//! ```text
//!   DATA_DIR/answers/<sender>-<request nonce>.pending   sealed response, fsynced before the post
//!   DATA_DIR/answers/<sender>-<request nonce>.posted    after the post (content kept for lookups)
//! ```
//! Entries older than [`KEEP`] (longer than any request lives) are removed
//! when the journal opens and then hourly.

use libp2p::PeerId;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// How long entries are kept: past every request's lifetime (10 minutes)
/// and clock skew.
pub const KEEP: Duration = Duration::from_secs(30 * 60);

/// What the journal knows of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answered {
    /// Nothing: answer it.
    No,
    /// Sealed, perhaps posted: post these bytes again.
    Pending(Vec<u8>),
    /// Posted.
    Posted,
}

/// The journal in one directory.
#[derive(Debug, Clone)]
pub struct AnswerJournal {
    dir: PathBuf,
}

impl AnswerJournal {
    /// Opens (creating) `data_dir/answers` and forgets old entries.
    pub fn open(data_dir: &Path) -> std::io::Result<Self> {
        let dir = data_dir.join("answers");
        std::fs::create_dir_all(&dir)?;
        let journal = Self { dir };
        journal.prune();
        Ok(journal)
    }

    fn path(&self, sender: &PeerId, nonce: &[u8; 16], ext: &str) -> PathBuf {
        self.dir
            .join(format!("{sender}-{}.{ext}", hex::encode(nonce)))
    }

    /// What is known of the request `nonce` from `sender`.
    pub fn lookup(&self, sender: &PeerId, nonce: &[u8; 16]) -> Answered {
        if self.path(sender, nonce, "posted").exists() {
            return Answered::Posted;
        }
        match std::fs::read(self.path(sender, nonce, "pending")) {
            Ok(bytes) if !bytes.is_empty() => Answered::Pending(bytes),
            _ => Answered::No,
        }
    }

    /// Records the sealed answer before it is posted (written, fsynced,
    /// renamed into place).
    pub fn intend(&self, sender: &PeerId, nonce: &[u8; 16], sealed: &[u8]) -> std::io::Result<()> {
        let path = self.path(sender, nonce, "pending");
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(sealed)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        sync_dir(&self.dir)
    }

    /// Marks the answer posted.
    pub fn posted(&self, sender: &PeerId, nonce: &[u8; 16]) -> std::io::Result<()> {
        std::fs::rename(
            self.path(sender, nonce, "pending"),
            self.path(sender, nonce, "posted"),
        )?;
        sync_dir(&self.dir)
    }

    /// Removes entries older than [`KEEP`].
    pub fn prune(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let now = SystemTime::now();
        for e in entries.flatten() {
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|age| age > KEEP);
            if old {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// A test hook: `LEDGERMESH_FAILPOINT=<name>` makes the process exit (code
/// 86) when it reaches the named point, as a crash there would.
pub fn failpoint(name: &str) {
    if std::env::var("LEDGERMESH_FAILPOINT").is_ok_and(|v| v == name) {
        tracing::error!(
            failpoint = name,
            "failpoint reached: exiting as a crash would"
        );
        std::process::exit(86);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_pending_until_posted_and_survives_a_reopen() {
        let dir = std::env::temp_dir().join(format!("lm-journal-{}", rand::random::<u64>()));
        let j = AnswerJournal::open(&dir).unwrap();
        let (peer, nonce) = (PeerId::random(), [3u8; 16]);
        assert_eq!(j.lookup(&peer, &nonce), Answered::No);
        j.intend(&peer, &nonce, b"sealed").unwrap();
        let j = AnswerJournal::open(&dir).unwrap();
        assert_eq!(
            j.lookup(&peer, &nonce),
            Answered::Pending(b"sealed".to_vec())
        );
        j.posted(&peer, &nonce).unwrap();
        assert_eq!(j.lookup(&peer, &nonce), Answered::Posted);
        assert_eq!(
            j.lookup(&PeerId::random(), &nonce),
            Answered::No,
            "per sender"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
