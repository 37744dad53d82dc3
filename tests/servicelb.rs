//! LoadBalancer Services against a real server, no kubelet: Nodes made through the API (status
//! written as a kubelet would), the built-in ServiceLB controller publishes the eligible
//! nodes' addresses in `status.loadBalancer.ingress` as k3s's ServiceLB (Ready nodes,
//! ExternalIP before InternalIP, the `enablelb` pool label, `loadBalancerClass`,
//! `externalTrafficPolicy: Local` → only nodes with a ready endpoint), and the apiserver
//! allocates the health check node port and honours `allocateLoadBalancerNodePorts`.

mod harness;

use std::time::Duration;

use harness::{eventually, Raw, Server};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(20);

fn node(s: &Server, name: &str, ready: bool, addrs: &[(&str, &str)]) {
    s.ok_in(
        &["apply", "-f", "-"],
        &format!("apiVersion: v1\nkind: Node\nmetadata: {{name: {name}}}\n"),
    );
    let addresses: Vec<Value> = addrs
        .iter()
        .map(|(t, a)| json!({"type": t, "address": a}))
        .collect();
    let body = json!({"status": {
        "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"},
            "reason": "KubeletReady", "message": "test",
            "lastHeartbeatTime": "2026-01-01T00:00:00Z", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
        "addresses": addresses,
    }})
    .to_string();
    let r = s.raw(Raw::send(
        "PATCH",
        &format!("/api/v1/nodes/{name}/status"),
        "application/merge-patch+json",
        body.as_bytes(),
    ));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}

fn svc(s: &Server, name: &str) -> Value {
    s.json(&["get", "service", name])
}

fn ingress(s: &Server, name: &str) -> Vec<String> {
    svc(s, name)["status"]["loadBalancer"]["ingress"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["ip"].as_str().map(str::to_string))
        .collect()
}

fn wait_ingress(s: &Server, name: &str, want: &[&str], step: &str) {
    assert!(
        eventually(WAIT, || ingress(s, name) == want),
        "{step}: {name} ingress {:?}, want {want:?}",
        ingress(s, name)
    );
}

#[test]
fn service_load_balancer_publishes_node_ips() {
    let s = Server::start();
    s.settle();
    node(&s, "lb-a", true, &[("InternalIP", "192.0.2.1")]);
    node(
        &s,
        "lb-b",
        true,
        &[("InternalIP", "192.0.2.2"), ("ExternalIP", "198.51.100.2")],
    );
    node(&s, "lb-c", false, &[("InternalIP", "192.0.2.3")]);

    s.ok_in(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  type: LoadBalancer\n  selector: {app: web}\n  ports: [{port: 80}]\n",
    );
    wait_ingress(
        &s,
        "web",
        &["192.0.2.1", "198.51.100.2"],
        "ready nodes, ExternalIP first",
    );
    let web = svc(&s, "web");
    assert_eq!(web["spec"]["allocateLoadBalancerNodePorts"], true);
    assert!(web["spec"]["ports"][0]["nodePort"].as_i64().is_some());
    assert!(web["spec"].get("healthCheckNodePort").is_none());
    assert_eq!(web["status"]["loadBalancer"]["ingress"][0]["ipMode"], "VIP");

    // Another class is another controller's; no node ports when asked not to allocate.
    s.ok_in(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Service\nmetadata: {name: other}\nspec:\n  type: LoadBalancer\n  loadBalancerClass: example.com/lb\n  allocateLoadBalancerNodePorts: false\n  ports: [{port: 81}]\n",
    );
    // Local policy: a health check node port, and only nodes with a ready endpoint.
    s.ok_in(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Service\nmetadata: {name: local}\nspec:\n  type: LoadBalancer\n  externalTrafficPolicy: Local\n  ports: [{port: 82}]\n",
    );
    let local = svc(&s, "local");
    let hc = local["spec"]["healthCheckNodePort"]
        .as_i64()
        .expect("healthCheckNodePort allocated");
    assert!((30000..=32767).contains(&hc), "{hc}");
    assert_ne!(Some(hc), local["spec"]["ports"][0]["nodePort"].as_i64());
    s.ok_in(
        &["apply", "-f", "-"],
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: local-1, labels: {kubernetes.io/service-name: local}}\naddressType: IPv4\nports: [{port: 8080}]\nendpoints: [{addresses: [10.42.1.5], nodeName: lb-b, conditions: {ready: true}}, {addresses: [10.42.0.5], nodeName: lb-a, conditions: {ready: false}}]\n",
    );
    wait_ingress(
        &s,
        "local",
        &["198.51.100.2"],
        "Local policy: nodes with ready endpoints",
    );
    let other = svc(&s, "other");
    assert!(
        other["spec"]["ports"][0].get("nodePort").is_none(),
        "{other}"
    );
    assert!(
        other["status"]["loadBalancer"].get("ingress").is_none(),
        "another class is never written: {other}"
    );

    // Switching to Cluster gives the health check port back and publishes every ready node.
    s.ok(&[
        "patch",
        "service",
        "local",
        "-p",
        r#"{"spec":{"externalTrafficPolicy":"Cluster"}}"#,
    ]);
    assert!(svc(&s, "local")["spec"]
        .get("healthCheckNodePort")
        .is_none());
    wait_ingress(
        &s,
        "local",
        &["192.0.2.1", "198.51.100.2"],
        "Cluster policy",
    );

    // A health check port where none belongs: 422, nothing stored.
    let bad = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "bad"},
        "spec": {"type": "NodePort", "healthCheckNodePort": 31999, "ports": [{"port": 1}]}})
    .to_string();
    let r = s.raw(Raw::send(
        "POST",
        "/api/v1/namespaces/default/services",
        "application/json",
        bad.as_bytes(),
    ));
    assert_eq!(r.status, 422, "{}", String::from_utf8_lossy(&r.body));
    let body = r.json();
    assert_eq!(body["reason"], "Invalid");
    assert_eq!(
        body["details"]["causes"][0]["field"],
        "spec.healthCheckNodePort"
    );
    assert!(s.kubectl(&["get", "service", "bad"]).status.code() != Some(0));

    // The enablelb pool: once a node is labelled, only labelled nodes carry load balancers.
    s.ok(&[
        "label",
        "node",
        "lb-a",
        "svccontroller.k3s.cattle.io/enablelb=true",
    ]);
    wait_ingress(&s, "web", &["192.0.2.1"], "enablelb pool");
}
