//! Scheduled compaction, like the Kubernetes apiserver's compactor for etcd.
//!
//! Every `interval` it samples the current revision; history is kept for `keep_duration` or
//! `keep_revisions` revisions, whichever keeps more, and everything older is compacted. That
//! bounds disk use under a steady update load while watchers that reconnect within the window
//! can still resume.
//!
//! Servers sharing one datastore (`Config::shared`) compact one at a time, as upstream's
//! apiservers do with etcd's `compact_rev_key`: each round a server compare-and-swaps
//! `TICKET_KEY` on the `mod_revision` it saw last round, and compacts only if that succeeds.
//! Whoever bumped the ticket first in an interval compacts; the others see a ticket they did not
//! expect, remember it and skip, so each interval costs one ticket write and one compaction for
//! the whole cluster. The embedded store has one server and no ticket (a ticket write would
//! move the revision on a store nobody else shares).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{Backend, Revision};

/// The compaction ticket servers on a shared datastore take turns on.
pub const TICKET_KEY: &str = "/rampart/compactor/ticket";

#[derive(Debug, Clone)]
pub struct Config {
    pub interval: Duration,
    pub keep_duration: Duration,
    pub keep_revisions: u64,
    /// Other servers share the datastore: take the ticket before compacting.
    pub shared: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            interval: Duration::from_secs(30),
            keep_duration: Duration::from_secs(300),
            keep_revisions: 10_000,
            shared: false,
        }
    }
}

/// This server's view of the compaction ticket: the `mod_revision` it saw last round.
#[derive(Debug, Default)]
pub struct Ticket {
    seen: Option<Revision>,
}

impl Ticket {
    /// Whether this server compacts this round: it bumps the ticket from the revision it saw
    /// last round. A ticket someone else moved (or a first look) means skip and remember.
    pub async fn take(&mut self, store: &dyn Backend) -> Result<bool, Error> {
        let current = store.get(TICKET_KEY, None).await?;
        let value = Bytes::from_static(b"compactor");
        let won = match (current, self.seen) {
            (None, _) => store.create(TICKET_KEY, value).await,
            (Some(kv), Some(seen)) if kv.mod_revision == seen => {
                store.update(TICKET_KEY, value, seen).await
            }
            (Some(kv), _) => {
                self.seen = Some(kv.mod_revision);
                return Ok(false);
            }
        };
        match won {
            Ok(rev) => {
                self.seen = Some(rev);
                Ok(true)
            }
            Err(super::Error::Conflict { .. } | super::Error::AlreadyExists { .. }) => {
                self.seen = store.get(TICKET_KEY, None).await?.map(|kv| kv.mod_revision);
                Ok(false)
            }
            Err(e) => Err(e.into()),
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
    let mut ticket = Ticket::default();
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
                if cfg.shared {
                    match ticket.take(store.as_ref()).await {
                        Ok(true) => {}
                        Ok(false) => continue,
                        Err(e) => {
                            tracing::warn!(error = %e, "compaction ticket unavailable; skipping this round");
                            continue;
                        }
                    }
                }
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
            shared: false,
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

    /// Three servers on one (real, RocksDB) store: every round exactly one of them takes the
    /// ticket, whoever asks first after a round in which nobody moved it unseen.
    #[tokio::test]
    async fn one_server_compacts_per_round() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Backend> = Arc::new(
            super::super::RocksBackend::open(super::super::RocksConfig::new(dir.path())).unwrap(),
        );
        let mut servers = [Ticket::default(), Ticket::default(), Ticket::default()];
        let mut winners = Vec::new();
        for round in 0..6 {
            let mut won = Vec::new();
            // A different server asks first each round.
            for i in 0..3 {
                let who = (round + i) % 3;
                if servers[who].take(store.as_ref()).await.unwrap() {
                    won.push(who);
                }
            }
            assert!(won.len() <= 1, "round {round}: {won:?} all compacted");
            winners.push(won);
        }
        // Round 0: the first asker creates the ticket and wins; the others learn it.
        assert_eq!(winners[0], vec![0]);
        // Afterwards someone wins every round (each has seen the latest ticket by then).
        for (round, won) in winners.iter().enumerate().skip(1) {
            assert_eq!(won.len(), 1, "round {round}: nobody compacted");
        }
    }
}
