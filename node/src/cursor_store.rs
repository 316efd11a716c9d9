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

    /// The saved cursor and, where the ledger has replaceable blocks, the
    /// hash of the cursor's block when it was saved (an unreadable file
    /// counts as none, with a warning).
    pub fn load(&self) -> Option<Saved> {
        let text = std::fs::read_to_string(&self.path).ok()?;
        let mut parts = text.trim().split(':');
        let parsed = (|| {
            let cursor = Cursor {
                block: parts.next()?.parse().ok()?,
                index: parts.next()?.parse().ok()?,
            };
            let block_hash = match parts.next() {
                None => None,
                Some(h) => Some(hex::decode(h).ok()?.try_into().ok()?),
            };
            Some(Saved { cursor, block_hash })
        })();
        if parsed.is_none() {
            tracing::warn!(path = %self.path.display(), "unreadable cursor file ignored");
        }
        parsed
    }

    /// Saves `saved` atomically (write, fsync, rename): `block:index`, then
    /// `:hash` in hex when there is one.
    pub fn save(&self, saved: Saved) -> std::io::Result<()> {
        use std::io::Write;
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = self.path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp)?;
        let Saved { cursor, block_hash } = saved;
        write!(f, "{}:{}", cursor.block, cursor.index)?;
        if let Some(h) = block_hash {
            write!(f, ":{}", hex::encode(h))?;
        }
        f.sync_all()?;
        std::fs::rename(&tmp, &self.path)
    }
}

/// A saved position: the cursor, and its block's hash when it was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Saved {
    /// The cursor of the last message handled.
    pub cursor: Cursor,
    /// The hash of its block (ledgers whose blocks a reorg can replace).
    pub block_hash: Option<[u8; 32]>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_survives_a_restart_with_its_block_hash() {
        let dir = std::env::temp_dir().join(format!("lm-cursor-{}", std::process::id()));
        let store = CursorStore::new(&dir, "evm:http://127.0.0.1:8545@0xabc", "ff00");
        assert_eq!(store.load(), None);
        let cursor = Cursor {
            block: 42,
            index: 3,
        };
        let saved = Saved {
            cursor,
            block_hash: Some([7; 32]),
        };
        store.save(saved).unwrap();
        let again = CursorStore::new(&dir, "evm:http://127.0.0.1:8545@0xabc", "ff00");
        assert_eq!(again.load(), Some(saved));
        // Without a hash (the memory ledger), and the old two-field files.
        let bare = Saved {
            cursor,
            block_hash: None,
        };
        store.save(bare).unwrap();
        assert_eq!(again.load(), Some(bare));
        std::fs::write(&store.path, "42:3:nothex").unwrap();
        assert_eq!(again.load(), None, "a damaged hash is no cursor");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
