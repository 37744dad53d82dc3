//! CPU-heavy request work — decoding big bodies, applying patches — runs here, on tokio's
//! blocking pool, instead of on the async workers that accept connections and answer
//! `/readyz`. A request that costs a second of CPU then delays only requests queued behind it
//! for a permit, never the health checks or the cheap requests of everyone else.
//!
//! At most half the cores (at least one) run such work at once; the rest wait for a permit
//! without holding a thread (the in-flight limit bounds how many wait). Upstream's Go
//! scheduler preempts goroutines, so kube-apiserver needs no such pool; tokio does not
//! preempt, hence this one.
//!
//! Big requests leave big free blocks in glibc's per-thread arenas, which glibc keeps: a few
//! megabyte-sized patches would hold hundreds of MiB of RSS for good. After such a request the
//! handler calls [`release_memory`], which hands free pages back to the kernel (`malloc_trim`,
//! off the async workers, at most one at a time).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::LazyLock;

use tokio::sync::Semaphore;

use crate::apiserver::status::{ApiError, ApiResult};

static PERMITS: LazyLock<Semaphore> = LazyLock::new(|| {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    Semaphore::new(cores.div_ceil(2))
});

/// Runs `work` on the blocking pool once a permit is free and returns its result.
pub async fn run<T, F>(work: F) -> ApiResult<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let permit = PERMITS
        .acquire()
        .await
        .map_err(|_| ApiError::unavailable("the server is shutting down"))?;
    let result = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        work()
    })
    .await;
    result.map_err(|e| ApiError::internal(format!("request processing failed: {e}")))
}

/// Requests whose body or stored object reach this size release their free memory afterwards.
pub const RELEASE_AFTER_BYTES: usize = 256 * 1024;

static TRIMMING: AtomicBool = AtomicBool::new(false);

/// Returns the free memory of every malloc arena to the kernel, in the background; a call while
/// one is running is dropped (that one covers it).
#[allow(unsafe_code)] // malloc_trim(3) has no safe wrapper.
pub fn release_memory() {
    if TRIMMING.swap(true, Ordering::AcqRel) {
        return;
    }
    tokio::task::spawn_blocking(|| {
        // SAFETY: malloc_trim only walks and madvises glibc's own free lists; it has no
        // preconditions and is thread-safe.
        unsafe {
            libc::malloc_trim(0);
        }
        TRIMMING.store(false, Ordering::Release);
    });
}
