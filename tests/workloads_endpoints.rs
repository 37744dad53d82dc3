//! The Endpoints and EndpointSlice controllers end to end: a Service's selected pods (given IPs
//! and readiness through the `status` subresource, as a kubelet would) appear in its Endpoints
//! (ready / not ready, named target ports resolved) and EndpointSlices (ready, serving and
//! terminating conditions, nodeName, at most 100 per slice); the slices go with the Service.

mod harness;

use std::time::Duration;

use harness::{eventually, Raw, Server};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(30);

fn pod(s: &Server, name: &str, ip: &str, ready: bool) {
    s.ok_in(
        &["apply", "-f", "-"],
        &format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, labels: {{app: web}}}}\nspec:\n  containers: [{{name: c, image: busybox:1, ports: [{{name: http, containerPort: 8080}}]}}]\n"),
    );
    let body = json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
        "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}})
    .to_string();
    let path = format!("/api/v1/namespaces/default/pods/{name}/status");
    let r = s.raw(Raw::send(
        "PATCH",
        &path,
        "application/merge-patch+json",
        body.as_bytes(),
    ));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}

fn slices(s: &Server) -> Vec<Value> {
    s.json(&[
        "get",
        "endpointslices",
        "-l",
        "kubernetes.io/service-name=web",
    ])["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn slice_endpoints(s: &Server) -> Vec<Value> {
    slices(s)
        .iter()
        .flat_map(|sl| sl["endpoints"].as_array().cloned().unwrap_or_default())
        .collect()
}

#[test]
fn endpoints_and_slices_follow_pods() {
    let s = Server::start();
    s.settle();
    s.ok_in(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  selector: {app: web}\n  ports: [{name: web, port: 80, targetPort: http}]\n",
    );
    pod(&s, "a", "10.42.0.10", true);
    pod(&s, "b", "10.42.0.11", false);
    assert!(
        eventually(WAIT, || {
            let ep = s.json(&["get", "endpoints", "web"]);
            let sub = &ep["subsets"][0];
            sub["addresses"][0]["ip"] == "10.42.0.10"
                && sub["notReadyAddresses"][0]["ip"] == "10.42.0.11"
                && sub["ports"][0]["port"] == 8080
                && sub["ports"][0]["name"] == "web"
        }),
        "{}",
        s.ok(&["get", "endpoints", "web", "-o", "yaml"])
    );
    assert!(
        eventually(WAIT, || {
            let eps = slice_endpoints(&s);
            eps.len() == 2
                && eps
                    .iter()
                    .any(|e| e["addresses"][0] == "10.42.0.10" && e["conditions"]["ready"] == true)
                && eps
                    .iter()
                    .any(|e| e["addresses"][0] == "10.42.0.11" && e["conditions"]["ready"] == false)
        }),
        "{:?}",
        slices(&s)
    );
    let all = slices(&s);
    let sl = &all[0];
    assert_eq!(sl["addressType"], "IPv4");
    assert_eq!(sl["ports"][0]["port"], 8080);
    assert_eq!(sl["metadata"]["ownerReferences"][0]["kind"], "Service");
    assert_eq!(
        sl["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"],
        "endpointslice-controller.k8s.io"
    );

    // A terminating pod (held by a finalizer) is serving and terminating, not ready, in the
    // slice, and gone from Endpoints.
    s.ok(&[
        "patch",
        "pod",
        "a",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":["example.com/hold"]}}"#,
    ]);
    s.ok(&["delete", "pod", "a", "--wait=false"]);
    assert!(
        eventually(WAIT, || {
            slice_endpoints(&s).iter().any(|e| {
                e["addresses"][0] == "10.42.0.10"
                    && e["conditions"]
                        == json!({"ready": false, "serving": true, "terminating": true})
            })
        }),
        "{:?}",
        slice_endpoints(&s)
    );
    assert!(eventually(WAIT, || {
        let ep = s.json(&["get", "endpoints", "web"]);
        !ep.to_string().contains("10.42.0.10")
    }));
    s.ok(&[
        "patch",
        "pod",
        "a",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);

    // More than 100 endpoints are split across slices.
    for i in 0..105 {
        let body = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": format!("m{i}"), "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "busybox:1", "ports": [{"name": "http", "containerPort": 8080}]}]}})
        .to_string();
        let r = s.raw(Raw::send(
            "POST",
            "/api/v1/namespaces/default/pods",
            "application/json",
            body.as_bytes(),
        ));
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        let st = json!({"status": {"podIP": format!("10.42.1.{i}"), "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"}]}})
        .to_string();
        let path = format!("/api/v1/namespaces/default/pods/m{i}/status");
        s.raw(Raw::send(
            "PATCH",
            &path,
            "application/merge-patch+json",
            st.as_bytes(),
        ));
    }
    assert!(
        eventually(WAIT, || {
            let sl = slices(&s);
            let total: usize = sl
                .iter()
                .map(|x| x["endpoints"].as_array().map_or(0, Vec::len))
                .sum();
            total == 106
                && sl.len() == 2
                && sl
                    .iter()
                    .all(|x| x["endpoints"].as_array().map_or(0, Vec::len) <= 100)
        }),
        "{} slices",
        slices(&s).len()
    );

    // The Service's deletion takes its Endpoints and slices.
    s.ok(&["delete", "service", "web"]);
    assert!(eventually(WAIT, || slices(&s).is_empty()
        && !s.kubectl(&["get", "endpoints", "web"]).status.success()));
}
