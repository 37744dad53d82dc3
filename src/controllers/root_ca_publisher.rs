//! The root CA publisher, as upstream's `root-ca-cert-publisher`: every active namespace has a
//! ConfigMap `kube-root-ca.crt` whose `ca.crt` is the cluster CA bundle, so pods can verify
//! the API server. Edits and deletions are undone from the watch events.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;

use super::Error;

const NAME: &str = "root-ca-cert-publisher";
pub const CONFIGMAP: &str = "kube-root-ca.crt";
const KEY: &str = "ca.crt";
/// Upstream's annotation text, verbatim.
const DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ReconcileError(String);

struct Ctx {
    client: kube::Client,
    ca_pem: String,
}

pub async fn run(client: kube::Client, ca_pem: String) -> Result<(), Error> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let maps: Api<ConfigMap> = Api::all(client.clone());
    Controller::new(namespaces, watcher::Config::default())
        .watches(
            maps,
            watcher::Config::default().fields(&format!("metadata.name={CONFIGMAP}")),
            |cm| {
                cm.metadata
                    .namespace
                    .map(|ns| ObjectRef::<Namespace>::new(&ns))
            },
        )
        .run(reconcile, error_policy, Arc::new(Ctx { client, ca_pem }))
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

fn wanted_data(ca_pem: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(KEY.to_string(), ca_pem.to_string())])
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    let Some(name) = ns.metadata.name.as_deref() else {
        return Ok(Action::await_change());
    };
    if super::serviceaccount::terminating(&ns) {
        return Ok(Action::await_change());
    }
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), name);
    let want = wanted_data(&ctx.ca_pem);
    let result = match api.get_opt(CONFIGMAP).await {
        Err(e) => return Err(ReconcileError(e.to_string())),
        Ok(Some(cm)) => {
            if cm.data.as_ref() == Some(&want) && cm.binary_data.is_none() {
                return Ok(Action::await_change());
            }
            // Replace at the read resourceVersion: a concurrent edit makes this a 409 and the
            // next event retries with fresh state.
            let mut fixed = cm.clone();
            fixed.data = Some(want);
            fixed.binary_data = None;
            api.replace(CONFIGMAP, &PostParams::default(), &fixed)
                .await
                .map(|_| ())
        }
        Ok(None) => {
            let cm = ConfigMap {
                metadata: ObjectMeta {
                    name: Some(CONFIGMAP.into()),
                    namespace: Some(name.into()),
                    annotations: Some(BTreeMap::from([(
                        "kubernetes.io/description".to_string(),
                        DESCRIPTION.to_string(),
                    )])),
                    ..Default::default()
                },
                data: Some(want),
                ..Default::default()
            };
            api.create(&PostParams::default(), &cm).await.map(|_| ())
        }
    };
    match result {
        Ok(()) => Ok(Action::await_change()),
        Err(kube::Error::Api(s)) if s.code == 403 => Ok(Action::await_change()),
        Err(e) => Err(ReconcileError(e.to_string())),
    }
}

fn error_policy(_: Arc<Namespace>, _: &ReconcileError, _: Arc<Ctx>) -> Action {
    Action::requeue(Duration::from_secs(1))
}
