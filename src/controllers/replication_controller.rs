//! The ReplicationController controller, as upstream's `replicationcontroller` controller,
//! which upstream runs as the ReplicaSet controller over an adapter: the same claiming, slow
//! start, deletion ranking, expectations and status (`replicaset::sync`), with the
//! ReplicationController's equality selector (`spec.selector`, defaulting to the template's
//! labels).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, ReplicationController};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use serde_json::json;

use super::events::Recorder;
use super::informers::Informer;
use super::replicaset::{
    map_selector, owners_of, sync, Ctx, Expectations, ReconcileError, Replicated,
};
use super::Error;

const NAME: &str = "replicationcontroller-controller";

fn selector_of(rc: &ReplicationController) -> Option<kube::core::Selector> {
    let spec = rc.spec.as_ref()?;
    let labels = spec
        .selector
        .clone()
        .filter(|s| !s.is_empty())
        .or_else(|| spec.template.as_ref()?.metadata.as_ref()?.labels.clone())?;
    Some(map_selector(&labels))
}

pub fn run(
    client: kube::Client,
    controllers: &Informer<ReplicationController>,
    pods: &Informer<Pod>,
) -> impl std::future::Future<Output = Result<(), Error>> {
    // kube-runtime's applier waits for its store with a wait that wakes one waiter only;
    // waiting here first makes that wait return at once.
    let main_ready = controllers.ready();
    let pods_ready = pods.ready();
    let store = controllers.store();
    let ctx = Arc::new(Ctx {
        recorder: Recorder::new(client.clone(), NAME),
        client,
        pods: pods.store(),
        expectations: Expectations::default(),
    });
    let controller = Controller::for_stream(controllers.triggers(), store.clone()).reconcile_on(
        pods.related(move |pod: &Pod| owners_of(pod, &store, "ReplicationController", selector_of)),
    );
    async move {
        // Decide nothing before the caches hold a full list: a half-filled cache would look
        // like missing objects.
        pods_ready.await;
        main_ready.await;
        tracing::info!(controller = NAME, "caches synced, controller started");
        controller
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
}

async fn reconcile(
    rc: Arc<ReplicationController>,
    ctx: Arc<Ctx>,
) -> Result<Action, ReconcileError> {
    let (Some(ns), Some(name), Some(uid), Some(spec), Some(selector)) = (
        rc.metadata.namespace.clone(),
        rc.metadata.name.clone(),
        rc.metadata.uid.clone(),
        rc.spec.as_ref(),
        selector_of(&rc),
    ) else {
        return Ok(Action::await_change());
    };
    let want = Replicated {
        api_version: "v1",
        kind: "ReplicationController",
        namespace: ns.clone(),
        name: name.clone(),
        uid,
        replicas: spec.replicas.unwrap_or(1),
        selector,
        template: spec.template.clone().unwrap_or_default(),
        min_ready_seconds: spec.min_ready_seconds.unwrap_or(0),
        deleting: rc.metadata.deletion_timestamp.is_some(),
    };
    let observed = sync(&ctx, &want).await?;
    let status = rc.status.clone().unwrap_or_default();
    let generation = rc.metadata.generation;
    let changed = status.replicas != observed.replicas
        || status.fully_labeled_replicas.unwrap_or(0) != observed.fully_labeled
        || status.ready_replicas.unwrap_or(0) != observed.ready
        || status.available_replicas.unwrap_or(0) != observed.available
        || status.observed_generation != generation;
    if changed {
        let api: Api<ReplicationController> = Api::namespaced(ctx.client.clone(), &ns);
        let patch = json!({"status": {
            "replicas": observed.replicas,
            "fullyLabeledReplicas": observed.fully_labeled,
            "readyReplicas": observed.ready,
            "availableReplicas": observed.available,
            "observedGeneration": generation,
        }});
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(Action::await_change()),
            Err(e) => return Err(e.into()),
        }
    }
    // A failed create is retried as upstream's rate-limited requeue would (each retry that
    // fails again records the same `FailedCreate`, which the event correlator folds).
    if observed.failure.is_some() {
        return Ok(Action::requeue(super::replicaset::RETRY_AFTER_FAILURE));
    }
    Ok(match observed.next_available {
        Some(d) => Action::requeue(d + Duration::from_millis(100)),
        None => Action::await_change(),
    })
}

fn error_policy(_: Arc<ReplicationController>, e: &ReconcileError, _: Arc<Ctx>) -> Action {
    tracing::debug!(controller = NAME, error = %e, "retrying");
    Action::requeue(Duration::from_secs(1))
}
