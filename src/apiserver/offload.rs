//! CPU-heavy request work — decoding big bodies, applying patches — runs here, on tokio's
//! blocking pool, instead of on the async workers that accept connections and answer
//! `/readyz`. A request that costs a second of CPU then delays only requests queued behind it
//! for a permit, never the health checks or the cheap requests of everyone else.
//!
//! At most half the cores (at least one) run such work at once; the rest wait for a permit
//! without holding a thread (the in-flight limit bounds how many wait). Upstream's Go
//! scheduler preempts goroutines, so kube-apiserver needs no such pool; tokio does not
//! preempt, hence this one.

use std::sync::LazyLock;

use tokio::sync::Semaphore;

use super::status::{ApiError, ApiResult};

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
