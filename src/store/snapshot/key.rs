//! The snapshot key: 32 random bytes in `DATA_DIR/snapshot.key` (0600), created on first use.
//! The user copies it off the machine once; with it (and nothing else) a snapshot restores on
//! a fresh machine. The file is one line, `rampart-snapshot-key-v1:<base64>`, so it can be
//! pasted into a password manager.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use base64::Engine;
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};

use super::Error;

const PREFIX: &str = "rampart-snapshot-key-v1:";

pub struct SnapshotKey([u8; 32]);

impl std::fmt::Debug for SnapshotKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key material.
        write!(f, "SnapshotKey({})", hex(&self.id()))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl SnapshotKey {
    pub fn generate() -> Result<Self, Error> {
        let mut k = [0u8; 32];
        SystemRandom::new()
            .fill(&mut k)
            .map_err(|_| Error::Crypto("no randomness for a snapshot key".into()))?;
        Ok(SnapshotKey(k))
    }

    pub(crate) fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// First 8 bytes of SHA-256 of the key: names the key in a snapshot header without
    /// revealing it.
    pub fn id(&self) -> [u8; 8] {
        let digest = Sha256::digest(self.0);
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest[..8]);
        id
    }

    pub fn id_hex(&self) -> String {
        hex(&self.id())
    }

    /// Load a key file; refuses one that is readable by group or others.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let meta = std::fs::metadata(path).map_err(|e| Error::Key {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(Error::Key {
                path: path.to_path_buf(),
                detail: format!(
                    "mode {:o} lets others read it; chmod 600 it",
                    meta.permissions().mode() & 0o777
                ),
            });
        }
        let text = std::fs::read_to_string(path).map_err(|e| Error::Key {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
        let bad = || Error::Key {
            path: path.to_path_buf(),
            detail: format!("not a snapshot key (expected one line {PREFIX}<base64 of 32 bytes>)"),
        };
        let encoded = text.trim().strip_prefix(PREFIX).ok_or_else(bad)?;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| bad())?;
        let key: [u8; 32] = raw.try_into().map_err(|_| bad())?;
        Ok(SnapshotKey(key))
    }

    /// Load the key at `path`, or create it (0600, never replacing an existing file).
    pub fn load_or_create(path: &Path) -> Result<Self, Error> {
        if path.exists() {
            return Self::load(path);
        }
        let key = Self::generate()?;
        let line = format!(
            "{PREFIX}{}\n",
            base64::engine::general_purpose::STANDARD.encode(key.0)
        );
        let created = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .and_then(|mut f| {
                f.write_all(line.as_bytes())?;
                f.sync_all()
            });
        match created {
            Ok(()) => {
                if let Some(dir) = path.parent() {
                    if let Ok(d) = std::fs::File::open(dir) {
                        let _ = d.sync_all();
                    }
                }
                Ok(key)
            }
            // Another process created it first: use theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Self::load(path),
            Err(e) => Err(Error::Key {
                path: path.to_path_buf(),
                detail: e.to_string(),
            }),
        }
    }
}
