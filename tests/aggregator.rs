//! The aggregation layer end to end: a tiny extension API server (HTTPS, in this test,
//! requiring a client certificate from the front-proxy CA the server publishes in
//! `kube-system/extension-apiserver-authentication`) serves group `wardle.example.com`;
//! an APIService registered through kubectl makes `kubectl get flunders` reach it with the
//! caller's identity in the `X-Remote-*` headers. An APIService whose Service has no
//! endpoints is `Available=False MissingEndpoints` and answers 503; a user Cedar/RBAC
//! forbids gets 403 and the extension server never sees the request.

mod harness;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use harness::{eventually, Identity, Raw, Server};
use serde_json::{json, Value};

const GROUP: &str = "wardle.example.com";
const VERSION: &str = "v1alpha1";

/// What the extension server saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    user: Option<String>,
    groups: Vec<String>,
    authorization: bool,
}

struct Extension {
    port: u16,
    ca_pem: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    _runtime: tokio::runtime::Runtime,
}

fn discovery() -> Value {
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": format!("{GROUP}/{VERSION}"),
           "resources": [{"name": "flunders", "singularName": "flunder", "namespaced": true,
                          "kind": "Flunder", "verbs": ["get", "list"]}]})
}

fn flunders() -> Value {
    json!({"kind": "FlunderList", "apiVersion": format!("{GROUP}/{VERSION}"), "metadata": {"resourceVersion": "1"},
           "items": [{"kind": "Flunder", "apiVersion": format!("{GROUP}/{VERSION}"),
                      "metadata": {"name": "my-first-flunder", "namespace": "default",
                                   "creationTimestamp": "2026-01-01T00:00:00Z"}}]})
}

/// Start the extension server on loopback: serving certificate for `api.wardle.svc` from a
/// CA of its own; client certificates verified against `client_ca_pem` (mandatory).
fn start_extension(client_ca_pem: &str) -> Extension {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let ca_key = rcgen::KeyPair::generate().expect("ca key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "wardle-ca");
    let ca = ca_params.self_signed(&ca_key).expect("ca");
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca.pem(), &ca_key).expect("issuer");
    let key = rcgen::KeyPair::generate().expect("key");
    let leaf = rcgen::CertificateParams::new(vec!["api.wardle.svc".to_string()])
        .expect("leaf params")
        .signed_by(&key, &issuer)
        .expect("leaf");

    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(client_ca_pem.as_bytes()) {
        roots.add(c.expect("client ca pem")).expect("client ca");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .expect("client verifier");
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![CertificateDer::from(leaf.der().to_vec())],
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
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let log = seen.clone();
    runtime.spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let log = log.clone();
            tokio::spawn(async move {
                // A client without a front-proxy certificate fails here: no request is seen.
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let log = log.clone();
                    async move {
                        let h = req.headers();
                        let path = req.uri().path().to_string();
                        log.lock().unwrap().push(Seen {
                            path: path.clone(),
                            user: h.get("x-remote-user").and_then(|v| v.to_str().ok()).map(String::from),
                            groups: h
                                .get_all("x-remote-group")
                                .iter()
                                .filter_map(|v| v.to_str().ok().map(String::from))
                                .collect(),
                            authorization: h.contains_key("authorization"),
                        });
                        let (code, body) = if path == format!("/apis/{GROUP}/{VERSION}") {
                            (200, discovery())
                        } else if path.ends_with("/flunders") {
                            (200, flunders())
                        } else {
                            (404, json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404, "reason": "NotFound"}))
                        };
                        Ok::<_, std::convert::Infallible>(
                            http::Response::builder()
                                .status(code)
                                .header("content-type", "application/json")
                                .body(http_body_util::Full::new(bytes::Bytes::from(body.to_string())))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    Extension {
        port,
        ca_pem: ca.pem(),
        seen,
        _runtime: runtime,
    }
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn available(server: &Server, name: &str) -> (String, String) {
    let o = server.json(&["get", "apiservice", name]);
    let c = o["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Available").cloned())
        .unwrap_or(Value::Null);
    (
        c["status"].as_str().unwrap_or_default().to_string(),
        c["reason"].as_str().unwrap_or_default().to_string(),
    )
}

#[test]
fn an_apiservice_proxies_its_group_to_the_extension_server() {
    let server = Server::start();
    // The front-proxy trust the server publishes, as an extension server reads it.
    let mut cm = Value::Null;
    assert!(
        eventually(Duration::from_secs(20), || {
            let out = server.kubectl(&[
                "get",
                "configmap",
                "-n",
                "kube-system",
                "extension-apiserver-authentication",
                "-o",
                "json",
            ]);
            cm = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
            cm["data"]["requestheader-client-ca-file"].is_string()
        }),
        "extension-apiserver-authentication was not published"
    );
    assert_eq!(
        cm["data"]["requestheader-allowed-names"],
        r#"["front-proxy-client"]"#
    );
    assert_eq!(
        cm["data"]["requestheader-username-headers"],
        r#"["X-Remote-User"]"#
    );
    assert!(cm["data"]["client-ca-file"]
        .as_str()
        .is_some_and(|s| s.contains("BEGIN CERTIFICATE")));
    let ext = start_extension(cm["data"]["requestheader-client-ca-file"].as_str().unwrap());

    let manifests = json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "wardle"}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "api", "namespace": "wardle"},
         "spec": {"ports": [{"name": "https", "port": 443, "targetPort": ext.port}]}},
        {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "api", "namespace": "wardle"},
         "subsets": [{"addresses": [{"ip": "127.0.0.1"}], "ports": [{"name": "https", "port": ext.port}]}]},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "empty", "namespace": "wardle"},
         "spec": {"ports": [{"name": "https", "port": 443}]}},
        {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
         "metadata": {"name": format!("{VERSION}.{GROUP}")},
         "spec": {"group": GROUP, "version": VERSION, "groupPriorityMinimum": 1000, "versionPriority": 15,
                  "service": {"namespace": "wardle", "name": "api", "port": 443},
                  "caBundle": b64(&ext.ca_pem)}},
        {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
         "metadata": {"name": "v1.nothere.example.com"},
         "spec": {"group": "nothere.example.com", "version": "v1", "groupPriorityMinimum": 1000, "versionPriority": 15,
                  "service": {"namespace": "wardle", "name": "empty", "port": 443},
                  "insecureSkipTLSVerify": true}},
    ]});
    server.ok_in(&["apply", "-f", "-"], &manifests.to_string());

    // The availability controller checks discovery through the proxy.
    let name = format!("{VERSION}.{GROUP}");
    let mut last = (String::new(), String::new());
    assert!(
        eventually(Duration::from_secs(30), || {
            last = available(&server, &name);
            last == ("True".to_string(), "Passed".to_string())
        }),
        "APIService never became available: {last:?}"
    );
    assert_eq!(
        available(&server, "v1.nothere.example.com"),
        ("False".to_string(), "MissingEndpoints".to_string())
    );

    // Discovery lists the group; kubectl reaches the extension server.
    let apis = server.raw(Raw::get("/apis")).json();
    assert!(
        apis["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["name"] == GROUP),
        "{GROUP} missing from /apis: {apis}"
    );
    let group = server.raw(Raw::get(&format!("/apis/{GROUP}"))).json();
    assert_eq!(group["preferredVersion"]["version"], VERSION, "{group}");
    let out = server.ok(&["get", "flunders", "-n", "default"]);
    assert!(
        out.contains("my-first-flunder"),
        "kubectl get flunders: {out}"
    );

    let seen = ext.seen.lock().unwrap().clone();
    let listed: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.path.ends_with("/flunders"))
        .collect();
    assert!(
        !listed.is_empty(),
        "the extension server saw no list: {seen:?}"
    );
    for s in &listed {
        assert_eq!(s.user.as_deref(), Some("admin"), "{s:?}");
        assert!(s.groups.iter().any(|g| g == "system:masters"), "{s:?}");
        assert!(
            !s.authorization,
            "the caller's credentials were forwarded: {s:?}"
        );
    }
    // The discovery check identifies itself as the aggregator.
    assert!(seen
        .iter()
        .any(|s| s.path == format!("/apis/{GROUP}/{VERSION}")
            && s.user.as_deref() == Some("system:kube-aggregator")));

    // No endpoints: 503 with a Status, nothing proxied.
    let r = server.raw(Raw::get("/apis/nothere.example.com/v1/things"));
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    let status = r.json();
    assert_eq!(
        (status["kind"].as_str(), status["reason"].as_str()),
        (Some("Status"), Some("ServiceUnavailable"))
    );

    // A user nothing allows: 403 from this server; the extension server never hears of it.
    let before = ext.seen.lock().unwrap().len();
    let (cert, key) = server.client_cert("eve", &[]);
    let path = format!("/apis/{GROUP}/{VERSION}/namespaces/default/flunders");
    let mut req = Raw::get(&path);
    req.identity = Identity::Pem(&cert, &key);
    let r = server.raw(req);
    assert_eq!(r.status, 403, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["reason"], "Forbidden");
    // Anything that did reach the extension server since came from the periodic check.
    assert!(ext.seen.lock().unwrap()[before..]
        .iter()
        .all(|s| s.user.as_deref() != Some("eve") && !s.path.ends_with("/flunders")));
}
