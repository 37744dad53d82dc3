//! Service accounts end to end against a real server: the `default` ServiceAccount and the
//! `kube-root-ca.crt` ConfigMap in every namespace (and their repair), TokenRequest through the
//! stock `kubectl create token`, bearer authentication with the issued JWT, verification
//! against the served JWKS, every revocation and forgery we know of answered with 401, and
//! OIDC tokens from a small HTTPS issuer run by the test.

mod harness;

use std::io::{Read, Write};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use harness::{eventually, kubectl_bin, Raw, Server};
use serde_json::{json, Value};

const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// kubectl authenticating with `token` only (no kubeconfig, so no client certificate).
fn as_token(s: &Server, token: &str, args: &[&str]) -> Output {
    let ca = s.data_dir().join("pki/ca.crt");
    Command::new(kubectl_bin())
        .arg("--kubeconfig=/dev/null")
        .arg(format!("--server=https://127.0.0.1:{}", s.port))
        .arg(format!("--certificate-authority={}", ca.display()))
        .arg(format!("--token={token}"))
        .args(args)
        .env("HOME", s.data_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("run kubectl")
}

fn whoami(s: &Server, token: &str) -> Value {
    let out = as_token(s, token, &["auth", "whoami", "-o", "json"]);
    assert!(
        out.status.success(),
        "whoami failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("whoami json")
}

/// A raw GET with `Authorization: Bearer <token>` and no client certificate: (status, body).
fn bearer_get(s: &Server, token: &str, path: &str) -> (u16, String) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(s.ca_pem().as_bytes()) {
        roots.add(c.expect("ca pem")).expect("add root");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("tls versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = ServerName::try_from("127.0.0.1").expect("server name");
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).expect("tls client");
    let mut sock = std::net::TcpStream::connect(("127.0.0.1", s.port)).expect("connect");
    sock.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    let head = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nAuthorization: Bearer {token}\r\n\r\n"
    );
    tls.write_all(head.as_bytes()).expect("write");
    let mut raw = Vec::new();
    let _ = tls.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The token is refused with 401, and the answer does not echo it.
fn refused(s: &Server, token: &str, why: &str) {
    let (code, body) = bearer_get(s, token, "/api/v1/namespaces");
    assert_eq!(code, 401, "{why}: expected 401, got {code}: {body}");
    if token.len() > 20 {
        assert!(!body.contains(token), "{why}: the 401 echoes the token");
    }
}

fn create_token(s: &Server, ns: &str, sa: &str, extra: &[&str]) -> String {
    let mut args = vec!["-n", ns, "create", "token", sa];
    args.extend_from_slice(extra);
    s.ok(&args).trim().to_string()
}

#[test]
fn every_namespace_gets_a_default_service_account_and_the_root_ca() {
    let s = Server::start();
    s.ok(&["create", "namespace", "team-a"]);
    let has = |args: &[&str]| s.kubectl(args).status.success();
    assert!(
        eventually(Duration::from_secs(20), || has(&[
            "-n",
            "team-a",
            "get",
            "serviceaccount",
            "default"
        ])),
        "no default ServiceAccount"
    );
    assert!(
        eventually(Duration::from_secs(20), || has(&[
            "-n",
            "team-a",
            "get",
            "configmap",
            "kube-root-ca.crt"
        ])),
        "no kube-root-ca.crt"
    );
    let cm = s.json(&["-n", "team-a", "get", "configmap", "kube-root-ca.crt"]);
    assert_eq!(cm["data"]["ca.crt"].as_str(), Some(s.ca_pem().as_str()));
    let old_uid = s.json(&["-n", "team-a", "get", "sa", "default"])["metadata"]["uid"].clone();

    // Deleted: both come back (a new ServiceAccount object).
    s.ok(&["-n", "team-a", "delete", "sa", "default"]);
    s.ok(&["-n", "team-a", "delete", "configmap", "kube-root-ca.crt"]);
    assert!(eventually(Duration::from_secs(20), || {
        let out = s.kubectl(&["-n", "team-a", "get", "sa", "default", "-o", "json"]);
        out.status.success()
            && serde_json::from_slice::<Value>(&out.stdout)
                .map(|v| v["metadata"]["uid"] != old_uid)
                .unwrap_or(false)
    }));
    assert!(eventually(Duration::from_secs(20), || has(&[
        "-n",
        "team-a",
        "get",
        "configmap",
        "kube-root-ca.crt"
    ])));

    // Edited: the CA bundle is put back.
    s.ok(&[
        "-n",
        "team-a",
        "patch",
        "configmap",
        "kube-root-ca.crt",
        "-p",
        r#"{"data":{"ca.crt":"tampered"}}"#,
    ]);
    assert!(eventually(Duration::from_secs(20), || {
        let cm = s.json(&["-n", "team-a", "get", "configmap", "kube-root-ca.crt"]);
        cm["data"]["ca.crt"].as_str() == Some(s.ca_pem().as_str())
    }));
    // The system namespaces have them too.
    assert!(has(&["-n", "kube-system", "get", "sa", "default"]));
}

#[test]
fn token_request_issues_a_jwt_that_authenticates_and_verifies_with_the_jwks() {
    let s = Server::start();
    s.ok(&["create", "namespace", "apps"]);
    s.ok(&["-n", "apps", "create", "serviceaccount", "robot"]);
    let sa_uid = s.json(&["-n", "apps", "get", "sa", "robot"])["metadata"]["uid"]
        .as_str()
        .expect("uid")
        .to_string();
    let token = create_token(&s, "apps", "robot", &["--duration", "10m"]);

    let me = whoami(&s, &token);
    assert_eq!(
        me["status"]["userInfo"]["username"],
        "system:serviceaccount:apps:robot"
    );
    let groups = me["status"]["userInfo"]["groups"].clone();
    for g in [
        "system:serviceaccounts",
        "system:serviceaccounts:apps",
        "system:authenticated",
    ] {
        assert!(groups.as_array().unwrap().contains(&json!(g)), "{groups}");
    }
    // uid and extra as upstream's bound-token user info: the service account's uid, and the
    // token's id as `credential-id` (so an audit line names the credential used).
    assert_eq!(me["status"]["userInfo"]["uid"], sa_uid.as_str(), "{me}");
    let credential =
        me["status"]["userInfo"]["extra"]["authentication.kubernetes.io/credential-id"].clone();
    assert!(
        credential[0]
            .as_str()
            .is_some_and(|c| c.starts_with("JTI=")),
        "{me}"
    );
    assert!(me["status"]["userInfo"]["extra"]
        .get("authentication.kubernetes.io/pod-name")
        .is_none());
    let (code, _) = bearer_get(&s, &token, "/apis");
    assert_eq!(code, 200);
    let audit = std::fs::read_to_string(s.data_dir().join("audit/audit.log")).unwrap();
    let line = audit
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| {
            l["requestURI"] == "/apis"
                && l["user"]["username"] == "system:serviceaccount:apps:robot"
        })
        .expect("the audit line of the token's request");
    assert_eq!(line["user"]["uid"], sa_uid.as_str(), "{line}");
    assert_eq!(
        line["user"]["extra"]["authentication.kubernetes.io/credential-id"], credential,
        "{line}"
    );

    // Discovery and the JWKS, with upstream's content types.
    let disc = s.raw(Raw::get("/.well-known/openid-configuration"));
    assert_eq!(disc.status, 200);
    assert!(disc
        .headers
        .iter()
        .any(|(k, v)| k == "content-type" && v == "application/json"));
    let disc = disc.json();
    assert_eq!(disc["issuer"], ISSUER);
    assert_eq!(disc["jwks_uri"], format!("{ISSUER}/openid/v1/jwks"));
    let jwks = s.raw(Raw::get("/openid/v1/jwks"));
    assert!(jwks
        .headers
        .iter()
        .any(|(k, v)| k == "content-type" && v == "application/jwk-set+json"));
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_slice(&jwks.body).expect("jwks");
    let header = jsonwebtoken::decode_header(&token).expect("header");
    assert_eq!(header.alg, jsonwebtoken::Algorithm::ES256);
    let jwk = set
        .find(header.kid.as_deref().expect("kid"))
        .expect("the token's kid is in the JWKS");
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).expect("key");
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    v.set_audience(&[ISSUER]);
    v.set_issuer(&[ISSUER]);
    let claims = jsonwebtoken::decode::<Value>(&token, &key, &v)
        .expect("the JWKS verifies the token")
        .claims;
    assert_eq!(claims["sub"], "system:serviceaccount:apps:robot");
    assert_eq!(claims["kubernetes.io"]["namespace"], "apps");
    assert_eq!(claims["kubernetes.io"]["serviceaccount"]["name"], "robot");
    assert_eq!(claims["kubernetes.io"]["serviceaccount"]["uid"], sa_uid);
    let exp = claims["exp"].as_i64().unwrap();
    let iat = claims["iat"].as_i64().unwrap();
    assert_eq!(exp - iat, 600);
    assert!(claims["jti"].as_str().is_some_and(|j| !j.is_empty()));

    // The JWKS is not public (upstream's default): no credentials, no keys.
    let anon = s.raw(Raw {
        identity: harness::Identity::None,
        ..Raw::get("/openid/v1/jwks")
    });
    assert_eq!(anon.status, 401);

    // Bound to a pod: the claims name it.
    s.ok(&["-n", "apps", "run", "web", "--image=nginx"]);
    let bound = create_token(
        &s,
        "apps",
        "robot",
        &["--bound-object-kind", "Pod", "--bound-object-name", "web"],
    );
    let claims = jsonwebtoken::decode::<Value>(&bound, &key, &v)
        .unwrap()
        .claims;
    assert_eq!(claims["kubernetes.io"]["pod"]["name"], "web");
    let me = whoami(&s, &bound);
    assert_eq!(
        me["status"]["userInfo"]["username"],
        "system:serviceaccount:apps:robot"
    );
    let pod_uid = s.json(&["-n", "apps", "get", "pod", "web"])["metadata"]["uid"].clone();
    let extra = &me["status"]["userInfo"]["extra"];
    assert_eq!(
        extra["authentication.kubernetes.io/pod-name"],
        json!(["web"]),
        "{me}"
    );
    assert_eq!(
        extra["authentication.kubernetes.io/pod-uid"],
        json!([pod_uid]),
        "{me}"
    );
}

#[test]
fn revoked_mis_addressed_and_forged_tokens_are_refused() {
    let s = Server::start();
    s.ok(&["create", "namespace", "apps"]);
    s.ok(&["-n", "apps", "create", "serviceaccount", "robot"]);

    // Issued for someone else.
    let other = create_token(&s, "apps", "robot", &["--audience", "vault"]);
    refused(&s, &other, "wrong audience");

    // Bound to a pod that is then deleted.
    s.ok(&["-n", "apps", "run", "web", "--image=nginx"]);
    let bound = create_token(
        &s,
        "apps",
        "robot",
        &["--bound-object-kind", "Pod", "--bound-object-name", "web"],
    );
    assert_eq!(bearer_get(&s, &bound, "/api").0, 200);
    s.ok(&[
        "-n",
        "apps",
        "delete",
        "pod",
        "web",
        "--grace-period=0",
        "--force",
    ]);
    assert!(eventually(Duration::from_secs(10), || {
        !s.kubectl(&["-n", "apps", "get", "pod", "web"])
            .status
            .success()
    }));
    refused(&s, &bound, "bound pod deleted");
    // A pod of the same name does not revive it (new uid).
    s.ok(&["-n", "apps", "run", "web", "--image=nginx"]);
    refused(&s, &bound, "bound pod recreated");

    // Bound to a node that is then deleted.
    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}}).to_string();
    let r = s.raw(Raw::send(
        "POST",
        "/api/v1/nodes",
        "application/json",
        node.as_bytes(),
    ));
    assert_eq!(r.status, 201);
    let on_node = create_token(
        &s,
        "apps",
        "robot",
        &["--bound-object-kind", "Node", "--bound-object-name", "n1"],
    );
    assert_eq!(bearer_get(&s, &on_node, "/api").0, 200);
    s.ok(&["delete", "node", "n1"]);
    refused(&s, &on_node, "bound node deleted");

    // The service account deleted and recreated under the same name.
    let token = create_token(&s, "apps", "robot", &[]);
    assert_eq!(bearer_get(&s, &token, "/api").0, 200);
    s.ok(&["-n", "apps", "delete", "sa", "robot"]);
    refused(&s, &token, "service account deleted");
    s.ok(&["-n", "apps", "create", "serviceaccount", "robot"]);
    refused(&s, &token, "service account recreated");

    // Forgeries.
    let token = create_token(&s, "apps", "robot", &[]);
    let (head_payload, sig) = token.rsplit_once('.').unwrap();
    let mut sig_bytes = URL_SAFE_NO_PAD.decode(sig).unwrap();
    sig_bytes[10] ^= 0x01;
    let flipped = format!("{head_payload}.{}", URL_SAFE_NO_PAD.encode(&sig_bytes));
    refused(&s, &flipped, "flipped signature byte");

    // Same claims and kid, signed with a key the server does not know.
    let header = jsonwebtoken::decode_header(&token).unwrap();
    let claims: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(head_payload.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    let foreign = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let foreign_key =
        jsonwebtoken::EncodingKey::from_ec_pem(foreign.serialize_pem().as_bytes()).unwrap();
    let forged = jsonwebtoken::encode(&header, &claims, &foreign_key).unwrap();
    refused(&s, &forged, "foreign signing key");
    let mut no_kid = header.clone();
    no_kid.kid = None;
    let forged = jsonwebtoken::encode(&no_kid, &claims, &foreign_key).unwrap();
    refused(&s, &forged, "foreign key without kid");

    // alg=none with our claims.
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
        head_payload.split('.').nth(1).unwrap()
    );
    refused(&s, &none, "alg none");
    refused(&s, "garbage", "garbage bearer");
    refused(&s, "a.b.c", "not a JWT");
    // The genuine token still works after all that.
    assert_eq!(bearer_get(&s, &token, "/api").0, 200);
}

#[test]
fn token_request_bad_input() {
    let s = Server::start();
    s.ok(&["-n", "default", "create", "serviceaccount", "robot"]);
    let post = |path: &str, body: Value| {
        let bytes = body.to_string();
        let r = s.raw(Raw::send(
            "POST",
            path,
            "application/json",
            bytes.as_bytes(),
        ));
        (
            r.status,
            serde_json::from_slice::<Value>(&r.body).unwrap_or(Value::Null),
        )
    };
    let path = "/api/v1/namespaces/default/serviceaccounts/robot/token";
    let req = |spec: Value| json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec});

    let (code, st) = post(path, req(json!({"expirationSeconds": 10})));
    assert_eq!(code, 422, "{st}");
    assert_eq!(st["reason"], "Invalid");
    assert!(
        st["message"]
            .as_str()
            .unwrap()
            .contains("less than 10 minutes"),
        "{st}"
    );
    let err = s.fails(&[
        "-n",
        "default",
        "create",
        "token",
        "robot",
        "--duration",
        "1s",
    ]);
    assert!(err.contains("less than 10 minutes"), "{err}");

    let (code, st) = post(
        "/api/v1/namespaces/default/serviceaccounts/nobody/token",
        req(json!({})),
    );
    assert_eq!(code, 404, "{st}");
    assert_eq!(st["reason"], "NotFound");

    let (code, st) = post(
        path,
        req(json!({"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "ghost"}})),
    );
    assert_eq!(code, 404, "{st}");
    let (code, st) = post(
        path,
        req(
            json!({"boundObjectRef": {"kind": "Deployment", "apiVersion": "apps/v1", "name": "d"}}),
        ),
    );
    assert_eq!(code, 400, "{st}");
    s.ok(&[
        "-n",
        "default",
        "create",
        "secret",
        "generic",
        "s1",
        "--from-literal=a=b",
    ]);
    let (code, st) = post(
        path,
        req(
            json!({"boundObjectRef": {"kind": "Secret", "apiVersion": "v1", "name": "s1", "uid": "not-the-uid"}}),
        ),
    );
    assert_eq!(code, 409, "{st}");

    // A good request: 201, defaults filled in, the bound uid echoed.
    let (code, tr) = post(
        path,
        req(json!({"boundObjectRef": {"kind": "Secret", "apiVersion": "v1", "name": "s1"}})),
    );
    assert_eq!(code, 201, "{tr}");
    assert_eq!(tr["kind"], "TokenRequest");
    assert_eq!(tr["spec"]["expirationSeconds"], 3600);
    assert_eq!(tr["spec"]["audiences"], json!([ISSUER]));
    assert!(tr["spec"]["boundObjectRef"]["uid"]
        .as_str()
        .is_some_and(|u| !u.is_empty()));
    assert!(tr["status"]["expirationTimestamp"].as_str().is_some());
    let token = tr["status"]["token"].as_str().unwrap().to_string();
    assert_eq!(bearer_get(&s, &token, "/api").0, 200);
    s.ok(&["-n", "default", "delete", "secret", "s1"]);
    refused(&s, &token, "bound secret deleted");
}

mod oidc_issuer {
    //! A minimal OpenID provider over HTTPS: discovery and JWKS, its own CA.

    use std::sync::Arc;

    use base64::Engine;
    use http_body_util::Full;
    use hyper::body::Bytes;
    use serde_json::json;

    pub struct Issuer {
        pub url: String,
        pub ca_file: tempfile::NamedTempFile,
        pub signing: jsonwebtoken::EncodingKey,
        pub kid: String,
        pub rsa_signing: jsonwebtoken::EncodingKey,
        keys: Arc<std::sync::Mutex<serde_json::Value>>,
        _rt: tokio::runtime::Runtime,
    }

    pub fn start() -> Issuer {
        let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "test-oidc-ca");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_cert.pem(), &ca_key).unwrap();
        let leaf_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut leaf_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        leaf_params.subject_alt_names = vec![rcgen::SanType::IpAddress([127, 0, 0, 1].into())];
        let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
        let mut ca_file = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut ca_file, ca_cert.pem().as_bytes()).unwrap();

        let sign_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let raw = sign_key.public_key_raw();
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let kid = "test-key-1".to_string();
        // Most providers sign with RS256: a second, RSA key.
        use rsa::pkcs1::EncodeRsaPrivateKey;
        use rsa::traits::PublicKeyParts;
        let rsa_key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
        let rsa_signing =
            jsonwebtoken::EncodingKey::from_rsa_der(rsa_key.to_pkcs1_der().unwrap().as_bytes());
        let jwks = json!({"keys": [
            {"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
             "x": b64(&raw[1..33]), "y": b64(&raw[33..65])},
            {"kty": "RSA", "alg": "RS256", "use": "sig", "kid": "rsa-1",
             "n": b64(&rsa_key.n().to_bytes_be()), "e": b64(&rsa_key.e().to_bytes_be())},
        ]});

        let rt = tokio::runtime::Runtime::new().unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let url = format!("https://127.0.0.1:{port}");
        let discovery = json!({
            "issuer": url, "jwks_uri": format!("{url}/keys"),
            "response_types_supported": ["id_token"], "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
        });
        use rustls::pki_types::pem::PemObject;
        let certs =
            vec![rustls::pki_types::CertificateDer::from_pem_slice(leaf.pem().as_bytes()).unwrap()];
        let key =
            rustls::pki_types::PrivateKeyDer::from_pem_slice(leaf_key.serialize_pem().as_bytes())
                .unwrap();
        let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let keys = Arc::new(std::sync::Mutex::new(jwks));
        let served = keys.clone();
        let (discovery, jwks) = (Arc::new(discovery.to_string()), served);
        rt.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let (discovery, jwks) = (discovery.clone(), jwks.clone());
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let body = match req.uri().path() {
                                "/.well-known/openid-configuration" => Some(discovery.to_string()),
                                "/keys" => Some(jwks.lock().unwrap().to_string()),
                                _ => None,
                            };
                            async move {
                                let resp = match body {
                                    Some(b) => hyper::Response::new(Full::new(Bytes::from(b))),
                                    None => {
                                        let mut r = hyper::Response::new(Full::new(Bytes::new()));
                                        *r.status_mut() = hyper::StatusCode::NOT_FOUND;
                                        r
                                    }
                                };
                                Ok::<_, std::convert::Infallible>(resp)
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        let signing =
            jsonwebtoken::EncodingKey::from_ec_pem(sign_key.serialize_pem().as_bytes()).unwrap();
        Issuer {
            url,
            ca_file,
            signing,
            kid,
            rsa_signing,
            keys,
            _rt: rt,
        }
    }

    impl Issuer {
        pub fn sign(&self, claims: &serde_json::Value) -> String {
            let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
            h.kid = Some(self.kid.clone());
            jsonwebtoken::encode(&h, claims, &self.signing).unwrap()
        }

        /// Publish a new EC key `kid` (keeping the old ones) and return its signing key.
        pub fn add_key(&self, kid: &str) -> jsonwebtoken::EncodingKey {
            let k = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
            let raw = k.public_key_raw();
            let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
            let jwk = json!({"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig",
                "kid": kid, "x": b64(&raw[1..33]), "y": b64(&raw[33..65])});
            let mut keys = self.keys.lock().unwrap();
            keys["keys"].as_array_mut().unwrap().push(jwk);
            jsonwebtoken::EncodingKey::from_ec_pem(k.serialize_pem().as_bytes()).unwrap()
        }

        pub fn sign_rs256(&self, claims: &serde_json::Value) -> String {
            let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
            h.kid = Some("rsa-1".into());
            jsonwebtoken::encode(&h, claims, &self.rsa_signing).unwrap()
        }
    }
}

#[test]
fn oidc_tokens_map_to_users_and_bad_ones_are_refused() {
    let idp = oidc_issuer::start();
    let ca = idp.ca_file.path().to_str().unwrap().to_string();
    let s = Server::start_with(&[
        "--oidc-issuer-url",
        &idp.url,
        "--oidc-client-id",
        "rampart",
        "--oidc-username-claim",
        "email",
        "--oidc-groups-claim",
        "groups",
        "--oidc-groups-prefix",
        "oidc:",
        "--oidc-ca-file",
        &ca,
    ]);
    let now = jiff::Timestamp::now().as_second();
    let claims = |aud: &str, exp: i64, verified: bool| {
        json!({
            "iss": idp.url, "aud": aud, "sub": "u-123", "email": "ada@example.com",
            "email_verified": verified, "groups": ["dev", "ops"], "iat": now, "exp": exp,
        })
    };
    let good = idp.sign(&claims("rampart", now + 600, true));
    let me = whoami(&s, &good);
    assert_eq!(me["status"]["userInfo"]["username"], "ada@example.com");
    assert_eq!(
        me["status"]["userInfo"]["groups"],
        json!(["oidc:dev", "oidc:ops", "system:authenticated"])
    );

    let rs = idp.sign_rs256(&claims("rampart", now + 600, true));
    assert_eq!(
        whoami(&s, &rs)["status"]["userInfo"]["username"],
        "ada@example.com"
    );
    refused(
        &s,
        &idp.sign_rs256(&claims("someone-else", now + 600, true)),
        "RS256 wrong aud",
    );
    refused(
        &s,
        &idp.sign(&claims("someone-else", now + 600, true)),
        "wrong aud",
    );
    refused(
        &s,
        &idp.sign(&claims("rampart", now - 3600, true)),
        "expired",
    );
    refused(
        &s,
        &idp.sign(&claims("rampart", now + 600, false)),
        "email not verified",
    );
    // The provider rotates in a new key: a token naming it makes the server fetch the JWKS
    // again (rate-limited, so it may take one refresh interval).
    let new_key = idp.add_key("test-key-2");
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    h.kid = Some("test-key-2".into());
    let rotated = jsonwebtoken::encode(&h, &claims("rampart", now + 600, true), &new_key).unwrap();
    assert!(
        eventually(Duration::from_secs(25), || bearer_get(&s, &rotated, "/api")
            .0
            == 200),
        "a token signed by the provider's new key is never accepted"
    );

    // Service-account tokens still work next to OIDC.
    s.ok(&["-n", "default", "create", "serviceaccount", "app"]);
    let sa = create_token(&s, "default", "app", &[]);
    assert_eq!(
        whoami(&s, &sa)["status"]["userInfo"]["username"],
        "system:serviceaccount:default:app"
    );
}
