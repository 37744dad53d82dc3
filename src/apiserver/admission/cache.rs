//! In-memory copies of the namespaced objects admission consults on every write —
//! ResourceQuotas and LimitRanges — fed by store watches (`apiserver::followers::follow`), as upstream's
//! plugins read informer listers instead of the store. A configmap create in a namespace
//! without quotas then costs no store read at all.
//!
//! Staleness: an object written a moment ago may not be here yet (the watch lags by
//! milliseconds). LimitRanges are used from the cache as they are (upstream's lister has the
//! same lag). For quotas the cache only says *whether* a namespace has any; the charge itself
//! always reads the quota fresh from the store and compare-and-swaps it. Until the first list
//! has arrived, callers fall back to reading the store.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use serde_json::Value;

use crate::apiserver::followers::follow::{follow, Follower};
use crate::apiserver::storage::Builtin;
use crate::store::Backend;

pub const QUOTAS: &str = Builtin::ResourceQuotas.prefix();
pub const LIMIT_RANGES: &str = Builtin::LimitRanges.prefix();
pub const SERVICE_ACCOUNTS: &str = Builtin::ServiceAccounts.prefix();

/// The objects under one prefix, by namespace then key.
#[derive(Default)]
pub struct ByNamespace {
    prefix: &'static str,
    objects: RwLock<HashMap<String, BTreeMap<String, Value>>>,
    synced: AtomicBool,
    /// Woken after every list and event, for readers waiting for an object to appear.
    pub changed: tokio::sync::Notify,
}

impl ByNamespace {
    fn namespace_of<'a>(&self, key: &'a str) -> Option<&'a str> {
        key.strip_prefix(self.prefix)?.split('/').next()
    }

    /// The namespace's objects, or `None` before the first list (read the store then).
    pub fn in_namespace(&self, ns: &str) -> Option<Vec<Value>> {
        if !self.synced.load(Ordering::Acquire) {
            return None;
        }
        let objects = self.objects.read().ok()?;
        Some(
            objects
                .get(ns)
                .map(|m| m.values().cloned().collect())
                .unwrap_or_default(),
        )
    }

    /// The object at `key`: `Some(None)` if the cache knows it is absent, `None` before the
    /// first list.
    pub fn get(&self, key: &str) -> Option<Option<Value>> {
        if !self.synced.load(Ordering::Acquire) {
            return None;
        }
        let ns = self.namespace_of(key)?;
        let objects = self.objects.read().ok()?;
        Some(objects.get(ns).and_then(|m| m.get(key)).cloned())
    }

    /// Whether the namespace has any object, or `None` before the first list.
    pub fn any_in(&self, ns: &str) -> Option<bool> {
        if !self.synced.load(Ordering::Acquire) {
            return None;
        }
        let objects = self.objects.read().ok()?;
        Some(objects.get(ns).is_some_and(|m| !m.is_empty()))
    }
}

impl Follower for ByNamespace {
    fn reset(&self, items: Vec<(String, Value)>) {
        let mut fresh: HashMap<String, BTreeMap<String, Value>> = HashMap::new();
        for (key, obj) in items {
            if let Some(ns) = self.namespace_of(&key) {
                fresh.entry(ns.to_string()).or_default().insert(key, obj);
            }
        }
        if let Ok(mut objects) = self.objects.write() {
            *objects = fresh;
        }
        self.synced.store(true, Ordering::Release);
        self.changed.notify_waiters();
    }

    fn apply(&self, key: &str, obj: &Value) {
        let Some(ns) = self.namespace_of(key) else {
            return;
        };
        if let Ok(mut objects) = self.objects.write() {
            objects
                .entry(ns.to_string())
                .or_default()
                .insert(key.to_string(), obj.clone());
        }
        self.changed.notify_waiters();
    }

    fn remove(&self, key: &str, _obj: &Value) {
        let Some(ns) = self.namespace_of(key) else {
            return;
        };
        if let Ok(mut objects) = self.objects.write() {
            if let Some(m) = objects.get_mut(ns) {
                m.remove(key);
                if m.is_empty() {
                    objects.remove(ns);
                }
            }
        }
    }
}

/// The caches admission reads.
pub struct Caches {
    pub quotas: Arc<ByNamespace>,
    pub limit_ranges: Arc<ByNamespace>,
    /// ServiceAccounts, for ServiceAccount admission (upstream's plugin reads a lister).
    pub service_accounts: Arc<ByNamespace>,
    pub priority_classes: Arc<super::priority::Classes>,
}

impl Default for Caches {
    fn default() -> Self {
        let by = |prefix| {
            Arc::new(ByNamespace {
                prefix,
                ..Default::default()
            })
        };
        Caches {
            quotas: by(QUOTAS),
            limit_ranges: by(LIMIT_RANGES),
            service_accounts: by(SERVICE_ACCOUNTS),
            priority_classes: Arc::default(),
        }
    }
}

impl Caches {
    /// Start following the store (spawned tasks that live as long as the runtime).
    pub fn follow(&self, store: &Arc<dyn Backend>) {
        tokio::spawn(follow(
            "ResourceQuota",
            QUOTAS,
            store.clone(),
            self.quotas.clone(),
        ));
        tokio::spawn(follow(
            "LimitRange",
            LIMIT_RANGES,
            store.clone(),
            self.limit_ranges.clone(),
        ));
        tokio::spawn(follow(
            "ServiceAccount",
            SERVICE_ACCOUNTS,
            store.clone(),
            self.service_accounts.clone(),
        ));
        tokio::spawn(follow(
            "PriorityClass",
            super::priority::PRIORITY_CLASSES,
            store.clone(),
            self.priority_classes.clone(),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn follows_by_namespace() {
        let c = Caches::default();
        assert_eq!(c.quotas.any_in("a"), None, "not synced yet");
        c.quotas
            .reset(vec![(format!("{QUOTAS}a/q1"), json!({"n": 1}))]);
        assert_eq!(c.quotas.any_in("a"), Some(true));
        assert_eq!(c.quotas.any_in("b"), Some(false));
        c.quotas.apply(&format!("{QUOTAS}b/q2"), &json!({"n": 2}));
        assert_eq!(c.quotas.in_namespace("b").map(|v| v.len()), Some(1));
        c.quotas.remove(&format!("{QUOTAS}a/q1"), &json!({}));
        assert_eq!(c.quotas.any_in("a"), Some(false));
    }
}
