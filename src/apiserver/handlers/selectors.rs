//! Label and field selectors of a LIST, WATCH or DELETECOLLECTION request: parsed from the
//! query, checked against the fields each kind can be selected on (upstream's field label
//! conversion functions: anything else is 400 `field label not supported`), and matched
//! against objects.

use serde_json::Value;

use super::Ctx;
use crate::api::selectors::{FieldSelector, LabelSelector};
use crate::apiserver::status::{ApiError, ApiResult};

/// Fields each kind can be selected on, beyond `metadata.name` and `metadata.namespace`
/// (upstream's field label conversion functions).
fn selectable_fields(group: &str, kind: &str) -> &'static [&'static str] {
    match (group, kind) {
        ("", "Pod") => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        ("", "Event") => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        ("", "Secret") => &["type"],
        ("", "Node") => &["spec.unschedulable"],
        ("", "Namespace") => &["status.phase"],
        ("", "ReplicationController") => &["status.replicas"],
        ("apps", "ReplicaSet") => &["status.replicas"],
        ("batch", "Job") => &["status.successful"],
        ("certificates.k8s.io", "CertificateSigningRequest") => &["spec.signerName"],
        _ => &[],
    }
}

/// The string value of a dotted field path, as field selectors compare it.
pub fn field_value(obj: &Value, path: &str) -> Option<String> {
    let mut cur = obj;
    for part in path.split('.') {
        cur = cur.get(part)?;
    }
    Some(match cur {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Null => String::new(),
        other => other.to_string(),
    })
}

/// Parsed selectors of a list or watch request.
pub struct Selectors {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Selectors {
    pub fn parse(ctx: &Ctx) -> ApiResult<Self> {
        let labels = LabelSelector::parse(ctx.query.get("labelSelector").unwrap_or(""))
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let fields = FieldSelector::parse(ctx.query.get("fieldSelector").unwrap_or(""))
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let extra = selectable_fields(&ctx.ri.group, &ctx.ri.kind);
        for req in &fields.0 {
            let f = req.field();
            if f != "metadata.name" && f != "metadata.namespace" && !extra.contains(&f) {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {f}"
                )));
            }
        }
        Ok(Selectors { labels, fields })
    }

    /// Whether every object matches (nothing to filter).
    pub fn everything(&self) -> bool {
        self.labels.0.is_empty() && self.fields.0.is_empty()
    }

    pub fn matches(&self, obj: &Value) -> bool {
        let labels = obj["metadata"]["labels"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default();
        self.labels.matches(&labels) && self.fields.matches(|f| field_value(obj, f))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::field_value;

    #[test]
    fn field_values() {
        let pod = json!({"spec": {"nodeName": "n1", "hostNetwork": true}, "status": {}});
        assert_eq!(field_value(&pod, "spec.nodeName").as_deref(), Some("n1"));
        assert_eq!(
            field_value(&pod, "spec.hostNetwork").as_deref(),
            Some("true")
        );
        assert_eq!(field_value(&pod, "status.phase"), None);
    }
}
