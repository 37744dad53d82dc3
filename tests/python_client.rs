//! The official Kubernetes Python client (pinned in tests/requirements.txt) works unmodified:
//! namespaces, CRUD, patch, scale, a watch, a 404, and the client's own e2e Service test
//! (status present on create/read/patch, delete answering the Service), and its pod tests
//! (exec, exit codes, closing stdin) against a real kubelet: the suite names `busybox` from
//! Docker Hub, so the test mirrors `docker.io` (a k3s `registries.yaml` mirror, as an air-gapped
//! user would) to a real registry it starts, holding a busybox image built from Debian's
//! `busybox-static`.

mod harness;
mod kubelet_support;

use std::time::Duration;

use kubelet_support::registry::{missing_tool, Registry};
use kubelet_support::{busybox_layer, privileged, write, Cleanup};

#[test]
fn official_python_client_works() {
    let s = harness::Server::start();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/client_smoke.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg(s.kubeconfig())
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "python client failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("python client: ok"));
}

/// The client's own e2e suite (`kubernetes/e2e_test`, vendored under
/// `tests/python/vendor/`: the PyPI sdist does not ship it), run unmodified by
/// `tests/python/run_e2e.py` against a fresh server. Every test not in
/// `tests/python/e2e_skip.txt` (each listed with its reason) must pass.
#[test]
fn official_python_client_e2e_suite_passes() {
    // The pod tests need root (a kubelet) and the registry tools; without them the suite
    // still runs and skips exactly those, saying why (`RAMPART_REQUIRE_PRIVILEGED=1` fails).
    let pods = match privileged().err().or_else(missing_tool) {
        Some(why) => {
            eprintln!("the suite's pod tests are skipped: {why}");
            None
        }
        None => Some(PodSetup::start()),
    };
    let s = match &pods {
        Some(p) => &p.server,
        None => &harness::Server::start(),
    };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/run_e2e.py");
    let child = std::process::Command::new("python3")
        .arg(script)
        .env("KUBECONFIG", s.kubeconfig())
        .env("RAMPART_E2E_PODS", if pods.is_some() { "1" } else { "0" })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let out = harness::wait_bounded(child, std::time::Duration::from_secs(240), "python e2e");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the client's e2e suite failed:\nstdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // It really ran: the summary names how many tests ran, and most were not skipped.
    let summary = stdout
        .lines()
        .find(|l| l.starts_with("python e2e: "))
        .expect("summary line");
    let n = |what: &str| -> usize {
        summary
            .split(", ")
            .find(|p| p.ends_with(what))
            .and_then(|p| p.trim_start_matches("python e2e: ").split(' ').next())
            .and_then(|x| x.parse().ok())
            .unwrap_or(0)
    };
    // With a kubelet, only the tests needing Docker Hub's python and nginx images and the
    // informer test with a client-side race (`e2e_skip.txt` says why) skip.
    let max_skipped = if pods.is_some() { 3 } else { 6 };
    assert!(
        n(" run") >= 40 && n(" skipped") <= max_skipped && n(" failed") == 0,
        "{summary}"
    );
    if pods.is_some() {
        for t in [
            "test_pod_apis",
            "test_exit_code",
            "test_pod_exec_close_channel",
        ] {
            // Run (not in the skip lines) and nothing failed: it passed.
            assert!(
                stdout.contains(&format!(".{t} (")) || stdout.contains(&format!("{t} (")),
                "{t} did not run:\n{stdout}"
            );
            assert!(
                !stdout
                    .lines()
                    .any(|l| l.starts_with("skipped: ") && l.contains(t)),
                "{t} was skipped:\n{stdout}"
            );
        }
    }
}

/// A server with its embedded kubelet whose `docker.io` mirror is a local registry holding
/// `library/busybox:latest`.
struct PodSetup {
    server: harness::Server,
    _registry: Registry,
    _cleanup: Cleanup,
    _dir: tempfile::TempDir,
}

impl PodSetup {
    fn start() -> PodSetup {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::start(dir.path(), "hub", None, None, None);
        registry.push(dir.path(), "library/busybox", "latest", &[busybox_layer()]);
        let reg_yaml = format!(
            "mirrors:\n  docker.io:\n    endpoint: [\"http://{}\"]\n",
            registry.host()
        );
        let reg_path = write(dir.path(), "registries.yaml", reg_yaml.as_bytes());
        let node = format!("py-{}", std::process::id());
        let cgroup_root = format!("rampart-test-{}", std::process::id());
        let logs = dir.path().join("logs");
        let server = harness::Server::start_with_agent(&[
            "--node-name",
            &node,
            "--pod-log-dir",
            logs.to_str().unwrap(),
            "--kubelet-cgroup-root",
            &cgroup_root,
            "--kubelet-port",
            "0",
            "--registry-config",
            reg_path.to_str().unwrap(),
        ]);
        let cleanup = Cleanup {
            cgroup_root,
            data_dir: server.data_dir().to_path_buf(),
        };
        // Exec goes through the kubelet's API, served once its serving certificate is issued.
        let serving = harness::eventually(Duration::from_secs(90), || {
            server
                .kubectl(&[
                    "get",
                    "--raw",
                    &format!("/api/v1/nodes/{node}/proxy/healthz"),
                ])
                .status
                .success()
        });
        assert!(serving, "the kubelet of {node} never served");
        PodSetup {
            server,
            _registry: registry,
            _cleanup: cleanup,
            _dir: dir,
        }
    }
}
