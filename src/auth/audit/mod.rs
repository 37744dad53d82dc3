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
//! - `flood`: strangers' requests (nobody authenticated) aggregated into counted summary
//!   lines, so anonymous floods write a bounded amount.
//! - `verify`: recomputes the chain over the rotated files and `audit.log`; history pruned
//!   from the start of the chain is reported (a failure for `rampart audit verify` unless
//!   `--allow-pruned`).
//!
//! Bodies, as upstream: level Request records the request body as `requestObject` (the
//! decoded object for create/update, the patch document for patch), RequestResponse also
//! the response body as `responseObject` (not for watches, whose line is written when they
//! start). Bodies over 256 KiB, streamed responses and responses that are not JSON are left
//! out and named in the `audit.rampart.io/truncated` annotation. Bodies are kept only for
//! requests whose level asks for them (the handlers learn the level before reading the
//! body), so the default Metadata policy pays nothing. Secrets, ConfigMaps, TokenReviews and
//! service account tokens are capped at Metadata whatever the policy says, so their data
//! never reaches the log.

mod event;
mod flood;
mod policy;
pub mod ship;
mod verify;
mod writer;

pub use event::{micro_timestamp, Event, ObjectRef, ResponseStatus, User, GENESIS};
pub use flood::COUNT as AGGREGATED_COUNT;
pub use policy::{Level, Policy, PolicyError, Request as PolicyRequest};
pub use verify::{verify, Finding, Verified};
pub use writer::{Config, Error, Sink, SHIPPED};
