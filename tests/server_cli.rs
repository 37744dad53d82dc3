//! `rampart server` and `rampart version` as a user runs them: readiness in the log, clean
//! shutdown on SIGTERM, data kept across restarts, one-line errors for bad input.
#![allow(unsafe_code)] // test support: fork/exec hooks, signals, rlimits (each block says why)

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn rampart() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rampart"))
}

// The caller owns the child and waits for it (see `sigterm`).
#[allow(clippy::zombie_processes)]
/// Start a server with JSON logs and wait for its ready line; returns the child and the lines.
fn start(data: &std::path::Path) -> (Child, Vec<serde_json::Value>) {
    let mut child = rampart()
        .args(["server", "--log-format", "json", "--data-dir"])
        .arg(data)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut lines = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .expect("server printed its ready line in time");
        let v: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
        let ready = v["message"] == "rampart server ready";
        lines.push(v);
        if ready {
            return (child, lines);
        }
    }
}

fn sigterm(child: &mut Child) -> std::process::ExitStatus {
    // SAFETY: kill(2) on our own child's pid; no memory is involved.
    let rc = unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(rc, 0);
    child.wait().unwrap()
}

#[test]
fn version_prints_the_crate_version() {
    let out = rampart().arg("version").output().unwrap();
    assert!(out.status.success());
    // Test builds add a second line naming the compiled-in test hooks (tests/test_hooks.rs).
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or_default(),
        format!("rampart {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn server_logs_ready_as_json_stops_on_sigterm_and_keeps_its_revision() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, lines) = start(dir.path());
    assert!(lines
        .iter()
        .all(|l| l["level"].is_string() && l["timestamp"].is_string()));
    let open = lines.iter().find(|l| l["message"] == "store open").unwrap();
    assert_eq!(open["revision"], 0);
    assert!(sigterm(&mut child).success());
    // The store directory is private.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("store"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
    let (mut child, _) = start(dir.path());
    assert!(sigterm(&mut child).success());
}

#[test]
fn bad_input_is_one_line_and_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let out = rampart()
        .args(["server", "--log-format", "json", "--data-dir"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("rampart: "), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let out = rampart()
        .args(["server", "--no-such-flag"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let out = rampart()
        .args(["server", "--log-level", "[[[", "--data-dir"])
        .arg(dir.path().join("d"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--log-level"));
}
