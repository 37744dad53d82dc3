//! The owner of every task the API server starts beside the request path: followers,
//! repair and reconcile loops, deferred quota refreshes, CRD clean-ups and the served
//! connections themselves. One `JoinSet`, so nothing outlives the server: on shutdown
//! [`Supervisor::shutdown`] aborts them all and waits, within a bound, until each has stopped.
//!
//! Invariants: after `shutdown` began, `spawn` starts nothing (a request racing the shutdown
//! cannot leave a task behind); finished tasks are reaped as new ones start, so the set holds
//! only live tasks; a task that panicked is logged, not propagated (a follower's bug must
//! not take the server down with it; `/readyz` reports the follower's feed instead).

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use tokio::task::JoinSet;

/// The API server's background tasks (see the module docs).
pub(crate) struct Supervisor {
    /// `None` once shutdown began.
    tasks: Mutex<Option<JoinSet<()>>>,
}

impl Default for Supervisor {
    fn default() -> Self {
        Supervisor {
            tasks: Mutex::new(Some(JoinSet::new())),
        }
    }
}

impl Supervisor {
    /// Start `task` under this supervisor (`what` names it in logs).
    pub fn spawn(&self, what: &'static str, task: impl Future<Output = ()> + Send + 'static) {
        // A poisoned lock only means another spawn panicked mid-way; the set is still whole.
        let mut guard = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        let Some(set) = guard.as_mut() else {
            tracing::debug!(task = what, "shutting down: task not started");
            return;
        };
        while let Some(done) = set.try_join_next() {
            log_ended(done);
        }
        set.spawn(task);
    }

    #[cfg(test)]
    /// How many tasks are running (finished ones not yet reaped count until the next spawn).
    pub fn len(&self) -> usize {
        let guard = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        guard.as_ref().map_or(0, JoinSet::len)
    }

    /// Abort every task and wait until all have stopped, at most `bound`. Returns how many
    /// were still running at the bound (0 when the shutdown was clean).
    pub async fn shutdown(&self, bound: Duration) -> usize {
        let taken = {
            let mut guard = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
            guard.take()
        };
        let Some(mut set) = taken else {
            return 0;
        };
        let started = set.len();
        set.abort_all();
        let drained = tokio::time::timeout(bound, async {
            while let Some(done) = set.join_next().await {
                log_ended(done);
            }
        })
        .await;
        let left = set.len();
        match drained {
            Ok(()) => tracing::debug!(tasks = started, "API server background tasks stopped"),
            Err(_) => tracing::warn!(
                tasks = started,
                left,
                ?bound,
                "API server background tasks still running at the shutdown bound"
            ),
        }
        left
    }
}

fn log_ended(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done {
        if e.is_panic() {
            tracing::error!(error = %e, "an API server task panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn shutdown_stops_every_task_and_refuses_new_ones() {
        let s = Supervisor::default();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
        for _ in 0..3 {
            let tx = tx.clone();
            s.spawn("forever", async move {
                let _keep = tx;
                std::future::pending::<()>().await;
            });
        }
        drop(tx);
        s.spawn("panics", async {
            if true {
                panic!("a follower bug");
            }
        });
        assert_eq!(s.shutdown(Duration::from_secs(5)).await, 0);
        // Every sender was dropped with its task: the channel is closed.
        assert!(rx.recv().await.is_none());
        assert_eq!(s.len(), 0);
        let (tx2, mut rx2) = tokio::sync::mpsc::channel::<()>(1);
        s.spawn("late", async move {
            let _ = tx2.send(()).await;
        });
        assert!(rx2.recv().await.is_none(), "a task started after shutdown");
    }
}
