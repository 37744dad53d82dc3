//! Encryption at rest: a [`Backend`] wrapper that seals the values of chosen key prefixes
//! (Secrets, by default) with AES-256-GCM before they reach the inner store, and opens them on
//! every way out (get, range, watch), like upstream's `aesgcm` encryption provider.
//!
//! Envelope: `rampart:aesgcm:v1:<key id>:` ++ 12-byte random nonce ++ ciphertext+tag, with the
//! storage key as associated data, so a ciphertext cannot be replayed under another key. A value
//! that fails authentication is an error — never served, never returned as plaintext. Values
//! without the envelope (written before encryption was enabled) are read as they are and sealed
//! on their next write.
//!
//! Keys live in `<dir>/keys.json` (0600, directory 0700), created on first start. Several keys
//! can be readable at once; one is the write key. (Crash-safe rotation builds on this.)

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine;
use bytes::Bytes;
use futures::StreamExt;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use super::{
    Backend, Error, Event, KeyValue, RangeRequest, RangeResponse, Result, Revision, WatchStream,
};

const PREFIX: &[u8] = b"rampart:aesgcm:v1:";

#[derive(Serialize, Deserialize)]
struct KeyFile {
    write: String,
    keys: Vec<KeyEntry>,
}

#[derive(Serialize, Deserialize)]
struct KeyEntry {
    id: String,
    secret: String,
}

/// The readable keys and the one new writes use.
pub struct Keyring {
    write: String,
    keys: Vec<(String, LessSafeKey)>,
    rng: SystemRandom,
}

impl std::fmt::Debug for Keyring {
    // Key material never reaches logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("write", &self.write)
            .finish_non_exhaustive()
    }
}

fn bad(path: &Path, detail: impl std::fmt::Display) -> Error {
    Error::BadDataDir {
        path: path.to_path_buf(),
        detail: format!("encryption keys: {detail}"),
    }
}

impl Keyring {
    /// Load `<dir>/keys.json`, creating it (with one fresh 256-bit key) if absent.
    pub fn load_or_create(dir: &Path) -> Result<Self> {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let path: PathBuf = dir.join("keys.json");
        std::fs::create_dir_all(dir).map_err(|e| bad(dir, e))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| bad(dir, e))?;
        let rng = SystemRandom::new();
        if !path.exists() {
            let mut secret = [0u8; 32];
            rng.fill(&mut secret)
                .map_err(|_| bad(&path, "no randomness"))?;
            let file = KeyFile {
                write: "key1".into(),
                keys: vec![KeyEntry {
                    id: "key1".into(),
                    secret: base64::engine::general_purpose::STANDARD.encode(secret),
                }],
            };
            let text = serde_json::to_vec_pretty(&file).map_err(|e| bad(&path, e))?;
            let tmp = path.with_extension("tmp");
            {
                use std::io::Write;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&tmp)
                    .map_err(|e| bad(&tmp, e))?;
                f.write_all(&text).map_err(|e| bad(&tmp, e))?;
                f.sync_all().map_err(|e| bad(&tmp, e))?;
            }
            std::fs::rename(&tmp, &path).map_err(|e| bad(&path, e))?;
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
        let file: KeyFile =
            serde_json::from_slice(&raw).map_err(|e| bad(&path, format!("malformed: {e}")))?;
        let mut keys = Vec::new();
        for k in &file.keys {
            let secret = base64::engine::general_purpose::STANDARD
                .decode(&k.secret)
                .map_err(|_| bad(&path, format!("key {} is not base64", k.id)))?;
            let unbound = UnboundKey::new(&AES_256_GCM, &secret)
                .map_err(|_| bad(&path, format!("key {} is not 32 bytes", k.id)))?;
            if k.id.is_empty() || k.id.contains(':') {
                return Err(bad(&path, format!("key id {:?} is invalid", k.id)));
            }
            keys.push((k.id.clone(), LessSafeKey::new(unbound)));
        }
        if !keys.iter().any(|(id, _)| *id == file.write) {
            return Err(bad(
                &path,
                format!("write key {} is not among the keys", file.write),
            ));
        }
        Ok(Keyring {
            write: file.write,
            keys,
            rng,
        })
    }

    fn seal(&self, storage_key: &str, plaintext: &[u8]) -> Result<Bytes> {
        let key = self
            .keys
            .iter()
            .find(|(id, _)| *id == self.write)
            .map(|(_, k)| k)
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
        let mut out =
            Vec::with_capacity(PREFIX.len() + self.write.len() + 1 + NONCE_LEN + sealed.len());
        out.extend_from_slice(PREFIX);
        out.extend_from_slice(self.write.as_bytes());
        out.push(b':');
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(Bytes::from(out))
    }

    fn open(&self, storage_key: &str, value: &Bytes) -> Result<Bytes> {
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
        let key = self
            .keys
            .iter()
            .find(|(k, _)| k.as_bytes() == id)
            .map(|(_, k)| k)
            .ok_or_else(|| {
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

/// A backend that encrypts the values under `prefixes`.
pub struct EncryptedBackend {
    inner: Arc<dyn Backend>,
    keyring: Arc<Keyring>,
    prefixes: Vec<String>,
}

impl EncryptedBackend {
    pub fn new(inner: Arc<dyn Backend>, keyring: Keyring, prefixes: Vec<String>) -> Self {
        EncryptedBackend {
            inner,
            keyring: Arc::new(keyring),
            prefixes,
        }
    }

    fn covered(&self, key: &str) -> bool {
        self.prefixes.iter().any(|p| key.starts_with(p.as_str()))
    }

    fn seal(&self, key: &str, value: Bytes) -> Result<Bytes> {
        if self.covered(key) {
            self.keyring.seal(key, &value)
        } else {
            Ok(value)
        }
    }

    fn open_kv(&self, mut kv: KeyValue) -> Result<KeyValue> {
        if self.covered(&kv.key) {
            kv.value = self.keyring.open(&kv.key, &kv.value)?;
        }
        Ok(kv)
    }
}

#[async_trait]
impl Backend for EncryptedBackend {
    async fn get(&self, key: &str, revision: Option<Revision>) -> Result<Option<KeyValue>> {
        self.inner
            .get(key, revision)
            .await?
            .map(|kv| self.open_kv(kv))
            .transpose()
    }

    async fn range(&self, req: RangeRequest) -> Result<RangeResponse> {
        let mut resp = self.inner.range(req).await?;
        resp.items = resp
            .items
            .into_iter()
            .map(|kv| self.open_kv(kv))
            .collect::<Result<_>>()?;
        Ok(resp)
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<Revision> {
        let sealed = self.seal(key, value)?;
        self.inner.create(key, sealed).await
    }

    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<Revision> {
        let sealed = self.seal(key, value)?;
        self.inner.update(key, sealed, expected).await
    }

    async fn delete(&self, key: &str, expected: Revision) -> Result<Revision> {
        self.inner.delete(key, expected).await
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        let inner = self.inner.watch(prefix, after).await?;
        let keyring = self.keyring.clone();
        let prefixes = self.prefixes.clone();
        Ok(inner
            .map(move |ev| {
                let mut ev: Event = ev?;
                if prefixes.iter().any(|p| ev.key.starts_with(p.as_str())) {
                    ev.value = keyring.open(&ev.key, &ev.value)?;
                    if let Some(prev) = &ev.prev_value {
                        ev.prev_value = Some(keyring.open(&ev.key, prev)?);
                    }
                }
                Ok(ev)
            })
            .boxed())
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        self.inner.compact(revision).await
    }

    fn current_revision(&self) -> Revision {
        self.inner.current_revision()
    }

    fn compacted_revision(&self) -> Revision {
        self.inner.compacted_revision()
    }
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
}
