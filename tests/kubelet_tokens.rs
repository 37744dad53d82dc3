//! Projected service-account token rotation end to end: a real `rampart server` with its
//! embedded agent runs a pod with a projected token of the apiserver's minimum lifetime
//! (600 s); the kubelet, told by the test hook `RAMPART_TEST_TOKEN_REFRESH_FRACTION` to renew
//! at 1 % of the lifetime instead of upstream's 80 %, must write a second token (later `iat`,
//! same lifetime) through the `..data` swap, and the apiserver must accept it (TokenReview).
//! Root only (skipped with a reason otherwise; `RAMPART_REQUIRE_PRIVILEGED=1` fails instead).

mod harness;
mod kubelet_support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine;
use harness::{eventually, Server};
use kubelet_support::*;
use serde_json::Value;

fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap_or_default();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap_or_default();
    serde_json::from_slice(&bytes).unwrap_or(Value::Null)
}

#[test]
fn projected_tokens_are_rotated_atomically() {
    require_privileged!();
    // 1 % of 600 s: due after 6 s, rotated at the worker's next 10 s volume refresh.
    std::env::set_var("RAMPART_TEST_TOKEN_REFRESH_FRACTION", "0.01");
    let logs_dir = tempfile::tempdir().unwrap();
    let name = format!("tok-{}", std::process::id());
    let cleanup_root = format!("rampart-test-{}", std::process::id());
    let s = Server::start_with_agent(&[
        "--node-name",
        &name,
        "--pod-log-dir",
        logs_dir.path().to_str().unwrap(),
        "--kubelet-cgroup-root",
        &cleanup_root,
        "--kubelet-port",
        "0",
    ]);
    let _cleanup = Cleanup {
        cgroup_root: cleanup_root,
        data_dir: s.data_dir().to_path_buf(),
    };
    let tar = write(
        logs_dir.path().parent().unwrap_or(Path::new("/tmp")),
        &format!("busybox-tok-{}.tar", std::process::id()),
        &docker_archive("busybox:test", &[busybox_layer()]),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args(["images", "import", "--data-dir"])
        .arg(s.data_dir().join("agent"))
        .arg(&tar)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&tar);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pod = format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: tok, namespace: default}}
spec:
  nodeName: {name}
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox:test
    imagePullPolicy: Never
    command: ["sleep", "3600"]
    volumeMounts: [{{name: tokens, mountPath: /var/run/secrets/tokens}}]
  volumes:
  - name: tokens
    projected:
      sources:
      - serviceAccountToken: {{path: token, expirationSeconds: 600}}
      - downwardAPI: {{items: [{{path: name, fieldRef: {{fieldPath: metadata.name}}}}]}}
"#
    );
    let applied = eventually(Duration::from_secs(60), || {
        s.kubectl_in(&["apply", "-f", "-"], Some(&pod))
            .status
            .success()
    });
    assert!(applied, "pod tok was never accepted");
    let running = eventually(Duration::from_secs(90), || {
        s.json(&["get", "pod", "tok"])["status"]["phase"] == "Running"
    });
    assert!(running, "pod tok never ran");
    let uid = s.json(&["get", "pod", "tok"])["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    let dir: PathBuf = s
        .data_dir()
        .join("agent/pods")
        .join(&uid)
        .join("volumes/tokens");
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
    let first = read("token");
    let c1 = claims(&first);
    assert_eq!(
        c1["exp"].as_i64().unwrap() - c1["iat"].as_i64().unwrap(),
        600,
        "{c1:#}"
    );
    assert_eq!(read("name"), "tok");
    // The atomic writer's layout: `token -> ..data/token`.
    let data1 = std::fs::read_link(dir.join("..data")).expect("..data symlink");
    assert_eq!(
        std::fs::read_link(dir.join("token")).unwrap(),
        Path::new("..data/token")
    );

    let rotated = eventually(Duration::from_secs(40), || {
        let t = read("token");
        !t.is_empty() && t != first
    });
    assert!(rotated, "the token was never rotated");
    let second = read("token");
    let c2 = claims(&second);
    assert!(
        c2["iat"].as_i64().unwrap() > c1["iat"].as_i64().unwrap(),
        "{c1:#} {c2:#}"
    );
    assert_eq!(
        c2["exp"].as_i64().unwrap() - c2["iat"].as_i64().unwrap(),
        600
    );
    assert_ne!(std::fs::read_link(dir.join("..data")).unwrap(), data1);
    assert_eq!(read("name"), "tok", "the rest of the volume is kept");
    // The container sees the same new token.
    let inside = s.ok(&["exec", "tok", "--", "cat", "/var/run/secrets/tokens/token"]);
    assert!(
        inside == second || claims(&inside)["iat"].as_i64() >= c2["iat"].as_i64(),
        "inside: {inside}"
    );
    // The new token is valid: the apiserver authenticates it as the pod's service account.
    let server = s.ok(&[
        "config",
        "view",
        "--raw",
        "-o",
        "jsonpath={.clusters[0].cluster.server}",
    ]);
    let ca = s.ok(&[
        "config",
        "view",
        "--raw",
        "-o",
        "jsonpath={.clusters[0].cluster.certificate-authority-data}",
    ]);
    let ca_file = logs_dir.path().join("ca.crt");
    std::fs::write(
        &ca_file,
        base64::engine::general_purpose::STANDARD
            .decode(ca.trim())
            .unwrap(),
    )
    .unwrap();
    let out = Command::new(harness::kubectl_bin())
        .env("KUBECONFIG", "/dev/null")
        .arg(format!("--server={}", server.trim()))
        .arg(format!("--certificate-authority={}", ca_file.display()))
        .arg(format!("--token={}", second.trim()))
        .args(["auth", "whoami", "-o", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        r["status"]["userInfo"]["username"], "system:serviceaccount:default:default",
        "{r:#}"
    );
}
