//! Scheduled compaction, like the Kubernetes apiserver's compactor for etcd.
//!
//! Every `interval` it samples the current revision; history is kept for `keep_duration` or
//! `keep_revisions` revisions, whichever keeps more, and everything older is compacted. That
//! bounds disk use under a steady update load while watchers that reconnect within the window
//! can still resume.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Backend, Revision};

#[derive(Debug, Clone)]
pub struct Config {
    pub interval: Duration,
    pub keep_duration: Duration,
    pub keep_revisions: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            interval: Duration::from_secs(30),
            keep_duration: Duration::from_secs(300),
            keep_revisions: 10_000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] super::Error),
}

/// The compaction target given revision samples `(when, revision)`, oldest first: the newest
/// revision that is both older than `keep_duration` and at least `keep_revisions` behind.
pub fn target(
    samples: &VecDeque<(Instant, Revision)>,
    now: Instant,
    current: Revision,
    cfg: &Config,
) -> Option<Revision> {
    let by_count = current.checked_sub(cfg.keep_revisions)?;
    let by_time = samples
        .iter()
        .rev()
        .find(|(when, _)| now.duration_since(*when) >= cfg.keep_duration)
        .map(|(_, rev)| *rev)?;
    Some(by_count.min(by_time)).filter(|r| *r > 0)
}

/// Run until `shutdown` resolves. Compaction errors are logged and retried next round.
pub async fn run(
    store: Arc<dyn Backend>,
    cfg: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), Error> {
    let mut samples: VecDeque<(Instant, Revision)> = VecDeque::new();
    let mut tick = tokio::time::interval(cfg.interval);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            _ = tick.tick() => {}
        }
        let now = Instant::now();
        let current = store.current_revision();
        samples.push_back((now, current));
        // Only the newest sample older than the window matters; drop the ones before it.
        while samples.len() > 1 && now.duration_since(samples[1].0) >= cfg.keep_duration {
            samples.pop_front();
        }
        if let Some(rev) = target(&samples, now, current, &cfg) {
            if rev > store.compacted_revision() {
                match store.compact(rev).await {
                    Ok(()) => tracing::info!(revision = rev, "store compacted"),
                    Err(e) => tracing::warn!(error = %e, revision = rev, "compaction failed"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_whichever_window_is_larger() {
        let cfg = Config {
            interval: Duration::from_secs(1),
            keep_duration: Duration::from_secs(300),
            keep_revisions: 100,
        };
        let now = Instant::now();
        let old = now - Duration::from_secs(400);
        let mid = now - Duration::from_secs(100);
        let samples: VecDeque<_> = [(old, 50), (mid, 900)].into_iter().collect();
        // Time keeps back to 50, count would allow 900: the older wins.
        assert_eq!(target(&samples, now, 1000, &cfg), Some(50));
        let samples: VecDeque<_> = [(old, 950)].into_iter().collect();
        // Count keeps back to 900 even though time allows 950.
        assert_eq!(target(&samples, now, 1000, &cfg), Some(900));
        // Nothing old enough yet.
        let samples: VecDeque<_> = [(mid, 10)].into_iter().collect();
        assert_eq!(target(&samples, now, 1000, &cfg), None);
        // Too few revisions.
        let samples: VecDeque<_> = [(old, 10)].into_iter().collect();
        assert_eq!(target(&samples, now, 50, &cfg), None);
    }
}
