//! HPA `Pods`, `Object` and `External` metrics end to end, as upstream: the controller asks
//! `custom.metrics.k8s.io/v1beta2` and `external.metrics.k8s.io/v1beta1`, which the apiserver
//! proxies (aggregation layer) to an adapter. Here the adapter is a tiny HTTPS server in the
//! test, registered through two APIServices, answering fixed values:
//!
//! - a `Pods` metric `requests_per_second` at 30 per pod against an `AverageValue` of 10:
//!   `ceil(3 × 2 pods) = 6`, capped at `maxReplicas` 4;
//! - an `Object` metric (Service `web`'s `requests`) at 250 against a `Value` of 100:
//!   `ceil(2.5 × 1 ready pod) = 3` (also its `maxReplicas`: more ready pods would raise it);
//! - an `External` metric `queue_messages` (two series, 200 + 300) against an
//!   `AverageValue` of 100 per pod: `ceil(500 / 100) = 5`.
//!
//! Each HPA must scale its Deployment there and report the metric in `currentMetrics`. No
//! kubelet runs: the test marks pods Running and Ready through the status subresource, and
//! tells the adapter the current pod names (a real adapter would read them from its source).

mod harness;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use harness::{eventually, Raw, Server};
use serde_json::{json, Value};

struct Adapter {
    port: u16,
    pods: Arc<Mutex<Vec<String>>>,
    _runtime: tokio::runtime::Runtime,
}

fn answer(path: &str, pods: &[String]) -> (u16, Value) {
    let list = |items: Vec<Value>| {
        json!({"kind": "MetricValueList", "apiVersion": "custom.metrics.k8s.io/v1beta2",
               "metadata": {}, "items": items})
    };
    let now = "2026-01-01T00:00:00Z";
    if path == "/apis/custom.metrics.k8s.io/v1beta2" {
        return (
            200,
            json!({"kind": "APIResourceList", "apiVersion": "v1",
            "groupVersion": "custom.metrics.k8s.io/v1beta2", "resources": [
                {"name": "pods/requests_per_second", "singularName": "", "namespaced": true, "kind": "MetricValueList", "verbs": ["get"]},
                {"name": "services/requests", "singularName": "", "namespaced": true, "kind": "MetricValueList", "verbs": ["get"]}]}),
        );
    }
    if path == "/apis/external.metrics.k8s.io/v1beta1" {
        return (
            200,
            json!({"kind": "APIResourceList", "apiVersion": "v1",
            "groupVersion": "external.metrics.k8s.io/v1beta1", "resources": [
                {"name": "queue_messages", "singularName": "", "namespaced": true, "kind": "ExternalMetricValueList", "verbs": ["get"]}]}),
        );
    }
    if path == "/apis/custom.metrics.k8s.io/v1beta2/namespaces/metrics/pods/*/requests_per_second" {
        let items = pods
            .iter()
            .map(|p| json!({"describedObject": {"kind": "Pod", "namespace": "metrics", "name": p, "apiVersion": "/v1"},
                            "metric": {"name": "requests_per_second"}, "timestamp": now, "value": "30"}))
            .collect();
        return (200, list(items));
    }
    if path == "/apis/custom.metrics.k8s.io/v1beta2/namespaces/metrics/services/web/requests" {
        return (
            200,
            list(vec![
                json!({"describedObject": {"kind": "Service", "namespace": "metrics", "name": "web", "apiVersion": "/v1"},
                             "metric": {"name": "requests"}, "timestamp": now, "value": "250"}),
            ]),
        );
    }
    if path == "/apis/external.metrics.k8s.io/v1beta1/namespaces/metrics/queue_messages" {
        return (
            200,
            json!({"kind": "ExternalMetricValueList", "apiVersion": "external.metrics.k8s.io/v1beta1", "metadata": {},
                   "items": [
                       {"metricName": "queue_messages", "metricLabels": {"queue": "a"}, "timestamp": now, "value": "200"},
                       {"metricName": "queue_messages", "metricLabels": {"queue": "b"}, "timestamp": now, "value": "300"}]}),
        );
    }
    (
        404,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404, "reason": "NotFound"}),
    )
}

/// The adapter on loopback: its own self-signed serving certificate (the APIServices skip
/// verification), no client authentication (it serves fixed numbers).
fn start_adapter() -> Adapter {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["adapter.metrics.svc".to_string()])
        .expect("params")
        .self_signed(&key)
        .expect("cert");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert.der().to_vec())],
            PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).expect("key pem"),
        )
        .expect("server config");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let pods: Arc<Mutex<Vec<String>>> = Arc::default();
    let names = pods.clone();
    runtime.spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, names) = (acceptor.clone(), names.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let pods = names.lock().map(|p| p.clone()).unwrap_or_default();
                        let (code, body) = answer(req.uri().path(), &pods);
                        async move {
                            Ok::<_, std::convert::Infallible>(
                                http::Response::builder()
                                    .status(code)
                                    .header("content-type", "application/json")
                                    .body(http_body_util::Full::new(bytes::Bytes::from(
                                        body.to_string(),
                                    )))
                                    .expect("response"),
                            )
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    Adapter {
        port,
        pods,
        _runtime: runtime,
    }
}

fn deployment(name: &str, replicas: i64) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": "metrics"},
           "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                    "template": {"metadata": {"labels": {"app": name}},
                                 "spec": {"containers": [{"name": "c", "image": "busybox:1"}]}}}})
}

fn hpa(name: &str, max: i64, metric: Value) -> Value {
    json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
           "metadata": {"name": name, "namespace": "metrics"},
           "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                    "minReplicas": 1, "maxReplicas": max, "metrics": [metric]}})
}

/// Play the kubelet for every live pod of the namespace; tell the adapter their names.
fn run_pods(s: &Server, adapter: &Adapter) {
    let pods = s.json(&["get", "pods", "-n", "metrics"]);
    let mut names = Vec::new();
    for pod in pods["items"].as_array().into_iter().flatten() {
        if !pod["metadata"]["deletionTimestamp"].is_null() {
            continue;
        }
        let name = pod["metadata"]["name"].as_str().unwrap_or_default();
        if pod["metadata"]["labels"]["app"] == "pods" {
            names.push(name.to_string());
        }
        if pod["status"]["phase"] == "Running" {
            continue;
        }
        let now = "2026-01-01T00:00:00Z";
        let body = json!({"status": {"phase": "Running", "startTime": now, "conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": now}]}})
        .to_string();
        let path = format!("/api/v1/namespaces/metrics/pods/{name}/status");
        let r = s.raw(Raw::send(
            "PATCH",
            &path,
            "application/merge-patch+json",
            body.as_bytes(),
        ));
        assert!(
            matches!(r.status, 200 | 404 | 409),
            "marking {name} running: {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
    }
    if let Ok(mut p) = adapter.pods.lock() {
        *p = names;
    }
}

fn replicas(s: &Server, name: &str) -> i64 {
    s.json(&["get", "deployment", name, "-n", "metrics"])["spec"]["replicas"]
        .as_i64()
        .unwrap_or(-1)
}

#[test]
fn hpa_scales_on_pods_object_and_external_metrics() {
    let s = Server::start_with(&["--horizontal-pod-autoscaler-sync-period", "1s"]);
    s.settle();
    let adapter = start_adapter();
    let port = adapter.port;
    let mut manifests = vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "metrics"}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "adapter", "namespace": "metrics"},
               "spec": {"ports": [{"name": "https", "port": 443, "targetPort": port}]}}),
        json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "adapter", "namespace": "metrics"},
               "subsets": [{"addresses": [{"ip": "127.0.0.1"}], "ports": [{"name": "https", "port": port}]}]}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "metrics"},
               "spec": {"ports": [{"port": 80}]}}),
    ];
    for (group, version) in [
        ("custom.metrics.k8s.io", "v1beta2"),
        ("external.metrics.k8s.io", "v1beta1"),
    ] {
        manifests.push(json!({"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
            "metadata": {"name": format!("{version}.{group}")},
            "spec": {"group": group, "version": version, "groupPriorityMinimum": 100, "versionPriority": 100,
                     "service": {"namespace": "metrics", "name": "adapter", "port": 443},
                     "insecureSkipTLSVerify": true}}));
    }
    manifests.push(deployment("pods", 2));
    manifests.push(deployment("object", 1));
    manifests.push(deployment("external", 1));
    manifests.push(hpa(
        "pods",
        4,
        json!({"type": "Pods", "pods": {"metric": {"name": "requests_per_second"},
               "target": {"type": "AverageValue", "averageValue": "10"}}}),
    ));
    // Capped at 3: with a constant value, every newly ready pod raises the proposal again
    // (`ceil(2.5 × ready pods)`), as upstream.
    manifests.push(hpa(
        "object",
        3,
        json!({"type": "Object", "object": {
               "describedObject": {"apiVersion": "v1", "kind": "Service", "name": "web"},
               "metric": {"name": "requests"}, "target": {"type": "Value", "value": "100"}}}),
    ));
    manifests.push(hpa(
        "external",
        6,
        json!({"type": "External", "external": {"metric": {"name": "queue_messages"},
               "target": {"type": "AverageValue", "averageValue": "100"}}}),
    ));
    let stream: Vec<String> = manifests.iter().map(Value::to_string).collect();
    s.ok_in(&["apply", "-f", "-"], &stream.join("\n---\n"));

    let want = [("pods", 4), ("object", 3), ("external", 5)];
    let scaled = eventually(Duration::from_secs(60), || {
        run_pods(&s, &adapter);
        want.iter().all(|(n, r)| replicas(&s, n) == *r)
    });
    let hpas = s.json(&["get", "hpa", "-n", "metrics"]);
    assert!(
        scaled,
        "replicas {:?}; HPAs: {hpas:#}",
        want.map(|(n, _)| (n, replicas(&s, n)))
    );

    // currentMetrics as upstream reports each type.
    let reported = eventually(Duration::from_secs(20), || {
        let get = |n: &str| {
            s.json(&["get", "hpa", n, "-n", "metrics"])["status"]["currentMetrics"][0].clone()
        };
        let (p, o, e) = (get("pods"), get("object"), get("external"));
        p["pods"]["current"]["averageValue"] == "30"
            && p["pods"]["metric"]["name"] == "requests_per_second"
            && o["object"]["current"]["value"] == "250"
            && o["object"]["describedObject"]["name"] == "web"
            && e["external"]["current"]["averageValue"].is_string()
            && e["external"]["metric"]["name"] == "queue_messages"
    });
    let hpas = s.json(&["get", "hpa", "-n", "metrics"]);
    assert!(reported, "{hpas:#}");
    let ext = s.json(&["get", "hpa", "external", "-n", "metrics"]);
    let cond = ext["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "ScalingActive").cloned())
        .unwrap_or(Value::Null);
    assert_eq!(cond["status"], "True", "{ext:#}");
}
