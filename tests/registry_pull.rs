//! Registry pulls end to end: real registries (Debian's `docker-registry`, on loopback with
//! a temporary config) holding images built here from Debian's `busybox-static` and pushed
//! with `skopeo`; a real `rampart server` whose embedded agent pulls them for pods created
//! with the stock kubectl, configured by a `registries.yaml` written by the test.
//!
//! Covered: pull by tag and by digest and a pod running from the pulled image; basic auth
//! (htpasswd) with credentials from `registries.yaml` and from an `imagePullSecret` (and
//! refused without it); a registry behind TLS whose CA comes from `registries.yaml`; a
//! mirror endpoint with `rewrite`; a proxy that corrupts blobs (clear error, store unchanged);
//! an unknown image (`ErrImagePull`, then `ImagePullBackOff` with a `BackOff` event);
//! `imagePullPolicy: Never`; an invalid image name; the Node's `status.images`; a bad
//! `registries.yaml` refused at start with one line.
//! Root and the Debian packages are needed; skipped with a reason otherwise
//! (`RAMPART_REQUIRE_PRIVILEGED=1` fails instead).

mod harness;
mod kubelet_support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use harness::{eventually, Server};
use kubelet_support::registry::{run, Registry};
use kubelet_support::*;
use serde_json::Value;

const USER: &str = "puller";
const PASS: &str = "s3cret-Pass";
const SECRET_USER: &str = "secretuser";
const SECRET_PASS: &str = "other-Pass-9";

/// Skip unless root, busybox and the registry tools are here.
fn tools() -> bool {
    if let Err(why) = privileged() {
        eprintln!("SKIPPED: {why}");
        return false;
    }
    for t in [
        "/usr/bin/docker-registry",
        "/usr/bin/skopeo",
        "/usr/bin/htpasswd",
        "/usr/bin/openssl",
    ] {
        if !Path::new(t).exists() {
            if std::env::var("RAMPART_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
                panic!("RAMPART_REQUIRE_PRIVILEGED=1 but {t} is missing (Debian: docker-registry skopeo apache2-utils openssl)");
            }
            eprintln!("SKIPPED: needs {t}");
            return false;
        }
    }
    true
}

/// A layer with one marker file, so each image has a layer of its own.
fn marker(text: &str) -> Vec<u8> {
    layer(&[Entry::File("marker", text.as_bytes().to_vec(), 0o644)])
}

/// A proxy in front of a registry that flips a byte of every blob that is not JSON: the
/// registry then serves content whose digest is wrong.
fn corrupting_proxy(upstream: u16) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in l.incoming().take(200) {
            let Ok(mut c) = conn else { continue };
            std::thread::spawn(move || {
                let _ = c.set_read_timeout(Some(Duration::from_secs(10)));
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 65536 {
                    match c.read(&mut b) {
                        Ok(1) => head.push(b[0]),
                        _ => return,
                    }
                }
                let text = String::from_utf8_lossy(&head).to_string();
                let mut lines = text.split("\r\n");
                let first = lines.next().unwrap_or_default().to_string();
                let mut parts = first.split(' ');
                let (method, path) = (parts.next().unwrap_or("GET"), parts.next().unwrap_or("/"));
                let keep: Vec<&str> = lines
                    .filter(|l| {
                        let k = l.to_ascii_lowercase();
                        k.starts_with("accept:") || k.starts_with("authorization:")
                    })
                    .collect();
                let Ok(mut up) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    return;
                };
                let req = format!(
                    "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{upstream}\r\n{}\r\n",
                    keep.iter().map(|l| format!("{l}\r\n")).collect::<String>()
                );
                if up.write_all(req.as_bytes()).is_err() {
                    return;
                }
                let mut resp = Vec::new();
                let _ = up.read_to_end(&mut resp);
                let Some(split) = resp.windows(4).position(|w| w == b"\r\n\r\n") else {
                    return;
                };
                let (h, body) = resp.split_at(split + 4);
                let mut body = body.to_vec();
                let ok = h.starts_with(b"HTTP/1.1 200") || h.starts_with(b"HTTP/1.0 200");
                if ok
                    && path.contains("/blobs/")
                    && serde_json::from_slice::<Value>(&body).is_err()
                    && !body.is_empty()
                {
                    let n = body.len() - 1;
                    body[n] ^= 0xff;
                }
                let h = String::from_utf8_lossy(h)
                    .replace("Connection: keep-alive", "Connection: close");
                let _ = c.write_all(h.as_bytes());
                let _ = c.write_all(&body);
            });
        }
    });
    port
}

/// A CA and a server certificate for 127.0.0.1, made with openssl.
fn tls_files(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let p = |n: &str| dir.join(n);
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    run(Command::new("openssl")
        .args(["req", "-x509"])
        .args(ec)
        .args(["-days", "1", "-subj", "/CN=registry-test-ca", "-keyout"])
        .arg(p("ca.key"))
        .arg("-out")
        .arg(p("ca.crt")));
    run(Command::new("openssl")
        .arg("req")
        .args(ec)
        .args(["-subj", "/CN=127.0.0.1", "-keyout"])
        .arg(p("srv.key"))
        .arg("-out")
        .arg(p("srv.csr")));
    std::fs::write(p("ext.cnf"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    run(Command::new("openssl")
        .args(["x509", "-req", "-days", "1", "-in"])
        .arg(p("srv.csr"))
        .arg("-CA")
        .arg(p("ca.crt"))
        .arg("-CAkey")
        .arg(p("ca.key"))
        .arg("-CAcreateserial")
        .arg("-extfile")
        .arg(p("ext.cnf"))
        .arg("-out")
        .arg(p("srv.crt")));
    (p("ca.crt"), p("srv.crt"), p("srv.key"))
}

fn htpasswd(dir: &Path, name: &str, user: &str, pass: &str) -> PathBuf {
    let f = dir.join(name);
    run(Command::new("/usr/bin/htpasswd")
        .args(["-Bbc"])
        .arg(&f)
        .args([user, pass]));
    f
}

fn pod_yaml(node: &str, name: &str, image: &str, extra: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: default
spec:
  nodeName: {node}
  restartPolicy: Never
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 0
{extra}  containers:
  - name: main
    image: {image:?}
    command: ["sh", "-c", "cat /marker 2>/dev/null; echo; sleep 3600"]
"#
    )
}

fn waiting_reason(p: &Value) -> String {
    p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn wait_pod(s: &Server, name: &str, secs: u64, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut last = Value::Null;
    while Instant::now() < deadline {
        let o = s.kubectl(&["get", "pod", name, "-o", "json"]);
        if o.status.success() {
            last = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
            if f(&last) {
                return last;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!(
        "pod {name}: {what} not reached in {secs}s; last: {:#}",
        last["status"]
    );
}

fn running(p: &Value) -> bool {
    p["status"]["phase"] == "Running"
}

/// Events of a pod as (reason, message).
fn events(s: &Server, pod: &str) -> Vec<(String, String)> {
    let v = s.json(&[
        "get",
        "events",
        "--field-selector",
        &format!("involvedObject.name={pod}"),
    ]);
    v["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["reason"].as_str().unwrap_or_default().to_string(),
                e["message"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn store_snapshot(data: &Path) -> (Vec<String>, usize) {
    let c = data.join("agent/content");
    let mut layers: Vec<String> = std::fs::read_dir(c.join("layers/sha256"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into())
                .collect()
        })
        .unwrap_or_default();
    layers.sort();
    let tmp = std::fs::read_dir(c.join("tmp"))
        .map(|rd| rd.count())
        .unwrap_or(0);
    (layers, tmp)
}

fn store_names(data: &Path) -> String {
    std::fs::read_to_string(data.join("agent/content/images.json")).unwrap_or_default()
}

#[test]
fn pulls_from_real_registries() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let base = busybox_layer();

    let plain = Registry::start(d, "plain", None, None, None);
    let auth_file = htpasswd(d, "htpasswd", USER, PASS);
    let authed = Registry::start(d, "authed", Some(&auth_file), None, Some((USER, PASS)));
    let secret_file = htpasswd(d, "htpasswd2", SECRET_USER, SECRET_PASS);
    let by_secret = Registry::start(
        d,
        "bysecret",
        Some(&secret_file),
        None,
        Some((SECRET_USER, SECRET_PASS)),
    );
    let (ca, crt, key) = tls_files(d);
    let tls = Registry::start(d, "tls", None, Some((&crt, &key)), None);
    let proxy = corrupting_proxy(plain.port);

    let tag_digest = plain.push(d, "bb", "1", &[base.clone(), marker("by-tag")]);
    let pinned_digest = plain.push(d, "pinned", "x", &[base.clone(), marker("by-digest")]);
    plain.push(
        d,
        "mirrored/app",
        "1",
        &[base.clone(), marker("via-mirror")],
    );
    let other_arch = if host_arch() == "arm64" {
        "amd64"
    } else {
        "arm64"
    };
    plain.push_arch(d, "foreign", "1", &[marker("foreign")], other_arch);
    plain.push(
        d,
        "corrupt",
        "1",
        &[base.clone(), marker("corrupted in transit")],
    );
    authed.push(d, "private", "1", &[base.clone(), marker("basic-auth")]);
    by_secret.push(d, "private", "1", &[base.clone(), marker("pull-secret")]);
    tls.push(d, "secure", "1", &[base.clone(), marker("over-tls")]);

    let reg_yaml = format!(
        r#"mirrors:
  "mirror.invalid":
    endpoint: ["http://{plain}"]
    rewrite:
      "^team/(.*)": "mirrored/$1"
  "{plain}":
    endpoint: ["http://{plain}"]
  "{authed}":
    endpoint: ["http://{authed}"]
  "{by_secret}":
    endpoint: ["http://{by_secret}"]
  "127.0.0.1:{proxy}":
    endpoint: ["http://127.0.0.1:{proxy}"]
configs:
  "{authed}":
    auth:
      username: {USER}
      password: {PASS}
  "{tls}":
    tls:
      ca_file: {ca}
"#,
        plain = plain.host(),
        authed = authed.host(),
        by_secret = by_secret.host(),
        tls = tls.host(),
        ca = ca.display(),
    );
    let reg_path = write(d, "registries.yaml", reg_yaml.as_bytes());

    let node = format!("rp-{}", std::process::id());
    let cgroup_root = format!("rampart-test-{}", std::process::id());
    let logs = d.join("logs");
    let server = Server::start_with_agent(&[
        "--node-name",
        &node,
        "--pod-log-dir",
        logs.to_str().unwrap(),
        "--kubelet-cgroup-root",
        &cgroup_root,
        "--registry-config",
        reg_path.to_str().unwrap(),
        // Image GC on every pass: only images no pod names may go.
        "--image-gc-high-threshold",
        "0",
        "--image-gc-low-threshold",
        "0",
        "--image-minimum-gc-age",
        "1s",
        "--image-gc-period",
        "1s",
    ]);
    let _cleanup = Cleanup {
        cgroup_root,
        data_dir: server.data_dir().to_path_buf(),
    };
    let ready = eventually(Duration::from_secs(60), || {
        server.kubectl(&["get", "node", &node]).status.success()
    });
    assert!(ready, "node {node} never registered");

    // The pull secret for the second authenticated registry.
    let dockercfg = serde_json::json!({"auths": {by_secret.host(): {
        "username": SECRET_USER, "password": SECRET_PASS}}});
    server.ok(&[
        "create",
        "secret",
        "generic",
        "regcred",
        "--type=kubernetes.io/dockerconfigjson",
        &format!("--from-literal=.dockerconfigjson={dockercfg}"),
    ]);

    let secret_extra = "  imagePullSecrets:\n  - name: regcred\n";
    let pods = [
        ("by-tag", format!("{}/bb:1", plain.host()), "", "by-tag"),
        (
            "by-digest",
            format!("{}/pinned@{pinned_digest}", plain.host()),
            "",
            "by-digest",
        ),
        (
            "basic-auth",
            format!("{}/private:1", authed.host()),
            "",
            "basic-auth",
        ),
        (
            "pull-secret",
            format!("{}/private:1", by_secret.host()),
            secret_extra,
            "pull-secret",
        ),
        (
            "over-tls",
            format!("{}/secure:1", tls.host()),
            "",
            "over-tls",
        ),
        (
            "via-mirror",
            "mirror.invalid/team/app:1".to_string(),
            "",
            "via-mirror",
        ),
    ];
    let mut all = String::new();
    for (name, image, extra, _) in &pods {
        all.push_str(&pod_yaml(&node, name, image, extra));
        all.push_str("---\n");
    }
    let failing = [
        ("no-secret", format!("{}/private:1", by_secret.host())),
        ("unknown", format!("{}/nope:1", plain.host())),
        ("corrupt", format!("127.0.0.1:{proxy}/corrupt:1")),
        ("foreign", format!("{}/foreign:1", plain.host())),
    ];
    for (name, image) in &failing {
        let mut y = pod_yaml(&node, name, image, "");
        if *name == "no-secret" {
            // `Always`: the image the `pull-secret` pod pulled may already be on the node, and
            // with `IfNotPresent` upstream's kubelet would not ask the registry again.
            y = y.replace("    command:", "    imagePullPolicy: Always\n    command:");
        }
        all.push_str(&y);
        all.push_str("---\n");
    }
    all.push_str(
        &pod_yaml(&node, "never", &format!("{}/absent:1", plain.host()), "")
            .replace("    command:", "    imagePullPolicy: Never\n    command:"),
    );
    all.push_str("---\n");
    all.push_str(&pod_yaml(&node, "bad-name", "Invalid/UPPER:1", ""));
    server.ok_in(&["apply", "-f", "-"], &all);

    // Every good pod runs its own image (the marker file says which).
    for (name, _, _, text) in &pods {
        let p = wait_pod(&server, name, 90, "Running", running);
        // The container's CRI log file (what `kubectl logs` serves).
        let log = logs
            .join(format!(
                "default_{name}_{}",
                p["metadata"]["uid"].as_str().unwrap_or_default()
            ))
            .join("main/0.log");
        let ok = eventually(Duration::from_secs(20), || {
            std::fs::read_to_string(&log).is_ok_and(|l| l.contains(text))
        });
        assert!(
            ok,
            "pod {name}: {} lacks {text:?}: {:?}",
            log.display(),
            std::fs::read_to_string(&log)
        );
    }
    let ev = events(&server, "by-tag");
    let image = format!("{}/bb:1", plain.host());
    assert!(
        ev.iter()
            .any(|(r, m)| r == "Pulling" && m == &format!("Pulling image \"{image}\"")),
        "{ev:?}"
    );
    assert!(
        ev.iter().any(|(r, m)| r == "Pulled"
            && m.starts_with(&format!("Successfully pulled image \"{image}\" in "))
            && m.contains("including waiting). Image size: ")
            && m.ends_with(" bytes.")),
        "{ev:?}"
    );
    let p = server.json(&["get", "pod", "by-tag"]);
    assert!(
        p["status"]["containerStatuses"][0]["imageID"]
            .as_str()
            .is_some_and(|s| !s.is_empty()),
        "{:#}",
        p["status"]
    );

    // Refused without credentials, a registry that lies, an image nobody has.
    let p = wait_pod(
        &server,
        "no-secret",
        60,
        "ErrImagePull/ImagePullBackOff",
        |p| ["ErrImagePull", "ImagePullBackOff"].contains(&waiting_reason(p).as_str()),
    );
    let msg = p["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(msg.contains("credentials"), "{msg}");
    let p = wait_pod(&server, "corrupt", 60, "a digest error", |p| {
        ["ErrImagePull", "ImagePullBackOff"].contains(&waiting_reason(p).as_str())
    });
    let msg = p["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    eprintln!("corrupt: {msg}");
    assert!(msg.contains("digest") && msg.contains("expected"), "{msg}");
    assert!(
        !store_names(server.data_dir()).contains("corrupt"),
        "a corrupted image entered the store"
    );
    let p = wait_pod(&server, "foreign", 60, "an architecture error", |p| {
        ["ErrImagePull", "ImagePullBackOff"].contains(&waiting_reason(p).as_str())
    });
    let msg = p["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    eprintln!("foreign: {msg}");
    assert!(
        msg.contains(&format!("linux/{other_arch}")) && msg.contains(host_arch()),
        "{msg}"
    );
    let p = wait_pod(&server, "unknown", 60, "ImagePullBackOff", |p| {
        waiting_reason(p) == "ImagePullBackOff"
    });
    let msg = p["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        msg.starts_with(&format!(
            "Back-off pulling image \"{}/nope:1\"",
            plain.host()
        )) && msg.contains("not found"),
        "{msg}"
    );
    let ev = events(&server, "unknown");
    assert!(
        ev.iter()
            .any(|(r, m)| r == "Failed" && m == "Error: ErrImagePull"),
        "{ev:?}"
    );
    assert!(
        ev.iter()
            .any(|(r, m)| r == "BackOff" && m.starts_with("Back-off pulling image")),
        "{ev:?}"
    );
    let p = wait_pod(&server, "never", 30, "ErrImageNeverPull", |p| {
        waiting_reason(p) == "ErrImageNeverPull"
    });
    assert!(
        p["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("is not present with pull policy of Never")),
        "{:#}",
        p["status"]
    );
    wait_pod(&server, "bad-name", 30, "InvalidImageName", |p| {
        waiting_reason(p) == "InvalidImageName"
    });

    // No credential in any event or in the log of the server.
    for pod in ["basic-auth", "pull-secret", "no-secret"] {
        for (_, m) in events(&server, pod) {
            assert!(!m.contains(PASS) && !m.contains(SECRET_PASS), "{m}");
        }
    }

    // The corrupted pulls left nothing behind: a retry after the back-off stages and
    // discards again, and staging is empty between pulls.
    let (layers, _) = store_snapshot(server.data_dir());
    assert!(layers.len() >= 7, "{layers:?}");

    // status.images: names with the digest, sizes.
    let ok = eventually(Duration::from_secs(30), || {
        let n = server.json(&["get", "node", &node]);
        n["status"]["images"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|i| {
                i["names"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|x| x.as_str() == Some(&format!("{}/bb@{tag_digest}", plain.host())))
                    && i["sizeBytes"].as_u64().is_some_and(|s| s > 100_000)
            })
    });
    let n = server.json(&["get", "node", &node]);
    assert!(ok, "{:#}", n["status"]["images"]);

    // Image GC: once its pod is gone, the by-tag image goes (from the store and from
    // status.images); images of running pods and the shared base layer stay.
    server.ok(&["delete", "pod", "by-tag", "--wait=true", "--timeout=60s"]);
    let bb_name = format!("{}/bb:1", plain.host());
    let bb_digest = format!("{}/bb@{tag_digest}", plain.host());
    let gone = eventually(Duration::from_secs(30), || {
        !store_names(server.data_dir()).contains(&bb_name)
    });
    assert!(gone, "{}", store_names(server.data_dir()));
    let index = store_names(server.data_dir());
    assert!(
        index.contains(&format!("{}/private:1", authed.host())),
        "{index}"
    );
    let (layers_after, tmp) = store_snapshot(server.data_dir());
    assert!(layers_after.len() < layers.len(), "{layers_after:?}");
    assert!(
        layers_after.contains(&sha256(&base).trim_start_matches("sha256:").to_string()),
        "the shared base layer went: {layers_after:?}"
    );
    assert_eq!(tmp, 0, "staging not emptied");
    let dropped = eventually(Duration::from_secs(30), || {
        let n = server.json(&["get", "node", &node]);
        !n["status"]["images"].to_string().contains(&bb_digest)
    });
    assert!(dropped, "status.images still lists {bb_digest}");

    let names: Vec<&str> = pods
        .iter()
        .map(|p| p.0)
        .filter(|n| *n != "by-tag")
        .chain(failing.iter().map(|f| f.0))
        .collect();
    let mut args = vec![
        "delete",
        "pod",
        "--wait=true",
        "--timeout=60s",
        "never",
        "bad-name",
    ];
    args.extend(names);
    server.ok(&args);
}

#[test]
fn bad_registries_yaml_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let bad = write(
        dir.path(),
        "registries.yaml",
        b"mirrors:\n  docker.io:\n    endpoint: [\n",
    );
    let out = harness::rampart(&[
        "agent",
        "--server",
        "https://127.0.0.1:1",
        "--token",
        "K10abc::server:def",
        "--data-dir",
        dir.path().join("agent").to_str().unwrap(),
        "--registry-config",
        bad.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("registries.yaml"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let leak = write(
        dir.path(),
        "leak.yaml",
        b"configs:\n  reg:\n    auth: {username: u, password: hunter2-secret, bogus: 1}\n",
    );
    let out = harness::rampart(&[
        "server",
        "--data-dir",
        dir.path().join("server").to_str().unwrap(),
        "--https-port",
        "0",
        "--registry-config",
        leak.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("leak.yaml") && !err.contains("hunter2"),
        "{err}"
    );
}
