//! The node's Ed25519 identity key file.

use libp2p::identity::Keypair;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Errors reading or writing key files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFileError {
    /// The file exists and `--force` was not given.
    #[error("{0} already exists; pass --force to overwrite it (the old identity will be lost)")]
    Exists(PathBuf),
    /// The key file does not exist.
    #[error("key file {0} not found; create one with `ledgermesh keygen --out {0}`")]
    Missing(PathBuf),
    /// The file is not a libp2p protobuf-encoded keypair.
    #[error("key file {path} is not a ledgermesh key: {detail}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// Others than the owner may read the file: a secret must not be.
    #[error("key file {} can be read by others (mode {mode:o}); fix it with: chmod 600 {}", path.display(), path.display())]
    Exposed {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Any other I/O failure.
    #[error("key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyFileError + '_ {
    move |source| KeyFileError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Refuses a secret file that its group or anyone else may read.
pub fn check_private(path: &Path) -> Result<(), KeyFileError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(KeyFileError::Missing(path.to_owned()))
            }
            Err(e) => return Err(io(path)(e)),
        };
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyFileError::Exposed {
                path: path.to_owned(),
                mode,
            });
        }
    }
    Ok(())
}

/// Writes a fresh Ed25519 keypair to `path` with mode 0600 and returns it.
/// Never overwrites without `force`.
pub fn generate_key_file(path: &Path, force: bool) -> Result<Keypair, KeyFileError> {
    let keypair = Keypair::generate_ed25519();
    // The encoded secret is wiped from memory when dropped.
    let bytes = zeroize::Zeroizing::new(keypair.to_protobuf_encoding().map_err(|e| {
        KeyFileError::Invalid {
            path: path.to_owned(),
            detail: e.to_string(),
        }
    })?);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true);
    if force {
        opts.create(true).truncate(true);
    } else {
        opts.create_new(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut file = opts.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            KeyFileError::Exists(path.to_owned())
        } else {
            io(path)(e)
        }
    })?;
    #[cfg(unix)]
    {
        // `mode` only applies to newly created files; tighten an overwritten one too.
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(io(path))?;
    }
    file.write_all(&bytes).map_err(io(path))?;
    file.sync_all().map_err(io(path))?;
    Ok(keypair)
}

/// Reads an Ed25519 keypair written by [`generate_key_file`]; a file others
/// may read is refused (with the `chmod` that fixes it).
pub fn read_key_file(path: &Path) -> Result<Keypair, KeyFileError> {
    check_private(path)?;
    let bytes = zeroize::Zeroizing::new(std::fs::read(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            KeyFileError::Missing(path.to_owned())
        } else {
            io(path)(e)
        }
    })?);
    let keypair = Keypair::from_protobuf_encoding(&bytes).map_err(|e| KeyFileError::Invalid {
        path: path.to_owned(),
        detail: e.to_string(),
    })?;
    if keypair.key_type() != libp2p::identity::KeyType::Ed25519 {
        return Err(KeyFileError::Invalid {
            path: path.to_owned(),
            detail: "only Ed25519 keys are supported".into(),
        });
    }
    Ok(keypair)
}

/// The key at `path`, or a fresh in-memory key (with a warning) when `None`.
pub fn load_or_ephemeral(path: Option<&Path>) -> Result<Keypair, KeyFileError> {
    match path {
        Some(p) => read_key_file(p),
        None => {
            tracing::warn!("no --key given: using a fresh in-memory identity; its PeerId changes on every start");
            Ok(Keypair::generate_ed25519())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keygen_writes_0600_and_refuses_overwrite() {
        let dir = std::env::temp_dir().join(format!("lm-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("node.key");
        let _ = std::fs::remove_file(&path);
        let kp = generate_key_file(&path, false).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(read_key_file(&path).unwrap().public(), kp.public());
        assert!(matches!(
            generate_key_file(&path, false),
            Err(KeyFileError::Exists(_))
        ));
        let kp2 = generate_key_file(&path, true).unwrap();
        assert_ne!(kp2.public(), kp.public());
        // Readable by the group: refused, and told how to fix it.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
            let err = read_key_file(&path).unwrap_err();
            assert!(matches!(err, KeyFileError::Exposed { mode: 0o640, .. }));
            assert!(err.to_string().contains("chmod 600"), "{err}");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        std::fs::write(&path, b"garbage").unwrap();
        assert!(matches!(
            read_key_file(&path),
            Err(KeyFileError::Invalid { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(matches!(
            read_key_file(&path),
            Err(KeyFileError::Missing(_))
        ));
    }
}
