//! Stopping containers as upstream's `killContainer` and `killContainersWithSyncResult`:
//! the `preStop` hook first (within the grace period), then SIGTERM, then SIGKILL when the
//! grace period is over (at least 2 s after a preStop hook, upstream's
//! `minimumGracePeriodInSeconds`). A pod stops its regular containers together, then its
//! sidecars (init containers with `restartPolicy: Always`) one by one in reverse order,
//! so the sidecars serve the main containers until those are gone (KEP-753).
//!
//! Runs in the pod worker or in a task it spawned, never in a request handler: waiting for
//! an exit polls the shim's state every 100 ms, bounded by the grace period plus 10 s.

use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Pod};

use super::hooks::{self, Hook};
use super::probe::Target;
use crate::kubelet::runtime::client as shim;
use crate::kubelet::runtime::shim::Request;

const MIN_GRACE_AFTER_HOOK: Duration = Duration::from_secs(2);
const AFTER_KILL: Duration = Duration::from_secs(10);

/// Whether an init container is a sidecar (`restartPolicy: Always`).
pub fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

async fn running(dir: &Path, id: &str) -> bool {
    match shim::call(dir, &Request::State).await {
        Ok(r) => r.containers.iter().any(|c| c.id == id && c.running),
        Err(_) => false,
    }
}

async fn signal(dir: &Path, id: &str, sig: i32) {
    let _ = shim::call(
        dir,
        &Request::Kill {
            id: id.to_string(),
            signal: sig,
        },
    )
    .await;
}

/// Stops one container attempt; returns the preStop failure message, if any.
pub async fn stop_one(
    dir: &Path,
    pod: &Pod,
    spec: Option<&Container>,
    id: &str,
    target: Option<&Target>,
    grace: Duration,
) -> Option<String> {
    let start = Instant::now();
    let mut deadline = start + grace;
    let mut failed = None;
    if !grace.is_zero() {
        if let (Some(c), Some(t)) = (spec, target) {
            if Hook::PreStop.handler(c).is_some() {
                let name = pod.metadata.name.as_deref().unwrap_or_default();
                failed = hooks::run(Hook::PreStop, c, name, t, grace).await.err();
                deadline = deadline.max(Instant::now() + MIN_GRACE_AFTER_HOOK);
            }
        }
    }
    if !running(dir, id).await {
        return failed;
    }
    let first = if grace.is_zero() {
        libc::SIGKILL
    } else {
        libc::SIGTERM
    };
    signal(dir, id, first).await;
    let mut killed = first == libc::SIGKILL;
    let hard = deadline + AFTER_KILL;
    while running(dir, id).await {
        let now = Instant::now();
        if !killed && now >= deadline {
            signal(dir, id, libc::SIGKILL).await;
            killed = true;
        }
        if now >= hard {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    failed
}
