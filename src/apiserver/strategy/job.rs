//! The Job strategy: upstream's `generateSelector`. Unless `spec.manualSelector` is true, a Job
//! selects its pods by its own uid, and the template carries the labels the Job controller and
//! users rely on (`batch.kubernetes.io/controller-uid`, `batch.kubernetes.io/job-name` and the
//! legacy `controller-uid`, `job-name`).

use serde_json::{json, Value};

pub fn prepare_create(obj: &mut Value) {
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
