//! Byte- and shape-level fidelity with upstream that clients compare: `metav1.Status` bodies
//! in Go's field order with the encoder's newline, `status` structs Go always writes, DELETE
//! answering the object for `ReturnDeletedObject` registries, and `apiregistration.k8s.io/v1`
//! APIServices (local ones for the built-in groups, availability of users' ones).

mod harness;

use harness::{Raw, Server};
use serde_json::Value;

fn send(s: &Server, method: &str, path: &str, ct: &str, body: &str) -> (u16, Value) {
    let r = s.raw(Raw::send(method, path, ct, body.as_bytes()));
    let v = if r.body.is_empty() {
        Value::Null
    } else {
        r.json()
    };
    (r.status, v)
}

#[test]
fn error_bodies_are_upstreams_bytes() {
    let s = Server::start();
    let r = s.raw(Raw::get("/api/v1/namespaces/default/configmaps/nope"));
    assert_eq!(r.status, 404);
    assert_eq!(
        String::from_utf8_lossy(&r.body),
        "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"configmaps \\\"nope\\\" not found\",\"reason\":\"NotFound\",\"details\":{\"name\":\"nope\",\"kind\":\"configmaps\"},\"code\":404}\n"
    );
    // A group resource names its group after the name, as StatusDetails orders them.
    let r = s.raw(Raw::get(
        "/apis/apps/v1/namespaces/default/deployments/nope",
    ));
    assert!(String::from_utf8_lossy(&r.body)
        .contains(r#""details":{"name":"nope","group":"apps","kind":"deployments"},"code":404}"#));
    // 422 causes: reason, message, field.
    let r = s.raw(Raw::send(
        "POST",
        "/api/v1/namespaces/default/configmaps",
        "application/json",
        br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"Bad_Name"}}"#,
    ));
    assert_eq!(r.status, 422);
    let text = String::from_utf8_lossy(&r.body);
    assert!(text.starts_with(r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"ConfigMap \"Bad_Name\" is invalid: "#), "{text}");
    assert!(
        text.contains(r#"{"reason":"FieldValueInvalid","message":"#)
            && text.ends_with("},\"code\":422}\n"),
        "{text}"
    );
}

#[test]
fn services_have_status_and_deletes_answer_like_upstream() {
    let s = Server::start();
    let svcs = "/api/v1/namespaces/default/services";
    let (code, created) = send(
        &s,
        "POST",
        svcs,
        "application/json",
        r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"web"},"spec":{"ports":[{"port":80}]}}"#,
    );
    assert_eq!(code, 201, "{created}");
    assert_eq!(
        created["status"],
        serde_json::json!({"loadBalancer": {}}),
        "{created}"
    );
    let got = s.raw(Raw::get(&format!("{svcs}/web"))).json();
    assert_eq!(got["status"], serde_json::json!({"loadBalancer": {}}));
    let (code, patched) = send(
        &s,
        "PATCH",
        &format!("{svcs}/web"),
        "application/merge-patch+json",
        r#"{"metadata":{"labels":{"a":"b"}}}"#,
    );
    assert_eq!(code, 200, "{patched}");
    assert_eq!(patched["status"], serde_json::json!({"loadBalancer": {}}));
    // Other kinds whose Go status struct is never omitted.
    let (code, pvc) = send(
        &s,
        "POST",
        "/api/v1/namespaces/default/persistentvolumeclaims",
        "application/json",
        r#"{"apiVersion":"v1","kind":"PersistentVolumeClaim","metadata":{"name":"c"},"spec":{"accessModes":["ReadWriteOnce"],"resources":{"requests":{"storage":"1Gi"}}}}"#,
    );
    assert_eq!(code, 201, "{pvc}");
    assert_eq!(pvc["status"]["phase"], "Pending");
    let (code, dep) = send(
        &s,
        "POST",
        "/apis/apps/v1/namespaces/default/deployments",
        "application/json",
        r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"d"},"spec":{"selector":{"matchLabels":{"a":"b"}},"template":{"metadata":{"labels":{"a":"b"}},"spec":{"containers":[{"name":"c","image":"nginx"}]}}}}"#,
    );
    assert_eq!(code, 201, "{dep}");
    assert!(dep["status"].is_object(), "{dep}");

    // DELETE of a Service answers the deleted Service (ReturnDeletedObject), of a ConfigMap a
    // Status in upstream's byte layout.
    let (code, deleted) = send(&s, "DELETE", &format!("{svcs}/web"), "application/json", "");
    assert_eq!(code, 200);
    assert_eq!(deleted["kind"], "Service", "{deleted}");
    assert_eq!(deleted["metadata"]["name"], "web");
    let (code, _) = send(
        &s,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        "application/json",
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"cm"}}"#,
    );
    assert_eq!(code, 201);
    let r = s.raw(Raw::send(
        "DELETE",
        "/api/v1/namespaces/default/configmaps/cm",
        "application/json",
        b"",
    ));
    assert_eq!(r.status, 200);
    let text = String::from_utf8_lossy(&r.body);
    assert!(text.starts_with(r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Success","details":{"name":"cm","kind":"configmaps","uid":""#), "{text}");
    assert!(text.ends_with("\"}}\n"), "{text}");
    let (code, pvc) = send(
        &s,
        "DELETE",
        "/api/v1/namespaces/default/persistentvolumeclaims/c",
        "application/json",
        "",
    );
    assert_eq!(
        (code, pvc["kind"].as_str()),
        (200, Some("PersistentVolumeClaim"))
    );
}

#[test]
fn api_services_are_served() {
    let s = Server::start();
    let base = "/apis/apiregistration.k8s.io/v1/apiservices";
    let list = s.raw(Raw::get(base)).json();
    let items = list["items"].as_array().unwrap();
    let find = |name: &str| {
        items
            .iter()
            .find(|i| i["metadata"]["name"] == name)
            .cloned()
    };
    for name in [
        "v1.",
        "v1.apps",
        "v1.apiregistration.k8s.io",
        "v1.rbac.authorization.k8s.io",
    ] {
        let svc = find(name).unwrap_or_else(|| panic!("{name} missing: {list}"));
        let cond = &svc["status"]["conditions"][0];
        assert_eq!(
            (
                cond["type"].as_str(),
                cond["status"].as_str(),
                cond["reason"].as_str()
            ),
            (Some("Available"), Some("True"), Some("Local")),
            "{svc}"
        );
    }
    assert_eq!(find("v1.").unwrap()["spec"]["groupPriorityMinimum"], 18000);
    // kubectl's table for them.
    let table = s.ok(&["get", "apiservices"]);
    assert!(
        table.contains("v1.apps") && table.contains("Local") && table.contains("True"),
        "{table}"
    );

    // A user's APIService backed by a Service that does not exist yet (custom metrics:
    // `v1beta1.metrics.k8s.io` is served in-process and already registered).
    let metrics = r#"{"apiVersion":"apiregistration.k8s.io/v1","kind":"APIService","metadata":{"name":"v1beta1.custom.metrics.k8s.io"},"spec":{"group":"custom.metrics.k8s.io","version":"v1beta1","groupPriorityMinimum":100,"versionPriority":100,"insecureSkipTLSVerify":true,"service":{"namespace":"kube-system","name":"metrics-server"}}}"#;
    let (code, created) = send(&s, "POST", base, "application/json", metrics);
    assert_eq!(code, 201, "{created}");
    let cond = &created["status"]["conditions"][0];
    assert_eq!(
        (cond["status"].as_str(), cond["reason"].as_str()),
        (Some("False"), Some("ServiceNotFound")),
        "{created}"
    );
    assert_eq!(
        cond["message"],
        "service/metrics-server in \"kube-system\" is not present"
    );
    // The Service appears, without endpoints: MissingEndpoints on the next write.
    let (code, _) = send(
        &s,
        "POST",
        "/api/v1/namespaces/kube-system/services",
        "application/json",
        r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"metrics-server"},"spec":{"ports":[{"port":443}]}}"#,
    );
    assert_eq!(code, 201);
    let (code, updated) = send(
        &s,
        "PATCH",
        &format!("{base}/v1beta1.custom.metrics.k8s.io"),
        "application/merge-patch+json",
        r#"{"metadata":{"labels":{"touched":"yes"}}}"#,
    );
    assert_eq!(code, 200, "{updated}");
    assert_eq!(
        updated["status"]["conditions"][0]["reason"], "MissingEndpoints",
        "{updated}"
    );
    // A name that does not match group and version is refused.
    let (code, bad) = send(
        &s,
        "POST",
        base,
        "application/json",
        r#"{"apiVersion":"apiregistration.k8s.io/v1","kind":"APIService","metadata":{"name":"metrics"},"spec":{"group":"metrics.k8s.io","version":"v1","groupPriorityMinimum":100,"versionPriority":100}}"#,
    );
    assert_eq!(code, 422, "{bad}");
    assert!(
        bad["message"]
            .as_str()
            .unwrap()
            .contains("must be v1.metrics.k8s.io"),
        "{bad}"
    );

    // A CRD's group/version gets its automanaged APIService, gone with the CRD.
    let crd = r#"{"apiVersion":"apiextensions.k8s.io/v1","kind":"CustomResourceDefinition","metadata":{"name":"widgets.example.com"},"spec":{"group":"example.com","scope":"Namespaced","names":{"plural":"widgets","singular":"widget","kind":"Widget"},"versions":[{"name":"v1","served":true,"storage":true,"schema":{"openAPIV3Schema":{"type":"object","x-kubernetes-preserve-unknown-fields":true}}}]}}"#;
    let crds = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";
    let (code, created) = send(&s, "POST", crds, "application/json", crd);
    assert_eq!(code, 201, "{created}");
    let r = s.raw(Raw::get(&format!("{base}/v1.example.com")));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let svc = r.json();
    assert_eq!(
        svc["metadata"]["labels"]["kube-aggregator.kubernetes.io/automanaged"],
        "true"
    );
    assert_eq!(svc["status"]["conditions"][0]["status"], "True");
    let (code, _) = send(
        &s,
        "DELETE",
        &format!("{crds}/widgets.example.com"),
        "application/json",
        "",
    );
    assert_eq!(code, 200);
    assert!(harness::eventually(
        std::time::Duration::from_secs(5),
        || { s.raw(Raw::get(&format!("{base}/v1.example.com"))).status == 404 }
    ));
}
