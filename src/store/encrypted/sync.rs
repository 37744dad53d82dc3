//! One keyring for every server on a shared datastore: servers that joined with
//! `--server/--token` copied `keys.json` once; this module carries every later change (a key
//! rotation's stages) to all of them, so a secret sealed by one server is readable by the others.
//! Upstream's procedure for several apiservers is the same sequence done by hand: add the new key
//! everywhere as readable and restart, then make it the write key everywhere and restart, then
//! re-encrypt, then drop the old key.
//!
//! The channel is the datastore itself:
//! - `RECORD_KEY` holds the published keyring with a generation number, sealed with AES-256-GCM
//!   under the cluster key (`DATA_DIR/encryption/cluster.key`, 0600, created by the first server
//!   and handed to joining servers with the other keys): the datastore never sees a key;
//! - `PEERS_PREFIX<identity>` is each server's heartbeat: the generation it holds and when it
//!   last said so (every `HEARTBEAT`).
//!
//! Invariants:
//! - a server takes a published keyring before it serves (`catch_up` at start) and whenever it
//!   changes (`run` watches it); taking it is durable (`keys.json` replaced whole) before the
//!   heartbeat reports the new generation, and a change of write key first waits out this
//!   server's writes still sealed under the old one;
//! - `publish_and_converge` returns only when every server that heartbeated within `LIVE_FOR`
//!   reports the published generation; the rotation moves to its next stage only then. A server
//!   that was down meanwhile takes the keyring at its next start, before serving.
//!
//! Liveness is judged by the servers' wall clocks (heartbeat times), so they must agree within a
//! few seconds, as etcd and certificate checks already require.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use futures::StreamExt;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use super::keyring::{KeyFile, Keyring};
use crate::store::{Backend, RangeRequest};

/// The published keyring (sealed).
pub const RECORD_KEY: &str = "/rampart/keysync/keyring";
/// Per-server heartbeats: `PEERS_PREFIX<identity>`.
pub const PEERS_PREFIX: &str = "/rampart/keysync/servers/";
/// The cluster key's file name in the encryption directory.
pub const CLUSTER_KEY_FILE: &str = "cluster.key";

const HEARTBEAT: Duration = Duration::from_secs(5);
/// A server silent this long is not waited for (it takes the keyring when it starts again).
const LIVE_FOR: Duration = Duration::from_secs(20);
/// How long one stage waits for the other servers before the rotation reports an error and
/// retries (with its backoff).
const CONVERGE_WITHIN: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    #[error("the cluster key {path}: {detail}")]
    ClusterKey { path: PathBuf, detail: String },
    #[error("the published keyring cannot be opened with this server's cluster key (copy DATA_DIR/encryption/cluster.key from the first server)")]
    Unseal,
    #[error("the published keyring is malformed: {0}")]
    Malformed(String),
    #[error("another server published keyring generation {0} meanwhile; retrying")]
    Raced(u64),
    #[error("servers {servers:?} have not taken keyring generation {generation} within {CONVERGE_WITHIN:?}")]
    Lagging {
        servers: Vec<String>,
        generation: u64,
    },
    #[error("a key-file task failed: {0}")]
    Task(String),
}

#[derive(Clone, Serialize, Deserialize)]
struct Record {
    generation: u64,
    file: KeyFile,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Heartbeat {
    generation: u64,
    /// Unix seconds.
    at: i64,
}

#[derive(Clone)]
pub struct Config {
    /// The datastore under the encryption wrapper.
    pub inner: Arc<dyn Backend>,
    pub keyring: Arc<Keyring>,
    /// This server's identity (its `apiserver-<id>` Lease name part).
    pub identity: String,
    /// `DATA_DIR/encryption`.
    pub dir: PathBuf,
}

pub struct KeySync {
    cfg: Config,
    seal: LessSafeKey,
    rng: SystemRandom,
}

impl std::fmt::Debug for KeySync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySync")
            .field("identity", &self.cfg.identity)
            .finish_non_exhaustive()
    }
}

/// Load `<dir>/cluster.key`, creating it (a fresh 256-bit key, 0600) if absent.
fn cluster_key(dir: &Path, rng: &SystemRandom) -> Result<LessSafeKey, Error> {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(CLUSTER_KEY_FILE);
    let bad = |detail: String| Error::ClusterKey {
        path: path.clone(),
        detail,
    };
    if !path.exists() {
        let mut secret = [0u8; 32];
        rng.fill(&mut secret)
            .map_err(|_| bad("no randomness".into()))?;
        let text = base64::engine::general_purpose::STANDARD.encode(secret);
        super::keyring::write_atomic(&path, text.as_bytes(), Duration::ZERO)
            .map_err(|e| bad(e.to_string()))?;
    }
    let mode = std::fs::metadata(&path)
        .map_err(|e| bad(e.kind().to_string()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(bad(format!(
            "mode {:o} lets others read it; expected 0600",
            mode & 0o777
        )));
    }
    let text = std::fs::read_to_string(&path).map_err(|e| bad(e.kind().to_string()))?;
    let secret = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|_| bad("not base64".into()))?;
    let unbound = UnboundKey::new(&AES_256_GCM, &secret).map_err(|_| bad("not 32 bytes".into()))?;
    Ok(LessSafeKey::new(unbound))
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

impl KeySync {
    pub fn new(cfg: Config) -> Result<Arc<Self>, Error> {
        let rng = SystemRandom::new();
        let seal = cluster_key(&cfg.dir, &rng)?;
        Ok(Arc::new(KeySync { cfg, seal, rng }))
    }

    pub fn identity(&self) -> &str {
        &self.cfg.identity
    }

    fn seal(&self, record: &Record) -> Result<Bytes, Error> {
        let mut buf = serde_json::to_vec(record).map_err(|e| Error::Malformed(e.to_string()))?;
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .map_err(|_| Error::Task("no randomness for a nonce".into()))?;
        self.seal
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(RECORD_KEY.as_bytes()),
                &mut buf,
            )
            .map_err(|_| Error::Task("encryption failed".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        Ok(Bytes::from(out))
    }

    fn open(&self, value: &[u8]) -> Result<Record, Error> {
        if value.len() < NONCE_LEN {
            return Err(Error::Unseal);
        }
        let (nonce, sealed) = value.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| Error::Unseal)?;
        let mut buf = sealed.to_vec();
        let plain = self
            .seal
            .open_in_place(nonce, Aad::from(RECORD_KEY.as_bytes()), &mut buf)
            .map_err(|_| Error::Unseal)?;
        // The position only: the document holds keys.
        serde_json::from_slice(plain)
            .map_err(|e| Error::Malformed(format!("line {}, column {}", e.line(), e.column())))
    }

    /// The published record and its `mod_revision`, if any.
    async fn read(&self) -> Result<Option<(Record, u64)>, Error> {
        match self.cfg.inner.get(RECORD_KEY, None).await? {
            Some(kv) => Ok(Some((self.open(&kv.value)?, kv.mod_revision))),
            None => Ok(None),
        }
    }

    /// Take `record` if it is newer than what this server holds. A new write key first waits
    /// out this server's writes sealed under the old one.
    async fn take(&self, record: Record) -> Result<bool, Error> {
        let held = self.cfg.keyring.snapshot();
        if record.generation <= held.file.generation {
            return Ok(false);
        }
        let _quiet = if record.file.write != held.write_id() {
            Some(self.cfg.keyring.in_flight.write().await)
        } else {
            None
        };
        let keyring = self.cfg.keyring.clone();
        let generation = record.generation;
        let mut file = record.file;
        file.generation = generation;
        tokio::task::spawn_blocking(move || keyring.replace(file))
            .await
            .map_err(|e| Error::Task(e.to_string()))??;
        tracing::info!(
            generation,
            write_key = %self.cfg.keyring.snapshot().write_id(),
            "secrets encryption: took the keyring another server published"
        );
        Ok(true)
    }

    /// Say which generation this server holds (and that it is alive).
    async fn heartbeat(&self) -> Result<(), Error> {
        let key = format!("{PEERS_PREFIX}{}", self.cfg.identity);
        let beat = Heartbeat {
            generation: self.cfg.keyring.snapshot().file.generation,
            at: now(),
        };
        let value =
            Bytes::from(serde_json::to_vec(&beat).map_err(|e| Error::Malformed(e.to_string()))?);
        match self.cfg.inner.get(&key, None).await? {
            Some(kv) => self.cfg.inner.update(&key, value, kv.mod_revision).await?,
            None => self.cfg.inner.create(&key, value).await?,
        };
        Ok(())
    }

    /// At start, before serving: take a newer published keyring, or publish this one if the
    /// cluster has none yet (the first server, or a cluster from before key sync).
    pub async fn catch_up(&self) -> Result<(), Error> {
        // Two first servers starting at once: one publish wins, the other takes its keyring.
        for _ in 0..3 {
            let outcome = match self.read().await? {
                Some((record, _)) => self.take(record).await.map(drop),
                None => self.publish().await.map(drop),
            };
            match outcome {
                Err(Error::Raced(_)) => continue,
                other => {
                    other?;
                    return self.heartbeat().await;
                }
            }
        }
        Err(Error::Raced(0))
    }

    /// Publish this server's keyring as the next generation (compare-and-swap on the record, so
    /// two servers publishing at once cannot both win) and record that generation locally.
    pub async fn publish(&self) -> Result<u64, Error> {
        let current = self.read().await?;
        let held = self.cfg.keyring.snapshot();
        let base = current.as_ref().map(|(r, _)| r.generation).unwrap_or(0);
        if base > held.file.generation {
            // Someone published a keyring this server has not taken: never overwrite it.
            return Err(Error::Raced(base));
        }
        let generation = base + 1;
        let mut file = held.file.clone();
        file.generation = generation;
        let value = self.seal(&Record {
            generation,
            file: file.clone(),
        })?;
        let written = match &current {
            Some((_, rev)) => self.cfg.inner.update(RECORD_KEY, value, *rev).await,
            None => self.cfg.inner.create(RECORD_KEY, value).await,
        };
        match written {
            Ok(_) => {}
            Err(
                crate::store::Error::Conflict { .. } | crate::store::Error::AlreadyExists { .. },
            ) => {
                return Err(Error::Raced(generation));
            }
            Err(e) => return Err(e.into()),
        }
        let keyring = self.cfg.keyring.clone();
        tokio::task::spawn_blocking(move || {
            keyring.commit(move |f| {
                f.generation = generation;
                Ok(())
            })
        })
        .await
        .map_err(|e| Error::Task(e.to_string()))??;
        Ok(generation)
    }

    /// Publish, then wait until every live server reports the new generation.
    pub async fn publish_and_converge(&self) -> Result<(), Error> {
        let generation = self.publish().await?;
        self.heartbeat().await?;
        let deadline = tokio::time::Instant::now() + CONVERGE_WITHIN;
        loop {
            let lagging = self.lagging(generation).await?;
            if lagging.is_empty() {
                tracing::info!(
                    generation,
                    "secrets encryption: every live server holds the keyring"
                );
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Lagging {
                    servers: lagging,
                    generation,
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Live servers (heartbeat within `LIVE_FOR`) that do not hold `generation` yet.
    async fn lagging(&self, generation: u64) -> Result<Vec<String>, Error> {
        let resp = self
            .cfg
            .inner
            .range(RangeRequest {
                prefix: PEERS_PREFIX.to_string(),
                ..Default::default()
            })
            .await?;
        let oldest_live = now() - LIVE_FOR.as_secs() as i64;
        let mut lagging = Vec::new();
        for kv in resp.items {
            let Ok(beat) = serde_json::from_slice::<Heartbeat>(&kv.value) else {
                continue;
            };
            if beat.at >= oldest_live && beat.generation < generation {
                lagging.push(kv.key.trim_start_matches(PEERS_PREFIX).to_string());
            }
        }
        Ok(lagging)
    }

    /// Follow the published keyring and heartbeat until `shutdown`.
    pub async fn run(
        self: Arc<Self>,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), Error> {
        tokio::pin!(shutdown);
        let mut tick = tokio::time::interval(HEARTBEAT);
        loop {
            tokio::select! {
                _ = &mut shutdown => return Ok(()),
                r = self.follow(&mut tick) => {
                    if let Err(e) = r {
                        tracing::warn!(error = %e, "secrets encryption key sync: restarting its watch");
                    }
                }
            }
            tokio::select! {
                _ = &mut shutdown => return Ok(()),
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// One watch session: read the record, take it, then take each change, heartbeating on
    /// `tick`. Returns on a watch error (compaction, a slow watcher), for `run` to start over.
    async fn follow(&self, tick: &mut tokio::time::Interval) -> Result<(), Error> {
        let resp = self
            .cfg
            .inner
            .range(RangeRequest {
                prefix: RECORD_KEY.to_string(),
                ..Default::default()
            })
            .await?;
        for kv in resp.items.iter().filter(|kv| kv.key == RECORD_KEY) {
            if self.take(self.open(&kv.value)?).await? {
                self.heartbeat().await?;
            }
        }
        let mut events = self.cfg.inner.watch(RECORD_KEY, resp.revision).await?;
        loop {
            tokio::select! {
                ev = events.next() => {
                    let Some(ev) = ev else { return Ok(()) };
                    let ev = ev?;
                    if ev.key != RECORD_KEY || ev.kind == crate::store::EventKind::Delete {
                        continue;
                    }
                    match self.open(&ev.value) {
                        Ok(record) => {
                            if self.take(record).await? {
                                self.heartbeat().await?;
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "secrets encryption key sync: cannot take the published keyring"),
                    }
                }
                _ = tick.tick() => self.heartbeat().await?,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_key_is_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let rng = SystemRandom::new();
        let a = cluster_key(dir.path(), &rng).unwrap();
        let b = cluster_key(dir.path(), &rng).unwrap();
        let mut buf = b"v".to_vec();
        let nonce = [7u8; NONCE_LEN];
        a.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut buf)
            .unwrap();
        assert_eq!(
            b.open_in_place(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut buf)
                .unwrap(),
            b"v"
        );
        use std::os::unix::fs::PermissionsExt;
        let path = dir.path().join(CLUSTER_KEY_FILE);
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(cluster_key(dir.path(), &rng).is_err());
    }
}
