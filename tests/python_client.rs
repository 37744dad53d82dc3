//! The official Kubernetes Python client (pinned in tests/requirements.txt) works unmodified:
//! namespaces, CRUD, patch, scale, a watch, a 404, and the client's own e2e Service test
//! (status present on create/read/patch, delete answering the Service).

mod harness;

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
    let s = harness::Server::start();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/run_e2e.py");
    let child = std::process::Command::new("python3")
        .arg(script)
        .env("KUBECONFIG", s.kubeconfig())
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
    assert!(
        n(" run") >= 40 && n(" skipped") <= 10 && n(" failed") == 0,
        "{summary}"
    );
}
