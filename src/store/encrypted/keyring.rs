//! The keyring: the readable AES-256-GCM keys, the one new writes use, and the rotation record,
//! all loaded from and persisted to `<dir>/keys.json` (0600, directory 0700).
//!
//! Invariant: the file is only ever replaced whole (temporary file, fsync, rename, fsync of the
//! directory), and the in-memory state changes only after the new file is durable, so any key the
//! process has sealed with is named by the file on disk, whatever moment a crash hits.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use crate::store::{Error, Result};

/// Every sealed value starts with this, then `<key id>:`, the nonce and ciphertext+tag.
pub(super) const PREFIX: &[u8] = b"rampart:aesgcm:v1:";

const FILE: &str = "keys.json";

/// The on-disk document. No `Debug`: it holds key material.
#[derive(Clone, Serialize, Deserialize)]
pub(super) struct KeyFile {
    pub write: String,
    pub keys: Vec<KeyEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<RotationRecord>,
    /// The generation of the cluster-wide keyring this file last published or took (servers
    /// on a shared datastore, see the `sync` module); 0 on a server of its own.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub generation: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Clone, Serialize, Deserialize)]
pub(super) struct KeyEntry {
    pub id: String,
    pub secret: String,
}

/// Where a key rotation stands (see the rotation module for the stages' meaning).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    KeyAdded,
    ReEncrypting,
    Done,
}

/// The durable record of the last (or current) rotation.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RotationRecord {
    pub stage: Stage,
    /// The write key when the rotation started.
    pub from: String,
    /// The key the rotation introduced.
    pub to: String,
    /// Storage key of the last object re-encrypted in this pass (resume after it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// Objects visited by the re-encryption so far.
    #[serde(default)]
    pub done: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// The server driving the rotation (its identity), on a shared datastore: the others take
    /// its keys but do not drive it themselves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// One immutable generation of the keyring.
pub(super) struct Keys {
    pub file: KeyFile,
    keys: Vec<(String, LessSafeKey)>,
}

impl Keys {
    fn from_file(path: &Path, file: KeyFile) -> Result<Keys> {
        let mut keys = Vec::new();
        for k in &file.keys {
            if k.id.is_empty() || k.id.contains(':') || !k.id.is_ascii() {
                return Err(bad(path, format!("key id {:?} is invalid", k.id)));
            }
            if keys.iter().any(|(id, _)| *id == k.id) {
                return Err(bad(path, format!("key id {} appears twice", k.id)));
            }
            let secret = base64::engine::general_purpose::STANDARD
                .decode(&k.secret)
                .map_err(|_| bad(path, format!("key {} is not base64", k.id)))?;
            let unbound = UnboundKey::new(&AES_256_GCM, &secret)
                .map_err(|_| bad(path, format!("key {} is not 32 bytes", k.id)))?;
            keys.push((k.id.clone(), LessSafeKey::new(unbound)));
        }
        if !keys.iter().any(|(id, _)| *id == file.write) {
            return Err(bad(
                path,
                format!("write key {} is not among the keys", file.write),
            ));
        }
        Ok(Keys { file, keys })
    }

    pub fn write_id(&self) -> &str {
        &self.file.write
    }

    pub fn ids(&self) -> Vec<String> {
        self.keys.iter().map(|(id, _)| id.clone()).collect()
    }

    fn key(&self, id: &[u8]) -> Option<&LessSafeKey> {
        self.keys
            .iter()
            .find(|(k, _)| k.as_bytes() == id)
            .map(|(_, k)| k)
    }
}

/// The readable keys and the one new writes use; shared by the backend wrapper and the
/// rotation controller.
pub struct Keyring {
    path: PathBuf,
    current: RwLock<Arc<Keys>>,
    /// Serialises file replacements.
    persist: Mutex<()>,
    rng: SystemRandom,
    /// Writers hold this shared from sealing until their write is committed, so a rotation can
    /// wait (exclusive) until no write sealed under the previous write key is still in flight.
    pub(super) in_flight: tokio::sync::RwLock<()>,
    /// Test hook: pause between writing the temporary file and renaming it.
    pub(super) file_delay: Duration,
}

impl std::fmt::Debug for Keyring {
    // Key material never reaches logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("path", &self.path)
            .field("write", &self.snapshot().write_id())
            .finish_non_exhaustive()
    }
}

fn bad(path: &Path, detail: impl std::fmt::Display) -> Error {
    Error::BadDataDir {
        path: path.to_path_buf(),
        detail: format!("encryption keys: {detail}"),
    }
}

/// A fresh 256-bit key, base64.
pub(super) fn new_secret(rng: &SystemRandom, path: &Path) -> Result<String> {
    let mut secret = [0u8; 32];
    rng.fill(&mut secret)
        .map_err(|_| bad(path, "no randomness"))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(secret))
}

/// Replace `path` with `data` so that a crash leaves either the old or the new file, complete.
pub(super) fn write_atomic(path: &Path, data: &[u8], pause: Duration) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| bad(&tmp, e))?;
        f.write_all(data).map_err(|e| bad(&tmp, e))?;
        f.sync_all().map_err(|e| bad(&tmp, e))?;
    }
    if !pause.is_zero() {
        // Only the rotation test hook sets a pause (`test_hooks::rotation_batch_delay`): it
        // widens the window between the temporary file and its rename so a test can kill the
        // server inside it. Zero otherwise.
        #[allow(clippy::disallowed_methods)]
        std::thread::sleep(pause);
    }
    std::fs::rename(&tmp, path).map_err(|e| bad(path, e))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| bad(dir, e))
}

/// A rotation record must name keys the file has (what makes a crash mid-rotation harmless).
fn check_rotation(path: &Path, file: &KeyFile) -> Result<()> {
    if let Some(r) = &file.rotation {
        if r.stage != Stage::Done && !file.keys.iter().any(|k| k.id == r.to) {
            return Err(bad(
                path,
                format!(
                    "the rotation names key {}, which is not among the keys",
                    r.to
                ),
            ));
        }
        if r.stage == Stage::ReEncrypting && file.write != r.to {
            return Err(bad(
                path,
                format!(
                    "the rotation re-encrypts to key {} but the write key is {}",
                    r.to, file.write
                ),
            ));
        }
    }
    Ok(())
}

impl Keyring {
    /// Load `<dir>/keys.json`, creating it (with one fresh 256-bit key) if absent.
    pub fn load_or_create(dir: &Path) -> Result<Self> {
        use std::os::unix::fs::PermissionsExt;
        let path: PathBuf = dir.join(FILE);
        std::fs::create_dir_all(dir).map_err(|e| bad(dir, e))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| bad(dir, e))?;
        let rng = SystemRandom::new();
        if !path.exists() {
            let file = KeyFile {
                write: "key1".into(),
                keys: vec![KeyEntry {
                    id: "key1".into(),
                    secret: new_secret(&rng, &path)?,
                }],
                rotation: None,
                generation: 0,
            };
            let text = serde_json::to_vec_pretty(&file).map_err(|e| bad(&path, e))?;
            write_atomic(&path, &text, Duration::ZERO)?;
        }
        let mode = std::fs::metadata(&path)
            .map_err(|e| bad(&path, e))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(bad(
                &path,
                format!(
                    "mode {:o} lets others read the keys; expected 0600",
                    mode & 0o777
                ),
            ));
        }
        let raw = std::fs::read(&path).map_err(|e| bad(&path, e))?;
        // Only the position: serde_json's messages can quote values, and values are keys.
        let file: KeyFile = serde_json::from_slice(&raw).map_err(|e| {
            bad(
                &path,
                format!(
                    "malformed JSON at line {}, column {} ({:?} error)",
                    e.line(),
                    e.column(),
                    e.classify()
                ),
            )
        })?;
        check_rotation(&path, &file)?;
        let keys = Keys::from_file(&path, file)?;
        Ok(Keyring {
            path,
            current: RwLock::new(Arc::new(keys)),
            persist: Mutex::new(()),
            rng,
            in_flight: tokio::sync::RwLock::new(()),
            file_delay: Duration::ZERO,
        })
    }

    /// Slow down every key-file replacement (tests use it to kill the server mid-write).
    pub fn with_file_delay(mut self, delay: Duration) -> Self {
        self.file_delay = delay;
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(super) fn snapshot(&self) -> Arc<Keys> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub(super) fn rng(&self) -> &SystemRandom {
        &self.rng
    }

    /// Apply `change` to a copy of the file, make it durable, then publish it in memory.
    /// Blocking (fsync): call from a blocking context.
    pub(super) fn commit(&self, change: impl FnOnce(&mut KeyFile) -> Result<()>) -> Result<()> {
        let _serial = self
            .persist
            .lock()
            .map_err(|_| Error::Storage("a previous key-file write panicked".into()))?;
        let mut file = self.snapshot().file.clone();
        change(&mut file)?;
        let keys = Keys::from_file(&self.path, file)?;
        let text = serde_json::to_vec_pretty(&keys.file).map_err(|e| bad(&self.path, e))?;
        write_atomic(&self.path, &text, self.file_delay)?;
        match self.current.write() {
            Ok(mut g) => *g = Arc::new(keys),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(keys),
        }
        Ok(())
    }

    /// Replace the whole file with `file` (a keyring another server published), durably, then
    /// use it. Blocking (fsync).
    pub(super) fn replace(&self, file: KeyFile) -> Result<()> {
        check_rotation(&self.path, &file)?;
        self.commit(move |f| {
            *f = file;
            Ok(())
        })
    }

    /// Seal `plaintext` for `storage_key` under the current write key.
    pub(super) fn seal(&self, storage_key: &str, plaintext: &[u8]) -> Result<Bytes> {
        let keys = self.snapshot();
        let write = keys.write_id();
        let key = keys
            .key(write.as_bytes())
            .ok_or_else(|| Error::Storage("the encryption write key is missing".into()))?;
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .map_err(|_| Error::Storage("no randomness for a nonce".into()))?;
        let mut sealed = plaintext.to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(storage_key.as_bytes()),
            &mut sealed,
        )
        .map_err(|_| Error::Storage("encryption failed".into()))?;
        let mut out = Vec::with_capacity(PREFIX.len() + write.len() + 1 + NONCE_LEN + sealed.len());
        out.extend_from_slice(PREFIX);
        out.extend_from_slice(write.as_bytes());
        out.push(b':');
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(Bytes::from(out))
    }

    /// Open a stored value; values without the envelope pass through unchanged.
    pub(super) fn open(&self, storage_key: &str, value: &Bytes) -> Result<Bytes> {
        let Some(rest) = value.strip_prefix(PREFIX) else {
            return Ok(value.clone());
        };
        let tampered = || {
            Error::Storage(format!(
                "the stored value of {storage_key} failed its integrity check (tampered or corrupt); it is not served"
            ))
        };
        let colon = rest.iter().position(|b| *b == b':').ok_or_else(tampered)?;
        let (id, rest) = (&rest[..colon], &rest[colon + 1..]);
        let keys = self.snapshot();
        let key = keys.key(id).ok_or_else(|| {
            Error::Storage(format!(
                "the stored value of {storage_key} is sealed with key {:?}, which is not in the keyring",
                String::from_utf8_lossy(id)
            ))
        })?;
        if rest.len() < NONCE_LEN {
            return Err(tampered());
        }
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| tampered())?;
        let mut buf = sealed.to_vec();
        let plain = key
            .open_in_place(nonce, Aad::from(storage_key.as_bytes()), &mut buf)
            .map_err(|_| tampered())?;
        Ok(Bytes::copy_from_slice(plain))
    }
}

/// The key id a stored value is sealed with; `None` for a value without the envelope.
pub(super) fn sealed_with(value: &[u8]) -> Option<&[u8]> {
    let rest = value.strip_prefix(PREFIX)?;
    let colon = rest.iter().position(|b| *b == b':')?;
    Some(&rest[..colon])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_tamper_detection() {
        let dir = tempfile::tempdir().unwrap();
        let ring = Keyring::load_or_create(dir.path()).unwrap();
        let sealed = ring.seal("/k", b"hunter2").unwrap();
        assert!(sealed.starts_with(PREFIX));
        assert_eq!(sealed_with(&sealed), Some(&b"key1"[..]));
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(
            ring.open("/k", &sealed).unwrap(),
            Bytes::from_static(b"hunter2")
        );
        // Another storage key (associated data) or one flipped bit: refused.
        assert!(ring.open("/other", &sealed).is_err());
        let mut bad = sealed.to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(ring.open("/k", &Bytes::from(bad)).is_err());
        // Plain values from before encryption pass through.
        assert_eq!(
            ring.open("/k", &Bytes::from_static(b"{}")).unwrap(),
            Bytes::from_static(b"{}")
        );
        // The same keys load again, and the file is private.
        let again = Keyring::load_or_create(dir.path()).unwrap();
        assert_eq!(
            again.open("/k", &sealed).unwrap(),
            Bytes::from_static(b"hunter2")
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("keys.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn commit_is_durable_before_it_is_used() {
        let dir = tempfile::tempdir().unwrap();
        let ring = Keyring::load_or_create(dir.path()).unwrap();
        let old = ring.seal("/k", b"v").unwrap();
        let secret = new_secret(ring.rng(), dir.path()).unwrap();
        ring.commit(|f| {
            f.keys.push(KeyEntry {
                id: "key2".into(),
                secret,
            });
            f.write = "key2".into();
            Ok(())
        })
        .unwrap();
        let new = ring.seal("/k", b"v").unwrap();
        assert_eq!(sealed_with(&new), Some(&b"key2"[..]));
        // A fresh load (as after a crash) reads both.
        let again = Keyring::load_or_create(dir.path()).unwrap();
        assert_eq!(again.open("/k", &old).unwrap(), Bytes::from_static(b"v"));
        assert_eq!(again.open("/k", &new).unwrap(), Bytes::from_static(b"v"));
        // A change that would leave no write key is refused and changes nothing.
        assert!(ring
            .commit(|f| {
                f.keys.clear();
                Ok(())
            })
            .is_err());
        assert_eq!(ring.snapshot().write_id(), "key2");
    }
}
