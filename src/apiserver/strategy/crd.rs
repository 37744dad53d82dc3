//! The CustomResourceDefinition strategy: defaults and the NamesAccepted/Established status
//! computed against the other CRDs (upstream's apiextensions strategy plus the naming and
//! establishing controllers, which we run inline).

use serde_json::Value;

use crate::apiserver::{strategy::crd_lifecycle, strategy::custom, State};

pub async fn prepare_create(state: &State, obj: &mut Value) {
    custom::crd_defaults(obj);
    let others = crd_lifecycle::list_crds(state).await;
    custom::crd_status(obj, &others);
}

pub async fn prepare_update(state: &State, old: &Value, new: &mut Value) {
    let name = new["metadata"]["name"].clone();
    let others: Vec<Value> = crd_lifecycle::list_crds(state)
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
