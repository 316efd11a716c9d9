//! A scratch directory removed on drop (kept for a look under
//! `LEDGERMESH_KEEP_TMP`), for tests and the development tools.

use std::path::PathBuf;

/// A directory removed on drop.
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A fresh directory `<tmp>/<prefix>-<pid>-<random>`.
    pub fn new(prefix: &str) -> std::io::Result<Self> {
        let path = std::env::temp_dir().join(format!(
            "{prefix}-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&path)?;
        Ok(Self(path))
    }

    /// The directory.
    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

/// Whether scratch directories are kept for a look after the run
/// (`LEDGERMESH_KEEP_TMP` set to anything but `0`).
pub fn keep_tmp() -> bool {
    std::env::var_os("LEDGERMESH_KEEP_TMP").is_some_and(|v| v != "0")
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if keep_tmp() {
            eprintln!("kept {}", self.0.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
