//! The embedded store: multi-version keys in RocksDB, one writer thread that assigns revisions
//! and group-commits, and watches fed from history and then from the live hub.
//!
//! Durability: every acknowledged write was part of a `WriteBatch` (new version, history entry
//! and current revision together) written with a synced WAL, so a `kill -9` loses nothing that
//! was acknowledged and never leaves half a write. Writers that arrive while a batch is being
//! synced are committed together in the next batch (group commit), which is why throughput
//! grows with concurrency while single-writer latency stays one fsync.

mod commit;
mod compact;
mod encoding;
mod open;
mod read;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::thread::JoinHandle;

use async_trait::async_trait;
use bytes::Bytes;
use rocksdb::DB;
use tokio::sync::oneshot;

use super::watch::Hub;
use super::{
    check_key, Backend, Error, Event, KeyValue, RangeRequest, RangeResponse, Result, Revision,
    WatchStream,
};
use commit::{Op, Request};

/// Settings of the embedded store.
#[derive(Debug, Clone)]
pub struct RocksConfig {
    /// Directory holding the RocksDB files (created 0700 if missing).
    pub path: PathBuf,
    /// Events a watcher may have queued before it is closed as too slow.
    pub watch_buffer: usize,
    /// Bytes (keys and values) a watcher may have queued before it is closed as too slow.
    pub watch_buffer_bytes: usize,
    /// Bytes queued over all watchers; past it the one furthest behind is closed.
    pub watch_total_bytes: usize,
    /// Most writes committed in one batch (one fsync).
    pub max_batch: usize,
}

impl RocksConfig {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        RocksConfig {
            path: path.into(),
            watch_buffer: 10_000,
            watch_buffer_bytes: 16 << 20,
            watch_total_bytes: 512 << 20,
            max_batch: 1024,
        }
    }
}

/// State shared by the handle, the writer thread and open watch streams.
pub(crate) struct Shared {
    db: DB,
    path: PathBuf,
    /// Latest revision whose batch is durable.
    committed: AtomicU64,
    /// Reads and watches below this revision fail with `Compacted`.
    compacted: AtomicU64,
    hub: Hub,
    /// Serialises compactions (the writer never waits on it).
    compaction: Mutex<()>,
}

impl Shared {
    fn cf(&self, name: &str) -> Result<&rocksdb::ColumnFamily> {
        self.db.cf_handle(name).ok_or_else(|| Error::Corrupt {
            path: self.path.clone(),
            detail: format!("column family {name} is missing"),
        })
    }

    fn rocks_err(&self, err: rocksdb::Error) -> Error {
        Error::from_rocks(err, &self.path)
    }
}

struct Writer {
    tx: Mutex<Option<std_mpsc::Sender<Request>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Writer {
    fn drop(&mut self) {
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
        if let Ok(mut thread) = self.thread.lock() {
            if let Some(handle) = thread.take() {
                let _ = handle.join();
            }
        }
    }
}

/// Handle to an open RocksDB store; cheap to clone. The database closes when the last handle
/// and the last watch stream are gone.
#[derive(Clone)]
pub struct RocksBackend {
    shared: Arc<Shared>,
    writer: Arc<Writer>,
}

impl RocksBackend {
    /// Open (or create) the store in `cfg.path`. Fails with a clear [`Error`] when the directory
    /// is locked by another process, damaged, or not a directory.
    pub fn open(cfg: RocksConfig) -> Result<Self> {
        let shared = Arc::new(open::open(&cfg)?);
        let (tx, rx) = std_mpsc::channel();
        let thread_shared = shared.clone();
        let max_batch = cfg.max_batch.max(1);
        let thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || commit::run(thread_shared, rx, max_batch))
            .map_err(|e| Error::Storage(format!("cannot start the writer thread: {e}")))?;
        Ok(RocksBackend {
            shared,
            writer: Arc::new(Writer {
                tx: Mutex::new(Some(tx)),
                thread: Mutex::new(Some(thread)),
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Number of open watch streams.
    pub fn watchers(&self) -> usize {
        self.shared.hub.watchers()
    }

    /// Number of stored versions (live, superseded and tombstones); compaction keeps it bounded.
    pub fn stored_versions(&self) -> Result<u64> {
        read::count_versions(&self.shared)
    }

    /// Bytes of SST and WAL files under the data directory.
    pub fn disk_usage(&self) -> u64 {
        fn walk(dir: &Path) -> u64 {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return 0;
            };
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => walk(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        }
        walk(&self.shared.path)
    }

    /// A consistent point-in-time copy of the whole store in `dir` (which must not exist), made
    /// with RocksDB's checkpoint (hard links to SST files on the same filesystem, the memtable
    /// flushed first). Returns the revision committed before the copy began: the copy holds
    /// at least that revision, and every write acknowledged before the call.
    pub async fn checkpoint(&self, dir: &Path) -> Result<Revision> {
        let dir = dir.to_path_buf();
        self.blocking(move |shared| {
            let revision = shared.committed.load(Ordering::Acquire);
            let checkpoint = rocksdb::checkpoint::Checkpoint::new(&shared.db)
                .map_err(|e| shared.rocks_err(e))?;
            checkpoint
                .create_checkpoint(&dir)
                .map_err(|e| shared.rocks_err(e))?;
            Ok(revision)
        })
        .await
    }

    async fn submit(&self, op: Op) -> Result<Revision> {
        let (reply, rx) = oneshot::channel();
        {
            let guard = self.writer.tx.lock().map_err(|_| Error::Closed)?;
            let tx = guard.as_ref().ok_or(Error::Closed)?;
            tx.send(Request { op, reply }).map_err(|_| Error::Closed)?;
        }
        rx.await.map_err(|_| Error::Closed)?
    }

    /// Run a blocking read on the blocking pool so large ranges do not stall the runtime.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Shared) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || f(&shared))
            .await
            .map_err(|e| Error::Storage(format!("read task failed: {e}")))?
    }
}

#[async_trait]
impl Backend for RocksBackend {
    async fn get(&self, key: &str, revision: Option<Revision>) -> Result<Option<KeyValue>> {
        check_key(key)?;
        read::get(&self.shared, key, revision)
    }

    async fn range(&self, req: RangeRequest) -> Result<RangeResponse> {
        self.blocking(move |s| read::range(s, &req)).await
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<Revision> {
        check_key(key)?;
        self.submit(Op::Create {
            key: key.to_string(),
            value,
        })
        .await
    }

    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<Revision> {
        check_key(key)?;
        self.submit(Op::Update {
            key: key.to_string(),
            value,
            expected,
        })
        .await
    }

    async fn delete(&self, key: &str, expected: Revision) -> Result<Revision> {
        check_key(key)?;
        self.submit(Op::Delete {
            key: key.to_string(),
            expected,
        })
        .await
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        read::watch(self.shared.clone(), prefix, after)
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        self.blocking(move |s| compact::compact(s, revision)).await
    }

    fn current_revision(&self) -> Revision {
        self.shared.committed.load(Ordering::SeqCst)
    }

    fn compacted_revision(&self) -> Revision {
        self.shared.compacted.load(Ordering::SeqCst)
    }
}

/// Watch events are shared between watchers; hand out owned copies.
fn owned(ev: &Arc<Event>) -> Event {
    Event::clone(ev)
}
