//! The service-account controller, as upstream's `serviceaccounts-controller`: every active
//! namespace has a ServiceAccount named `default`, created when the namespace appears and
//! recreated if someone deletes it.
//!
//! Driven by watches (namespaces, and ServiceAccounts named `default` mapped to their
//! namespace), so a deletion is repaired as soon as its event arrives.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;

use super::Error;

const NAME: &str = "serviceaccount";
const DEFAULT_SA: &str = "default";

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ReconcileError(String);

/// Run until the process stops (the caller aborts the task).
pub async fn run(client: kube::Client) -> Result<(), Error> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let accounts: Api<ServiceAccount> = Api::all(client.clone());
    Controller::new(namespaces, watcher::Config::default())
        .watches(
            accounts,
            watcher::Config::default().fields(&format!("metadata.name={DEFAULT_SA}")),
            |sa| {
                sa.metadata
                    .namespace
                    .map(|ns| ObjectRef::<Namespace>::new(&ns))
            },
        )
        .run(reconcile, error_policy, Arc::new(client))
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

/// Namespaces being deleted get no new objects (upstream's namespace lifecycle refuses them).
pub(super) fn terminating(ns: &Namespace) -> bool {
    ns.metadata.deletion_timestamp.is_some()
        || ns
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|p| p == "Terminating")
}

async fn reconcile(
    ns: Arc<Namespace>,
    client: Arc<kube::Client>,
) -> Result<Action, ReconcileError> {
    let Some(name) = ns.metadata.name.as_deref() else {
        return Ok(Action::await_change());
    };
    if terminating(&ns) {
        return Ok(Action::await_change());
    }
    let api: Api<ServiceAccount> = Api::namespaced((*client).clone(), name);
    match api.get_opt(DEFAULT_SA).await {
        Ok(Some(_)) => return Ok(Action::await_change()),
        Ok(None) => {}
        Err(e) => return Err(ReconcileError(e.to_string())),
    }
    let sa = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(DEFAULT_SA.into()),
            namespace: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    match api.create(&PostParams::default(), &sa).await {
        Ok(_) => Ok(Action::await_change()),
        // Created meanwhile, or the namespace started terminating: nothing to do.
        Err(kube::Error::Api(s)) if s.code == 409 || s.code == 403 => Ok(Action::await_change()),
        Err(e) => Err(ReconcileError(e.to_string())),
    }
}

fn error_policy(_: Arc<Namespace>, _: &ReconcileError, _: Arc<kube::Client>) -> Action {
    Action::requeue(Duration::from_secs(2))
}
