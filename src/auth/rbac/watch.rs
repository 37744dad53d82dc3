//! The live RBAC state: every RBAC object, kept current from the store's events (fed by the
//! API server's watch loop, `apiserver::rbac`), recompiled into the authorizer's `rbac`
//! source and the subject index after a short debounce.
//!
//! Invariants: a change is compiled within `DEBOUNCE` plus the compile time (well under the
//! one second the issue asks); the index and the policies always come from the same snapshot.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use k8s_openapi::api::authorization::v1::{NonResourceRule, ResourceRule};
use serde_json::Value;

use super::compile::{compile_cached, Cache};
use super::{Index, Objects, Rule};
use crate::auth::cedar::Authorizer;
use crate::auth::UserInfo;

/// Changes arriving within this window are compiled together.
pub const DEBOUNCE: Duration = Duration::from_millis(50);

pub struct Rbac {
    objects: Mutex<Objects>,
    index: RwLock<Arc<Index>>,
    authorizer: Arc<Authorizer>,
    changed: tokio::sync::Notify,
    cache: Mutex<Cache>,
    /// A full list has been handed over (`reset`).
    listed: AtomicBool,
    /// The authorizer's `rbac` source was compiled from a full list.
    compiled: AtomicBool,
}

impl Rbac {
    pub fn new(authorizer: Arc<Authorizer>) -> Arc<Self> {
        Arc::new(Self {
            objects: Mutex::new(Objects::default()),
            index: RwLock::new(Arc::new(Index::default())),
            authorizer,
            changed: tokio::sync::Notify::new(),
            cache: Mutex::new(Cache::default()),
            listed: AtomicBool::new(false),
            compiled: AtomicBool::new(false),
        })
    }

    /// Replace everything (after a list).
    pub fn reset<'a>(&self, items: impl IntoIterator<Item = &'a Value>) {
        let mut objs = Objects::default();
        for v in items {
            objs.apply(v);
        }
        if let Ok(mut o) = self.objects.lock() {
            *o = objs;
        }
        self.listed.store(true, Ordering::Release);
        self.changed.notify_one();
    }

    /// Whether the authorizer has RBAC policies compiled from a full list of the store's
    /// RBAC objects (until then `/readyz` says not ready: RBAC grants would be missing).
    pub fn ready(&self) -> bool {
        self.compiled.load(Ordering::Acquire)
    }

    pub fn apply(&self, v: &Value) {
        if let Ok(mut o) = self.objects.lock() {
            o.apply(v);
        }
        self.changed.notify_one();
    }

    pub fn remove(&self, v: &Value) {
        if let Ok(mut o) = self.objects.lock() {
            o.remove(v);
        }
        self.changed.notify_one();
    }

    /// Compile the current objects and install the result.
    pub fn recompile(&self) {
        let listed = self.listed.load(Ordering::Acquire);
        let Ok(snapshot) = self.objects.lock().map(|o| o.clone()) else {
            return;
        };
        let started = std::time::Instant::now();
        let Ok(mut cache) = self.cache.lock() else {
            return;
        };
        let out = compile_cached(&snapshot, &mut cache);
        let n = out.policies.len();
        self.authorizer.set_source("rbac", out.policies);
        if let Ok(mut i) = self.index.write() {
            *i = Arc::new(out.index);
        }
        if listed {
            self.compiled.store(true, Ordering::Release);
        }
        tracing::debug!(policies = n, elapsed = ?started.elapsed(), "RBAC recompiled");
    }

    /// Recompile after every burst of changes, forever.
    pub async fn run(self: Arc<Self>) {
        loop {
            self.changed.notified().await;
            tokio::time::sleep(DEBOUNCE).await;
            let me = self.clone();
            // Compiling thousands of bindings is CPU work; keep it off the async workers.
            if let Err(e) = tokio::task::spawn_blocking(move || me.recompile()).await {
                tracing::error!(error = %e, "RBAC compile task failed");
            }
        }
    }

    fn index(&self) -> Arc<Index> {
        self.index
            .read()
            .map(|i| i.clone())
            .unwrap_or_else(|_| Arc::new(Index::default()))
    }

    /// The rules `user` holds in `namespace` through RBAC ("" = cluster-wide only).
    pub fn rules(&self, user: &UserInfo, namespace: &str) -> Vec<Rule> {
        self.index().rules(user, namespace)
    }

    /// The effective RBAC rules as SelfSubjectRulesReview reports them.
    pub fn rules_for(
        &self,
        user: &UserInfo,
        namespace: &str,
    ) -> (Vec<ResourceRule>, Vec<NonResourceRule>) {
        self.index().rules_for(user, namespace)
    }

    /// The rules of the role a binding refers to (`None`: no such role), from the live state.
    pub fn role_rules(
        &self,
        kind: super::RoleKind,
        namespace: &str,
        name: &str,
    ) -> Option<Vec<Rule>> {
        let o = self.objects.lock().ok()?;
        match kind {
            super::RoleKind::Role => o
                .roles
                .get(&(namespace.to_string(), name.to_string()))
                .cloned(),
            super::RoleKind::ClusterRole => o.cluster_roles.get(name).cloned(),
        }
    }
}
