//! Hostile and malformed requests over raw HTTPS: each gets a `metav1.Status` with upstream's
//! code and reason, and changes nothing (the store revision stays where it was).

mod harness;

use harness::{Identity, Raw, Server};

const CMS: &str = "/api/v1/namespaces/default/configmaps";

fn revision(s: &Server) -> u64 {
    let list = s
        .raw(Raw::get("/api/v1/namespaces/default/configmaps"))
        .json();
    list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

fn expect_status(resp: &harness::RawResponse, code: u16, reason: &str) {
    assert_eq!(resp.status, code, "{}", String::from_utf8_lossy(&resp.body));
    let status = resp.json();
    assert_eq!(status["kind"], "Status", "{status}");
    assert_eq!(status["status"], "Failure");
    assert_eq!(status["code"], code);
    assert_eq!(status["reason"], reason, "{status}");
    assert!(!status["message"].as_str().unwrap_or_default().is_empty());
}

/// (method, path, content type, body, expected code, expected reason)
type Case<'a> = (&'a str, String, &'a str, Vec<u8>, u16, &'a str);

#[test]
fn malformed_bodies_change_nothing() {
    let s = Server::start();
    // Something to conflict with later.
    let created = s.raw(Raw::send(
        "POST",
        CMS,
        "application/json",
        br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"base"},"data":{"a":"1"}}"#,
    ));
    assert_eq!(
        created.status,
        201,
        "{}",
        String::from_utf8_lossy(&created.body)
    );
    let stale_rv = created.json()["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let upd = format!(
        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"base","resourceVersion":"{stale_rv}"}},"data":{{"a":"2"}}}}"#
    );
    assert_eq!(
        s.raw(Raw::send(
            "PUT",
            &format!("{CMS}/base"),
            "application/json",
            upd.as_bytes()
        ))
        .status,
        200
    );
    s.settle();
    let before = revision(&s);

    let big = format!(
        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"huge"}},"data":{{"a":"{}"}}}}"#,
        "x".repeat(3 * 1024 * 1024 + 10)
    );
    let cases: Vec<Case> = vec![
        ("POST", CMS.into(), "application/json", b"{not json".to_vec(), 400, "BadRequest"),
        ("POST", CMS.into(), "application/yaml", b"a: [unclosed".to_vec(), 400, "BadRequest"),
        ("POST", CMS.into(), "application/json", br#"[1,2,3]"#.to_vec(), 400, "BadRequest"),
        ("POST", CMS.into(), "application/json", br#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"x"}}"#.to_vec(), 400, "BadRequest"),
        ("POST", CMS.into(), "application/json", br#"{"apiVersion":"apps/v1","kind":"ConfigMap","metadata":{"name":"x"}}"#.to_vec(), 400, "BadRequest"),
        ("POST", CMS.into(), "application/json", br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x","namespace":"kube-system"}}"#.to_vec(), 400, "BadRequest"),
        ("POST", CMS.into(), "application/json", br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"Not_Valid"}}"#.to_vec(), 422, "Invalid"),
        ("POST", CMS.into(), "application/json", br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x","labels":{"bad key!":"v"}}}"#.to_vec(), 422, "Invalid"),
        ("POST", CMS.into(), "application/json", br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{}}"#.to_vec(), 422, "Invalid"),
        ("POST", format!("{CMS}?fieldValidation=Strict"), "application/json", br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"},"bogus":1}"#.to_vec(), 400, "BadRequest"),
        ("POST", CMS.into(), "application/json", br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"},"data":{"a":1}}"#.to_vec(), 400, "BadRequest"),
        ("POST", CMS.into(), "application/json", big.into_bytes(), 413, "RequestEntityTooLarge"),
        ("POST", CMS.into(), "text/plain", b"hello".to_vec(), 415, "UnsupportedMediaType"),
        ("POST", CMS.into(), "application/vnd.kubernetes.protobuf", b"k8s\x00garbage".to_vec(), 400, "BadRequest"),
        ("POST", CMS.into(), "application/json", br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"base"}}"#.to_vec(), 409, "AlreadyExists"),
        ("PUT", format!("{CMS}/base"), "application/json", upd.into_bytes(), 409, "Conflict"),
        ("PUT", format!("{CMS}/base"), "application/json", br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"other"}}"#.to_vec(), 400, "BadRequest"),
        ("PATCH", format!("{CMS}/base"), "application/json-patch+json", br#"[{"op":"test","path":"/data/a","value":"nope"}]"#.to_vec(), 422, "Invalid"),
        ("PATCH", format!("{CMS}/base"), "application/json-patch+json", br#"{"op":"oops"}"#.to_vec(), 400, "BadRequest"),
        ("PATCH", format!("{CMS}/base"), "application/apply-patch+yaml", br#"{"apiVersion":"v1","kind":"ConfigMap"}"#.to_vec(), 400, "BadRequest"),
        ("PATCH", format!("{CMS}/base"), "application/xml", b"<x/>".to_vec(), 415, "UnsupportedMediaType"),
        ("POST", "/api/v1/namespaces/nowhere/configmaps".into(), "application/json", br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"}}"#.to_vec(), 404, "NotFound"),
        ("POST", format!("{CMS}/base"), "application/json", b"{}".to_vec(), 405, "MethodNotAllowed"),
        ("GET", "/api/v1/namespaces/default/widgets".into(), "application/json", Vec::new(), 404, "NotFound"),
        ("GET", format!("{CMS}?labelSelector=a+in+(b"), "application/json", Vec::new(), 400, "BadRequest"),
        ("GET", format!("{CMS}?fieldSelector=spec.nothing%3Dx"), "application/json", Vec::new(), 400, "BadRequest"),
        ("GET", format!("{CMS}?limit=2&continue=garbage"), "application/json", Vec::new(), 400, "BadRequest"),
    ];
    for (method, path, ct, body, code, reason) in &cases {
        let resp = s.raw(Raw::send(method, path, ct, body));
        expect_status(&resp, *code, reason);
        assert_eq!(
            revision(&s),
            before,
            "{method} {path} ({ct}) changed the store"
        );
    }
    // Nothing named x or huge exists.
    assert_eq!(s.raw(Raw::get(&format!("{CMS}/x"))).status, 404);
    assert_eq!(s.raw(Raw::get(&format!("{CMS}/huge"))).status, 404);
}

#[test]
fn missing_and_foreign_certificates_are_unauthorized() {
    let s = Server::start();
    let anon = s.raw(Raw {
        identity: Identity::None,
        ..Raw::get("/api/v1/namespaces")
    });
    expect_status(&anon, 401, "Unauthorized");
    // Health endpoints need an identity too.
    let anon = s.raw(Raw {
        identity: Identity::None,
        ..Raw::get("/healthz")
    });
    assert_eq!(anon.status, 401);
    // The CA bundle is the one unauthenticated endpoint.
    let ca = s.raw(Raw {
        identity: Identity::None,
        ..Raw::get("/cacerts")
    });
    assert_eq!(ca.status, 200);
    assert_eq!(String::from_utf8_lossy(&ca.body), s.ca_pem());
    // A certificate from another CA (a second cluster's admin) is refused.
    let other = Server::start();
    let (cert, key) = other.admin_identity();
    let foreign = s.raw(Raw {
        identity: Identity::Pem(&cert, &key),
        ..Raw::get("/api/v1/namespaces")
    });
    expect_status(&foreign, 401, "Unauthorized");
    // The admin of this cluster is fine, and whoami says who that is.
    assert_eq!(s.raw(Raw::get("/api/v1/namespaces")).status, 200);
    let who = s.ok(&["auth", "whoami", "-o", "json"]);
    let who: serde_json::Value = serde_json::from_str(&who).unwrap();
    assert_eq!(who["status"]["userInfo"]["username"], "admin");
    assert!(who["status"]["userInfo"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .any(|g| g == "system:masters"));
}

#[test]
fn watch_from_a_compacted_revision_is_gone() {
    let s = Server::start_with(&[
        "--history-revisions",
        "1",
        "--history-seconds",
        "0",
        "--compaction-interval-seconds",
        "1",
    ]);
    for i in 0..5 {
        let body =
            format!(r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"c{i}"}}}}"#);
        assert_eq!(
            s.raw(Raw::send("POST", CMS, "application/json", body.as_bytes()))
                .status,
            201
        );
    }
    // Wait for the compactor to pass revision 2.
    let compacted = harness::eventually(std::time::Duration::from_secs(15), || {
        let m = String::from_utf8_lossy(&s.raw(Raw::get("/metrics")).body).to_string();
        m.lines()
            .find_map(|l| l.strip_prefix("rampart_store_compacted_revision "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .is_some_and(|v| v > 2)
    });
    assert!(compacted, "the compactor never ran");
    let resp = s.raw(Raw::get(
        "/api/v1/namespaces/default/configmaps?watch=true&resourceVersion=2&timeoutSeconds=2",
    ));
    assert_eq!(resp.status, 200);
    let first: serde_json::Value =
        serde_json::from_slice(resp.body.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert_eq!(first["type"], "ERROR", "{first}");
    assert_eq!(first["object"]["code"], 410);
    assert_eq!(first["object"]["reason"], "Expired");
    // A list at an exact compacted revision is 410 too.
    let list = s.raw(Raw::get(
        "/api/v1/namespaces/default/configmaps?resourceVersion=2&resourceVersionMatch=Exact",
    ));
    expect_status(&list, 410, "Expired");
}
