//! Attacks of issue 12, items 10–12, over raw HTTPS against a server under an address-space
//! cap, each followed by a check that the server is alive and answers fast:
//! - client certificates minted with the cluster's *other* CA keys (kubelet-serving, server,
//!   root, a retiring kubelet-serving CA during rotation, a fake client CA under another CA)
//!   are 401; the client CA's (and its predecessor's during rotation) still work;
//! - join-token guessing backs off per token id (429 with a growing Retry-After) and never
//!   refuses the correct token, whoever failed before;
//! - 150,000 unknown fields give a few dozen capped `Warning` headers, not 150,000;
//! - a `dryRun=All` create of a taken name is 409 AlreadyExists and writes nothing;
//! - crafted managedFields never leave two Apply entries for one manager;
//! - `list?limit=1` decodes one object, not a page;
//! - the data directory is 0700, also when it existed with a looser mode.

mod harness;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use harness::{rampart, Identity, Raw, RawResponse, Server};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use serde_json::{json, Value};

/// Address-space cap for the attacked server (see `Server::start_capped`).
const MEMORY_CAP: u64 = 6 << 30;

fn start() -> Server {
    Server::start_capped(&[], MEMORY_CAP)
}

fn revision(s: &Server) -> u64 {
    let list = s
        .raw(Raw::get("/api/v1/namespaces/default/configmaps"))
        .json();
    list["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .expect("list resourceVersion")
}

fn expect_status(what: &str, resp: &RawResponse, code: u16, reason: &str) -> Value {
    let body = String::from_utf8_lossy(&resp.body);
    assert_eq!(resp.status, code, "{what}: {body}");
    let status = resp.json();
    assert_eq!(status["kind"], "Status", "{what}: {status}");
    assert_eq!(status["code"], code, "{what}: {status}");
    assert_eq!(status["reason"], reason, "{what}: {status}");
    status
}

fn header<'a>(r: &'a RawResponse, name: &str) -> Vec<&'a str> {
    r.headers
        .iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

/// The server is alive and a GET answers fast: the worst of 10 GETs (their p99) under
/// 100 ms. Measured up to three times, so one scheduling hiccup of a loaded CI machine is not
/// a failure while a server left slow by the attack still is.
fn assert_responsive(s: &mut Server) {
    assert!(s.alive(), "the server died");
    let mut worst = Duration::ZERO;
    for _ in 0..3 {
        worst = (0..10)
            .map(|_| {
                let t = Instant::now();
                let r = s.raw(Raw::get("/api/v1/namespaces/default"));
                assert_eq!(r.status, 200);
                t.elapsed()
            })
            .max()
            .unwrap_or_default();
        if worst < Duration::from_millis(100) {
            return;
        }
    }
    panic!("GET p99 {worst:?} after the attack");
}

fn pki(s: &Server, f: &str) -> String {
    std::fs::read_to_string(s.data_dir().join("pki").join(f)).expect(f)
}

/// A client certificate `CN=cn, O=orgs` signed by the CA in `ca_pem`/`ca_key_pem`; the
/// chain sent is the leaf plus `chain_extra`.
fn cert_signed_by(
    cn: &str,
    orgs: &[&str],
    ca_pem: &str,
    ca_key_pem: &str,
    chain_extra: &str,
) -> (String, String) {
    let ca_key = KeyPair::from_pem(ca_key_pem).expect("ca key");
    let issuer = Issuer::from_ca_cert_pem(ca_pem, &ca_key).expect("issuer");
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, cn);
    for o in orgs {
        params.distinguished_name.push(DnType::OrganizationName, *o);
    }
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::hours(1);
    let key = KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, &issuer).expect("sign");
    (cert.pem() + chain_extra, key.serialize_pem())
}

fn get_with(s: &Server, cert: &(String, String), path: &str) -> RawResponse {
    s.raw(Raw {
        identity: Identity::Pem(&cert.0, &cert.1),
        ..Raw::get(path)
    })
}

#[test]
fn only_the_client_ca_issues_identities() {
    let mut s = start();
    let masters = &["system:masters"];
    // Positive controls: the admin, and a masters certificate from the client CA.
    assert_eq!(s.raw(Raw::get("/api/v1/namespaces")).status, 200);
    let from_client_ca = s.client_cert("x", masters);
    assert_eq!(
        get_with(&s, &from_client_ca, "/api/v1/namespaces").status,
        200
    );

    let mut forged = Vec::new();
    for ca in ["kubelet-serving-ca", "server-ca", "ca"] {
        let (crt, key) = (pki(&s, &format!("{ca}.crt")), pki(&s, &format!("{ca}.key")));
        // With and without the signing CA in the chain sent.
        forged.push((
            format!("signed by {ca}"),
            cert_signed_by("x", masters, &crt, &key, ""),
        ));
        forged.push((
            format!("signed by {ca}, chain sent"),
            cert_signed_by("x", masters, &crt, &key, &crt),
        ));
    }
    // A CA of our own, named like the client CA, under the kubelet-serving CA.
    let ks_key = KeyPair::from_pem(&pki(&s, "kubelet-serving-ca.key")).unwrap();
    let ks_issuer = Issuer::from_ca_cert_pem(&pki(&s, "kubelet-serving-ca.crt"), &ks_key).unwrap();
    let mut fake = CertificateParams::default();
    let client_cn = x509_parser::pem::parse_x509_pem(pki(&s, "client-ca.crt").as_bytes())
        .ok()
        .and_then(|(_, p)| {
            x509_parser::parse_x509_certificate(&p.contents)
                .ok()
                .and_then(|(_, c)| {
                    c.subject()
                        .iter_common_name()
                        .next()
                        .and_then(|cn| cn.as_str().ok().map(str::to_string))
                })
        })
        .expect("client CA common name");
    fake.distinguished_name
        .push(DnType::CommonName, client_cn.as_str());
    fake.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    fake.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let fake_key = KeyPair::generate().unwrap();
    let fake_ca = fake.signed_by(&fake_key, &ks_issuer).unwrap().pem();
    let chain = format!("{fake_ca}{}", pki(&s, "kubelet-serving-ca.crt"));
    forged.push((
        "signed by a fake client CA under the kubelet-serving CA".into(),
        cert_signed_by("x", masters, &fake_ca, &fake_key.serialize_pem(), &chain),
    ));
    for (what, cert) in &forged {
        for path in ["/api/v1/namespaces", "/api", "/rampart/v1/certificates"] {
            expect_status(
                &format!("{what}: {path}"),
                &get_with(&s, cert, path),
                401,
                "Unauthorized",
            );
        }
    }

    // During a CA rotation the retiring client CA still issues identities (old certificates
    // keep working) but the retiring kubelet-serving CA does not.
    let old_ks = (
        pki(&s, "kubelet-serving-ca.crt"),
        pki(&s, "kubelet-serving-ca.key"),
    );
    let old_client = s.client_cert("old-client", masters);
    let r = s.raw(Raw::send(
        "POST",
        "/rampart/v1/certificates/rotate-ca",
        "application/json",
        br#"{"phase":"begin"}"#,
    ));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_ne!(
        pki(&s, "kubelet-serving-ca.crt"),
        old_ks.0,
        "rotation issued new CAs"
    );
    assert_eq!(get_with(&s, &old_client, "/api/v1/namespaces").status, 200);
    let new_client = s.client_cert("new-client", masters);
    assert_eq!(get_with(&s, &new_client, "/api/v1/namespaces").status, 200);
    for extra in ["", old_ks.0.as_str()] {
        let cert = cert_signed_by("x", masters, &old_ks.0, &old_ks.1, extra);
        expect_status(
            "signed by the retiring kubelet-serving CA",
            &get_with(&s, &cert, "/api/v1/namespaces"),
            401,
            "Unauthorized",
        );
    }
    let (crt, key) = (
        pki(&s, "kubelet-serving-ca.crt"),
        pki(&s, "kubelet-serving-ca.key"),
    );
    expect_status(
        "signed by the new kubelet-serving CA",
        &get_with(&s, &cert_signed_by("x", masters, &crt, &key, ""), "/api"),
        401,
        "Unauthorized",
    );
    assert_responsive(&mut s);
}

fn token(s: &Server) -> String {
    let dir = s.data_dir().to_str().unwrap().to_string();
    let out = rampart(&["token", "create", "--data-dir", &dir, "--ttl", "1h"]);
    assert!(
        out.status.success(),
        "token create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout).trim().to_string();
    printed
        .split("::")
        .nth(1)
        .expect("R10<hash>::<id>.<secret>")
        .to_string()
}

fn with_bearer(s: &Server, bearer: &str, req: Raw<'_>) -> RawResponse {
    let auth = format!("Bearer {bearer}");
    let mut req = Raw {
        identity: Identity::None,
        ..req
    };
    req.headers.push(("Authorization", &auth));
    s.raw(req)
}

fn whoami(s: &Server, bearer: &str) -> RawResponse {
    with_bearer(
        s,
        bearer,
        Raw::send(
            "POST",
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            "application/json",
            br#"{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}"#,
        ),
    )
}

fn retry_after(r: &RawResponse) -> u64 {
    header(r, "retry-after")
        .first()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no Retry-After: {:?}", r.headers))
}

#[test]
fn join_token_failures_back_off_per_id_and_never_refuse_the_right_token() {
    let mut s = start();
    let good = token(&s);
    let id = good.split('.').next().unwrap().to_string();
    let accepted = |s: &Server| {
        let r = whoami(s, &good);
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(
            r.json()["status"]["userInfo"]["username"],
            format!("system:bootstrap:{id}")
        );
    };
    accepted(&s);
    // Made-up ids from this address, many of them: plain 401s, and no address lock-out.
    for i in 0..200 {
        let r = whoami(&s, &format!("z{i:05}.0123456789abcdef"));
        expect_status("made-up id", &r, 401, "Unauthorized");
    }
    accepted(&s);
    // Bad secrets for the real id: 401 five times, then 429 with a doubling Retry-After.
    let mut waits = Vec::new();
    for i in 0..10 {
        let r = whoami(&s, &format!("{id}.{i:016}"));
        if i < 5 {
            expect_status("bad secret", &r, 401, "Unauthorized");
        } else {
            let st = expect_status("bad secret, backing off", &r, 429, "TooManyRequests");
            let wait = retry_after(&r);
            assert_eq!(st["details"]["retryAfterSeconds"], wait);
            assert!(
                !String::from_utf8_lossy(&r.body).contains(&good),
                "secret echoed"
            );
            waits.push(wait);
        }
    }
    assert_eq!(waits, [1, 2, 4, 8, 16], "Retry-After grows");
    // The correct token, at once, in the middle of the back-off.
    accepted(&s);
    // ... which also forgives the id: the next bad secret is a 401 again.
    expect_status(
        "bad secret after success",
        &whoami(&s, &format!("{id}.ffffffffffffffff")),
        401,
        "Unauthorized",
    );
    // Another token is not affected by the first one's failures.
    let other = token(&s);
    assert_eq!(whoami(&s, &other).status, 201);
    // The secret and the token never reach the audit log.
    let audit = std::fs::read_to_string(s.data_dir().join("audit/audit.log")).unwrap();
    assert!(!audit.contains(good.split('.').nth(1).unwrap()));
    assert_responsive(&mut s);
}

#[test]
fn warnings_for_unknown_fields_are_capped() {
    let mut s = start();
    // 150,000 unknown top-level fields (1.8 MB, under the 3 MiB body limit).
    let mut body = String::from(
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"wide"},"data":{"a":"1"}"#,
    );
    for i in 0..150_000 {
        body.push_str(&format!(",\"f{i}\":1"));
    }
    body.push('}');
    let r = s.raw(Raw::send(
        "POST",
        "/api/v1/namespaces/default/configmaps",
        "application/json",
        body.as_bytes(),
    ));
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let warnings = header(&r, "warning");
    assert!(!warnings.is_empty(), "no warnings at all");
    assert!(warnings.len() < 300, "{} Warning headers", warnings.len());
    let text: usize = warnings.iter().map(|w| w.len()).sum();
    assert!(
        text < 4096 + 256 + 12 * warnings.len(),
        "{text} bytes of warnings"
    );
    assert_eq!(warnings[0], r#"299 - "unknown field \"f0\"""#);
    let stored = s
        .raw(Raw::get("/api/v1/namespaces/default/configmaps/wide"))
        .json();
    assert!(stored.get("f0").is_none(), "unknown field stored");

    // Variant: fewer, long, nested unknown fields: each warning cut to 256 characters.
    let long = "k".repeat(2000);
    let mut container = serde_json::Map::new();
    container.insert("name".into(), json!("c"));
    container.insert("image".into(), json!("i"));
    for i in 0..200 {
        container.insert(format!("{long}{i}"), json!(1));
    }
    let deploy = json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "wide"},
        "spec": {
            "selector": {"matchLabels": {"a": "b"}},
            "template": {"metadata": {"labels": {"a": "b"}},
                         "spec": {"containers": [container]}}
        }
    });
    let r = s.raw(Raw::send(
        "POST",
        "/apis/apps/v1/namespaces/default/deployments",
        "application/json",
        &serde_json::to_vec(&deploy).unwrap(),
    ));
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let warnings = header(&r, "warning");
    // 2 KiB each: the second crosses 4 KiB, so all are cut and about 16 fit.
    assert!(
        warnings.len() > 1 && warnings.len() <= 20,
        "{}",
        warnings.len()
    );
    assert!(
        warnings.iter().all(|w| w.chars().count() <= 256 + 12),
        "an uncut warning"
    );
    // Strict still refuses them (400) and stores nothing.
    s.settle();
    let before = revision(&s);
    let r = s.raw(Raw::send(
        "POST",
        "/api/v1/namespaces/default/configmaps?fieldValidation=Strict",
        "application/json",
        body.replace("\"wide\"", "\"strict\"").as_bytes(),
    ));
    let st = expect_status("strict", &r, 400, "BadRequest");
    assert_eq!(revision(&s), before);
    // It names the first unknown fields and counts the rest, instead of a 2 MB message.
    let msg = st["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains(r#"unknown field "f0""#),
        "{}",
        &msg[..msg.len().min(300)]
    );
    assert!(
        msg.contains("and 149900 more unknown fields"),
        "{}",
        msg.len()
    );
    assert!(r.body.len() < 16 * 1024, "{} bytes of Status", r.body.len());
    assert_responsive(&mut s);
}

#[test]
fn dry_run_create_of_a_taken_name_is_a_conflict() {
    let mut s = start();
    let cm =
        br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"base"},"data":{"a":"1"}}"#;
    assert_eq!(
        s.raw(Raw::send(
            "POST",
            "/api/v1/namespaces/default/configmaps",
            "application/json",
            cm
        ))
        .status,
        201
    );
    let secret =
        br#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"base"},"stringData":{"a":"1"}}"#;
    assert_eq!(
        s.raw(Raw::send(
            "POST",
            "/api/v1/namespaces/default/secrets",
            "application/json",
            secret
        ))
        .status,
        201
    );
    s.settle();
    let before = revision(&s);
    let other_data =
        br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"base"},"data":{"a":"2"}}"#;
    let ns = br#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"default"}}"#;
    let cases: Vec<(&str, &[u8], &str)> = vec![
        (
            "/api/v1/namespaces/default/configmaps",
            other_data,
            "configmaps",
        ),
        ("/api/v1/namespaces/default/secrets", secret, "secrets"),
        ("/api/v1/namespaces", ns, "namespaces"),
    ];
    for (path, body, what) in cases {
        for ct in ["application/json", "application/yaml"] {
            let body: Vec<u8> = if ct == "application/yaml" {
                serde_yaml_ng::to_string(&serde_json::from_slice::<Value>(body).unwrap())
                    .unwrap()
                    .into_bytes()
            } else {
                body.to_vec()
            };
            let r = s.raw(Raw::send("POST", &format!("{path}?dryRun=All"), ct, &body));
            let st = expect_status(what, &r, 409, "AlreadyExists");
            assert!(st["message"]
                .as_str()
                .unwrap_or("")
                .contains("already exists"));
        }
    }
    assert_eq!(revision(&s), before, "a dry run wrote");
    let got = s
        .raw(Raw::get("/api/v1/namespaces/default/configmaps/base"))
        .json();
    assert_eq!(got["data"]["a"], "1");
    // A dry-run create of a free name still answers 201 and stores nothing.
    let fresh = br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"fresh"}}"#;
    let r = s.raw(Raw::send(
        "POST",
        "/api/v1/namespaces/default/configmaps?dryRun=All",
        "application/json",
        fresh,
    ));
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        s.raw(Raw::get("/api/v1/namespaces/default/configmaps/fresh"))
            .status,
        404
    );
    assert_eq!(revision(&s), before, "a dry run wrote");
    assert_responsive(&mut s);
}

fn managed(obj: &Value) -> Vec<(String, String)> {
    obj["metadata"]["managedFields"]
        .as_array()
        .map(|l| {
            l.iter()
                .map(|e| {
                    (
                        e["manager"].as_str().unwrap_or("").to_string(),
                        e["operation"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn assert_one_apply_each(obj: &Value, what: &str) {
    let entries = managed(obj);
    let mut applies: Vec<&str> = entries
        .iter()
        .filter(|(_, op)| op == "Apply")
        .map(|(m, _)| m.as_str())
        .collect();
    let n = applies.len();
    applies.sort();
    applies.dedup();
    assert_eq!(
        applies.len(),
        n,
        "{what}: two Apply entries for one manager: {entries:?}"
    );
    assert!(
        entries
            .iter()
            .all(|(_, op)| op == "Apply" || op == "Update"),
        "{what}: {entries:?}"
    );
}

#[test]
fn crafted_managed_fields_never_leave_two_apply_entries_for_one_manager() {
    let mut s = start();
    {
        let r = s.raw(Raw::send(
            "PATCH",
            "/api/v1/namespaces/default/configmaps/applied?fieldManager=m",
            "application/apply-patch+yaml",
            b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\ndata:\n  a: \"1\"\n",
        ));
        // Server-side apply records Apply, not Update.
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(managed(&r.json()), [("m".to_string(), "Apply".to_string())]);
    }
    let entry = |v: &str, field: &str| {
        json!({"manager": "m", "operation": "Apply", "apiVersion": v,
               "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {format!("f:{field}"): {}}}})
    };
    let crafted = json!([entry("v1", "a"), entry("v2", "b"), entry("v1", "c")]);
    let cms = "/api/v1/namespaces/default/configmaps";
    // Create carrying them.
    let body = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "mf", "managedFields": crafted},
        "data": {"a": "1", "b": "2", "c": "3"}});
    let r = s.raw(Raw::send(
        "POST",
        cms,
        "application/json",
        &serde_json::to_vec(&body).unwrap(),
    ));
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert_one_apply_each(&r.json(), "create");
    // Update carrying them.
    let mut obj = r.json();
    obj["metadata"]["managedFields"] = crafted.clone();
    obj["data"]["d"] = json!("4");
    let r = s.raw(Raw::send(
        "PUT",
        &format!("{cms}/mf"),
        "application/json",
        &serde_json::to_vec(&obj).unwrap(),
    ));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_one_apply_each(&r.json(), "update");
    // Every patch type carrying them.
    let merge = serde_json::to_vec(&json!({"metadata": {"managedFields": crafted},
        "data": {"e": "5"}}))
    .unwrap();
    let json_patch = serde_json::to_vec(&json!([
        {"op": "replace", "path": "/metadata/managedFields", "value": crafted},
        {"op": "add", "path": "/data/f", "value": "6"}
    ]))
    .unwrap();
    for (ct, body) in [
        ("application/merge-patch+json", &merge),
        ("application/strategic-merge-patch+json", &merge),
        ("application/json-patch+json", &json_patch),
    ] {
        let r = s.raw(Raw::send("PATCH", &format!("{cms}/mf"), ct, body));
        assert_eq!(r.status, 200, "{ct}: {}", String::from_utf8_lossy(&r.body));
        assert_one_apply_each(&r.json(), ct);
    }
    // Server-side apply by that manager afterwards: still one Apply entry for it.
    let apply = b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: mf\ndata:\n  a: \"9\"\n";
    let r = s.raw(Raw::send(
        "PATCH",
        &format!("{cms}/mf?fieldManager=m&force=true"),
        "application/apply-patch+yaml",
        apply,
    ));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let got = r.json();
    assert_one_apply_each(&got, "apply");
    assert!(
        managed(&got).contains(&("m".into(), "Apply".into())),
        "{}",
        got["metadata"]
    );
    // An unknown operation is never stored.
    let mut bad = got.clone();
    bad["metadata"]["managedFields"] = json!([{"manager": "m", "operation": "Delete",
        "apiVersion": "v1", "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {}}}]);
    let r = s.raw(Raw::send(
        "PUT",
        &format!("{cms}/mf"),
        "application/json",
        &serde_json::to_vec(&bad).unwrap(),
    ));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_one_apply_each(&r.json(), "unknown operation");
    assert_responsive(&mut s);
}

/// `apiserver_storage_list_<what>_objects_total` for `resource`.
fn list_counter(s: &Server, what: &str, resource: &str) -> u64 {
    let text = String::from_utf8_lossy(&s.raw(Raw::get("/metrics")).body).into_owned();
    let prefix = format!("apiserver_storage_list_{what}_objects_total{{resource=\"{resource}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn list_with_a_limit_decodes_no_more_than_it_returns() {
    let mut s = start();
    // ControllerRevisions: nothing else in the server lists them.
    let resource = "controllerrevisions.apps";
    let base = "/apis/apps/v1/namespaces/default/controllerrevisions";
    let data = "x".repeat(20_000);
    for i in 0..60 {
        let body = json!({"apiVersion": "apps/v1", "kind": "ControllerRevision",
            "metadata": {"name": format!("r{i:02}"), "labels": {"app": "a"}},
            "revision": i, "data": {"blob": data}});
        let r = s.raw(Raw::send(
            "POST",
            base,
            "application/json",
            &serde_json::to_vec(&body).unwrap(),
        ));
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    }
    for query in [
        "limit=1",
        "limit=1&labelSelector=app%3Da",
        "limit=1&labelSelector=app%21%3Db",
    ] {
        let (ev, ret) = (
            list_counter(&s, "evaluated", resource),
            list_counter(&s, "returned", resource),
        );
        let r = s.raw(Raw::get(&format!("{base}?{query}")));
        assert_eq!(r.status, 200);
        let list = r.json();
        assert_eq!(list["items"].as_array().map(Vec::len), Some(1), "{query}");
        assert!(list["metadata"]["continue"]
            .as_str()
            .is_some_and(|c| !c.is_empty()));
        assert_eq!(list_counter(&s, "returned", resource) - ret, 1, "{query}");
        assert_eq!(
            list_counter(&s, "evaluated", resource) - ev,
            1,
            "{query}: decoded more objects than it returned"
        );
    }
    // Without selectors it also fetches only what it returns.
    let f = list_counter(&s, "fetched", resource);
    let r = s.raw(Raw::get(&format!("{base}?limit=3")));
    assert_eq!(r.json()["items"].as_array().map(Vec::len), Some(3));
    assert_eq!(list_counter(&s, "fetched", resource) - f, 3);
    // Pagination still walks everything exactly once.
    let mut names = Vec::new();
    let mut cont = String::new();
    for _ in 0..100 {
        let r = s
            .raw(Raw::get(&format!("{base}?limit=7&continue={cont}")))
            .json();
        for i in r["items"].as_array().unwrap() {
            names.push(i["metadata"]["name"].as_str().unwrap().to_string());
        }
        match r["metadata"]["continue"].as_str() {
            Some(c) if !c.is_empty() => cont = c.to_string(),
            _ => break,
        }
    }
    let want: Vec<String> = (0..60).map(|i| format!("r{i:02}")).collect();
    assert_eq!(names, want);
    assert_responsive(&mut s);
}

#[test]
fn the_data_directory_is_private() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut s = Server::start_in(dir);
    let mode = std::fs::metadata(s.data_dir())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o700, "data directory mode {mode:o}");
    assert_responsive(&mut s);
}
