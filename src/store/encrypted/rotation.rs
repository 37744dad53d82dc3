//! Crash-safe rotation of the secrets encryption key, the work behind
//! `rampart secrets-encrypt rotate-keys` (k3s's command of the same name, minus its failure
//! mode: an interrupted k3s rotation can leave a cluster that no longer reads its secrets).
//!
//! Stages, each recorded durably in `keys.json`'s `rotation` section before it is acted on:
//! 1. `key-added`: a fresh 256-bit key joins the file as a readable key; the old key still
//!    writes. (Every replacement of the file: temporary file, fsync, rename, fsync directory.)
//! 2. `re-encrypting`: the new key becomes the write key. Then every stored value under the
//!    encrypted prefixes is re-sealed in batches, each object rewritten with a compare-and-swap
//!    on the `mod_revision` it was read at; a conflict means a client wrote it meanwhile — under
//!    the new key already — so it is skipped. After each batch the last storage key done is
//!    recorded (`after`), and a restarted server resumes there.
//! 3. A full scan at one revision must find every live value under the new key (otherwise the
//!    pass starts over); history up to that revision is then compacted, so no old revision
//!    still holds an old-key ciphertext; only then is the old key dropped from the file and the
//!    rotation marked `done`.
//!
//! Invariant: every value in the store is plaintext or sealed with a key `keys.json` lists, at
//! every instant, so a `kill -9` anywhere (even mid-write of the key file) leaves a server that
//! starts and reads every secret. Writers hold the keyring's `in_flight` lock from sealing to
//! commit, and stage 2 waits for it exclusively, so no write sealed under the old key can land
//! after the pass has started.
//!
//! Re-encryption rewrites bump the objects' `resourceVersion` and watchers see `MODIFIED`
//! events with unchanged content, exactly as upstream's documented procedure
//! (`kubectl get secrets -A -o json | kubectl replace -f -`) does. The compaction at the end
//! makes watches resuming from before the rotation answer 410 Gone; clients re-list, as they do
//! after any compaction. (A watcher so far behind that it still holds an old-key event when the
//! key is dropped gets an error instead, and re-lists the same way.)
//!
//! A value that cannot be opened (tampered, or under a key the file no longer has) stops the
//! pass; the rotation retries with backoff and reports the error in its status until an operator
//! deletes or restores that object. The old key stays readable meanwhile.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use super::keyring::{new_secret, sealed_with, KeyEntry, KeyFile, Keyring, RotationRecord, Stage};
use super::sync::KeySync;
use crate::store::{Backend, KeyValue, RangeRequest, Revision};

#[derive(Clone)]
pub struct Config {
    /// The store under the encryption wrapper (re-encryption reads raw envelopes).
    pub inner: Arc<dyn Backend>,
    pub keyring: Arc<Keyring>,
    /// The encrypted prefixes (the same the wrapper was given).
    pub prefixes: Vec<String>,
    /// Objects per batch (and per progress record).
    pub batch_size: usize,
    /// Pause after each batch (a test hook to let kills land mid-rotation; zero otherwise).
    pub batch_delay: Duration,
    /// On a shared datastore: this server's identity and the channel that carries each stage to
    /// the other servers (a stage moves on only once every live server holds its keys).
    pub sync: Option<Arc<KeySync>>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("a key rotation is already running")]
    AlreadyRunning,
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    #[error("keys.json is inconsistent: {0}")]
    Inconsistent(String),
    #[error("a key-file task failed: {0}")]
    Task(String),
    #[error(transparent)]
    Sync(#[from] super::sync::Error),
}

/// What `rampart secrets-encrypt status` shows.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub write_key: String,
    pub readable_keys: Vec<String>,
    /// `idle` (never rotated), `key-added`, `re-encrypting` or `done`.
    pub stage: String,
    /// Whether this server is working on a rotation now.
    pub running: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rotation: Option<RotationRecord>,
    /// Live objects per key id they are sealed with.
    pub objects: BTreeMap<String, u64>,
    /// Live objects under the encrypted prefixes stored without encryption (written before
    /// encryption was enabled).
    pub unencrypted: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// The rotation controller: start rotations, report status, resume an unfinished rotation.
pub struct Rotation {
    cfg: Config,
    running: AtomicBool,
    wake: tokio::sync::Notify,
    last_error: Mutex<Option<String>>,
}

fn now() -> String {
    let now = jiff::Timestamp::now();
    jiff::Timestamp::from_second(now.as_second())
        .unwrap_or(now)
        .to_string()
}

/// The next unused `key<N>` id (never one this file has used recently, so an id never names
/// two different secrets while values under the first could still exist).
fn next_id(file: &KeyFile) -> String {
    let mut used: Vec<&str> = file.keys.iter().map(|k| k.id.as_str()).collect();
    if let Some(r) = &file.rotation {
        used.push(&r.from);
        used.push(&r.to);
    }
    let max = used
        .iter()
        .filter_map(|id| id.strip_prefix("key")?.parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    let mut n = max + 1;
    while used.contains(&format!("key{n}").as_str()) {
        n += 1;
    }
    format!("key{n}")
}

fn stage_name(rec: Option<&RotationRecord>) -> &'static str {
    match rec.map(|r| r.stage) {
        None => "idle",
        Some(Stage::KeyAdded) => "key-added",
        Some(Stage::ReEncrypting) => "re-encrypting",
        Some(Stage::Done) => "done",
    }
}

fn unfinished(rec: Option<&RotationRecord>) -> bool {
    matches!(
        rec.map(|r| r.stage),
        Some(Stage::KeyAdded | Stage::ReEncrypting)
    )
}

/// Whether this server drives `rec`: it started it (or nobody is named, as on a server of its
/// own). Another server's rotation reaches this one through the sync channel only.
fn mine(rec: Option<&RotationRecord>, me: Option<&str>) -> bool {
    match rec.and_then(|r| r.owner.as_deref()) {
        None => true,
        Some(owner) => Some(owner) == me,
    }
}

/// Whether storage key `key` sorts after every key under `prefix` (progress `after` is past it).
fn past(prefix: &str, after: &str) -> bool {
    after > prefix && !after.starts_with(prefix)
}

impl Rotation {
    pub fn new(cfg: Config) -> Arc<Self> {
        let mut cfg = cfg;
        cfg.prefixes.sort();
        cfg.batch_size = cfg.batch_size.max(1);
        // An interrupted rotation counts as running from the start: `run` resumes it.
        let rec = cfg.keyring.snapshot().file.rotation.clone();
        let me = cfg.sync.as_ref().map(|s| s.identity().to_string());
        let resuming = unfinished(rec.as_ref()) && mine(rec.as_ref(), me.as_deref());
        Arc::new(Rotation {
            cfg,
            running: AtomicBool::new(resuming),
            wake: tokio::sync::Notify::new(),
            last_error: Mutex::new(None),
        })
    }

    fn set_error(&self, e: Option<String>) {
        if let Ok(mut g) = self.last_error.lock() {
            *g = e;
        }
    }

    /// Apply a change to keys.json durably (off the async threads: it fsyncs).
    async fn commit(
        &self,
        change: impl FnOnce(&mut KeyFile) -> crate::store::Result<()> + Send + 'static,
    ) -> Result<(), Error> {
        let keyring = self.cfg.keyring.clone();
        tokio::task::spawn_blocking(move || keyring.commit(change))
            .await
            .map_err(|e| Error::Task(e.to_string()))??;
        Ok(())
    }

    /// The keys, the rotation stage and how many live objects each key seals.
    pub async fn status(&self) -> Result<Status, Error> {
        let keys = self.cfg.keyring.snapshot();
        let mut objects = BTreeMap::new();
        let mut unencrypted = 0;
        self.scan(|kv| {
            match sealed_with(&kv.value) {
                Some(id) => {
                    *objects
                        .entry(String::from_utf8_lossy(id).into_owned())
                        .or_insert(0) += 1
                }
                None => unencrypted += 1,
            }
            Ok(())
        })
        .await?;
        let rec = keys.file.rotation.clone();
        Ok(Status {
            write_key: keys.write_id().to_string(),
            readable_keys: keys.ids(),
            stage: stage_name(rec.as_ref()).to_string(),
            running: self.running.load(Ordering::SeqCst),
            rotation: rec,
            objects,
            unencrypted,
            last_error: self.last_error.lock().ok().and_then(|g| g.clone()),
        })
    }

    /// Visit every live raw value under the prefixes, at one revision; returns that revision.
    async fn scan(
        &self,
        mut visit: impl FnMut(&KeyValue) -> Result<(), Error>,
    ) -> Result<Revision, Error> {
        let mut revision = None;
        for prefix in &self.cfg.prefixes {
            let mut after = None;
            loop {
                let resp = self
                    .cfg
                    .inner
                    .range(RangeRequest {
                        prefix: prefix.clone(),
                        start_after: after.take(),
                        limit: 500,
                        revision,
                    })
                    .await?;
                revision = Some(resp.revision);
                for kv in &resp.items {
                    visit(kv)?;
                }
                match (resp.more, resp.items.last()) {
                    (true, Some(last)) => after = Some(last.key.clone()),
                    _ => break,
                }
            }
        }
        Ok(revision.unwrap_or_else(|| self.cfg.inner.current_revision()))
    }

    /// Start a rotation (or resume an unfinished one): stage 1 is done before this returns;
    /// the rest runs in the background.
    pub async fn start(&self) -> Result<Status, Error> {
        if self
            .running
            .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return Err(Error::AlreadyRunning);
        }
        let keys = self.cfg.keyring.snapshot();
        let me = self.identity();
        if !unfinished(keys.file.rotation.as_ref()) {
            let keyring = self.cfg.keyring.clone();
            let owner = me.clone();
            let added = tokio::task::spawn_blocking(move || {
                let secret = new_secret(keyring.rng(), keyring.path())?;
                keyring.commit(move |f| {
                    let id = next_id(f);
                    f.keys.push(KeyEntry {
                        id: id.clone(),
                        secret,
                    });
                    f.rotation = Some(RotationRecord {
                        stage: Stage::KeyAdded,
                        from: f.write.clone(),
                        to: id,
                        after: None,
                        done: 0,
                        started_at: Some(now()),
                        finished_at: None,
                        owner,
                    });
                    Ok(())
                })
            })
            .await
            .map_err(|e| Error::Task(e.to_string()))
            .and_then(|r| r.map_err(Error::from));
            if let Err(e) = added {
                self.running.store(false, Ordering::SeqCst);
                return Err(e);
            }
            tracing::info!("secrets encryption key rotation started: new key added");
        } else if !mine(keys.file.rotation.as_ref(), me.as_deref()) {
            // Another server's unfinished rotation (that server may be gone): this one takes it
            // over and carries it on from the recorded stage.
            let owner = me.clone();
            if let Err(e) = self
                .commit(move |f| {
                    if let Some(r) = f.rotation.as_mut() {
                        r.owner = owner;
                    }
                    Ok(())
                })
                .await
            {
                self.running.store(false, Ordering::SeqCst);
                return Err(e);
            }
            tracing::info!("secrets encryption: taking over another server's unfinished rotation");
        }
        self.set_error(None);
        self.wake.notify_one();
        self.status().await
    }

    /// Resume an unfinished rotation now, then carry out the ones [`Rotation::start`] begins,
    /// until `shutdown` resolves.
    pub async fn run(self: Arc<Self>, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        tokio::pin!(shutdown);
        loop {
            let rec = self.cfg.keyring.snapshot().file.rotation.clone();
            if unfinished(rec.as_ref()) && mine(rec.as_ref(), self.identity().as_deref()) {
                self.running.store(true, Ordering::SeqCst);
                tokio::select! {
                    _ = &mut shutdown => return Ok(()),
                    _ = self.drive_with_retries() => {}
                }
                self.running.store(false, Ordering::SeqCst);
            }
            tokio::select! {
                _ = &mut shutdown => return Ok(()),
                _ = self.wake.notified() => {}
            }
        }
    }

    fn identity(&self) -> Option<String> {
        self.cfg.sync.as_ref().map(|s| s.identity().to_string())
    }

    /// On a shared datastore: publish this server's keyring and wait until every live server
    /// holds it. Nothing to do on a server of its own.
    async fn converge(&self) -> Result<(), Error> {
        if let Some(sync) = &self.cfg.sync {
            sync.publish_and_converge().await?;
        }
        Ok(())
    }

    async fn drive_with_retries(&self) {
        let mut backoff = Duration::from_secs(1);
        loop {
            match self.drive().await {
                Ok(()) => {
                    self.set_error(None);
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "secrets encryption key rotation failed; retrying");
                    self.set_error(Some(e.to_string()));
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    /// Carry the rotation recorded in keys.json to `done`, from whatever stage it is in.
    async fn drive(&self) -> Result<(), Error> {
        loop {
            let keys = self.cfg.keyring.snapshot();
            let Some(rec) = keys.file.rotation.clone() else {
                return Ok(());
            };
            match rec.stage {
                Stage::Done => return Ok(()),
                Stage::KeyAdded => {
                    // Every server must read the new key before anyone writes with it.
                    self.converge().await?;
                    self.commit(move |f| {
                        f.write = rec.to.clone();
                        if let Some(r) = f.rotation.as_mut() {
                            r.stage = Stage::ReEncrypting;
                            r.after = None;
                            r.done = 0;
                        }
                        Ok(())
                    })
                    .await?;
                    tracing::info!("secrets encryption: the new key is the write key");
                }
                Stage::ReEncrypting => {
                    if keys.write_id() != rec.to {
                        return Err(Error::Inconsistent(format!(
                            "rotation to {} but the write key is {}",
                            rec.to,
                            keys.write_id()
                        )));
                    }
                    // Every server writes with the new key (and has waited out its own writes
                    // sealed under the old one) before the pass starts.
                    self.converge().await?;
                    // Wait out writes sealed before the write key changed.
                    drop(self.cfg.keyring.in_flight.write().await);
                    self.re_encrypt(&rec).await?;
                    let mut left = 0u64;
                    let to = rec.to.clone();
                    let revision = self
                        .scan(|kv| {
                            if sealed_with(&kv.value) != Some(to.as_bytes()) {
                                left += 1;
                            }
                            Ok(())
                        })
                        .await?;
                    if left > 0 {
                        tracing::info!(
                            left,
                            "secrets encryption: objects still under an old key; another pass"
                        );
                        self.commit(|f| {
                            if let Some(r) = f.rotation.as_mut() {
                                r.after = None;
                            }
                            Ok(())
                        })
                        .await?;
                        continue;
                    }
                    // No old revision may keep an old-key ciphertext once the key is gone.
                    if revision > self.cfg.inner.compacted_revision() {
                        self.cfg.inner.compact(revision).await?;
                    }
                    self.commit(move |f| {
                        f.keys.retain(|k| k.id == to);
                        if let Some(r) = f.rotation.as_mut() {
                            r.stage = Stage::Done;
                            r.after = None;
                            r.finished_at = Some(now());
                        }
                        Ok(())
                    })
                    .await?;
                    tracing::info!(
                        key = %rec.to,
                        "secrets encryption key rotation done; old keys removed"
                    );
                    // The others drop the old key too; nothing is sealed with it any more, so
                    // this need not wait for them.
                    if let Some(sync) = &self.cfg.sync {
                        if let Err(e) = sync.publish().await {
                            tracing::warn!(error = %e, "secrets encryption: could not publish the finished rotation; the other servers keep the old key readable until the next publish");
                        }
                    }
                    return Ok(());
                }
            }
        }
    }

    /// Stage 2's pass: re-seal every value not under `rec.to`, resuming after `rec.after`.
    async fn re_encrypt(&self, rec: &RotationRecord) -> Result<(), Error> {
        let keyring = &self.cfg.keyring;
        let mut done = rec.done;
        for prefix in &self.cfg.prefixes {
            let mut after = match &rec.after {
                Some(a) if a.starts_with(prefix.as_str()) => Some(a.clone()),
                Some(a) if past(prefix, a) => continue,
                _ => None,
            };
            loop {
                let resp = self
                    .cfg
                    .inner
                    .range(RangeRequest {
                        prefix: prefix.clone(),
                        start_after: after.clone(),
                        limit: self.cfg.batch_size,
                        revision: None,
                    })
                    .await?;
                let Some(last) = resp.items.last().map(|kv| kv.key.clone()) else {
                    break;
                };
                for kv in &resp.items {
                    if sealed_with(&kv.value) == Some(rec.to.as_bytes()) {
                        continue;
                    }
                    let plain = keyring.open(&kv.key, &kv.value)?;
                    let sealed = keyring.seal(&kv.key, &plain)?;
                    match self
                        .cfg
                        .inner
                        .update(&kv.key, sealed, kv.mod_revision)
                        .await
                    {
                        // A conflict: a client rewrote (or deleted) it, under the new key.
                        Ok(_)
                        | Err(crate::store::Error::Conflict { .. })
                        | Err(crate::store::Error::NotFound { .. }) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                done += resp.items.len() as u64;
                let progress = last.clone();
                self.commit(move |f| {
                    if let Some(r) = f.rotation.as_mut() {
                        r.after = Some(progress);
                        r.done = done;
                    }
                    Ok(())
                })
                .await?;
                if !self.cfg.batch_delay.is_zero() {
                    tokio::time::sleep(self.cfg.batch_delay).await;
                }
                if !resp.more {
                    break;
                }
                after = Some(last);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::encrypted::EncryptedBackend;
    use crate::store::{RocksBackend, RocksConfig};
    use bytes::Bytes;

    /// Two rotations in a row while a client keeps rewriting, creating and deleting secrets:
    /// every write survives with its data and everything ends under the newest key alone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rotation_races_concurrent_writers() {
        let dir = tempfile::tempdir().unwrap();
        let rocks: Arc<dyn Backend> =
            Arc::new(RocksBackend::open(RocksConfig::new(dir.path().join("store"))).unwrap());
        let keyring = Arc::new(Keyring::load_or_create(&dir.path().join("enc")).unwrap());
        let prefixes = vec!["/s/".to_string()];
        let wrapped: Arc<dyn Backend> = Arc::new(EncryptedBackend::new(
            rocks.clone(),
            keyring.clone(),
            prefixes.clone(),
        ));
        for i in 0..250 {
            wrapped
                .create(&format!("/s/{i:03}"), Bytes::from(format!("v{i}")))
                .await
                .unwrap();
        }
        let rotation = Rotation::new(Config {
            inner: rocks.clone(),
            keyring: keyring.clone(),
            prefixes,
            batch_size: 40,
            batch_delay: Duration::from_millis(5),
            sync: None,
        });
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let runner = tokio::spawn(rotation.clone().run(async {
            let _ = stop_rx.await;
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (wrapped, stop) = (wrapped.clone(), stop.clone());
            tokio::spawn(async move {
                let mut acked: BTreeMap<String, Bytes> = (0..250)
                    .map(|i| (format!("/s/{i:03}"), Bytes::from(format!("v{i}"))))
                    .collect();
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    let key = format!("/s/{:03}", n % 250);
                    let kv = wrapped.get(&key, None).await.unwrap().unwrap();
                    let value = Bytes::from(format!("w{n}"));
                    // A conflict with the rotation's rewrite: the next round tries again.
                    if wrapped
                        .update(&key, value.clone(), kv.mod_revision)
                        .await
                        .is_ok()
                    {
                        acked.insert(key, value);
                    }
                    let extra = format!("/s/x{n}");
                    let rev = wrapped.create(&extra, Bytes::from("x")).await.unwrap();
                    if n.is_multiple_of(2) {
                        wrapped.delete(&extra, rev).await.unwrap();
                    } else {
                        acked.insert(extra, Bytes::from("x"));
                    }
                }
                acked
            })
        };
        for _ in 0..2 {
            assert_eq!(rotation.start().await.unwrap().stage, "key-added");
            assert!(matches!(rotation.start().await, Err(Error::AlreadyRunning)));
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            loop {
                let st = rotation.status().await.unwrap();
                if st.stage == "done" && !st.running {
                    break;
                }
                assert!(tokio::time::Instant::now() < deadline, "{st:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        stop.store(true, Ordering::SeqCst);
        let acked = writer.await.unwrap();
        let st = rotation.status().await.unwrap();
        assert_eq!(st.write_key, "key3");
        assert_eq!(st.readable_keys, vec!["key3".to_string()]);
        assert_eq!(st.objects.keys().collect::<Vec<_>>(), vec!["key3"]);
        // Everything opens; writes made during the rotation were not overwritten.
        let all = wrapped
            .range(RangeRequest {
                prefix: "/s/".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        let got: BTreeMap<String, Bytes> =
            all.items.into_iter().map(|kv| (kv.key, kv.value)).collect();
        assert_eq!(got, acked);
        let _ = stop_tx.send(());
        runner.await.unwrap().unwrap();
    }

    #[test]
    fn progress_past_a_prefix() {
        assert!(past("/a/", "/a0"));
        assert!(past("/a/", "/b/x"));
        assert!(!past("/a/", "/a/x"));
        assert!(!past("/b/", "/a/x"));
    }
}
