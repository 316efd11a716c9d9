//! The ACL file (`provide --acl FILE`): TOML, one `[[allow]]` table per entry.
//!
//! ```toml
//! [[allow]]
//! peer = "12D3KooW..."          # a PeerId, or "*" for everyone
//! streams = ["feed", "logs"]     # names, or "*" (or ["*"]) for every stream
//! expires = "2026-12-31T23:59:59Z"   # optional, RFC 3339
//! ```
//!
//! A file that does not parse, names an invalid peer or stream, or has an
//! unknown key is rejected as a whole: the ACL in force stays.

use ledgermesh_protocol::access::{Acl, AclEntry, PeerMatch, StreamMatch};
use serde::Deserialize;
use std::collections::BTreeSet;
use std::path::Path;

/// Why an ACL file was rejected.
#[derive(Debug, thiserror::Error)]
pub enum AclFileError {
    /// It could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// It is not valid TOML of the expected shape.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// What the parser said (with line and column).
        message: String,
    },
    /// An entry is invalid.
    #[error("{path}: entry {index}: {why}")]
    Entry {
        /// The file.
        path: String,
        /// 1-based entry number.
        index: usize,
        /// What is wrong.
        why: String,
    },
}

/// Entries one file may hold.
pub const MAX_ENTRIES: usize = 100_000;
/// Largest ACL file read.
pub const MAX_FILE_BYTES: u64 = 16 << 20;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    #[serde(default)]
    allow: Vec<EntrySpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntrySpec {
    peer: String,
    streams: StreamsSpec,
    #[serde(default)]
    expires: Option<TimeSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum StreamsSpec {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum TimeSpec {
    Text(String),
    Toml(toml::value::Datetime),
}

/// Parses ACL text; `path` only labels errors.
pub fn parse(text: &str, path: &str) -> Result<Acl, AclFileError> {
    let spec: FileSpec = toml::from_str(text).map_err(|e| AclFileError::Parse {
        path: path.into(),
        message: e.to_string().trim().replace('\n', " "),
    })?;
    if spec.allow.len() > MAX_ENTRIES {
        return Err(AclFileError::Parse {
            path: path.into(),
            message: format!("{} entries; at most {MAX_ENTRIES}", spec.allow.len()),
        });
    }
    let mut entries = Vec::with_capacity(spec.allow.len());
    for (i, e) in spec.allow.into_iter().enumerate() {
        let bad = |why: String| AclFileError::Entry {
            path: path.into(),
            index: i + 1,
            why,
        };
        let peer = match e.peer.trim() {
            "*" => PeerMatch::Any,
            p => PeerMatch::Peer(
                p.parse()
                    .map_err(|err| bad(format!("peer {p:?} is not a PeerId or \"*\": {err}")))?,
            ),
        };
        let names = match e.streams {
            StreamsSpec::One(s) => vec![s],
            StreamsSpec::Many(v) => v,
        };
        let streams = if names.iter().any(|n| n == "*") {
            StreamMatch::Any
        } else if names.is_empty() {
            return Err(bad("streams is empty (use \"*\" for every stream)".into()));
        } else {
            for n in &names {
                if !crate::source::valid_stream_name(n) {
                    return Err(bad(format!(
                        "stream {n:?}: names are 1-128 characters of [A-Za-z0-9._-]"
                    )));
                }
            }
            StreamMatch::Names(names.into_iter().collect::<BTreeSet<_>>())
        };
        let expires_ms = match e.expires {
            None => None,
            Some(t) => {
                let text = match t {
                    TimeSpec::Text(s) => s,
                    TimeSpec::Toml(d) => d.to_string(),
                };
                let ts: jiff::Timestamp = text.parse().map_err(|err| {
                    bad(format!(
                        "expires {text:?} is not an RFC 3339 time with an offset: {err}"
                    ))
                })?;
                Some(u64::try_from(ts.as_millisecond()).unwrap_or(0))
            }
        };
        entries.push(AclEntry {
            peer,
            streams,
            expires_ms,
        });
    }
    Ok(Acl { entries })
}

/// Reads and parses an ACL file.
pub fn load(path: &Path) -> Result<Acl, AclFileError> {
    let label = path.display().to_string();
    let read_err = |source| AclFileError::Read {
        path: label.clone(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read_err)?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(AclFileError::Parse {
            path: label,
            message: format!("{} bytes; at most {MAX_FILE_BYTES}", meta.len()),
        });
    }
    let text = std::fs::read_to_string(path).map_err(read_err)?;
    parse(&text, &label)
}

/// What says a file changed: its modification time, length and inode
/// (`None` while it cannot be read).
pub type Fingerprint = Option<(std::time::SystemTime, u64, u64)>;

/// What identifies a version of the file: a change in any part means reload.
pub fn fingerprint(path: &Path) -> Fingerprint {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len(), m.ino()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: &str = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN";

    #[test]
    fn the_committed_sample_parses() {
        let text = include_str!("../../../scripts/acl.sample.toml");
        let acl = parse(text, "acl.sample.toml").expect("sample is valid");
        assert_eq!(acl.entries.len(), 3);
        assert_eq!(acl.entries[1].peer, PeerMatch::Any);
        assert!(acl.entries[2].expires_ms.is_some());
    }

    #[test]
    fn entries_wildcards_and_expiry() {
        let acl = parse(
            &format!(
                r#"
[[allow]]
peer = "{PEER}"
streams = "*"

[[allow]]
peer = "*"
streams = ["feed", "logs"]
expires = "2026-12-31T23:00:00+01:00"

[[allow]]
peer = "*"
streams = "x"
expires = 2030-01-01T00:00:00Z
"#
            ),
            "t",
        )
        .unwrap();
        assert_eq!(acl.entries[0].peer, PeerMatch::Peer(PEER.parse().unwrap()));
        assert_eq!(acl.entries[0].streams, StreamMatch::Any);
        assert_eq!(acl.entries[0].expires_ms, None);
        // 2026-12-31T22:00:00Z
        assert_eq!(acl.entries[1].expires_ms, Some(1_798_754_400_000));
        assert!(acl.entries[1].streams.covers("logs") && !acl.entries[1].streams.covers("x"));
        assert_eq!(acl.entries[2].expires_ms, Some(1_893_456_000_000));
        assert_eq!(parse("", "t").unwrap(), Acl::default());
    }

    #[test]
    fn bad_files_say_why() {
        let cases = [
            (
                "[[allow]]\npeer = \"nope\"\nstreams = \"*\"\n",
                "entry 1: peer \"nope\"",
            ),
            (
                "[[allow]]\npeer = \"*\"\nstreams = [\"../etc\"]\n",
                "stream \"../etc\"",
            ),
            (
                "[[allow]]\npeer = \"*\"\nstreams = []\n",
                "streams is empty",
            ),
            (
                "[[allow]]\npeer = \"*\"\nstreams = \"*\"\nexpires = \"tomorrow\"\n",
                "not an RFC 3339",
            ),
            (
                "[[allow]]\npeer = \"*\"\nstreams = \"*\"\nextra = 1\n",
                "unknown field",
            ),
            ("[[allow]\n", "t:"),
        ];
        for (text, want) in cases {
            let e = parse(text, "t").expect_err(text).to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }
}
