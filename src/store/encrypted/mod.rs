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
//! Keys live in `<dir>/keys.json` (0600, directory 0700, see [`keyring`]), created on first
//! start. Several keys can be readable at once; one is the write key. [`rotation`] replaces the
//! write key and re-encrypts every stored value, crash-safely (`rampart secrets-encrypt`).
//!
//! Invariant (what makes a `kill -9` at any moment harmless): every value in the store is either
//! plaintext or sealed with a key that `keys.json` on disk lists. It holds because a key is
//! written to the file (durably) before anything is sealed with it, and removed from the file
//! only after a full scan found no live value under it and history up to that scan was
//! compacted away.

pub mod keyring;
pub mod rotation;
pub mod sync;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;

use super::{Backend, Event, KeyValue, RangeRequest, RangeResponse, Result, Revision, WatchStream};

pub use keyring::Keyring;
pub use rotation::Rotation;
pub use sync::KeySync;

/// A backend that encrypts the values under `prefixes`.
pub struct EncryptedBackend {
    inner: Arc<dyn Backend>,
    keyring: Arc<Keyring>,
    prefixes: Vec<String>,
}

impl EncryptedBackend {
    pub fn new(inner: Arc<dyn Backend>, keyring: Arc<Keyring>, prefixes: Vec<String>) -> Self {
        EncryptedBackend {
            inner,
            keyring,
            prefixes,
        }
    }

    fn covered(&self, key: &str) -> bool {
        self.prefixes.iter().any(|p| key.starts_with(p.as_str()))
    }

    async fn in_flight(&self, key: &str) -> Option<tokio::sync::RwLockReadGuard<'_, ()>> {
        if self.covered(key) {
            Some(self.keyring.in_flight.read().await)
        } else {
            None
        }
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
        // Held until the write commits: a rotation waits for writes sealed under the old key.
        let _in_flight = self.in_flight(key).await;
        let sealed = self.seal(key, value)?;
        self.inner.create(key, sealed).await
    }

    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<Revision> {
        let _in_flight = self.in_flight(key).await;
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

/// Whether any stored value under `prefixes` is sealed (carries the envelope) — checked before a
/// missing key file is replaced by a fresh key, which could never open those values.
pub async fn any_sealed(inner: &dyn Backend, prefixes: &[String]) -> Result<bool> {
    for prefix in prefixes {
        let mut start_after = None;
        loop {
            let page = inner
                .range(RangeRequest {
                    prefix: prefix.clone(),
                    start_after: start_after.clone(),
                    limit: 500,
                    revision: None,
                })
                .await?;
            if page
                .items
                .iter()
                .any(|kv| kv.value.starts_with(keyring::PREFIX))
            {
                return Ok(true);
            }
            match page.items.last() {
                Some(last) if page.items.len() == 500 => start_after = Some(last.key.clone()),
                _ => break,
            }
        }
    }
    Ok(false)
}
