//! The namespace controller, as upstream's `namespace` controller (NamespacedResourcesDeleter):
//! a namespace being deleted (`deletionTimestamp` set, phase `Terminating`) is emptied of every
//! namespaced resource the API serves — built-ins and custom resources alike, found through
//! discovery — and then its `kubernetes` finalizer is removed through the `finalize`
//! subresource, after which the API server deletes it.
//!
//! Contents are deleted with Background propagation, as upstream; objects with finalizers or a
//! grace period stay until they finish, and the namespace waits for them (requeued with
//! back-off: 1 s, doubling to 30 s). A namespace whose contents cannot be listed reports it in
//! the `NamespaceDeletionDiscoveryFailure`/`NamespaceDeletionContentFailure` style of upstream
//! only through the controller's log; the finalizer stays until everything is gone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::discovery::{verbs, Discovery, Scope};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;

use super::Error;

const NAME: &str = "namespace";
const FINALIZER: &str = "kubernetes";

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ReconcileError(String);

impl From<kube::Error> for ReconcileError {
    fn from(e: kube::Error) -> Self {
        Self(e.to_string())
    }
}

struct Ctx {
    client: kube::Client,
    /// Consecutive "still has content" rounds per namespace, for the back-off.
    waits: Mutex<HashMap<String, u32>>,
}

pub async fn run(client: kube::Client) -> Result<(), Error> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ctx = Arc::new(Ctx {
        client,
        waits: Mutex::new(HashMap::new()),
    });
    Controller::new(namespaces, watcher::Config::default())
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(controller = NAME, error = %e, "reconcile failed");
            }
        })
        .await;
    Err(Error::Controller {
        name: NAME,
        detail: "the controller stream ended".into(),
    })
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    let Some(name) = ns.metadata.name.clone() else {
        return Ok(Action::await_change());
    };
    if ns.metadata.deletion_timestamp.is_none() {
        return Ok(Action::await_change());
    }
    let finalizers = ns
        .spec
        .as_ref()
        .and_then(|s| s.finalizers.clone())
        .unwrap_or_default();
    if !finalizers.iter().any(|f| f == FINALIZER) {
        return Ok(Action::await_change());
    }
    let discovery = Discovery::new(ctx.client.clone()).run().await?;
    let mut remaining = delete_all_content(&ctx.client, &discovery, &name, true).await?;
    if remaining > 0 {
        // Most content goes at once; count what is left (finalizers, grace periods).
        remaining = delete_all_content(&ctx.client, &discovery, &name, false).await?;
    }
    if remaining > 0 {
        let n = ctx
            .waits
            .lock()
            .map(|mut w| {
                let n = w.entry(name.clone()).or_insert(0);
                *n += 1;
                *n
            })
            .unwrap_or(1);
        let delay =
            Duration::from_secs(1 << n.min(5).saturating_sub(1)).min(Duration::from_secs(30));
        tracing::debug!(controller = NAME, namespace = %name, remaining, ?delay, "waiting for content to go");
        return Ok(Action::requeue(delay));
    }
    if let Ok(mut w) = ctx.waits.lock() {
        w.remove(&name);
    }
    // Remove our finalizer through the finalize subresource (upstream's finalizeNamespace).
    let api: Api<Namespace> = Api::all(ctx.client.clone());
    let mut fin = (*ns).clone();
    if let Some(spec) = fin.spec.as_mut() {
        spec.finalizers = Some(finalizers.into_iter().filter(|f| f != FINALIZER).collect());
    }
    match api
        .replace_subresource("finalize", &name, &PostParams::default(), &fin)
        .await
    {
        Ok(_) => Ok(Action::await_change()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(Action::await_change()),
        Err(e) => Err(e.into()),
    }
}

/// Delete (when `delete`) everything in `ns`; returns how many objects were there.
async fn delete_all_content(
    client: &kube::Client,
    discovery: &Discovery,
    ns: &str,
    delete: bool,
) -> Result<usize, ReconcileError> {
    let mut remaining = 0;
    for group in discovery.groups() {
        for (ar, caps) in group.recommended_resources() {
            if caps.scope != Scope::Namespaced
                || !caps.supports_operation(verbs::LIST)
                || !caps.supports_operation(verbs::DELETE)
            {
                continue;
            }
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
            let items = match api.list(&ListParams::default()).await {
                Ok(l) => l.items,
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 405 => continue,
                Err(e) => return Err(e.into()),
            };
            if items.is_empty() {
                continue;
            }
            remaining += items.len();
            let pending: Vec<&DynamicObject> = items
                .iter()
                .filter(|o| o.metadata.deletion_timestamp.is_none())
                .collect();
            if pending.is_empty() || !delete {
                continue;
            }
            if caps.supports_operation(verbs::DELETE_COLLECTION) {
                match api
                    .delete_collection(&DeleteParams::background(), &ListParams::default())
                    .await
                {
                    Ok(_) => continue,
                    Err(kube::Error::Api(s)) if s.code == 404 || s.code == 405 => {}
                    Err(e) => return Err(e.into()),
                }
            }
            for o in pending {
                let Some(name) = o.metadata.name.as_deref() else {
                    continue;
                };
                match api.delete(name, &DeleteParams::background()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    Ok(remaining)
}

fn error_policy(_: Arc<Namespace>, e: &ReconcileError, _: Arc<Ctx>) -> Action {
    tracing::debug!(controller = NAME, error = %e, "retrying");
    Action::requeue(Duration::from_secs(2))
}
