//! Remembers, per ledger topic, the cursor of the last message handled, so a
//! restarted node neither misses nor re-processes messages.

use ledgermesh_ledger::Cursor;
use std::path::{Path, PathBuf};

/// A cursor file in the node's data directory.
#[derive(Debug, Clone)]
pub struct CursorStore {
    path: PathBuf,
}

impl CursorStore {
    /// The store for `topic_hex` under `data_dir` (scoped by ledger, since
    /// cursors of one chain mean nothing on another).
    pub fn new(data_dir: &Path, ledger_id: &str, topic_hex: &str) -> Self {
        let ledger: String = ledger_id
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .take(96)
            .collect();
        Self {
            path: data_dir
                .join("cursors")
                .join(ledger)
                .join(format!("{topic_hex}.cursor")),
        }
    }

    /// The saved cursor, if any (an unreadable file counts as none, with a warning).
    pub fn load(&self) -> Option<Cursor> {
        let text = std::fs::read_to_string(&self.path).ok()?;
        let mut parts = text.trim().split(':');
        let parsed = (|| {
            Some(Cursor {
                block: parts.next()?.parse().ok()?,
                index: parts.next()?.parse().ok()?,
            })
        })();
        if parsed.is_none() {
            tracing::warn!(path = %self.path.display(), "unreadable cursor file ignored");
        }
        parsed
    }

    /// Saves `cursor` atomically (write, fsync, rename).
    pub fn save(&self, cursor: Cursor) -> std::io::Result<()> {
        use std::io::Write;
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = self.path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp)?;
        write!(f, "{}:{}", cursor.block, cursor.index)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_survives_a_restart() {
        let dir = std::env::temp_dir().join(format!("lm-cursor-{}", std::process::id()));
        let store = CursorStore::new(&dir, "evm:http://127.0.0.1:8545@0xabc", "ff00");
        assert_eq!(store.load(), None);
        store
            .save(Cursor {
                block: 42,
                index: 3,
            })
            .unwrap();
        let again = CursorStore::new(&dir, "evm:http://127.0.0.1:8545@0xabc", "ff00");
        assert_eq!(
            again.load(),
            Some(Cursor {
                block: 42,
                index: 3
            })
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
