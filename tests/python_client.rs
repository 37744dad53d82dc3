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
