//! SIGTERM stops the server within a bound, with open watches and the background tasks the
//! API server started (followers, repair loops, a deferred quota refresh) all stopped: the
//! API server's supervisor aborts them and `rampart server` exits non-zero if any is left.

mod harness;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use harness::Server;

/// Generous for a loaded CI machine; an orderly stop takes well under a second.
const STOP_BOUND: Duration = Duration::from_secs(20);

#[test]
fn sigterm_stops_the_server_and_every_task_it_started() {
    let mut s = Server::start();
    // Creating a quota and deleting what it counts each start a quota refresh: tasks
    // started by requests, beside the followers started with the server.
    s.ok(&["create", "namespace", "quiet"]);
    s.ok(&[
        "create",
        "quota",
        "q",
        "-n",
        "quiet",
        "--hard=configmaps=10",
    ]);
    s.ok(&["create", "configmap", "a", "-n", "quiet"]);
    s.ok(&["delete", "configmap", "a", "-n", "quiet"]);
    // A watch holds its connection open until the server goes.
    let mut watch = Command::new(harness::kubectl_bin())
        .args(["get", "configmaps", "-A", "--watch", "--request-timeout=0"])
        .env("KUBECONFIG", s.kubeconfig())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start kubectl watch");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        watch.try_wait().expect("poll kubectl").is_none(),
        "the watch ended before the shutdown"
    );

    let started = Instant::now();
    let status = s.stop().expect("the server was running");
    let took = started.elapsed();
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(took < STOP_BOUND, "the server took {took:?} to stop");
    assert!(
        status.success(),
        "the server did not stop cleanly ({status}): a task it started outlived it?"
    );
}
