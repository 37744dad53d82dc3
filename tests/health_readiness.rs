//! `/readyz` checks that check something — `informer-sync` (the RBAC, CedarPolicy and
//! node-graph followers have listed), `log` (the audit writer can take a line), `shutdown`
//! (draining after SIGTERM, with `--shutdown-delay-duration`) — and ServiceAccount admission
//! waiting on its cache instead of sleeping.
#![allow(unsafe_code)] // test support: fork/exec hooks, signals, rlimits (each block says why)

mod harness;

use std::time::{Duration, Instant};

use harness::{Raw, Server};

fn readyz(s: &Server) -> (u16, String) {
    let r = s.raw(Raw::get("/readyz?verbose"));
    (r.status, String::from_utf8_lossy(&r.body).into_owned())
}

#[test]
fn readyz_checks_are_real_and_shutdown_drains() {
    let mut s = Server::start_with(&["--shutdown-delay-duration", "4s"]);
    // The ready line comes after the followers' first lists, so readiness holds at once.
    let (code, body) = readyz(&s);
    assert_eq!(code, 200, "{body}");
    for check in ["informer-sync", "log", "shutdown", "etcd"] {
        assert!(body.contains(&format!("[+]{check} ok")), "{check}: {body}");
    }
    // A single check, as upstream serves them.
    let one = s.raw(Raw::get("/readyz/shutdown"));
    assert_eq!((one.status, one.body.as_slice()), (200, b"ok".as_slice()));

    // SIGTERM: still serving during the delay, but not ready; alive.
    let pid = s.child.as_ref().unwrap().id() as i32;
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    let sent = Instant::now();
    let draining = harness::eventually(Duration::from_secs(2), || {
        let (code, body) = readyz(&s);
        code == 500 && body.contains("[-]shutdown failed")
    });
    assert!(draining, "{:?}", readyz(&s));
    let (_, body) = readyz(&s);
    assert!(
        body.contains("[+]informer-sync ok") && body.contains("readyz check failed"),
        "{body}"
    );
    assert_eq!(s.raw(Raw::get("/livez")).status, 200);
    let one = s.raw(Raw::get("/readyz/shutdown"));
    assert_eq!(one.status, 500);
    // Then it exits, after the delay.
    let mut child = s.child.take().unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        sent.elapsed() >= Duration::from_secs(3),
        "exited before the shutdown delay"
    );
}

fn pod(name: &str, sa: Option<&str>) -> Vec<u8> {
    let sa = sa
        .map(|a| format!(r#""serviceAccountName":"{a}","#))
        .unwrap_or_default();
    format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}"}},"spec":{{{sa}"containers":[{{"name":"c","image":"nginx"}}]}}}}"#
    )
    .into_bytes()
}

#[test]
fn service_account_admission_waits_on_its_cache() {
    let s = Server::start();
    s.settle();
    let pods = "/api/v1/namespaces/default/pods";
    // A missing named account is refused at once (upstream looks it up once).
    let started = Instant::now();
    let r = s.raw(Raw::send(
        "POST",
        pods,
        "application/json",
        &pod("p1", Some("late")),
    ));
    assert_eq!(r.status, 403, "{}", String::from_utf8_lossy(&r.body));
    let message = r.json()["message"].as_str().unwrap_or_default().to_string();
    assert!(
        message.contains("serviceaccount \"late\" not found"),
        "{message}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    // Created, it is seen by the very next create.
    s.ok(&["create", "serviceaccount", "late"]);
    let r = s.raw(Raw::send(
        "POST",
        pods,
        "application/json",
        &pod("p2", Some("late")),
    ));
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    // A brand-new namespace: its `default` account appears a moment after it (the
    // controller), and a pod created right away waits for it instead of failing.
    for i in 0..3 {
        let ns = format!("fresh{i}");
        s.ok(&["create", "namespace", &ns]);
        let path = format!("/api/v1/namespaces/{ns}/pods");
        let r = s.raw(Raw::send(
            "POST",
            &path,
            "application/json",
            &pod("first", None),
        ));
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        let created = r.json();
        assert_eq!(created["spec"]["serviceAccountName"], "default");
    }
}
