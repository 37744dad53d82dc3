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

const SVCS: &str = "/api/v1/namespaces/default/services";

fn service(name: &str, ty: &str, extra_spec: &str, ports: &str) -> Vec<u8> {
    format!(
        r#"{{"apiVersion":"v1","kind":"Service","metadata":{{"name":"{name}"}},"spec":{{"type":"{ty}"{extra_spec},"selector":{{"app":"x"}},"ports":{ports}}}}}"#
    )
    .into_bytes()
}

/// Every ClusterIP and node-port claim in the store, by listing IPAddresses and reading
/// back each Service (node-port claims are not API objects; the Services say which exist).
fn ip_addresses(s: &Server) -> Vec<String> {
    let list = s
        .raw(Raw::get("/apis/networking.k8s.io/v1/ipaddresses"))
        .json();
    let mut ips: Vec<String> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    ips.sort();
    ips
}

fn service_ips(s: &Server) -> Vec<String> {
    let list = s.raw(Raw::get("/api/v1/services")).json();
    let mut ips: Vec<String> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["spec"]["clusterIP"].as_str())
        .filter(|ip| *ip != "None")
        .map(str::to_string)
        .collect();
    ips.sort();
    ips
}

#[test]
fn failed_service_creates_claim_nothing() {
    let s = Server::start();
    // A Service holding node port 30100, a namespace whose quota allows no Services, and a
    // Cedar admission policy refusing Services named "denied".
    let taken = service("taken", "NodePort", "", r#"[{"port":80,"nodePort":30100}]"#);
    let created = s.raw(Raw::send("POST", SVCS, "application/json", &taken));
    assert_eq!(
        created.status,
        201,
        "{}",
        String::from_utf8_lossy(&created.body)
    );
    let created = created.json();
    assert_eq!(created["spec"]["ports"][0]["nodePort"], 30100);
    let taken_ip = created["spec"]["clusterIP"].as_str().unwrap().to_string();
    s.ok(&["create", "namespace", "full"]);
    s.ok(&["create", "quota", "none", "-n", "full", "--hard=services=0"]);
    let policy = r#"apiVersion: policy.rampart.io/v1alpha1
kind: CedarPolicy
metadata:
  name: no-denied-services
spec:
  policy: |
    @id("no-denied")
    forbid (principal, action == k8s::admission::Action::"create", resource is k8s::admission::Object)
    when { resource.kind == "Service" && resource.name == "denied" };
"#;
    s.ok_in(&["create", "-f", "-"], policy);
    let denied = service("denied", "NodePort", "", r#"[{"port":80}]"#);
    // The policy is loaded by a store watch: wait for the first refusal (nothing is stored
    // by a refused create, so waiting here cannot change the revision compared below).
    assert!(harness::eventually(
        std::time::Duration::from_secs(5),
        || {
            s.raw(Raw::send("POST", SVCS, "application/json", &denied))
                .status
                == 403
        }
    ));
    s.settle();
    let before = revision(&s);
    let claims_before = ip_addresses(&s);
    assert_eq!(
        claims_before,
        service_ips(&s),
        "one IPAddress per ClusterIP"
    );

    let full_ns = "/api/v1/namespaces/full/services".to_string();
    let cases: Vec<Case> = vec![
        // The name is taken: 409 before any IP is claimed.
        (
            "POST",
            SVCS.into(),
            "application/json",
            service("taken", "ClusterIP", "", r#"[{"port":80}]"#),
            409,
            "AlreadyExists",
        ),
        (
            "POST",
            SVCS.into(),
            "application/json",
            service("taken", "NodePort", "", r#"[{"port":80}]"#),
            409,
            "AlreadyExists",
        ),
        (
            "POST",
            "/api/v1/namespaces/nowhere/services".into(),
            "application/json",
            service("s1", "NodePort", "", r#"[{"port":80}]"#),
            404,
            "NotFound",
        ),
        (
            "POST",
            SVCS.into(),
            "application/json",
            denied.clone(),
            403,
            "Forbidden",
        ),
        (
            "POST",
            full_ns,
            "application/json",
            service("s2", "NodePort", "", r#"[{"port":80}]"#),
            403,
            "Forbidden",
        ),
        // Explicit values someone else holds, or that are not allowed at all.
        (
            "POST",
            SVCS.into(),
            "application/json",
            service("s3", "NodePort", "", r#"[{"port":80,"nodePort":30100}]"#),
            422,
            "Invalid",
        ),
        (
            "POST",
            SVCS.into(),
            "application/json",
            service(
                "s4",
                "ClusterIP",
                &format!(r#","clusterIP":"{taken_ip}""#),
                r#"[{"port":80}]"#,
            ),
            422,
            "Invalid",
        ),
        (
            "POST",
            SVCS.into(),
            "application/json",
            service(
                "s5",
                "ClusterIP",
                r#","clusterIP":"10.0.0.1""#,
                r#"[{"port":80}]"#,
            ),
            422,
            "Invalid",
        ),
        (
            "POST",
            SVCS.into(),
            "application/json",
            service("s6", "ClusterIP", "", r#"[{"port":80,"nodePort":30111}]"#),
            422,
            "Invalid",
        ),
        (
            "POST",
            SVCS.into(),
            "application/json",
            service(
                "s7",
                "NodePort",
                "",
                r#"[{"port":80,"nodePort":30112},{"port":81,"nodePort":30112}]"#,
            ),
            422,
            "Invalid",
        ),
        (
            "POST",
            SVCS.into(),
            "application/json",
            service("s8", "NodePort", "", r#"[{"port":80,"nodePort":80}]"#),
            422,
            "Invalid",
        ),
        (
            "POST",
            SVCS.into(),
            "application/json",
            service("s9", "NodePort", "", r#"[{"port":0}]"#),
            422,
            "Invalid",
        ),
    ];
    for (method, path, ct, body, code, reason) in &cases {
        let resp = s.raw(Raw::send(method, path, ct, body));
        expect_status(&resp, *code, reason);
        assert_eq!(
            revision(&s),
            before,
            "{method} {path} {} changed the store",
            String::from_utf8_lossy(body)
        );
    }
    assert_eq!(ip_addresses(&s), claims_before, "no IP stayed claimed");

    // The same explicit node port from 8 clients at once: exactly one gets it.
    let codes: Vec<u16> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let s = &s;
                scope.spawn(move || {
                    let body = service(
                        &format!("race{i}"),
                        "NodePort",
                        "",
                        r#"[{"port":80,"nodePort":30200}]"#,
                    );
                    s.raw(Raw::send("POST", SVCS, "application/json", &body))
                        .status
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(codes.iter().filter(|c| **c == 201).count(), 1, "{codes:?}");
    assert_eq!(codes.iter().filter(|c| **c == 422).count(), 7, "{codes:?}");

    // 16 concurrent NodePort creates with two ports each: all distinct ports and IPs.
    let made: Vec<serde_json::Value> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..16)
            .map(|i| {
                let s = &s;
                scope.spawn(move || {
                    let body = service(
                        &format!("many{i}"),
                        "NodePort",
                        "",
                        r#"[{"name":"a","port":80},{"name":"b","port":81}]"#,
                    );
                    let r = s.raw(Raw::send("POST", SVCS, "application/json", &body));
                    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
                    r.json()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut ports: Vec<i64> = made
        .iter()
        .flat_map(|svc| {
            svc["spec"]["ports"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["nodePort"].as_i64().unwrap())
                .collect::<Vec<_>>()
        })
        .collect();
    ports.extend([30100, 30200]);
    let n = ports.len();
    ports.sort();
    ports.dedup();
    assert_eq!(ports.len(), n, "node ports collided: {ports:?}");
    // Losers of the race gave their IPs back (the guard releases in the background).
    assert!(
        harness::eventually(std::time::Duration::from_secs(5), || {
            ip_addresses(&s) == service_ips(&s)
        }),
        "{:?} vs {:?}",
        ip_addresses(&s),
        service_ips(&s)
    );

    // Deleting gives the IP and the port back: both can be asked for by a new Service.
    let del = s.raw(Raw::send(
        "DELETE",
        &format!("{SVCS}/taken"),
        "application/json",
        b"",
    ));
    assert_eq!(del.status, 200);
    let again = service(
        "again",
        "NodePort",
        &format!(r#","clusterIP":"{taken_ip}""#),
        r#"[{"port":80,"nodePort":30100}]"#,
    );
    let r = s.raw(Raw::send("POST", SVCS, "application/json", &again));
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    // So does deletecollection.
    let r = s.raw(Raw::send("DELETE", SVCS, "application/json", b""));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(harness::eventually(
        std::time::Duration::from_secs(5),
        || { ip_addresses(&s) == service_ips(&s) }
    ));
}

#[test]
fn orphaned_service_claims_are_repaired() {
    let s = Server::start_with(&["--service-repair-interval", "1"]);
    let svc = service("kept", "ClusterIP", "", r#"[{"port":80}]"#);
    let created = s.raw(Raw::send("POST", SVCS, "application/json", &svc));
    assert_eq!(created.status, 201);
    let ip = created.json()["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .to_string();
    // A claim whose Service is gone (as a crash between claim and create would leave it).
    let orphan = r#"{"apiVersion":"networking.k8s.io/v1","kind":"IPAddress","metadata":{"name":"10.43.200.200","labels":{"ipaddress.kubernetes.io/managed-by":"ipallocator.k8s.io"}},"spec":{"parentRef":{"group":"","resource":"services","namespace":"default","name":"vanished"}}}"#;
    let r = s.raw(Raw::send(
        "POST",
        "/apis/networking.k8s.io/v1/ipaddresses",
        "application/json",
        orphan.as_bytes(),
    ));
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    // Someone else's IPAddress (not managed by the allocator) is left alone.
    let foreign = r#"{"apiVersion":"networking.k8s.io/v1","kind":"IPAddress","metadata":{"name":"10.43.200.201"},"spec":{"parentRef":{"group":"","resource":"services","namespace":"default","name":"vanished"}}}"#;
    let r = s.raw(Raw::send(
        "POST",
        "/apis/networking.k8s.io/v1/ipaddresses",
        "application/json",
        foreign.as_bytes(),
    ));
    assert_eq!(r.status, 201);
    // The live Service's claim removed behind its back.
    let r = s.raw(Raw::send(
        "DELETE",
        &format!("/apis/networking.k8s.io/v1/ipaddresses/{ip}"),
        "application/json",
        b"",
    ));
    assert_eq!(r.status, 200);
    let repaired = harness::eventually(std::time::Duration::from_secs(10), || {
        let ips = ip_addresses(&s);
        ips.contains(&ip) && !ips.contains(&"10.43.200.200".to_string())
    });
    assert!(repaired, "{:?}", ip_addresses(&s));
    let claim = s
        .raw(Raw::get(&format!(
            "/apis/networking.k8s.io/v1/ipaddresses/{ip}"
        )))
        .json();
    assert_eq!(claim["spec"]["parentRef"]["name"], "kept");
    assert!(ip_addresses(&s).contains(&"10.43.200.201".to_string()));

    // A NodePort Service removed by the garbage collector (its owner deleted): its node port
    // and IP come back, whichever path removed it, so a new Service can ask for that port.
    let owner = s.raw(Raw::send(
        "POST",
        "/api/v1/namespaces/default/configmaps",
        "application/json",
        br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"owner"}}"#,
    ));
    assert_eq!(owner.status, 201);
    let uid = owner.json()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    let owned = format!(
        r#"{{"apiVersion":"v1","kind":"Service","metadata":{{"name":"owned","ownerReferences":[{{"apiVersion":"v1","kind":"ConfigMap","name":"owner","uid":"{uid}"}}]}},"spec":{{"type":"NodePort","ports":[{{"port":80,"nodePort":30300}}]}}}}"#
    );
    let r = s.raw(Raw::send(
        "POST",
        SVCS,
        "application/json",
        owned.as_bytes(),
    ));
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let r = s.raw(Raw::send(
        "DELETE",
        "/api/v1/namespaces/default/configmaps/owner",
        "application/json",
        b"",
    ));
    assert_eq!(r.status, 200);
    let taker = service("taker", "NodePort", "", r#"[{"port":80,"nodePort":30300}]"#);
    let taken = harness::eventually(std::time::Duration::from_secs(10), || {
        s.raw(Raw::send("POST", SVCS, "application/json", &taker))
            .status
            == 201
    });
    assert!(taken, "node port 30300 was never given back");
    let ours = || {
        let mut ips = ip_addresses(&s);
        ips.retain(|i| i != "10.43.200.201");
        ips
    };
    assert!(
        harness::eventually(std::time::Duration::from_secs(5), || ours()
            == service_ips(&s)),
        "{:?} vs {:?}",
        ours(),
        service_ips(&s)
    );
}
