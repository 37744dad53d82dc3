//! Snapshots of a whole server: the datastore at one revision (a RocksDB checkpoint), the PKI
//! (CAs, service-account keys, leaf identities) and the secrets-encryption keyring, sealed with
//! AES-256-GCM under the snapshot key (`DATA_DIR/snapshot.key`, see `key.rs`; format in
//! `seal.rs` and `archive.rs`).
//!
//! Like `k3s etcd-snapshot save|ls|prune` and `--cluster-reset-restore-path`, but a restore needs
//! only the snapshot file and the key file — not the server token — and the file holds nothing
//! in plaintext. Invariants:
//! - a snapshot is consistent: the store is one checkpoint, and the keyring is read before and
//!   after it and must be unchanged (a key rotation in between retries the snapshot), so every
//!   sealed Secret in the store is readable with the keyring beside it;
//! - a restore writes nothing where the user pointed it until the whole file has been verified
//!   (it is unpacked into a sibling directory and renamed into place at the end);
//! - saved files appear whole (temp file, fsync, rename, fsync of the directory).

mod archive;
mod key;
mod restore;
mod seal;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use key::SnapshotKey;
pub use restore::restore;
pub use seal::Header;

use crate::store::RocksBackend;

/// Name prefix of scheduled snapshots; `prune` only ever removes these.
pub const SCHEDULED_PREFIX: &str = "scheduled-";
const SUFFIX: &str = ".snap";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("snapshot key {path}: {detail}")]
    Key { path: PathBuf, detail: String },
    #[error("the key does not match this snapshot (it was sealed with another snapshot key)")]
    WrongKey,
    #[error("the snapshot was altered or damaged: authentication failed")]
    Tampered,
    #[error("{0}")]
    Format(String),
    #[error("{0}")]
    Crypto(String),
    #[error("the store: {0}")]
    Store(#[from] crate::store::Error),
    #[error("invalid snapshot name {0:?}: use 1-100 of A-Z a-z 0-9 . _ -, not starting with '.'")]
    Name(String),
    #[error("the encryption keyring changed during the snapshot (a key rotation is running); try again when it has finished")]
    KeyringBusy,
    #[error("{0}")]
    Restore(String),
    #[error("invalid --snapshot-schedule {0:?}: {1}")]
    Schedule(String, String),
}

/// Settings of a server's snapshots.
#[derive(Debug, Clone)]
pub struct Config {
    /// The server's data directory (`store/`, `pki/`, `encryption/`, `snapshot.key`).
    pub data_dir: PathBuf,
    /// Cron schedule of automatic snapshots (5 fields, UTC); `None` disables them.
    pub schedule: Option<String>,
    /// How many scheduled snapshots to keep.
    pub retention: usize,
}

/// What `ls` shows of one snapshot.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Listing {
    pub name: String,
    pub path: PathBuf,
    pub size: u64,
    pub created: u64,
    pub revision: u64,
}

/// Takes snapshots of the running server.
pub struct Snapshotter {
    cfg: Config,
    store: RocksBackend,
    /// One snapshot at a time (checkpoints are not cheap and share a staging directory).
    running: tokio::sync::Mutex<()>,
}

pub fn valid_name(name: &str) -> bool {
    (1..=100).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Every regular file under `dir`, as paths relative to it, sorted.
fn files_under(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let abs = dir.join(&rel);
        let entries = match std::fs::read_dir(&abs) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && rel.as_os_str().is_empty() => {
                return Ok(out)
            }
            Err(e) => return Err(e.into()),
        };
        for entry in entries {
            let entry = entry?;
            let kind = entry.file_type()?;
            let child = rel.join(entry.file_name());
            if kind.is_dir() {
                stack.push(child);
            } else if kind.is_file() {
                out.push(child);
            }
        }
    }
    out.sort();
    Ok(out)
}

impl Snapshotter {
    pub fn new(cfg: Config, store: RocksBackend) -> Arc<Self> {
        Arc::new(Snapshotter {
            cfg,
            store,
            running: tokio::sync::Mutex::new(()),
        })
    }

    pub fn dir(&self) -> PathBuf {
        self.cfg.data_dir.join("snapshots")
    }

    fn key(&self) -> Result<SnapshotKey, Error> {
        SnapshotKey::load_or_create(&self.cfg.data_dir.join("snapshot.key"))
    }

    /// Seal a consistent snapshot into `out`; returns the revision it holds at least.
    async fn write_to<W: Write + Send + 'static>(
        &self,
        name: &str,
        out: W,
    ) -> Result<(u64, W), Error> {
        let key = self.key()?;
        let staging_root = self.dir();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&staging_root)?;
        let staging = staging_root.join(format!(".checkpoint-{}", std::process::id()));
        let keyring_path = self.cfg.data_dir.join("encryption/keys.json");
        let read_keyring = || match std::fs::read(&keyring_path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::Io(e)),
        };
        let mut attempt = 0;
        let (revision, keyring) = loop {
            let _ = std::fs::remove_dir_all(&staging);
            std::fs::DirBuilder::new().mode(0o700).create(&staging)?;
            let before = read_keyring()?;
            let revision = self.store.checkpoint(&staging.join("store")).await?;
            let after = read_keyring()?;
            if before == after {
                break (revision, after);
            }
            attempt += 1;
            if attempt == 3 {
                let _ = std::fs::remove_dir_all(&staging);
                return Err(Error::KeyringBusy);
            }
            // No sleep: this runs inside a request. The retry takes a new checkpoint at once;
            // a rotation still writing the keyring makes the save answer 409 (retry later).
        };
        let data_dir = self.cfg.data_dir.clone();
        let name = name.to_string();
        let staging2 = staging.clone();
        let result = tokio::task::spawn_blocking(move || {
            seal_directory(&name, &key, revision, &staging2, &data_dir, keyring, out)
        })
        .await
        .map_err(|e| Error::Format(format!("snapshot task failed: {e}")));
        let _ = std::fs::remove_dir_all(&staging);
        let out = result??;
        Ok((revision, out))
    }

    /// Save a snapshot named `name` into `DATA_DIR/snapshots/<name>.snap`.
    pub async fn save(&self, name: &str) -> Result<Listing, Error> {
        if !valid_name(name) {
            return Err(Error::Name(name.to_string()));
        }
        let _one = self.running.lock().await;
        let dir = self.dir();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)?;
        let path = dir.join(format!("{name}{SUFFIX}"));
        if path.exists() {
            return Err(Error::Restore(format!(
                "a snapshot named {name} already exists"
            )));
        }
        let tmp = dir.join(format!(".{name}{SUFFIX}.tmp"));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        let written = self.write_to(name, std::io::BufWriter::new(file)).await;
        let (revision, writer) = match written {
            Ok(w) => w,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        };
        let file = writer.into_inner().map_err(|e| Error::Io(e.into_error()))?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        sync_dir(&dir);
        let size = std::fs::metadata(&path)?.len();
        tracing::info!(name, revision, size, "snapshot saved");
        Ok(Listing {
            name: name.to_string(),
            path,
            size,
            created: now(),
            revision,
        })
    }

    /// A snapshot sealed into memory, for `rampart snapshot save --output` (kept nowhere on the
    /// server).
    pub async fn save_to_bytes(&self, name: &str) -> Result<Vec<u8>, Error> {
        if !valid_name(name) {
            return Err(Error::Name(name.to_string()));
        }
        let _one = self.running.lock().await;
        let (_, bytes) = self.write_to(name, Vec::new()).await?;
        Ok(bytes)
    }

    pub fn list(&self) -> Result<Vec<Listing>, Error> {
        list(&self.dir())
    }

    /// Remove the oldest scheduled snapshots beyond `retention`.
    pub fn prune(&self, retention: usize) -> Result<Vec<String>, Error> {
        prune(&self.dir(), retention)
    }
}

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};

fn seal_directory<W: Write>(
    name: &str,
    key: &SnapshotKey,
    revision: u64,
    checkpoint: &Path,
    data_dir: &Path,
    keyring: Option<Vec<u8>>,
    out: W,
) -> Result<W, Error> {
    let mut writer = seal::SealWriter::new(out, key, name, now(), revision)?;
    let mut emit = |b: &[u8]| writer.write(b);
    let mode_of = |p: &Path| -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p)
            .map(|m| m.permissions().mode())
            .unwrap_or(0o600)
    };
    let store_dir = checkpoint.join("store");
    for rel in files_under(&store_dir)? {
        let abs = store_dir.join(&rel);
        let contents = std::fs::read(&abs)?;
        archive::write_file(
            &mut emit,
            &format!("store/{}", rel.display()),
            0o600,
            &contents,
        )?;
    }
    for root in ["pki", "encryption"] {
        let dir = data_dir.join(root);
        for rel in files_under(&dir)? {
            let logical = format!("{root}/{}", rel.display());
            if logical == "encryption/keys.json" {
                continue; // written below, from the copy checked around the checkpoint
            }
            if rel
                .file_name()
                .is_some_and(|n| n.to_string_lossy().ends_with(".tmp"))
            {
                continue;
            }
            let abs = dir.join(&rel);
            let contents = std::fs::read(&abs)?;
            archive::write_file(&mut emit, &logical, mode_of(&abs), &contents)?;
        }
    }
    if let Some(keyring) = keyring {
        archive::write_file(&mut emit, "encryption/keys.json", 0o600, &keyring)?;
    }
    archive::write_end(&mut emit)?;
    writer.finish()
}

/// The snapshots in `dir`, newest first. Files that do not read as snapshots are skipped.
pub fn list(dir: &Path) -> Result<Vec<Listing>, Error> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let fname = entry.file_name().to_string_lossy().to_string();
        if fname.starts_with('.') || !fname.ends_with(SUFFIX) {
            continue;
        }
        let Ok(mut f) = std::fs::File::open(&path) else {
            continue;
        };
        let Ok(header) = Header::read(&mut f) else {
            continue;
        };
        let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
        out.push(Listing {
            name: header.name,
            path,
            size,
            created: header.created,
            revision: header.revision,
        });
    }
    out.sort_by(|a, b| b.created.cmp(&a.created).then(b.name.cmp(&a.name)));
    Ok(out)
}

/// Remove scheduled snapshots beyond the newest `retention`; returns the names removed.
pub fn prune(dir: &Path, retention: usize) -> Result<Vec<String>, Error> {
    let mut removed = Vec::new();
    let scheduled = list(dir)?
        .into_iter()
        .filter(|l| l.name.starts_with(SCHEDULED_PREFIX));
    for old in scheduled.skip(retention) {
        std::fs::remove_file(&old.path)?;
        removed.push(old.name);
    }
    if !removed.is_empty() {
        sync_dir(dir);
    }
    Ok(removed)
}

/// The next time a 5-field cron `schedule` (UTC) fires after now.
fn next_fire(schedule: &croner::Cron) -> Option<Duration> {
    let now = chrono::Utc::now();
    let next = schedule.find_next_occurrence(&now, false).ok()?;
    (next - now).to_std().ok()
}

pub fn parse_schedule(expr: &str) -> Result<croner::Cron, Error> {
    expr.parse::<croner::Cron>()
        .map_err(|e| Error::Schedule(expr.to_string(), e.to_string()))
}

/// Scheduled snapshots until `shutdown`: save `scheduled-<unix time>`, then prune to the
/// retention count. Failures are logged and retried at the next tick, never fatal.
pub async fn run(
    snapshotter: Arc<Snapshotter>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), Error> {
    let Some(expr) = snapshotter.cfg.schedule.clone() else {
        shutdown.await;
        return Ok(());
    };
    let schedule = parse_schedule(&expr)?;
    tokio::pin!(shutdown);
    loop {
        let Some(wait) = next_fire(&schedule) else {
            tracing::warn!(schedule = %expr, "snapshot schedule never fires again");
            shutdown.await;
            return Ok(());
        };
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            _ = tokio::time::sleep(wait) => {}
        }
        let name = format!("{SCHEDULED_PREFIX}{}", now());
        match snapshotter.save(&name).await {
            Ok(_) => match snapshotter.prune(snapshotter.cfg.retention) {
                Ok(removed) if !removed.is_empty() => {
                    tracing::info!(?removed, "pruned scheduled snapshots")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "cannot prune snapshots"),
            },
            Err(e) => tracing::warn!(error = %e, name, "scheduled snapshot failed"),
        }
        // Cron has one-minute resolution: never fire twice for the same minute.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
