//! The node Lease `kube-node-lease/<node>`, as upstream's `nodelease` controller: holder = the
//! node, 40 s duration, renewed every 10 s, owned by the Node (so it goes when the Node does).

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::PostParams;
use kube::Api;
use serde_json::json;

pub const NAMESPACE: &str = "kube-node-lease";
pub const DURATION_SECONDS: i32 = 40;

fn now_micro() -> String {
    // MicroTime: RFC 3339 with microseconds.
    let now = jiff::Timestamp::now();
    format!("{}", now.strftime("%Y-%m-%dT%H:%M:%S.%6fZ"))
}

/// Create or renew the lease of `node` (whose Node object has `node_uid`).
pub async fn renew(client: &kube::Client, node: &str, node_uid: &str) -> Result<(), kube::Error> {
    let api: Api<Lease> = Api::namespaced(client.clone(), NAMESPACE);
    let spec = json!({
        "holderIdentity": node,
        "leaseDurationSeconds": DURATION_SECONDS,
        "renewTime": now_micro(),
    });
    match api.get_opt(node).await? {
        Some(mut lease) => {
            let mut s = lease.spec.take().unwrap_or_default();
            s.holder_identity = Some(node.to_string());
            s.lease_duration_seconds = Some(DURATION_SECONDS);
            s.renew_time = serde_json::from_value(spec["renewTime"].clone()).ok();
            lease.spec = Some(s);
            api.replace(node, &PostParams::default(), &lease).await?;
        }
        None => {
            let lease: Lease = serde_json::from_value(json!({
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {
                    "name": node,
                    "namespace": NAMESPACE,
                    "ownerReferences": [{
                        "apiVersion": "v1", "kind": "Node", "name": node, "uid": node_uid,
                    }],
                },
                "spec": spec,
            }))
            .map_err(kube::Error::SerdeError)?;
            api.create(&PostParams::default(), &lease).await?;
        }
    }
    Ok(())
}
