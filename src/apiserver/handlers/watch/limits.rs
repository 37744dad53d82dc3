//! How many watches may be open: per user and over the server.
//!
//! Watches are long-running, so upstream keeps them out of `--max-requests-inflight`; what
//! bounds them there is API Priority and Fairness' seat accounting for the initial list. We
//! count them instead: a watch holds a [`Slot`] from the moment it is accepted until its
//! response body is dropped (stream ended, client reset, connection closed), and a watch past
//! either cap is refused with upstream's `429 TooManyRequests` Status and `Retry-After`, so
//! client-go's reflectors back off and retry. The defaults leave room for real clients: a
//! kube-controller-manager runs a few dozen informers, each one watch.
//!
//! Invariant: the counts equal the number of live slots; a user's entry is removed when its
//! count returns to zero, so user names that come and go leave no state behind.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use crate::apiserver::status::ApiError;
use crate::apiserver::State;

/// The caps (`rampart server --max-watches-per-user`, `--max-watches`).
#[derive(Debug, Clone, Copy)]
pub struct WatchLimits {
    /// Watches one user (by name) may hold open.
    pub per_user: usize,
    /// Watches over every user.
    pub global: usize,
}

impl Default for WatchLimits {
    fn default() -> Self {
        WatchLimits {
            per_user: 1_000,
            global: 10_000,
        }
    }
}

/// The open watches, by user.
#[derive(Default)]
pub struct Watches {
    limits: WatchLimits,
    open: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    total: usize,
    by_user: HashMap<String, usize>,
}

impl Watches {
    pub fn new(limits: WatchLimits) -> Self {
        Watches {
            limits,
            open: Mutex::default(),
        }
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One accepted watch; dropping it gives the place back.
pub struct Slot {
    state: Arc<State>,
    user: String,
}

/// Take a place for a watch by `user`, or the 429 to answer.
pub fn acquire(state: &Arc<State>, user: &str) -> Result<Slot, ApiError> {
    let w = &state.watches;
    {
        let mut c = w.counts();
        let mine = c.by_user.get(user).copied().unwrap_or(0);
        let refusal = if c.total >= w.limits.global {
            Some(format!(
                "too many open watches on this server (limit {}); retry later",
                w.limits.global
            ))
        } else if mine >= w.limits.per_user {
            Some(format!(
                "too many open watches for user {user:?} (limit {}); close some or retry later",
                w.limits.per_user
            ))
        } else {
            None
        };
        if let Some(message) = refusal {
            return Err(ApiError::new(429, "TooManyRequests", message)
                .with_details(serde_json::json!({"retryAfterSeconds": 1})));
        }
        c.total += 1;
        *c.by_user.entry(user.to_string()).or_insert(0) += 1;
    }
    state.metrics.watches.fetch_add(1, Ordering::Relaxed);
    Ok(Slot {
        state: state.clone(),
        user: user.to_string(),
    })
}

impl Drop for Slot {
    fn drop(&mut self) {
        {
            let mut c = self.state.watches.counts();
            c.total = c.total.saturating_sub(1);
            if let Some(n) = c.by_user.get_mut(&self.user) {
                *n -= 1;
                if *n == 0 {
                    c.by_user.remove(&self.user);
                }
            }
        }
        self.state.metrics.watches.fetch_sub(1, Ordering::Relaxed);
    }
}
