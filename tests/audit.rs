//! The tamper-evident audit log end to end: one `audit.k8s.io/v1` Event line per request
//! (kubectl, 401, 403, 404, /healthz, watch), Secrets' data never logged, size rotation with the
//! chain continuing, `rampart audit verify` catching edits, deletions, swaps and truncation,
//! crash recovery with a ChainResume marker, fail-closed 503 when the log cannot be written,
//! and a bad `--audit-policy-file` refusing to start.
#![allow(unsafe_code)] // test support: fork/exec hooks, signals, rlimits (each block says why)

mod harness;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use harness::{eventually, Identity, Raw, Server};
use serde_json::Value;

fn audit_dir(s: &Server) -> PathBuf {
    s.data_dir().join("audit")
}

/// Every line of the log, oldest first (rotated files, then audit.log).
fn lines(dir: &Path) -> Vec<Value> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_str().unwrap();
            n.starts_with("audit-") && n.ends_with(".log")
        })
        .collect();
    files.sort();
    files.push(dir.join("audit.log"));
    files
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).expect("a JSON line"))
                .collect::<Vec<Value>>()
        })
        .collect()
}

fn verify(path: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args(["audit", "verify"])
        .arg(path)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains("panicked"), "{text}");
    (out.status.success(), text)
}

fn by_kubectl(all: &[Value]) -> Vec<Value> {
    all.iter()
        .filter(|l| l["userAgent"].as_str().unwrap_or("").starts_with("kubectl"))
        .cloned()
        .collect()
}

#[test]
fn kubectl_session_one_line_per_request() {
    let s = Server::start();
    let dir = audit_dir(&s);
    let mode = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    };
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("audit.log")), 0o600);

    let before = by_kubectl(&lines(&dir)).len();
    let out = s.kubectl(&["-v=6", "create", "configmap", "c1", "--from-literal=k=v"]);
    assert!(out.status.success());
    let out2 = s.kubectl(&["-v=6", "get", "configmap", "c1", "-o", "name"]);
    let out3 = s.kubectl(&["-v=6", "get", "configmap", "nope"]);
    assert!(!out3.status.success());
    let out4 = s.kubectl(&["-v=6", "delete", "configmap", "c1"]);
    let requests: usize = [&out, &out2, &out3, &out4]
        .iter()
        .map(|o| {
            String::from_utf8_lossy(&o.stderr)
                .matches("\"Response\" verb=")
                .count()
        })
        .sum();
    let all = by_kubectl(&lines(&dir));
    assert_eq!(all.len() - before, requests, "one line per kubectl request");
    let find = |verb: &str, code: u64| {
        all.iter()
            .find(|l| {
                l["verb"] == verb
                    && l["objectRef"]["resource"] == "configmaps"
                    && l["responseStatus"]["code"] == code
            })
            .unwrap_or_else(|| panic!("no {verb} {code} line in {all:#?}"))
            .clone()
    };
    let create = find("create", 201);
    assert_eq!(create["kind"], "Event");
    assert_eq!(create["apiVersion"], "audit.k8s.io/v1");
    assert_eq!(create["level"], "Metadata");
    assert_eq!(create["stage"], "ResponseComplete");
    assert_eq!(create["user"]["username"], "admin");
    assert!(create["user"]["groups"]
        .as_array()
        .unwrap()
        .contains(&"system:masters".into()));
    assert_eq!(create["objectRef"]["namespace"], "default");
    assert_eq!(create["sourceIPs"][0], "127.0.0.1");
    assert_eq!(create["decision"], "allow");
    // The admin is allowed by system/masters (and the default cluster-admin binding).
    assert!(
        create["policies"]
            .as_array()
            .unwrap()
            .contains(&"system/masters".into()),
        "{}",
        create["policies"]
    );
    assert_eq!(create["hash"].as_str().unwrap().len(), 64);
    assert!(create["requestReceivedTimestamp"]
        .as_str()
        .unwrap()
        .contains('.'));
    assert_eq!(find("get", 200)["objectRef"]["name"], "c1");
    let missing = find("get", 404);
    assert_eq!(missing["objectRef"]["name"], "nope");
    assert_eq!(missing["responseStatus"]["reason"], "NotFound");
    assert_eq!(find("delete", 200)["objectRef"]["name"], "c1");

    // Non-resource requests and watches.
    assert_eq!(s.raw(Raw::get("/healthz")).status, 200);
    let _ = s.kubectl(&["get", "configmaps", "--watch", "--request-timeout=1s"]);
    let all = lines(&dir);
    let health = all.iter().find(|l| l["requestURI"] == "/healthz").unwrap();
    assert!(health.get("objectRef").is_none());
    assert_eq!(health["verb"], "get");
    let watch = all
        .iter()
        .find(|l| l["verb"] == "watch" && l["objectRef"]["resource"] == "configmaps")
        .expect("the watch is logged when it starts");
    assert_eq!(watch["stage"], "ResponseStarted");
    let (ok, text) = verify(&dir);
    assert!(ok && text.contains("chain intact"), "{text}");
}

#[test]
fn unauthenticated_and_forbidden_requests_are_audited() {
    let s = Server::start();
    let r = s.raw(Raw {
        identity: Identity::None,
        ..Raw::get("/api/v1/namespaces/default")
    });
    assert_eq!(r.status, 401);
    let (bob, bob_key) = s.client_cert("bob", &["devs"]);
    let r = s.raw(Raw {
        identity: Identity::Pem(&bob, &bob_key),
        ..Raw::send(
            "POST",
            "/rampart/v1/certificates/revocations",
            "application/json",
            br#"{"node":"n2"}"#,
        )
    });
    assert_eq!(r.status, 403);
    let all = lines(&audit_dir(&s));
    let anon = all
        .iter()
        .find(|l| l["responseStatus"]["code"] == 401)
        .expect("401 line");
    assert_eq!(anon["user"]["username"], "system:anonymous");
    assert_eq!(anon["user"]["groups"][0], "system:unauthenticated");
    assert_eq!(anon["decision"], "deny");
    assert_eq!(anon["responseStatus"]["reason"], "Unauthorized");
    assert_eq!(anon["objectRef"]["resource"], "namespaces");
    let forbidden = all
        .iter()
        .find(|l| l["responseStatus"]["code"] == 403)
        .expect("403 line");
    assert_eq!(forbidden["user"]["username"], "bob");
    // Non-resource requests carry the lowercase HTTP method, as upstream.
    assert_eq!(forbidden["verb"], "post");
    assert_eq!(
        forbidden["requestURI"],
        "/rampart/v1/certificates/revocations"
    );
    assert_eq!(forbidden["responseStatus"]["reason"], "Forbidden");
}

#[test]
fn secret_data_never_logged_even_with_request_response_policy() {
    let policy_dir = tempfile::tempdir().unwrap();
    let policy = policy_dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: None\n  nonResourceURLs: [\"/healthz*\"]\n- level: RequestResponse\n",
    )
    .unwrap();
    let s = Server::start_with(&["--audit-policy-file", policy.to_str().unwrap()]);
    s.ok_in(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Secret\nmetadata: {name: s1}\ndata: {a: c3VwZXJzZWNyZXQtYmFzZTY0}\nstringData: {b: topsecret-plain}\n",
    );
    s.ok(&["get", "secret", "s1", "-o", "yaml"]);
    s.ok(&[
        "create",
        "secret",
        "generic",
        "s2",
        "--from-literal=c=literal-secret",
    ]);
    s.ok(&["get", "secrets", "-o", "json"]);
    s.ok(&["get", "namespaces"]);
    assert_eq!(s.raw(Raw::get("/healthz")).status, 200);
    let text = std::fs::read_to_string(audit_dir(&s).join("audit.log")).unwrap();
    for needle in [
        "c3VwZXJzZWNyZXQtYmFzZTY0",
        "supersecret",
        "topsecret-plain",
        "literal-secret",
        "bGl0ZXJhbC1zZWNyZXQ",
    ] {
        assert!(!text.contains(needle), "{needle} in the audit log");
    }
    let all = lines(&audit_dir(&s));
    assert!(all
        .iter()
        .filter(|l| l["objectRef"]["resource"] == "secrets")
        .all(|l| l["level"] == "Metadata"));
    assert!(all
        .iter()
        .any(|l| l["objectRef"]["resource"] == "namespaces" && l["level"] == "RequestResponse"));
    assert!(!all.iter().any(|l| l["requestURI"] == "/healthz"));
}

#[test]
fn rotation_by_size_keeps_the_chain_across_files_and_restarts() {
    // SAFETY: set before any thread of this test process reads the environment; nextest runs
    // each test in its own process. The server child inherits it.
    std::env::set_var("RAMPART_TEST_AUDIT_MAXSIZE_BYTES", "6000");
    let mut s = Server::start();
    let dir = audit_dir(&s);
    for _ in 0..20 {
        assert_eq!(s.raw(Raw::get("/api/v1/namespaces/default")).status, 200);
    }
    s.stop();
    s.boot();
    for _ in 0..20 {
        assert_eq!(s.raw(Raw::get("/api/v1/namespaces/default")).status, 200);
    }
    let rotated: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_str()
                .unwrap()
                .starts_with("audit-")
        })
        .collect();
    assert!(rotated.len() >= 3, "rotated: {rotated:?}");
    for f in std::fs::read_dir(&dir).unwrap() {
        let f = f.unwrap().path();
        assert!(
            std::fs::metadata(&f).unwrap().len() <= 6000,
            "{f:?} too big"
        );
    }
    // Count and verify a quiescent log: a running server keeps writing lines (its own
    // controllers' requests) between the two reads.
    s.stop();
    let total = lines(&dir).len();
    assert_eq!(lines(&dir)[0]["prevHash"], "0".repeat(64));
    let (ok, text) = verify(&dir);
    assert!(ok, "{text}");
    assert!(
        text.contains(&format!("{total} lines verified")),
        "{text} (expected {total})"
    );
    drop(s);

    // A backup limit alone deletes nothing: only files named as shipped may be pruned.
    let s = Server::start_with(&["--audit-log-maxbackup", "2"]);
    for _ in 0..40 {
        assert_eq!(s.raw(Raw::get("/api/v1/namespaces/default")).status, 200);
    }
    let dir = audit_dir(&s);
    let rotated = rotated_names(&dir);
    assert!(rotated.len() > 2, "unshipped files kept: {rotated:?}");
    let (ok, text) = verify(&dir);
    assert!(ok && !text.contains("pruned"), "{text}");
    // Once shipped, the oldest files go, and verify fails on the missing start unless the
    // caller accepts it.
    std::fs::write(dir.join("audit.shipped"), rotated.last().unwrap()).unwrap();
    for _ in 0..20 {
        assert_eq!(s.raw(Raw::get("/api/v1/namespaces/default")).status, 200);
    }
    let now = rotated_names(&dir);
    assert!(!now.contains(&rotated[0]), "{now:?}");
    let (ok, text) = verify(&dir);
    assert!(!ok && text.contains("pruned history"), "{text}");
    let out = harness::rampart(&["audit", "verify", "--allow-pruned", dir.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("starts after pruned history"),
        "{text}"
    );
}

#[test]
fn shipping_copies_verified_files_and_lets_pruning_proceed() {
    // SAFETY: as above, set before any other thread reads the environment.
    std::env::set_var("RAMPART_TEST_AUDIT_MAXSIZE_BYTES", "6000");
    let s = Server::start_with(&["--audit-log-maxbackup", "1"]);
    let dir = audit_dir(&s);
    for _ in 0..30 {
        assert_eq!(s.raw(Raw::get("/api/v1/namespaces/default")).status, 200);
    }
    let before = rotated_names(&dir);
    assert!(before.len() >= 2, "rotated: {before:?}");
    // Read now: once shipped, the server's own background traffic may rotate and prune them.
    let originals: Vec<Vec<u8>> = before
        .iter()
        .map(|name| std::fs::read(dir.join(name)).unwrap())
        .collect();
    let archive = tempfile::tempdir().unwrap();
    let dest = archive.path().join("archive");
    let ship = |dest: &Path| {
        harness::rampart(&[
            "audit",
            "ship",
            dir.to_str().unwrap(),
            "--to",
            dest.to_str().unwrap(),
        ])
    };
    let out = ship(&dest);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Everything rotated at the time was copied byte for byte, and the mark names the last.
    let mark = std::fs::read_to_string(dir.join("audit.shipped")).unwrap();
    let shipped = rotated_names(&dest);
    assert!(shipped.len() >= before.len(), "{shipped:?} vs {before:?}");
    assert_eq!(mark.trim(), shipped.last().unwrap());
    for (name, original) in before.iter().zip(&originals) {
        assert_eq!(
            &std::fs::read(dest.join(name)).unwrap(),
            original,
            "{name} differs"
        );
    }
    assert!(
        !dest.join("audit.log").exists(),
        "the live file is never shipped"
    );
    // The archive is a chain from genesis on its own.
    let (ok, text) = verify(&dest);
    assert!(ok && !text.contains("pruned"), "{text}");
    // Now pruning may go ahead: with maxbackup 1, shipped files beyond one are removed at the
    // next rotation, and nothing unshipped is.
    for _ in 0..30 {
        assert_eq!(s.raw(Raw::get("/api/v1/namespaces/default")).status, 200);
    }
    let now = rotated_names(&dir);
    assert!(
        !now.contains(&before[0]),
        "shipped files were not pruned: {now:?}"
    );
    // A second run copies only what is new.
    let out = ship(&dest);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success() && text.contains("already there"),
        "{text}"
    );
    let (ok, text) = verify(&dest);
    assert!(ok && !text.contains("pruned"), "{text}");
    // Evidence at the destination is never overwritten: a differing copy is an error and the
    // mark does not move.
    let remaining = rotated_names(&dir);
    let victim = dest.join(&remaining[0]);
    std::fs::write(&victim, b"tampered\n").unwrap();
    let mark_before = std::fs::read_to_string(dir.join("audit.shipped")).unwrap();
    let out = ship(&dest);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success() && err.contains("refusing to overwrite"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("audit.shipped")).unwrap(),
        mark_before
    );
    // Shipping into the audit directory itself, or from a missing one, is refused.
    let out = ship(&dir);
    assert!(!out.status.success());
    let out = harness::rampart(&[
        "audit",
        "ship",
        "/nonexistent/audit",
        "--to",
        dest.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an audit directory"));
}

fn rotated_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_str().unwrap().to_string())
        .filter(|n| n.starts_with("audit-") && n.ends_with(".log"))
        .collect();
    names.sort();
    names
}

/// A closed log of `n` lines in its own directory.
fn sample_log(s: &mut Server, n: usize) -> Vec<String> {
    for _ in 0..n {
        s.raw(Raw::get("/api/v1/namespaces/default"));
    }
    s.stop();
    std::fs::read_to_string(audit_dir(s).join("audit.log"))
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

fn write_case(lines: &[String], trailing_newline: bool) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let mut text = lines.join("\n");
    if trailing_newline {
        text.push('\n');
    }
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

#[test]
fn verify_catches_edits_deletions_swaps_and_truncation() {
    let mut s = Server::start();
    let original = sample_log(&mut s, 10);
    let n = original.len();
    assert!(n >= 10);

    let (_d, path) = write_case(&original, true);
    let (ok, text) = verify(&path);
    assert!(
        ok && text.contains(&format!("{n} lines verified")),
        "{text}"
    );

    let mut edited = original.clone();
    edited[4] = edited[4].replace("\"level\":\"Metadata\"", "\"level\":\"None\"");
    assert_ne!(edited[4], original[4]);
    let (_d, path) = write_case(&edited, true);
    let (ok, text) = verify(&path);
    assert!(!ok && text.contains("audit.log:5: hash mismatch"), "{text}");

    let mut deleted = original.clone();
    deleted.remove(4);
    let (_d, path) = write_case(&deleted, true);
    let (ok, text) = verify(&path);
    assert!(!ok && text.contains("audit.log:5: prevHash"), "{text}");

    let mut swapped = original.clone();
    swapped.swap(3, 4);
    let (_d, path) = write_case(&swapped, true);
    let (ok, text) = verify(&path);
    assert!(!ok && text.contains("audit.log:4: prevHash"), "{text}");

    let mut truncated = original.clone();
    let last = truncated.pop().unwrap();
    truncated.push(last[..last.len() / 2].to_string());
    let (_d, path) = write_case(&truncated, false);
    let (ok, text) = verify(&path);
    assert!(
        !ok && text.contains(&format!("audit.log:{n}: last line is not valid JSON")),
        "{text}"
    );

    // A crash that cut the last line: the server ends it with a ChainResume marker and the
    // chain verifies again.
    let log = audit_dir(&s).join("audit.log");
    std::fs::write(&log, truncated.join("\n")).unwrap();
    s.boot();
    assert_eq!(s.raw(Raw::get("/api/v1/namespaces/default")).status, 200);
    let (ok, text) = verify(&audit_dir(&s));
    assert!(ok, "{text}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("\"kind\":\"ChainResume\""));
    let (ok, text) = verify(Path::new("/nonexistent/audit"));
    assert!(!ok && text.lines().count() == 1, "{text}");
}

#[test]
fn unwritable_audit_log_fails_closed_with_503_and_recovers() {
    let s = Server::start();
    let dir = audit_dir(&s);
    let gone = s.data_dir().join("audit.gone");
    assert_eq!(s.raw(Raw::get("/api/v1/namespaces/default")).status, 200);
    std::fs::rename(&dir, &gone).unwrap();
    let r = s.raw(Raw::get("/api/v1/namespaces/default"));
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["message"], "the audit log cannot be written");
    assert_eq!(r.json()["reason"], "ServiceUnavailable");
    let r = s.raw(Raw::send(
        "POST",
        "/api/v1/namespaces/default/configmaps",
        "application/json",
        br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"during-outage"}}"#,
    ));
    assert_eq!(r.status, 503);
    assert!(!dir.exists(), "the directory is not silently recreated");
    std::fs::rename(&gone, &dir).unwrap();
    assert!(eventually(Duration::from_secs(10), || {
        s.raw(Raw::get("/api/v1/namespaces/default")).status == 200
    }));
    let err = s.fails(&["get", "configmap", "during-outage"]);
    assert!(err.contains("NotFound"), "{err}");
    let (ok, text) = verify(&dir);
    assert!(ok, "{text}");
}

#[test]
fn bad_audit_policy_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Everything\n",
    )
    .unwrap();
    for (policy, expect) in [
        (bad.clone(), "invalid audit policy"),
        (
            dir.path().join("missing.yaml"),
            "cannot read the audit policy",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_rampart"))
            .args([
                "server",
                "--log-format",
                "json",
                "--bind-address",
                "127.0.0.1",
                "--https-port",
                "0",
                "--audit-policy-file",
            ])
            .arg(&policy)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(err.contains(expect), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(!dir.path().join("data").join("store").exists());
    }
}

#[test]
fn full_disk_fails_closed_with_503_and_recovers() {
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP full_disk_fails_closed_with_503_and_recovers: needs root to mount a tmpfs");
        return;
    }
    // A 256 KiB rotation size gives a 64 KiB reserve, topped up below 32 KiB.
    // SAFETY: set before any thread of this test process reads the environment; nextest runs
    // each test in its own process. The server child inherits it.
    std::env::set_var("RAMPART_TEST_AUDIT_MAXSIZE_BYTES", "262144");
    let mnt = tempfile::tempdir().unwrap();
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=16m", "tmpfs"])
        .arg(mnt.path())
        .status()
        .unwrap();
    assert!(status.success(), "mount tmpfs failed");
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(self.0).status();
        }
    }
    let _unmount = Unmount(mnt.path());
    let dir = mnt.path().join("audit");
    let s = Server::start_with(&["--audit-log-dir", dir.to_str().unwrap()]);
    assert_eq!(s.raw(Raw::get("/api/v1/namespaces/default")).status, 200);
    // Fill the disk: what is left is the audit log's reserve.
    let filler = mnt.path().join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 4096];
        while f.write_all(&chunk).is_ok() {}
    }
    // Creates go on into the reserve until it runs low (how many depends on how much of it
    // the server's own requests used); then they are refused up front.
    let create = |name: &str| {
        let body =
            format!(r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{name}"}}}}"#);
        s.raw(Raw::send(
            "POST",
            "/api/v1/namespaces/default/configmaps",
            "application/json",
            body.as_bytes(),
        ))
        .status
    };
    let mut refused = None;
    let mut admitted = 0;
    for i in 0..400 {
        let name = format!("fill-{i}");
        match create(&name) {
            201 => admitted += 1,
            503 => {
                refused = Some(name);
                break;
            }
            other => panic!("create {name}: unexpected {other}"),
        }
    }
    let refused = refused.expect("no 503 before 400 creates on a full disk");
    let mut codes = Vec::new();
    for _ in 0..20 {
        codes.push(s.raw(Raw::get("/api/v1/namespaces/default")).status);
    }
    assert!(codes.iter().all(|c| *c == 503), "{codes:?}");
    std::fs::remove_file(&filler).unwrap();
    assert!(eventually(Duration::from_secs(10), || {
        s.raw(Raw::get("/api/v1/namespaces/default")).status == 200
    }));
    // The refused create changed nothing; the ones before it are there.
    let path = format!("/api/v1/namespaces/default/configmaps/{refused}");
    assert_eq!(s.raw(Raw::get(&path)).status, 404, "{refused} was stored");
    for i in 0..admitted {
        let path = format!("/api/v1/namespaces/default/configmaps/fill-{i}");
        assert_eq!(s.raw(Raw::get(&path)).status, 200, "fill-{i} is missing");
    }
    assert_eq!(create(&refused), 201);
    let (ok, text) = verify(&dir);
    assert!(ok, "{text}");
}

#[test]
fn every_line_synced_when_the_sync_interval_is_zero() {
    let mut s = Server::start_with(&["--audit-log-sync-interval", "0"]);
    for _ in 0..5 {
        assert_eq!(s.raw(Raw::get("/api/v1/namespaces/default")).status, 200);
    }
    s.ok(&["create", "configmap", "synced"]);
    let dir = audit_dir(&s);
    s.stop();
    let all = lines(&dir);
    assert!(
        all.iter()
            .any(|l| l["verb"] == "create" && l["objectRef"]["resource"] == "configmaps"),
        "the create is in the log"
    );
    let (ok, text) = verify(&dir);
    assert!(ok, "{text}");
    let err = harness::rampart(&["server", "--audit-log-sync-interval", "soon"]);
    assert!(!err.status.success());
}

#[test]
fn request_and_response_bodies_follow_the_policy_levels() {
    let policy_dir = tempfile::tempdir().unwrap();
    let policy = policy_dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: RequestResponse\n  resources: [{group: \"\", resources: [namespaces]}]\n- level: Request\n  resources: [{group: \"\", resources: [serviceaccounts]}]\n- level: Metadata\n",
    )
    .unwrap();
    let mut s = Server::start_with(&["--audit-policy-file", policy.to_str().unwrap()]);
    s.ok(&["create", "namespace", "bodies"]);
    s.ok(&["create", "serviceaccount", "robot", "-n", "bodies"]);
    s.ok(&["create", "configmap", "plain", "--from-literal=k=v"]);
    // Two namespaces with 200 KiB annotations: their list exceeds the 256 KiB cap.
    let big = "x".repeat(200 * 1024);
    for n in ["big-a", "big-b"] {
        let body = format!(
            r#"{{"apiVersion":"v1","kind":"Namespace","metadata":{{"name":"{n}","annotations":{{"pad":"{big}"}}}}}}"#
        );
        assert_eq!(
            s.raw(Raw::send(
                "POST",
                "/api/v1/namespaces",
                "application/json",
                body.as_bytes()
            ))
            .status,
            201
        );
    }
    assert_eq!(s.raw(Raw::get("/api/v1/namespaces")).status, 200);
    // A request body over the cap (refused by validation, still recorded).
    let huge = format!(
        r#"{{"apiVersion":"v1","kind":"Namespace","metadata":{{"name":"huge","annotations":{{"pad":"{}"}}}}}}"#,
        "y".repeat(300 * 1024)
    );
    assert_eq!(
        s.raw(Raw::send(
            "POST",
            "/api/v1/namespaces",
            "application/json",
            huge.as_bytes()
        ))
        .status,
        422
    );
    let dir = audit_dir(&s);
    s.stop();
    let all = lines(&dir);
    let refused = all
        .iter()
        .find(|l| l["verb"] == "create" && l["responseStatus"]["code"] == 422)
        .expect("the refused create's line");
    assert!(refused.get("requestObject").is_none());
    assert_eq!(
        refused["annotations"]["audit.rampart.io/truncated"],
        "requestObject"
    );
    let find = |verb: &str, resource: &str, name: &str| -> Value {
        all.iter()
            .find(|l| {
                l["verb"] == verb
                    && l["objectRef"]["resource"] == resource
                    && l["objectRef"]["name"] == name
            })
            .cloned()
            .unwrap_or_else(|| panic!("no {verb} {resource}/{name} line"))
    };
    // RequestResponse: both bodies; objectRef names the created object, as upstream.
    let ns = find("create", "namespaces", "bodies");
    assert_eq!(ns["level"], "RequestResponse");
    assert_eq!(ns["requestObject"]["metadata"]["name"], "bodies");
    assert_eq!(ns["responseObject"]["metadata"]["name"], "bodies");
    assert!(ns["responseObject"]["metadata"]["uid"].is_string(), "{ns}");
    // Request: the request body only.
    let sa = find("create", "serviceaccounts", "robot");
    assert_eq!(sa["level"], "Request");
    assert_eq!(sa["requestObject"]["metadata"]["name"], "robot");
    assert!(sa.get("responseObject").is_none(), "{sa}");
    // Metadata (and configmaps are capped there whatever the policy): no bodies.
    let cm = find("create", "configmaps", "plain");
    assert_eq!(cm["level"], "Metadata");
    assert!(cm.get("requestObject").is_none() && cm.get("responseObject").is_none());
    // Under the cap a body is kept whole; over it (the list of both) it is left out and
    // the line says so.
    let created = find("create", "namespaces", "big-a");
    assert_eq!(
        created["requestObject"]["metadata"]["annotations"]["pad"]
            .as_str()
            .map(str::len),
        Some(200 * 1024)
    );
    assert!(created["annotations"]
        .get("audit.rampart.io/truncated")
        .is_none());
    let list = all
        .iter()
        .find(|l| {
            l["verb"] == "list"
                && l["objectRef"]["resource"] == "namespaces"
                && l["requestURI"] == "/api/v1/namespaces"
        })
        .expect("the list line");
    assert!(list.get("responseObject").is_none());
    assert_eq!(
        list["annotations"]["audit.rampart.io/truncated"],
        "responseObject"
    );
    let (ok, text) = verify(&dir);
    assert!(ok, "{text}");
}

/// A panic while the audit writer holds its lock (forced by the `RAMPART_TEST_AUDIT_PANIC_URI`
/// test hook) costs that one request its response and its line, not the server: later
/// requests are served and logged, and the chain still verifies.
#[test]
fn a_panic_holding_the_audit_lock_does_not_refuse_later_requests() {
    const PROBE: &str = "/api/v1/namespaces/default/configmaps/audit-panic-probe";
    // SAFETY: set before any thread of this test process reads the environment; nextest runs
    // each test in its own process. The server child inherits it.
    std::env::set_var("RAMPART_TEST_AUDIT_PANIC_URI", "audit-panic-probe");
    let mut s = Server::start();
    assert_eq!(s.raw(Raw::get("/api/v1/namespaces/default")).status, 200);
    // The hook panics inside the writer: the connection closes without a response.
    let probe = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| s.raw(Raw::get(PROBE))));
    assert!(
        probe.is_err(),
        "the hook did not fire (is the binary built with test-hooks?): {probe:?}"
    );
    assert!(s.alive(), "the server died with the panicking request");
    // Before the fix every later request answered 503 (a poisoned lock read as "not writable").
    for _ in 0..5 {
        let r = s.raw(Raw::get("/api/v1/namespaces/default"));
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }
    let created = s.raw(Raw::send(
        "POST",
        "/api/v1/namespaces/default/configmaps",
        "application/json",
        br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"after-panic"}}"#,
    ));
    assert_eq!(
        created.status,
        201,
        "{}",
        String::from_utf8_lossy(&created.body)
    );
    s.stop();
    let dir = audit_dir(&s);
    let all = lines(&dir);
    assert!(
        all.iter().any(|l| l["objectRef"]["name"] == "after-panic"),
        "the create after the panic was not logged"
    );
    assert!(
        !all.iter().any(|l| l["requestURI"] == PROBE),
        "the panicking request's line cannot have been written"
    );
    let (ok, text) = verify(&dir);
    assert!(ok, "{text}");
}
