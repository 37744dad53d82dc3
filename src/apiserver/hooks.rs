//! Per-resource side effects of writes, the parts of upstream's registry strategies and
//! built-in controllers that the API server must provide itself: namespaces start Active with
//! the `kubernetes` finalizer; CRDs get their status conditions and are (un)served as they
//! change. Dependents of deleted objects and the contents of deleted namespaces are the
//! controller manager's (`src/controllers/garbage_collector.rs`, `namespace.rs`), as upstream.

use serde_json::{json, Value};

use super::handlers::Ctx;
use super::status::ApiResult;
use super::{crd_lifecycle, custom, services};

fn is(ctx: &Ctx, group: &str, kind: &str) -> bool {
    ctx.ri.group == group && ctx.ri.kind == kind
}

pub async fn before_create(ctx: &Ctx, obj: &mut Value) -> ApiResult<()> {
    super::csr::before_create(ctx, obj)?;
    super::rbac::escalation::check(ctx, obj, None).await?;
    if is(ctx, "", "Namespace") {
        obj["status"] = json!({"phase": "Active"});
        obj["spec"]["finalizers"] = json!(["kubernetes"]);
        let name = obj["metadata"]["name"].clone();
        obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = name;
    }
    if is(ctx, "batch", "Job") {
        job_selector(obj);
    }
    if is(ctx, "", "Service") && !ctx.dry_run() {
        services::allocate(&ctx.state, obj).await?;
    }
    if is(ctx, "apiextensions.k8s.io", "CustomResourceDefinition") {
        custom::crd_defaults(obj);
        let others = crd_lifecycle::list_crds(&ctx.state).await;
        custom::crd_status(obj, &others);
    }
    Ok(())
}

pub async fn before_update(ctx: &Ctx, old: &Value, new: &mut Value) -> ApiResult<()> {
    super::csr::before_update(ctx, old, new)?;
    super::rbac::escalation::check(ctx, new, Some(old)).await?;
    if is(ctx, "", "Service") {
        // Allocated values survive updates that omit them (upstream's patchAllocatedValues).
        for f in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
            if new["spec"].get(f).is_none_or(|v| v.is_null() || v == "")
                && old["spec"].get(f).is_some()
            {
                new["spec"][f] = old["spec"][f].clone();
            }
        }
        if let Some(ports) = new["spec"]["ports"].as_array_mut() {
            for p in ports.iter_mut().filter(|p| p.get("nodePort").is_none()) {
                let same = old["spec"]["ports"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|o| o["port"] == p["port"]);
                if let Some(np) = same.and_then(|o| o.get("nodePort")) {
                    p["nodePort"] = np.clone();
                }
            }
        }
    }
    if is(ctx, "apiextensions.k8s.io", "CustomResourceDefinition") {
        let name = new["metadata"]["name"].clone();
        let others: Vec<Value> = crd_lifecycle::list_crds(&ctx.state)
            .await
            .into_iter()
            .filter(|c| c["metadata"]["name"] != name)
            .collect();
        custom::crd_defaults(new);
        if new.get("status").is_none() {
            new["status"] = old["status"].clone();
        }
        custom::crd_status(new, &others);
    }
    Ok(())
}

pub async fn after_write(ctx: &Ctx, _obj: &Value) {
    if is(ctx, "apiextensions.k8s.io", "CustomResourceDefinition") {
        crd_lifecycle::reload_crds(&ctx.state).await;
    }
}

pub async fn after_delete(ctx: &Ctx, obj: &Value) {
    if is(ctx, "", "Service") {
        services::release(&ctx.state, obj).await;
    }
    if is(ctx, "apiextensions.k8s.io", "CustomResourceDefinition") {
        crd_lifecycle::reload_crds(&ctx.state).await;
        crd_lifecycle::spawn_crd_cleanup(ctx.state.clone(), obj.clone());
    }
}

/// Upstream's Job strategy (`generateSelector`): unless `spec.manualSelector` is true, the Job
/// selects its pods by its own uid, and the template carries the labels the Job controller and
/// users rely on (`batch.kubernetes.io/controller-uid`, `batch.kubernetes.io/job-name` and the
/// legacy `controller-uid`, `job-name`).
fn job_selector(obj: &mut Value) {
    if obj["spec"]["manualSelector"] == json!(true) || !obj["spec"].is_object() {
        return;
    }
    let uid = obj["metadata"]["uid"].clone();
    let name = obj["metadata"]["name"].clone();
    if !obj["spec"]["template"]["metadata"]["labels"].is_object() {
        obj["spec"]["template"]["metadata"]["labels"] = json!({});
    }
    let labels = &mut obj["spec"]["template"]["metadata"]["labels"];
    labels["batch.kubernetes.io/controller-uid"] = uid.clone();
    labels["batch.kubernetes.io/job-name"] = name.clone();
    labels["controller-uid"] = uid.clone();
    labels["job-name"] = name;
    obj["spec"]["selector"] = json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
}
