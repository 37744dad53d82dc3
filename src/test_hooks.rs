//! Environment hooks for the end-to-end tests (`RAMPART_TEST_*`), compiled only with the
//! `test-hooks` Cargo feature.
//!
//! Invariant: a binary built without the feature never reads these variables, and their names
//! are not even in it: every hook answers `None`. The feature is switched on only by the
//! crate's dev-dependency on itself (Cargo.toml), so the `rampart` binary that `cargo test`/
//! `cargo nextest` builds for the end-to-end tests has the hooks, while `cargo build
//! --release` (what `tools/release.sh` ships) does not. One hook shrinks audit rotation to
//! bytes, which with `--audit-log-maxbackup` prunes audit history: not something an operator
//! should be able to reach.

/// The variable's value; `None` without the feature, whose names are then compiled out.
macro_rules! hook {
    ($name:literal) => {{
        #[cfg(feature = "test-hooks")]
        let value = std::env::var($name).ok().filter(|v| !v.is_empty());
        #[cfg(not(feature = "test-hooks"))]
        let value: Option<String> = None;
        value
    }};
}

/// Audit log rotation at this many bytes instead of `--audit-log-maxsize` MiB.
pub fn audit_max_size_bytes() -> Option<u64> {
    hook!("RAMPART_TEST_AUDIT_MAXSIZE_BYTES").and_then(|v| v.parse().ok())
}

/// An audit disk budget of this many bytes instead of `--audit-log-max-total-size` MiB.
pub fn audit_max_total_bytes() -> Option<u64> {
    hook!("RAMPART_TEST_AUDIT_MAX_TOTAL_BYTES").and_then(|v| v.parse().ok())
}

/// Slows secrets-key rotation down (per batch and around key-file writes) so tests can kill
/// the server mid-rotation.
pub fn rotation_batch_delay() -> Option<std::time::Duration> {
    hook!("RAMPART_TEST_ROTATION_BATCH_DELAY_MS")
        .and_then(|v| v.parse().ok())
        .map(std::time::Duration::from_millis)
}

/// The audit writer panics while holding its lock when it is about to write the line of a
/// request whose URI contains this text (tests that a panic there does not wedge the log).
/// Read once.
pub fn audit_panic_uri() -> Option<&'static str> {
    static URI: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    URI.get_or_init(|| hook!("RAMPART_TEST_AUDIT_PANIC_URI"))
        .as_deref()
}

/// Projected service-account tokens are renewed after this fraction of their lifetime
/// instead of upstream's 0.8 (the apiserver's minimum lifetime is 600 s).
pub fn token_refresh_fraction() -> Option<f64> {
    hook!("RAMPART_TEST_TOKEN_REFRESH_FRACTION").and_then(|v| v.parse().ok())
}

/// Whether the hooks are compiled in (`rampart version` says so on a second line).
pub const ENABLED: bool = cfg!(feature = "test-hooks");
