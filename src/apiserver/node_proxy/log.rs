//! `GET /api/v1/namespaces/{ns}/pods/{name}/log` (upstream's `LogREST` and
//! `pod.LogLocation`): the container is chosen as upstream does — the one named by
//! `container`, else the `kubectl.kubernetes.io/default-container` annotation (kubectl
//! applies it client-side; served here too so other clients get the same default), else the
//! only container, else 400 `a container name must be specified for pod X, choose one of:
//! [...]` — the options are validated (422 `PodLogOptions` Invalid), and the request goes to
//! the kubelet's `/containerLogs/{ns}/{pod}/{container}` with the same options, its output
//! streamed back as `text/plain`.

use http::Response;
use serde_json::Value;

use crate::apiserver::context::Ctx;
use crate::apiserver::edge::body::Body;
use crate::apiserver::status::{ApiError, ApiResult};

/// Options forwarded to the kubelet, as upstream's `PodLogOptions` query.
const FORWARDED: &[&str] = &[
    "follow",
    "previous",
    "sinceSeconds",
    "sinceTime",
    "tailLines",
    "timestamps",
    "limitBytes",
    "stream",
];

const DEFAULT_CONTAINER: &str = "kubectl.kubernetes.io/default-container";

fn invalid(field: &str, value: &str, why: &str) -> ApiError {
    ApiError::new(
        422,
        "Invalid",
        format!("PodLogOptions \"\" is invalid: {field}: Invalid value: {value}: {why}"),
    )
    .with_details(serde_json::json!({
        "kind": "PodLogOptions",
        "causes": [{"reason": "FieldValueInvalid", "message": format!("Invalid value: {value}: {why}"), "field": field}],
    }))
}

/// Upstream's `ValidatePodLogOptions`.
fn validate(ctx: &Ctx) -> ApiResult<()> {
    let q = &ctx.query;
    let int = |k: &str| -> ApiResult<Option<i64>> {
        match q.get(k) {
            None => Ok(None),
            Some(v) => v.parse::<i64>().map(Some).map_err(|_| {
                ApiError::bad_request(format!("{k}: invalid value {v:?}: must be an integer"))
            }),
        }
    };
    if let Some(n) = int("tailLines")? {
        if n < 0 {
            return Err(invalid(
                "tailLines",
                &n.to_string(),
                "must be greater than or equal to 0",
            ));
        }
    }
    if let Some(n) = int("limitBytes")? {
        if n < 1 {
            return Err(invalid(
                "limitBytes",
                &n.to_string(),
                "must be greater than 0",
            ));
        }
    }
    if let Some(n) = int("sinceSeconds")? {
        if n < 1 {
            return Err(invalid(
                "sinceSeconds",
                &n.to_string(),
                "must be greater than 0",
            ));
        }
        if q.get("sinceTime").is_some() {
            return Err(ApiError::new(
                422,
                "Invalid",
                "PodLogOptions \"\" is invalid: []: Forbidden: at most one of `sinceTime` or `sinceSeconds` may be specified",
            ));
        }
    }
    if let Some(t) = q.get("sinceTime") {
        if t.parse::<jiff::Timestamp>().is_err() {
            return Err(ApiError::bad_request(format!(
                "sinceTime: invalid value {t:?}: not an RFC 3339 time"
            )));
        }
    }
    if let Some(s) = q.get("stream") {
        if !matches!(s, "All" | "Stdout" | "Stderr") {
            return Err(ApiError::new(
                422,
                "Invalid",
                format!("PodLogOptions \"\" is invalid: stream: Unsupported value: \"{s}\": supported values: \"All\", \"Stderr\", \"Stdout\""),
            ));
        }
        if s != "All" && q.get("tailLines").is_some() {
            return Err(ApiError::new(
                422,
                "Invalid",
                "PodLogOptions \"\" is invalid: []: Forbidden: `tailLines` and specific `stream` are mutually exclusive for now",
            ));
        }
    }
    Ok(())
}

/// Every container name in upstream's `VisitContainers` order (init, regular, ephemeral).
fn container_names(pod: &Value) -> Vec<String> {
    ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .flat_map(|k| pod["spec"][*k].as_array().cloned().unwrap_or_default())
        .filter_map(|c| c["name"].as_str().map(str::to_string))
        .collect()
}

/// Upstream's `validateContainer`, plus the default-container annotation.
pub(in crate::apiserver) fn choose_container(
    pod: &Value,
    asked: Option<&str>,
) -> ApiResult<String> {
    let name = pod["metadata"]["name"].as_str().unwrap_or_default();
    let all = container_names(pod);
    if let Some(c) = asked {
        if all.iter().any(|n| n == c) {
            return Ok(c.to_string());
        }
        return Err(ApiError::bad_request(format!(
            "container {c} is not valid for pod {name}"
        )));
    }
    if let Some(d) = pod["metadata"]["annotations"][DEFAULT_CONTAINER].as_str() {
        if all.iter().any(|n| n == d) {
            return Ok(d.to_string());
        }
    }
    let regular = pod["spec"]["containers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    match regular.len() {
        1 => Ok(regular[0]["name"].as_str().unwrap_or_default().to_string()),
        0 => Err(ApiError::bad_request(format!(
            "pod {name} does not have a container"
        ))),
        _ => Err(ApiError::bad_request(format!(
            "a container name must be specified for pod {name}, choose one of: [{}]",
            all.join(" ")
        ))),
    }
}

pub(in crate::apiserver) async fn serve(ctx: &Ctx) -> ApiResult<Response<Body>> {
    let name = ctx.info.name.clone();
    let (pod, _) = ctx.load(&name).await?;
    validate(ctx)?;
    let container = choose_container(&pod, ctx.query.get("container"))?;
    let node = pod["spec"]["nodeName"].as_str().unwrap_or_default();
    if node.is_empty() {
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    }
    // The serializer is not `Send`: built and finished before any await.
    let query = {
        let mut q = form_urlencoded::Serializer::new(String::new());
        for k in FORWARDED {
            if let Some(v) = ctx.query.get(k) {
                q.append_pair(k, v);
            }
        }
        q.finish()
    };
    let mut path = format!(
        "/containerLogs/{}/{}/{}",
        enc(&ctx.info.namespace),
        enc(&name),
        enc(&container)
    );
    if !query.is_empty() {
        path.push('?');
        path.push_str(&query);
    }
    let resp = super::kubelet_get(&ctx.state, node, &path).await?;
    if !resp.status().is_success() {
        return Err(super::kubelet_error(resp).await);
    }
    let mut out = Response::new(super::stream_body(resp.into_body()));
    out.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    Ok(out)
}

fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn container_defaulting() {
        let one = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}]}});
        assert_eq!(super::choose_container(&one, None).unwrap(), "a");
        let two = json!({"metadata": {"name": "p"}, "spec": {
            "initContainers": [{"name": "i"}],
            "containers": [{"name": "a"}, {"name": "b"}]}});
        let e = super::choose_container(&two, None).unwrap_err();
        assert_eq!(e.code, 400);
        assert!(
            e.to_string()
                .contains("a container name must be specified for pod p, choose one of: [i a b]"),
            "{e}"
        );
        assert_eq!(super::choose_container(&two, Some("i")).unwrap(), "i");
        let e = super::choose_container(&two, Some("zz")).unwrap_err();
        assert!(
            e.to_string()
                .contains("container zz is not valid for pod p"),
            "{e}"
        );
        let mut ann = two.clone();
        ann["metadata"]["annotations"] = json!({"kubectl.kubernetes.io/default-container": "b"});
        assert_eq!(super::choose_container(&ann, None).unwrap(), "b");
    }
}
