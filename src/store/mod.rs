//! The storage layer: a revisioned key-value store with watches, in the shape of etcd's v3 API,
//! which is what the Kubernetes apiserver is written against.
//!
//! Invariants every [`Backend`] keeps (the conformance suite in `tests/store_conformance.rs`
//! checks them):
//! - one global revision, a `u64` that grows by exactly one per successful write; an object's
//!   `mod_revision` is the revision that last wrote it (it becomes `metadata.resourceVersion`);
//! - a write is acknowledged only once it is durable (WAL synced);
//! - reads at a revision see exactly the writes up to that revision (a consistent snapshot);
//! - a watch from revision `r` delivers every event with revision `> r` for its prefix, in
//!   revision order, with no gap and no duplicate, first from history and then live;
//! - history older than the compacted revision is gone: reading or watching there fails with
//!   [`Error::Compacted`], which the API turns into `410 Gone` so clients re-list;
//! - a watcher that cannot keep up is closed with [`Error::WatchTooSlow`] instead of slowing
//!   writers or other watchers.
//!
//! Only `apiserver` may use this module (see `tests/layering.rs`).

pub mod compactor;
pub mod encrypted;
mod error;
pub mod etcd;
pub mod rocks;
pub mod snapshot;
mod watch;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

pub use error::Error;
pub use etcd::{EtcdBackend, EtcdConfig};
pub use rocks::{RocksBackend, RocksConfig};

/// A store revision. Revision 0 means "nothing written yet".
pub type Revision = u64;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One key and its value as of some revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Bytes,
    /// The revision of the write that produced this value.
    pub mod_revision: Revision,
}

/// What a write did to its key; the apiserver maps these to watch event types
/// (`ADDED`, `MODIFIED`, `DELETED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Create,
    Update,
    Delete,
}

/// One committed write, as a watcher sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub key: String,
    /// The new value; for [`EventKind::Delete`], the value the key held just before the delete
    /// (Kubernetes' DELETED events carry the last state of the object).
    pub value: Bytes,
    pub revision: Revision,
    /// For [`EventKind::Update`], the value just before this write (watchers filtering by
    /// content need it to tell "left the selection" from "changed"); `None` otherwise.
    pub prev_value: Option<Bytes>,
}

/// A range read: every live key under `prefix`, in key order.
#[derive(Debug, Clone, Default)]
pub struct RangeRequest {
    pub prefix: String,
    /// Resume after this key (the key part of a Kubernetes `continue` token).
    pub start_after: Option<String>,
    /// At most this many items; 0 means no limit.
    pub limit: usize,
    /// Read as of this revision; `None` reads the latest committed revision.
    pub revision: Option<Revision>,
}

#[derive(Debug, Clone)]
pub struct RangeResponse {
    pub items: Vec<KeyValue>,
    /// The revision the read was served at; pass it back to read the next page from the same
    /// snapshot.
    pub revision: Revision,
    /// True when `limit` cut the result short.
    pub more: bool,
}

/// A stream of watch events. It ends with `Err` (and then `None`) when the watcher fell behind
/// or its start revision was compacted during replay.
pub type WatchStream = BoxStream<'static, Result<Event>>;

/// The storage contract the apiserver is written against. Implemented by [`RocksBackend`]
/// (embedded, the default); an etcd backend for HA implements the same trait.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// The value of `key` at `revision` (latest when `None`); `None` if absent then.
    async fn get(&self, key: &str, revision: Option<Revision>) -> Result<Option<KeyValue>>;
    /// Keys under a prefix, paginated, at a consistent revision.
    async fn range(&self, req: RangeRequest) -> Result<RangeResponse>;
    /// Write `key` only if it does not exist; returns the new revision.
    async fn create(&self, key: &str, value: Bytes) -> Result<Revision>;
    /// Replace `key` only if its current `mod_revision` is `expected` (compare-and-swap).
    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<Revision>;
    /// Delete `key` only if its current `mod_revision` is `expected`; returns the delete's
    /// revision.
    async fn delete(&self, key: &str, expected: Revision) -> Result<Revision>;
    /// Events for keys under `prefix` with revision greater than `after`.
    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream>;
    /// Discard history up to and including `revision`.
    async fn compact(&self, revision: Revision) -> Result<()>;
    /// The latest committed revision.
    fn current_revision(&self) -> Revision;
    /// The revision history was last compacted to (0 if never).
    fn compacted_revision(&self) -> Revision;
}

/// Keys are UTF-8 paths like `/registry/pods/default/web-0`; NUL is reserved by the on-disk
/// encoding and empty keys mean nothing.
pub(crate) fn check_key(key: &str) -> Result<()> {
    if key.is_empty() || key.contains('\0') {
        return Err(Error::InvalidKey(key.escape_debug().to_string()));
    }
    Ok(())
}
