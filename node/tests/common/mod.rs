//! Reading the workspace's sources, for the tests of the house's rules.
#![allow(dead_code)] // each test file uses a part

use std::path::{Path, PathBuf};

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Every `.rs` file under `dir`.
pub fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read src") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The non-test code of each file under `dir` (a `tests.rs` has none; in
/// other files, test code starts at the first `#[cfg(test)]`), by its path
/// relative to `dir`.
pub fn non_test_code(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut files = vec![];
    rust_files(dir, &mut files);
    files.sort();
    files
        .into_iter()
        .filter(|f| f.file_name().is_some_and(|n| n != "tests.rs"))
        .map(|f| {
            let text = std::fs::read_to_string(&f).expect("read");
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            let rel = f.strip_prefix(dir).expect("under dir").to_path_buf();
            (rel, code.to_string())
        })
        .collect()
}
