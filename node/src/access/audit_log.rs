//! The audit log: append-only JSON lines, one per access decision, flushed
//! per line, rotated by size (`FILE` → `FILE.1` → … → `FILE.N`, the oldest
//! dropped).

use ledgermesh_protocol::access::AuditRecord;
use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Default size at which the log is rotated.
pub const DEFAULT_MAX_BYTES: u64 = 16 << 20;
/// Default number of rotated files kept.
pub const DEFAULT_KEEP: usize = 5;

/// Errors opening or writing the audit log.
#[derive(Debug, thiserror::Error)]
pub enum AuditLogError {
    /// The file could not be opened, written or rotated.
    #[error("audit log {path}: {source}")]
    Io {
        /// The log file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// One line of the log. Every key is always present (null when it does not
/// apply), so the file is easy to query: a contract, add keys only.
#[derive(Debug, Serialize)]
pub struct AuditLine<'a> {
    /// Unix ms.
    pub ts_ms: u64,
    /// `grant`, `renew`, `refuse`, `serve_start`, `serve_end`, `expire`, `acl_reload`, `acl_error`.
    pub event: &'a str,
    /// The node's label (`provider`, `consumer`, `relay`).
    pub node: &'a str,
    /// The peer concerned.
    pub peer_id: Option<String>,
    /// The stream concerned.
    pub stream: Option<&'a str>,
    /// Why.
    pub reason: Option<&'a str>,
    /// Bytes served.
    pub bytes: Option<u64>,
    /// Offset served from.
    pub offset: Option<u64>,
    /// When the grant concerned ends (unix ms).
    pub expires_ms: Option<u64>,
    /// Free text (ACL errors, sources).
    pub detail: Option<&'a str>,
}

impl<'a> AuditLine<'a> {
    /// The line for `r`, written by node `node`.
    pub fn of(r: &'a AuditRecord, node: &'a str) -> Self {
        Self {
            ts_ms: r.ts_ms,
            event: r.kind.as_str(),
            node,
            peer_id: r.peer.map(|p| p.to_string()),
            stream: r.stream.as_deref(),
            reason: r.reason.as_deref(),
            bytes: r.bytes,
            offset: r.offset,
            expires_ms: r.expires_ms,
            detail: r.detail.as_deref(),
        }
    }
}

#[derive(Debug)]
struct State {
    file: File,
    size: u64,
}

/// An open audit log; clones share the file.
#[derive(Debug, Clone)]
pub struct AuditLog {
    path: PathBuf,
    max_bytes: u64,
    keep: usize,
    state: Arc<Mutex<State>>,
}

impl AuditLog {
    /// Opens (or creates) `path` for appending; rotates at `max_bytes`,
    /// keeping `keep` old files.
    pub fn open(path: &Path, max_bytes: u64, keep: usize) -> Result<Self, AuditLogError> {
        let err = |source| AuditLogError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(err)?;
        let size = file.metadata().map_err(err)?.len();
        Ok(Self {
            path: path.to_path_buf(),
            max_bytes: max_bytes.max(1),
            keep,
            state: Arc::new(Mutex::new(State { file, size })),
        })
    }

    /// The log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The `n`th rotated file (`FILE.n`).
    pub fn rotated(&self, n: usize) -> PathBuf {
        let mut s = self.path.as_os_str().to_owned();
        s.push(format!(".{n}"));
        PathBuf::from(s)
    }

    /// Appends one line and flushes it, rotating first when it would not fit.
    pub fn append(&self, line: &AuditLine<'_>) -> Result<(), AuditLogError> {
        let mut text = serde_json::to_string(line).unwrap_or_default();
        text.push('\n');
        let err = |source| AuditLogError::Io {
            path: self.path.clone(),
            source,
        };
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.size > 0 && st.size + text.len() as u64 > self.max_bytes {
            self.rotate(&mut st).map_err(err)?;
        }
        st.file.write_all(text.as_bytes()).map_err(err)?;
        st.file.flush().map_err(err)?;
        st.size += text.len() as u64;
        Ok(())
    }

    fn rotate(&self, st: &mut State) -> std::io::Result<()> {
        if self.keep == 0 {
            st.file.set_len(0)?;
            st.size = 0;
            return Ok(());
        }
        let _ = std::fs::remove_file(self.rotated(self.keep));
        for n in (1..self.keep).rev() {
            let from = self.rotated(n);
            if from.exists() {
                std::fs::rename(&from, self.rotated(n + 1))?;
            }
        }
        std::fs::rename(&self.path, self.rotated(1))?;
        st.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        st.size = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ledgermesh_protocol::access::AuditKind;

    fn record(i: u64) -> AuditRecord {
        let peer = libp2p::identity::Keypair::generate_ed25519()
            .public()
            .to_peer_id();
        let mut r = AuditRecord::new(1_000 + i, AuditKind::ServeEnd)
            .about(peer, "feed")
            .reason("completed");
        r.bytes = Some(i);
        r.offset = Some(0);
        r
    }

    fn lines(p: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("every line is JSON"))
            .collect()
    }

    #[test]
    fn lines_carry_every_key_and_rotation_keeps_n_files() {
        let dir = std::env::temp_dir().join(format!("lm-audit-{}", rand::random::<u64>()));
        let path = dir.join("audit.jsonl");
        let log = AuditLog::open(&path, 600, 2).unwrap();
        for i in 0..20 {
            log.append(&AuditLine::of(&record(i), "provider")).unwrap();
        }
        let current = lines(&path);
        let first = &current[0];
        for key in [
            "ts_ms",
            "event",
            "node",
            "peer_id",
            "stream",
            "reason",
            "bytes",
            "offset",
            "expires_ms",
            "detail",
        ] {
            assert!(first.get(key).is_some(), "missing {key}: {first}");
        }
        assert_eq!(first["event"], "serve_end");
        assert!(std::fs::metadata(&path).unwrap().len() <= 600);
        let (r1, r2) = (lines(&log.rotated(1)), lines(&log.rotated(2)));
        assert!(!r1.is_empty() && !r2.is_empty());
        assert!(!log.rotated(3).exists(), "only two rotated files are kept");
        // The newest lines are in the live file, the order is kept across files.
        assert_eq!(current.last().unwrap()["bytes"], 19);
        let all: Vec<u64> = r2
            .iter()
            .chain(&r1)
            .chain(&current)
            .map(|v| v["bytes"].as_u64().unwrap())
            .collect();
        assert!(all.windows(2).all(|w| w[1] == w[0] + 1), "{all:?}");
        // Reopening appends.
        let again = AuditLog::open(&path, 1 << 20, 2).unwrap();
        again
            .append(&AuditLine::of(&record(99), "provider"))
            .unwrap();
        assert_eq!(lines(&path).len(), current.len() + 1);
        let _ = std::fs::remove_dir_all(dir);
    }
}
