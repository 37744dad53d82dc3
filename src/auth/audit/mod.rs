//! The tamper-evident audit log: one JSON line per API request, in upstream's
//! `audit.k8s.io/v1` `Event` shape, hash-chained so edits, deletions, reorderings and
//! truncation are detected by `rampart audit verify`.
//!
//! - `policy`: upstream's `audit.k8s.io/v1` `Policy` (first matching rule wins) and the default
//!   policy (Metadata for everything, as upstream's recommended policy never logs more than
//!   Metadata for secrets, configmaps and token reviews).
//! - `event`: the line format and the chain hash. `hash` = hex SHA-256 of the line serialized
//!   by serde_json from the [`Event`] struct (fixed field order) with `hash` absent and
//!   `prevHash` present; the first line of a fresh log chains to [`GENESIS`] (64 zeros).
//! - `writer`: the sink (DATA_DIR/audit/audit.log, 0600 files in a 0700 dir, size rotation,
//!   chain resumed across restarts and rotations) with a health flag the request path checks
//!   before serving (fail closed).
//! - `verify`: recomputes the chain over the rotated files and `audit.log`.
//!
//! Bodies: levels Request and RequestResponse are accepted in policies and recorded as the
//! event's level, but request/response objects are not captured (handlers consume the request
//! body and stream responses; teeing them is not cheap). So object contents, Secrets' `data`
//! above all, never reach the log at any level.

mod event;
mod policy;
mod verify;
mod writer;

pub use event::{micro_timestamp, Event, ObjectRef, ResponseStatus, User, GENESIS};
pub use policy::{Level, Policy, PolicyError, Request as PolicyRequest};
pub use verify::{verify, Finding, Verified};
pub use writer::{Config, Error, Sink};
