//! The installer on an OpenRC machine, end to end: `install/install.sh` with
//! `INSTALL_RAMPART_INIT=openrc` writes `/etc/init.d/rampart`, adds it to the default runlevel
//! and starts it through Debian's real `openrc-run` and `supervise-daemon`; the server it starts
//! answers `kubectl get --raw /readyz`, is restarted by the supervisor after `kill -9`, and is
//! gone after `/etc/init.d/rampart stop`.
//!
//! The install runs in a private mount namespace with `/etc` under an overlay and `/run`,
//! `/var/log` and the cgroup tree masked by tmpfs: OpenRC's state and our script never touch this
//! machine's own `/etc` or other tests, while the network namespace is shared so the test reaches
//! the server on loopback. `/run/openrc` (its state directories and `softlevel`) is made there as OpenRC makes it at boot.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

mod install_support;
use install_support::{alive, free_port, is_root, keypair, mirror_with, repo, text, Target};

fn kubectl() -> String {
    std::env::var("RAMPART_TEST_KUBECTL")
        .ok()
        .filter(|k| !k.is_empty())
        .unwrap_or_else(|| "kubectl".to_string())
}

/// Why the test cannot run here, if it cannot; with `RAMPART_REQUIRE_PRIVILEGED=1` that is a
/// failure instead (CI installs `openrc` and runs as root).
fn skip_reason() -> Option<String> {
    let reason = if !is_root() {
        "needs root (mount namespace, overlay, openrc-run)"
    } else if !Path::new("/sbin/openrc-run").exists() {
        "needs Debian's openrc package (/sbin/openrc-run)"
    } else {
        return None;
    };
    let required = std::env::var("RAMPART_REQUIRE_PRIVILEGED").is_ok_and(|v| v == "1");
    assert!(!required, "RAMPART_REQUIRE_PRIVILEGED=1 but {reason}");
    Some(reason.to_string())
}

/// The `rampart server` processes started from this install's binary.
fn server_pids(bin: &Path) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(exe) = std::fs::read_link(entry.path().join("exe")) else {
            continue;
        };
        if exe != bin {
            continue;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if cmdline.split(|b| *b == 0).nth(1) == Some(b"server".as_slice()) && alive(pid) {
            pids.push(pid);
        }
    }
    pids
}

/// Waits until `kubectl get --raw /readyz` through the install's admin kubeconfig says "ok".
fn wait_ready(kubeconfig: &Path, within: Duration) {
    let deadline = Instant::now() + within;
    let mut last = String::new();
    while Instant::now() < deadline {
        if kubeconfig.exists() {
            let out = Command::new(kubectl())
                .arg("--kubeconfig")
                .arg(kubeconfig)
                .args(["get", "--raw", "/readyz", "--request-timeout", "5s"])
                .output()
                .expect("kubectl starts");
            if out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok" {
                return;
            }
            last = text(&out);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("the OpenRC-started server never became ready: {last}");
}

/// The namespace shell: its stdout lines arrive on a channel; a line on its stdin lets it stop
/// the service and exit. Killed on drop so a failed assertion leaves no server behind.
struct Namespace {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Namespace {
    fn wait_for(&mut self, marker: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let hit = line.contains(marker);
                    self.seen.push(line);
                    if hit {
                        return;
                    }
                }
                Err(_) => panic!(
                    "no '{marker}' from the namespace shell; it said:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(40);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn openrc_service_starts_supervises_and_stops_the_server() {
    if let Some(reason) = skip_reason() {
        eprintln!("SKIP openrc_service_starts_supervises_and_stops_the_server: {reason}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keypair(dir.path(), "mirror");
    let mirror = mirror_with(dir.path(), &key);
    let t = Target::new(dir.path(), "node");
    let overlay = dir.path().join("etc-overlay");
    std::fs::create_dir_all(&overlay).unwrap();
    let port = free_port();
    let host_had_script = Path::new("/etc/init.d/rampart").exists();

    // Everything OpenRC writes (runlevels, /run state, logs) stays in this namespace. The
    // `cgroups` service is removed from the overlay: starting it would mount and populate the
    // machine-wide cgroup hierarchies, which other tests use. The /run/openrc state directories
    // are the ones OpenRC makes at boot.
    let script = format!(
        "set -eu
mount --make-rprivate /
mount -t tmpfs none {ovl}
mkdir {ovl}/upper {ovl}/work
mount -t overlay overlay -o lowerdir=/etc,upperdir={ovl}/upper,workdir={ovl}/work /etc
rm -f /etc/init.d/cgroups
mount -t tmpfs none /run
mount -t tmpfs none /var/log
mount -t tmpfs none /sys/fs/cgroup
for d in daemons exclusive failed hotplugged inactive options scheduled started starting stopping tmp wasinactive; do
    mkdir -p /run/openrc/$d
done
touch /run/openrc/softlevel
sh {install}
echo INSTALLED
ls -l /etc/runlevels/default/
/etc/init.d/rampart status && echo STATUS-STARTED
read -r _go
/etc/init.d/rampart stop
/etc/init.d/rampart status || echo STATUS-STOPPED
echo DONE
",
        ovl = overlay.display(),
        install = repo().join("install/install.sh").display(),
    );
    let mut child = Command::new("unshare")
        .args(["--mount", "sh", "-c", &script])
        .env_remove("RAMPART_URL")
        .env_remove("RAMPART_TOKEN")
        .env(
            "INSTALL_RAMPART_MIRROR",
            format!("file://{}", mirror.display()),
        )
        .env("INSTALL_RAMPART_PUBLIC_KEY", &public)
        .env("INSTALL_RAMPART_BIN_DIR", &t.bin)
        .env("INSTALL_RAMPART_DATA_DIR", &t.data)
        .env("INSTALL_RAMPART_CONFIG_DIR", &t.config)
        .env("INSTALL_RAMPART_INIT", "openrc")
        .env(
            "INSTALL_RAMPART_EXEC",
            format!("--disable-agent --bind-address 127.0.0.1 --https-port {port}"),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("unshare starts");
    let (tx, lines) = mpsc::channel();
    for stream in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
    }
    let stdin = child.stdin.take();
    let mut ns = Namespace {
        child,
        stdin,
        lines,
        seen: Vec::new(),
    };

    ns.wait_for("INSTALLED", Duration::from_secs(60));
    ns.wait_for("STATUS-STARTED", Duration::from_secs(30));
    assert!(
        ns.seen.iter().any(|l| l.contains("rampart -> ")),
        "rc-update did not add rampart to the default runlevel:\n{}",
        ns.seen.join("\n")
    );
    let kubeconfig = t.data.join("server/admin.kubeconfig");
    wait_ready(&kubeconfig, Duration::from_secs(60));
    let bin = t.bin.join("rampart");
    let first = server_pids(&bin);
    assert_eq!(first.len(), 1, "one server from the install: {first:?}");

    // supervise-daemon restarts a crashed server after respawn_delay (5 s).
    let out = Command::new("kill")
        .args(["-9", &first[0].to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let deadline = Instant::now() + Duration::from_secs(30);
    let second = loop {
        let now = server_pids(&bin);
        if !now.is_empty() && !now.contains(&first[0]) {
            break now;
        }
        assert!(
            Instant::now() < deadline,
            "supervise-daemon did not restart the killed server"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    wait_ready(&kubeconfig, Duration::from_secs(60));

    // `stop` ends the supervised server; status then reports it stopped.
    ns.stdin
        .as_mut()
        .unwrap()
        .write_all(b"go\n")
        .expect("namespace shell reads its go line");
    ns.wait_for("DONE", Duration::from_secs(60));
    assert!(
        ns.seen.iter().any(|l| l.contains("STATUS-STOPPED")),
        "status after stop:\n{}",
        ns.seen.join("\n")
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while second.iter().any(|p| alive(*p)) {
        assert!(
            Instant::now() < deadline,
            "the server survived `/etc/init.d/rampart stop`"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        server_pids(&bin).is_empty(),
        "no server may be left running"
    );
    // The host's own /etc was not touched: the script lived only in the namespace's overlay.
    assert_eq!(
        Path::new("/etc/init.d/rampart").exists(),
        host_had_script,
        "the install leaked into the host's /etc/init.d"
    );
}
