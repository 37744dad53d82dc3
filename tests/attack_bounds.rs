//! Attacks on the *results* of requests, run against a real server under a memory cap
//! (issue 12, items 2–4): JSON patches whose operations nest the object ever deeper or double
//! it with self-copies, small patches growing objects to megabytes, objects over the size limit
//! on every write path, deeply nested YAML that costs CPU while `/readyz` is polled, and list
//! merges over tens of thousands of items. Each attack must get a clean `metav1.Status`, leave
//! the store revision where it was, and leave the server alive, small and answering quickly.

mod harness;

use std::time::{Duration, Instant};

use harness::{Identity, Raw, RawResponse, Server};
use serde_json::{json, Value};

const CMS: &str = "/api/v1/namespaces/default/configmaps";
const WIDGETS: &str = "/apis/example.org/v1/namespaces/default/widgets";
const SSAR: &str = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews";

/// Address space the attacked server may use. Generous for a server (glibc reserves 64 MiB
/// per malloc arena, RocksDB and tokio threads their stacks) but far below what the
/// self-copy attack needed (24 GB): a regression fails the test instead of the machine.
const ADDRESS_SPACE: u64 = 6 << 30;

/// Starts a server and caps its address space (RLIMIT_AS, as `prlimit --as` does).
fn capped_server() -> Server {
    let s = Server::start();
    let pid = s.child.as_ref().expect("server process").id();
    let out = std::process::Command::new("prlimit")
        .args([
            "--pid",
            &pid.to_string(),
            &format!("--as={ADDRESS_SPACE}:{ADDRESS_SPACE}"),
        ])
        .output()
        .expect("prlimit (util-linux) is needed to cap the server's memory");
    assert!(
        out.status.success(),
        "prlimit: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    s
}

fn revision(s: &Server) -> u64 {
    let list = s.raw(Raw::get(CMS)).json();
    list["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .expect("list resourceVersion")
}

fn send(s: &Server, method: &str, path: &str, content_type: &str, body: &[u8]) -> RawResponse {
    s.raw(Raw::send(method, path, content_type, body))
}

fn expect_status(resp: &RawResponse, codes: &[u16], what: &str) -> Value {
    assert!(
        codes.contains(&resp.status),
        "{what}: got {} ({}), want one of {codes:?}",
        resp.status,
        String::from_utf8_lossy(&resp.body[..resp.body.len().min(600)])
    );
    let status = resp.json();
    assert_eq!(status["kind"], "Status", "{what}: {status}");
    assert_eq!(status["status"], "Failure", "{what}");
    assert_eq!(status["code"], resp.status, "{what}");
    let reason = status["reason"].as_str().unwrap_or_default();
    let want = match resp.status {
        400 => "BadRequest",
        413 => "RequestEntityTooLarge",
        422 => "Invalid",
        _ => "",
    };
    assert_eq!(reason, want, "{what}: {status}");
    assert!(
        !status["message"].as_str().unwrap_or_default().is_empty(),
        "{what}: no message"
    );
    status
}

/// The server answers `/readyz` and a small write quickly, and its memory stayed small.
fn alive_and_fast(s: &Server) {
    let started = Instant::now();
    let ready = s.raw(Raw::get("/readyz"));
    assert_eq!(
        ready.status,
        200,
        "{}",
        String::from_utf8_lossy(&ready.body)
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "/readyz took {:?}",
        started.elapsed()
    );
    let name = format!("alive-{}", rand_suffix());
    let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}});
    let started = Instant::now();
    let created = send(
        s,
        "POST",
        CMS,
        "application/json",
        body.to_string().as_bytes(),
    );
    assert_eq!(created.status, 201);
    assert!(started.elapsed() < Duration::from_secs(1));
    let rss = rss_bytes(s);
    assert!(rss < 500 << 20, "server RSS is {} MiB", rss >> 20);
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64 % 1_000_000_007)
}

fn rss_bytes(s: &Server) -> u64 {
    let pid = s.child.as_ref().expect("server process").id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("server is gone");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn create(s: &Server, path: &str, obj: &Value) {
    let resp = send(
        s,
        "POST",
        path,
        "application/json",
        obj.to_string().as_bytes(),
    );
    assert_eq!(
        resp.status,
        201,
        "create at {path}: {}",
        String::from_utf8_lossy(&resp.body)
    );
}

/// A schemaless custom resource (`x-kubernetes-preserve-unknown-fields`): the one kind whose
/// objects may hold arbitrary nesting, so the depth and size limits are all that bound it.
fn install_widgets(s: &Server) {
    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.org"},
        "spec": {"group": "example.org", "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object",
                    "x-kubernetes-preserve-unknown-fields": true}}}]}
    });
    create(
        s,
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        &crd,
    );
    let served = harness::eventually(Duration::from_secs(20), || {
        s.raw(Raw::get(WIDGETS)).status == 200
    });
    assert!(served, "the Widget CRD was never served");
}

/// Objects every test attacks: a ConfigMap, a Namespace (cluster-scoped) and a Widget.
fn targets(s: &Server) -> Vec<String> {
    create(
        s,
        CMS,
        &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "victim"},
                "data": {"a": "1"}}),
    );
    create(
        s,
        "/api/v1/namespaces",
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "victim"}}),
    );
    install_widgets(s);
    create(
        s,
        WIDGETS,
        &json!({"apiVersion": "example.org/v1", "kind": "Widget", "metadata": {"name": "victim"},
                "spec": {"a": "1"}}),
    );
    vec![
        format!("{CMS}/victim"),
        "/api/v1/namespaces/victim".into(),
        format!("{WIDGETS}/victim"),
        format!("{WIDGETS}/victim/status"),
    ]
}

/// The 105 KB attack: each operation shallow, together they nest a value ~800 levels deep
/// (`x` moves into a fresh `t`, then `t` takes `x`'s place), in objects or in lists.
fn nesting_patch(arrays: bool) -> Vec<u8> {
    let empty = if arrays { json!([]) } else { json!({}) };
    let inner = if arrays {
        "/metadata/t/0"
    } else {
        "/metadata/t/x"
    };
    let mut ops = vec![json!({"op": "add", "path": "/metadata/x", "value": {}})];
    while serde_json::to_vec(&ops).map_or(0, |b| b.len()) < 105_000 {
        ops.push(json!({"op": "add", "path": "/metadata/t", "value": empty}));
        ops.push(json!({"op": "move", "from": "/metadata/x", "path": inner}));
        ops.push(json!({"op": "move", "from": "/metadata/t", "path": "/metadata/x"}));
    }
    serde_json::to_vec(&ops).unwrap_or_default()
}

#[test]
fn json_patch_cannot_nest_the_result_deeper() {
    let s = capped_server();
    let paths = targets(&s);
    s.settle();
    for arrays in [false, true] {
        let patch = nesting_patch(arrays);
        assert!(patch.len() >= 105_000);
        for path in &paths {
            let before = revision(&s);
            let resp = send(&s, "PATCH", path, "application/json-patch+json", &patch);
            let status = expect_status(&resp, &[422], &format!("nesting patch on {path}"));
            assert!(
                status["message"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("nested more than 100 levels"),
                "{status}"
            );
            assert_eq!(revision(&s), before, "{path} changed");
        }
    }
    // The same nesting in one shallow-looking add per level (a path one step longer each
    // time) stops at the limit too.
    let mut ops = Vec::new();
    let mut path = String::from("/spec");
    for _ in 0..150 {
        path.push_str("/n");
        ops.push(json!({"op": "add", "path": path, "value": {}}));
    }
    let before = revision(&s);
    let resp = send(
        &s,
        "PATCH",
        &format!("{WIDGETS}/victim"),
        "application/json-patch+json",
        &serde_json::to_vec(&ops).unwrap_or_default(),
    );
    expect_status(&resp, &[422], "add nesting on a widget");
    assert_eq!(revision(&s), before);
    // A legitimate 90-level object in a widget is still fine.
    let mut deep = json!("leaf");
    for _ in 0..90 {
        deep = json!({ "n": deep });
    }
    let ok = send(
        &s,
        "PATCH",
        &format!("{WIDGETS}/victim"),
        "application/merge-patch+json",
        json!({"spec": {"deep": deep}}).to_string().as_bytes(),
    );
    assert_eq!(ok.status, 200, "{}", String::from_utf8_lossy(&ok.body));
    alive_and_fast(&s);
}

#[test]
fn json_patch_self_copies_are_capped() {
    let s = capped_server();
    let paths = targets(&s);
    s.settle();
    // The 2.6 KB attack: 30 copies of the object into itself, doubling it each time (24 GB).
    let mut ops = vec![json!({"op": "add", "path": "/metadata/c", "value": {}})];
    for i in 0..30 {
        ops.push(json!({"op": "copy", "from": "/metadata", "path": format!("/metadata/c/{i}")}));
    }
    let doubling = serde_json::to_vec(&ops).unwrap_or_default();
    // The same with lists, and with many copies of one value side by side.
    let mut ops = vec![json!({"op": "add", "path": "/metadata/c", "value": []})];
    for _ in 0..30 {
        ops.push(json!({"op": "copy", "from": "/metadata", "path": "/metadata/c/-"}));
    }
    let doubling_list = serde_json::to_vec(&ops).unwrap_or_default();
    for patch in [&doubling, &doubling_list] {
        for path in &paths {
            let before = revision(&s);
            let resp = send(&s, "PATCH", path, "application/json-patch+json", patch);
            let status = expect_status(&resp, &[422], &format!("self-copies on {path}"));
            assert!(
                status["message"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("copy"),
                "{status}"
            );
            assert_eq!(revision(&s), before, "{path} changed");
        }
    }
    // More operations than upstream allows: 413.
    let many = vec![json!({"op": "test", "path": "/metadata/name", "value": "victim"}); 10_001];
    let before = revision(&s);
    let resp = send(
        &s,
        "PATCH",
        &paths[0],
        "application/json-patch+json",
        &serde_json::to_vec(&many).unwrap_or_default(),
    );
    expect_status(&resp, &[413], "10001 operations");
    assert_eq!(revision(&s), before);
    alive_and_fast(&s);
}

#[test]
fn no_write_path_stores_an_object_over_the_limit() {
    let s = capped_server();
    targets(&s);
    s.settle();
    // The 440-byte attack: a few copies of a 10 KB value grow a Widget to megabytes. Within
    // the copy budget it is the object limit that refuses it (413); past it, the budget (422).
    let blob = "x".repeat(10_000);
    let seeded = send(
        &s,
        "PATCH",
        &format!("{WIDGETS}/victim"),
        "application/merge-patch+json",
        json!({"spec": {"blob": blob}}).to_string().as_bytes(),
    );
    assert_eq!(seeded.status, 200);
    s.settle();
    for (copies, codes) in [(8usize, [413u16]), (20, [422])] {
        let mut ops = Vec::new();
        for i in 0..copies {
            ops.push(json!({"op": "copy", "from": "/spec", "path": format!("/spec/c{i}")}));
        }
        let patch = serde_json::to_vec(&ops).unwrap_or_default();
        assert!(patch.len() < 1100, "{} bytes", patch.len());
        let before = revision(&s);
        let resp = send(
            &s,
            "PATCH",
            &format!("{WIDGETS}/victim"),
            "application/json-patch+json",
            &patch,
        );
        expect_status(&resp, &codes, &format!("{copies} self-copies of a widget"));
        assert_eq!(revision(&s), before);
    }
    // 2 MiB objects (bodies under the 3 MiB request limit) on every other write path.
    let big = "y".repeat(2 << 20);
    let cm = |name: &str| {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
               "data": {"big": big}})
        .to_string()
    };
    let widget = |name: &str, field: &str| {
        let mut w = json!({"apiVersion": "example.org/v1", "kind": "Widget",
                           "metadata": {"name": name}});
        w[field] = json!({ "big": big });
        w.to_string()
    };
    let cases: Vec<(&str, String, &str, String)> = vec![
        ("POST", CMS.into(), "application/json", cm("huge")),
        (
            "PUT",
            format!("{CMS}/victim"),
            "application/json",
            cm("victim"),
        ),
        (
            "PATCH",
            format!("{CMS}/victim"),
            "application/merge-patch+json",
            json!({"data": {"big": big}}).to_string(),
        ),
        (
            "PATCH",
            format!("{CMS}/victim"),
            "application/strategic-merge-patch+json",
            json!({"data": {"big": big}}).to_string(),
        ),
        (
            "PATCH",
            format!("{CMS}/victim?fieldManager=attacker"),
            "application/apply-patch+yaml",
            cm("victim"),
        ),
        (
            "PATCH",
            format!("{CMS}/created-by-apply?fieldManager=attacker"),
            "application/apply-patch+yaml",
            cm("created-by-apply"),
        ),
        (
            "POST",
            WIDGETS.into(),
            "application/json",
            widget("huge", "spec"),
        ),
        (
            "PUT",
            format!("{WIDGETS}/victim/status"),
            "application/json",
            widget("victim", "status"),
        ),
        (
            "PATCH",
            format!("{WIDGETS}/victim/status"),
            "application/merge-patch+json",
            json!({"status": {"big": big}}).to_string(),
        ),
    ];
    for (method, path, ct, body) in &cases {
        let before = revision(&s);
        let started = Instant::now();
        let resp = send(&s, method, path, ct, body.as_bytes());
        let status = expect_status(&resp, &[413], &format!("{method} {path} ({ct})"));
        assert!(
            status["message"]
                .as_str()
                .unwrap_or_default()
                .contains("1572864"),
            "{status}"
        );
        assert_eq!(revision(&s), before, "{method} {path} changed the store");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
    assert_eq!(s.raw(Raw::get(&format!("{CMS}/huge"))).status, 404);
    assert_eq!(
        s.raw(Raw::get(&format!("{CMS}/created-by-apply"))).status,
        404
    );
    // Just under the limit is fine.
    let fits = "z".repeat(1_400_000);
    let ok = send(
        &s,
        "PATCH",
        &format!("{CMS}/victim"),
        "application/merge-patch+json",
        json!({"data": {"big": fits}}).to_string().as_bytes(),
    );
    assert_eq!(ok.status, 200, "{}", String::from_utf8_lossy(&ok.body));
    // A patch whose result is larger than a request may be is refused before anything else
    // looks at the result.
    s.settle();
    let before = revision(&s);
    let more = json!({"data": {"more": "w".repeat(2_000_000)}}).to_string();
    let resp = send(
        &s,
        "PATCH",
        &format!("{CMS}/victim"),
        "application/merge-patch+json",
        more.as_bytes(),
    );
    let status = expect_status(&resp, &[413], "a patch result over 3 MiB");
    assert!(
        status["message"]
            .as_str()
            .unwrap_or_default()
            .contains("patched object"),
        "{status}"
    );
    assert_eq!(revision(&s), before);
    alive_and_fast(&s);
}

/// Deeply nested YAML bodies, several at once, while `/readyz` is polled: each is refused
/// (400) and every `/readyz` answers within a second.
#[test]
fn nested_yaml_does_not_stall_the_server() {
    let s = capped_server();
    create(
        &s,
        CMS,
        &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "victim"}}),
    );
    s.settle();
    let head = "apiVersion: authorization.k8s.io/v1\nkind: SelfSubjectAccessReview\nspec: ";
    let bodies: Vec<(String, &str, &str)> = vec![
        (format!("{head}{}", "[".repeat(200_000)), "POST", SSAR),
        (format!("{head}{}", "{a: ".repeat(50_000)), "POST", SSAR),
        (format!("{head}{}", "- ".repeat(100_000)), "POST", SSAR),
        (
            format!(
                "{head}\n{}",
                (1..600)
                    .map(|i| format!("{}a:\n", " ".repeat(i)))
                    .collect::<String>()
            ),
            "POST",
            SSAR,
        ),
        (
            format!(
                "apiVersion: v1\nkind: ConfigMap\ndata: {}",
                "[".repeat(200_000)
            ),
            "POST",
            CMS,
        ),
        (
            format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {}",
                "{a: ".repeat(50_000)
            ),
            "PATCH",
            "/api/v1/namespaces/default/configmaps/victim?fieldManager=attacker",
        ),
    ];
    let (cert, key) = s.client_cert("mallory", &[]);
    let before = revision(&s);
    let s = &s;
    let done = std::sync::atomic::AtomicBool::new(false);
    let worst = std::thread::scope(|scope| {
        let poller = scope.spawn(|| {
            let mut worst = Duration::ZERO;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let started = Instant::now();
                let r = s.raw(Raw::get("/readyz"));
                assert_eq!(r.status, 200);
                worst = worst.max(started.elapsed());
                std::thread::sleep(Duration::from_millis(50));
            }
            worst
        });
        let attackers: Vec<_> = bodies
            .iter()
            .enumerate()
            .map(|(i, (body, method, path))| {
                let (cert, key) = (&cert, &key);
                scope.spawn(move || {
                    let content_type = if *method == "PATCH" {
                        "application/apply-patch+yaml"
                    } else {
                        "application/yaml"
                    };
                    let identity = if i % 2 == 0 && *path == SSAR {
                        Identity::Pem(cert, key)
                    } else {
                        Identity::Admin
                    };
                    let started = Instant::now();
                    let resp = s.raw(Raw {
                        identity,
                        ..Raw::send(method, path, content_type, body.as_bytes())
                    });
                    (i, resp, started.elapsed())
                })
            })
            .collect();
        for a in attackers {
            let (i, resp, took) = a.join().expect("attacker thread");
            expect_status(&resp, &[400], &format!("nested YAML body {i}"));
            assert!(took < Duration::from_secs(5), "body {i} took {took:?}");
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        poller.join().expect("poller thread")
    });
    assert!(worst < Duration::from_secs(1), "/readyz took {worst:?}");
    assert_eq!(revision(s), before);
    alive_and_fast(s);
}

fn containers(n: usize, image: &str) -> Value {
    Value::Array(
        (0..n)
            .map(|i| json!({"name": format!("c{i}"), "image": image}))
            .collect(),
    )
}

/// List merges over tens of thousands of items are linear: a strategic merge patch with
/// 20,000 containers, a finalizer union and a server-side apply of the same list finish
/// quickly, whatever their verdict.
#[test]
fn huge_list_merges_are_linear() {
    let s = capped_server();
    let deploy = |replicas: i64, list: Value| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "web"},
               "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                        "template": {"metadata": {"labels": {"app": "web"}},
                                     "spec": {"containers": list}}}})
    };
    eprintln!("baseline RSS {} MiB", rss_bytes(&s) >> 20);
    create(
        &s,
        "/apis/apps/v1/namespaces/default/deployments",
        &deploy(1, containers(2000, "a")),
    );
    create(
        &s,
        CMS,
        &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "victim"}}),
    );
    s.settle();
    let path = "/apis/apps/v1/namespaces/default/deployments/web";
    let patch = json!({"spec": {"template": {"spec": {
        "$setElementOrder/containers": (0..20_000).map(|i| json!({"name": format!("c{i}")})).collect::<Vec<_>>(),
        "containers": containers(20_000, "b")}}}});
    let finalizers: Vec<String> = (0..60_000).map(|i| format!("example.com/f{i}")).collect();
    let cases: Vec<(String, &str, Vec<u8>)> = vec![
        (
            path.into(),
            "application/strategic-merge-patch+json",
            serde_json::to_vec(&patch).unwrap_or_default(),
        ),
        (
            format!("{CMS}/victim"),
            "application/strategic-merge-patch+json",
            serde_json::to_vec(&json!({"metadata": {"finalizers": finalizers}}))
                .unwrap_or_default(),
        ),
        (
            format!("{path}?fieldManager=attacker&force=true"),
            "application/apply-patch+yaml",
            serde_json::to_vec(&deploy(1, containers(20_000, "c"))).unwrap_or_default(),
        ),
    ];
    for (path, ct, body) in &cases {
        // The controllers may write the Deployment's status and annotations at any time, so a
        // refused patch is checked on what it tried to change: spec and finalizers.
        let object = path.split('?').next().unwrap_or(path);
        let intent = |s: &Server| {
            let v = send(s, "GET", object, "application/json", b"").json();
            (v["spec"].clone(), v["metadata"]["finalizers"].clone())
        };
        let before = intent(&s);
        let started = Instant::now();
        let resp = send(&s, "PATCH", path, ct, body);
        let took = started.elapsed();
        // The quadratic merge took 16.6 s for 20k containers; linear is a few hundred ms
        // (more on a loaded CI machine).
        eprintln!(
            "{ct} on {path}: {} in {took:?}, RSS {} MiB",
            resp.status,
            rss_bytes(&s) >> 20
        );
        assert!(
            took < Duration::from_secs(4),
            "{ct} on {path} took {took:?}"
        );
        if resp.status != 200 {
            expect_status(&resp, &[413, 422], &format!("{ct} on {path}"));
            assert!(intent(&s) == before, "{path} changed");
        }
    }
    alive_and_fast(&s);
}
